"""The application factory and the lifespan that owns every resource.

Start order: PostgreSQL pool (and migrations), the read replica's pool (when
one is configured; store/reads.py), Redis client, the layered cache, feature store,
model (and the shadow model, when one is set), scoring engine, dispatcher. Shutdown runs in reverse: the dispatcher
drains first (intake stops, queued work is served until the grace deadline,
the rest is answered 503), then Redis and the pools close.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi_offline import FastAPIOffline

from sankofa import __version__
from sankofa.api import bench_routes, problems, rules_routes, schemas
from sankofa.api.auth_routes import router as auth_router
from sankofa.api.body import BodyDeadlines
from sankofa.api.compression import GzipResponses
from sankofa.api.edge import EdgeMiddleware
from sankofa.api.lifecycle import GracefulShutdown
from sankofa.api.routes import TRANSACTIONS_CACHE, router, transaction_view_loader
from sankofa.api.services import Services
from sankofa.auth.rbac import document_security
from sankofa.auth.service import open_auth
from sankofa.cache import BytesCodec, LayeredCache, open_cache
from sankofa.engine.decision import DecisionPolicy
from sankofa.engine.feature_guard import FeatureGuard
from sankofa.engine.features_cluster import feature_store
from sankofa.engine.features_cluster import redis_client as open_redis
from sankofa.engine.features_online import RedisClient
from sankofa.engine.scorer import ScoringEngine
from sankofa.engine.serving import ScoringModel, load_model, load_model_file, policy_for
from sankofa.engine.transaction import TransactionParser
from sankofa.metrics import Metrics
from sankofa.privacy.routes import router as privacy_router
from sankofa.queues.dispatcher import ClassPolicy, Dispatcher
from sankofa.queues.priority import Priority, parse_x_priority
from sankofa.queues.shedding import LoadShedder
from sankofa.rules import cached as cached_entities
from sankofa.rules.book import EntitySource, RuleBook
from sankofa.rules.night import NightPixLedger
from sankofa.rules.verdict import LimitPolicy, RulesEngine
from sankofa.settings import Settings
from sankofa.store.db import create_pool, migrate
from sankofa.store.reads import ReadPools

log = logging.getLogger(__name__)

#: After draining, keep answering (503) this long before the server stops
#: listening, so requests already on the wire get an answer.
SHUTDOWN_LINGER_S = 0.5


def class_policies(settings: Settings) -> dict[Priority, ClassPolicy]:
    s = settings
    return {
        Priority.CRITICAL: ClassPolicy(s.queue_bound_critical, s.deadline_ms_critical / 1000),
        Priority.HIGH: ClassPolicy(s.queue_bound_high, s.deadline_ms_high / 1000),
        Priority.NORMAL: ClassPolicy(s.queue_bound_normal, s.deadline_ms_normal / 1000),
        Priority.LOW: ClassPolicy(s.queue_bound_low, s.deadline_ms_low / 1000),
    }


def shed_thresholds(settings: Settings) -> dict[Priority, float | None]:
    def seconds(ms: float) -> float | None:
        return ms / 1000 if ms > 0 else None

    return {
        Priority.CRITICAL: None,
        Priority.HIGH: seconds(settings.shed_lag_ms_high),
        Priority.NORMAL: seconds(settings.shed_lag_ms_normal),
        Priority.LOW: seconds(settings.shed_lag_ms_low),
    }


def shed_limits(settings: Settings) -> dict[Priority, int | None]:
    def limit(n: int) -> int | None:
        return n if n > 0 else None

    return {
        Priority.CRITICAL: None,
        Priority.HIGH: limit(settings.shed_in_progress_high),
        Priority.NORMAL: limit(settings.shed_in_progress_normal),
        Priority.LOW: limit(settings.shed_in_progress_low),
    }


def redis_client(settings: Settings) -> RedisClient:
    if settings.redis_url is None:
        raise ValueError("SANKOFA_REDIS_URL is not set (the CLI starts an embedded Redis)")
    return open_redis(
        settings.redis_url,
        cluster=settings.redis_cluster,
        max_connections=settings.redis_pool_max,
        timeout_s=settings.redis_timeout_s,
    )


@asynccontextmanager
async def open_services(
    settings: Settings,
    *,
    model: ScoringModel | None = None,
    wall_clock: Callable[[], float] = time.time,
) -> AsyncIterator[Services]:
    """Open everything the service needs, in order; close it all in reverse."""
    if settings.database_url is None:
        raise ValueError("SANKOFA_DATABASE_URL is not set (the CLI starts an embedded PostgreSQL)")
    async with AsyncExitStack() as stack:
        pool = await create_pool(
            settings.database_url,
            min_size=settings.db_pool_min,
            max_size=settings.db_pool_max,
            timeout_s=settings.db_timeout_s,
        )
        stack.push_async_callback(pool.close)
        async with pool.acquire() as conn:
            await migrate(conn)
        auth = await stack.enter_async_context(open_auth(settings, pool))
        metrics = Metrics()
        reads = ReadPools(
            primary=pool,
            replica=await _replica_pool(settings, stack),
            primary_timeout_s=settings.db_timeout_s,
            replica_timeout_s=settings.db_replica_timeout_s,
            retry_s=settings.db_replica_retry_s,
            on_fallback=metrics.replica_fallback,
            on_read=metrics.read_answered,
        )
        if reads.replica is not None:
            state = await reads.replica_state(settings.db_replica_timeout_s)
            log.info("read replica configured: %s", state)

        redis = redis_client(settings)
        stack.push_async_callback(redis.aclose)
        cache = await stack.enter_async_context(
            open_cache(
                redis_url=settings.cache_redis_url or settings.redis_url,
                prefix=settings.redis_prefix,
                registry=metrics.registry,
                timeout_s=settings.cache_timeout_s,
                retry_s=settings.cache_retry_s,
                # L2's multi-key calls need one Redis, not a cluster: on a cluster
                # without a cache Redis of its own, Redis carries the channel only.
                use_l2=settings.cache_redis_url is not None or not settings.redis_cluster,
            )
        )
        # Stored decisions never change; their label does (invalidated on POST /v1/labels).
        cache.register(
            TRANSACTIONS_CACHE,
            transaction_view_loader(reads),
            codec=BytesCodec(),
            l1_max_entries=settings.cache_l1_max_entries,
            l1_ttl_s=settings.cache_l1_ttl_s,
            l2_ttl_s=settings.cache_l2_ttl_s,
        )
        features = feature_store(
            redis,
            prefix=settings.redis_prefix,
            timeout_s=settings.redis_timeout_s,
            key_ttl_s=settings.feature_key_ttl_s,
            slot_groups=settings.redis_cluster_slot_groups,
        )
        served = model if model is not None else load_model(settings.model_path)
        policy: DecisionPolicy = policy_for(served, settings)
        shadow = (
            load_model_file(settings.shadow_model_path)
            if settings.shadow_model_path is not None
            else None
        )
        guard = FeatureGuard(
            redis=redis,
            store=features,
            pool=pool,
            prefix=settings.redis_prefix,
            check_every_s=settings.feature_check_s,
            timeout_s=min(settings.redis_timeout_s, 1.0),
        )
        await guard.start()
        stack.push_async_callback(guard.stop)
        rules = await _open_rules(settings, pool, stack, wall_clock, cache)
        engine = ScoringEngine(
            pool=pool,
            features=features,
            model=served,
            policy=policy,
            db_timeout_s=settings.db_timeout_s,
            metrics=metrics,
            shadow=shadow,
            guard=guard,
            fail_closed=fail_closed_classes(settings),
            rules=rules,
        )
        dispatcher = Dispatcher(
            handler=engine.handle,
            policies=class_policies(settings),
            max_batch_size=settings.max_batch_size,
            max_wait_s=settings.max_wait_ms / 1000,
            max_in_flight=settings.max_in_flight_batches,
            ageing_s=settings.ageing_ms / 1000,
            observer=metrics,
        )
        await dispatcher.start()
        stack.push_async_callback(_drain, dispatcher, settings.drain_grace_s)
        sampler = asyncio.create_task(_sample_gauges(metrics, dispatcher, pool, redis, guard))
        stack.push_async_callback(_cancel, sampler)
        body_deadlines = BodyDeadlines(timeout_s=settings.body_timeout_s)
        await body_deadlines.start()
        stack.push_async_callback(body_deadlines.stop)
        shedder = LoadShedder(
            thresholds_s=shed_thresholds(settings),
            in_progress_limits=shed_limits(settings),
            sustain_s=settings.shed_sustain_ms / 1000,
            release_s=settings.shed_release_ms / 1000,
        )
        await shedder.start()
        stack.push_async_callback(shedder.stop)
        # Everything loaded so far (modules, the app, the model) lives as long as the
        # process. Freezing it keeps the collector's full passes from walking it again
        # and again: measured, a full collection of a loaded worker's ~80,000 objects
        # took 40-90 ms on a busy machine, with the event loop stopped (the soak saw
        # p99 spikes of 100+ ms every minute), and under 1 ms after the freeze.
        gc.collect()
        gc.freeze()
        on_gc = metrics.gc_callback()
        gc.callbacks.append(on_gc)
        stack.callback(gc.callbacks.remove, on_gc)
        yield Services(
            settings=settings,
            pool=pool,
            reads=reads,
            redis=redis,
            features=features,
            parser=TransactionParser(
                hmac_key=settings.hmac_key.get_secret_value().encode(),
                max_metadata_bytes=settings.max_metadata_bytes,
                max_clock_skew_s=settings.max_clock_skew_s,
                card_key=settings.card_token_key.get_secret_value().encode(),
            ),
            engine=engine,
            dispatcher=dispatcher,
            metrics=metrics,
            body_deadlines=body_deadlines,
            shedder=shedder,
            guard=guard,
            auth=auth,
            rules=rules,
            cache=cache,
        )


async def _open_rules(
    settings: Settings,
    pool: asyncpg.Pool,
    stack: AsyncExitStack,
    wall_clock: Callable[[], float],
    cache: LayeredCache,
) -> RulesEngine:
    """The rules snapshot (loaded now, then kept fresh) and the lists' batched reads,
    through the layered cache (``rules.cached``)."""
    book = RuleBook(pool=pool, timeout_s=settings.db_timeout_s, refresh_s=settings.rules_refresh_s)
    await book.start()
    stack.push_async_callback(book.stop)
    return RulesEngine(
        book=book,
        entities=cached_entities.register(
            cache,
            EntitySource(pool=pool, timeout_s=settings.db_timeout_s),
            l1_max_entries=settings.cache_l1_max_entries,
            l1_ttl_s=settings.cache_l1_ttl_s,
            l2_ttl_s=settings.cache_l2_ttl_s,
        ),
        limits=LimitPolicy(
            night_pix_limit_cents=int(settings.night_pix_limit.scaleb(2)),
            night_start_hour=settings.night_start_hour,
            night_end_hour=settings.night_end_hour,
            timezone=ZoneInfo(settings.limits_timezone),
        ),
        night=NightPixLedger(pool=pool, timeout_s=settings.db_timeout_s),
        wall_clock=wall_clock,
    )


async def _replica_pool(settings: Settings, stack: AsyncExitStack) -> asyncpg.Pool | None:
    """The read replica's pool, or None when no replica is configured.

    No connection is opened here (min_size 0): a replica that is down must not
    keep the service from starting, since the primary can answer every read.
    Connections are made on first use and kept while in use.
    """
    if settings.database_replica_url is None:
        return None
    pool = await create_pool(
        settings.database_replica_url,
        min_size=0,
        max_size=settings.db_replica_pool_max,
        timeout_s=settings.db_replica_timeout_s,
    )
    stack.push_async_callback(pool.close)
    return pool


#: How often gauges (queue depth, pool use) are sampled.
GAUGE_INTERVAL_S = 0.5


def fail_closed_classes(settings: Settings) -> frozenset[Priority]:
    names = [n for n in settings.features_fail_closed.split(",") if n]
    return frozenset(parse_x_priority(n) for n in names)


async def _sample_gauges(
    metrics: Metrics,
    dispatcher: Dispatcher[Any, Any],
    pool: asyncpg.Pool,
    redis: RedisClient,
    guard: FeatureGuard,
) -> None:
    rebuilds = 0
    while True:
        metrics.features_state.labels("redis_available").set(int(guard.available))
        metrics.features_state.labels("histories_complete").set(int(guard.complete))
        if guard.rebuilds > rebuilds:
            metrics.feature_rebuilds.inc(guard.rebuilds - rebuilds)
            rebuilds = guard.rebuilds
        metrics.set_queue_depth({p.label: dispatcher.queue_depth(p) for p in Priority})
        size = pool.get_size()
        metrics.db_pool_size.set(size)
        metrics.db_pool_in_use.set(size - pool.get_idle_size())
        # One pool to one server; a cluster client has a pool per node (not sampled).
        in_use = getattr(getattr(redis, "connection_pool", None), "_in_use_connections", None)
        if in_use is not None:
            metrics.redis_pool_in_use.set(len(in_use))
        await asyncio.sleep(GAUGE_INTERVAL_S)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass


async def _drain(dispatcher: Dispatcher[Any, Any], grace_s: float) -> None:
    left = await dispatcher.drain(grace_s)
    st = dispatcher.stats
    log.info(
        "dispatcher drained: %d batches, %d transactions, %d refused at shutdown",
        st.batches,
        st.batch_items,
        left,
    )


#: FastAPI's own OpenTelemetry hooks (newer releases) look up the tracer provider
#: in the environment on every request: 14 % of the scoring path's CPU in a
#: profile here. Sankofa exports Prometheus metrics of its own; turn them off
#: where the keyword exists.
_NO_FRAMEWORK_TELEMETRY: dict[str, Any] = (
    {"telemetry": {"tracing": False, "metrics": False, "logs": False}}
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters
    else {}
)


def _services_of(scope: Any) -> Services | None:
    state = scope.get("state")
    services: Services | None = state.get("services") if state else None
    return services


def create_app(
    settings: Settings,
    *,
    model: ScoringModel | None = None,
    handle_signals: bool = False,
    wall_clock: Callable[[], float] = time.time,
) -> FastAPI:
    """The application. ``handle_signals``: drain on SIGTERM / SIGINT before the
    server stops (``api.lifecycle``); for a served process, not for tests in process.
    ``wall_clock``: what list expiry is judged by (tests move it).
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        async with open_services(settings, model=model, wall_clock=wall_clock) as services:
            shutdown = GracefulShutdown(
                dispatcher=services.dispatcher,
                grace_s=settings.drain_grace_s,
                linger_s=SHUTDOWN_LINGER_S,
            )
            if handle_signals:
                shutdown.install()
            try:
                yield {"services": services}
            finally:
                shutdown.uninstall()

    # FastAPIOffline serves /docs from packaged Swagger UI files: the default page
    # loads them from a CDN and stays blank on a machine without internet.
    app = FastAPIOffline(
        title="Sankofa",
        version=__version__,
        summary="Real-time fraud scoring for payments in Brazil (cards, PIX, TED, boleto)",
        lifespan=lifespan,
        # No redirect from /path/ to /path: it would build a Location from the
        # client's Host header.
        redirect_slashes=False,
        **_NO_FRAMEWORK_TELEMETRY,
    )
    app.include_router(router)
    app.include_router(privacy_router)
    app.include_router(auth_router)
    app.include_router(rules_routes.router)
    if settings.benchmark_endpoints:
        app.include_router(bench_routes.router)
    problems.install(app)
    # Inside the edge: its timing and request id cover the compression too.
    app.add_middleware(GzipResponses, min_bytes=settings.gzip_min_bytes, level=settings.gzip_level)
    app.add_middleware(EdgeMiddleware, services_of=_services_of)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(
                title=app.title, version=app.version, summary=app.summary, routes=app.routes
            )
            doc.setdefault("components", {}).setdefault("schemas", {}).update(
                schemas.component_schemas()
            )
            document_security(app, doc)
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
