"""One typed settings object, read once from ``SANKOFA_*`` variables and passed down.

Nothing below the edge reads the environment: ``create_app(settings)`` and the
command line hand the values they need to the parts they build.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: The development pseudonymisation key. Refused outside development so that a
#: production deployment cannot silently hash identifiers with a public key.
DEV_HMAC_KEY = "sankofa-development-key-not-for-production"


class Settings(BaseSettings):
    """Every knob of the service. Units are in the names."""

    model_config = SettingsConfigDict(env_prefix="SANKOFA_", extra="ignore", frozen=True)

    environment: Literal["development", "test", "production"] = "development"

    # Where the state lives. Unset URLs mean: start embedded servers (``make run``).
    database_url: str | None = None
    #: A streaming replica of ``database_url``: reads (GET endpoints, reports) go
    #: there, writes to the primary. Unset: everything reads the primary.
    database_replica_url: str | None = None
    redis_url: str | None = None
    #: ``redis_url`` names a node of a Redis Cluster (the client learns the others
    #: from it). The feature keys are hash-tagged into ``redis_cluster_slot_groups``
    #: groups: a batch costs one round trip per master and one script call per
    #: group (engine.features_cluster). As many groups as masters, or a multiple.
    redis_cluster: bool = False
    redis_cluster_slot_groups: int = Field(default=3, ge=1, le=256)
    data_dir: Path = Path(".sankofa")
    redis_prefix: str = Field(default="sk", pattern=r"^[A-Za-z0-9_.-]{1,32}$")

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    workers: int = Field(default=1, ge=1, le=64)
    #: A separate port served by a worker of its own, for critical traffic (an
    #: authorisation system's connection pool): a flood of bulk traffic on the
    #: main port cannot delay it, since the bulk workers also run at a lower OS
    #: priority (bulk_niceness). None: no lane.
    critical_port: int | None = Field(default=None, ge=1, le=65535)
    bulk_niceness: int = Field(default=5, ge=0, le=19)
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    #: The service's log lines on stderr (sankofa.logs): one JSON object per line
    #: for a log collector, or the old human-readable text. Only ``sankofa serve``
    #: and its workers read it; the other commands print to a terminal as before.
    log_format: Literal["json", "text"] = "json"

    hmac_key: SecretStr = SecretStr(DEV_HMAC_KEY)
    #: Mount /bench/bare and /bench/naive, the load tests' baselines (api.bench_routes).
    benchmark_endpoints: bool = False

    # Request limits.
    #: Room for 1000 transactions each carrying the largest metadata (2 KB).
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    #: A timestamp (or labelled_at) more than this far ahead of the server's clock is
    #: refused: it would otherwise age every other transaction out of the windows.
    max_clock_skew_s: float = Field(default=3600.0, ge=0)
    #: A request body must arrive within this long (408 otherwise).
    body_timeout_s: float = Field(default=10.0, gt=0)
    max_batch_items: int = Field(default=1000, ge=1, le=10_000)
    max_metadata_bytes: int = Field(default=2048, ge=64)

    # Dispatcher.
    max_batch_size: int = Field(default=256, ge=1, le=10_000)
    max_wait_ms: float = Field(default=2.0, ge=0.0, le=1000.0)
    max_in_flight_batches: int = Field(default=2, ge=1, le=64)
    queue_bound_critical: int = Field(default=4096, ge=1)
    queue_bound_high: int = Field(default=4096, ge=1)
    queue_bound_normal: int = Field(default=8192, ge=1)
    queue_bound_low: int = Field(default=8192, ge=1)
    deadline_ms_critical: float = Field(default=250.0, gt=0)
    deadline_ms_high: float = Field(default=500.0, gt=0)
    deadline_ms_normal: float = Field(default=1000.0, gt=0)
    deadline_ms_low: float = Field(default=5000.0, gt=0)
    ageing_ms: float = Field(default=200.0, gt=0)
    #: Refuse new requests of a class at the door while the event loop runs this
    #: late (queues/shedding.py); 0 turns shedding off for that class. Critical
    #: is never refused there.
    shed_lag_ms_high: float = Field(default=40.0, ge=0)
    shed_lag_ms_normal: float = Field(default=20.0, ge=0)
    shed_lag_ms_low: float = Field(default=10.0, ge=0)
    #: ... or while this many scoring requests are in progress in the worker
    #: (0: no limit). Latency of an admitted request is about in-progress /
    #: throughput, so these cap each class's latency under overload.
    shed_in_progress_high: int = Field(default=96, ge=0)
    shed_in_progress_normal: int = Field(default=48, ge=0)
    shed_in_progress_low: int = Field(default=24, ge=0)
    #: A signal must stay above a class's limit this long before the door
    #: refuses it: a stall's burst is queued, only sustained overload is shed.
    shed_sustain_ms: float = Field(default=150.0, ge=0)
    #: ... and serves it again once the signals have stayed clear this long
    #: (shedding clears them itself; without it a flood is let in again and again).
    shed_release_ms: float = Field(default=200.0, ge=0)
    drain_grace_s: float = Field(default=10.0, ge=0)

    # Pools and timeouts.
    db_pool_min: int = Field(default=2, ge=1)
    db_pool_max: int = Field(default=8, ge=1)
    db_timeout_s: float = Field(default=5.0, gt=0)
    #: The replica's pool: reads only (a primary-key lookup each), so smaller.
    db_replica_pool_max: int = Field(default=4, ge=1)
    #: A replica read slower than this is abandoned and served by the primary:
    #: the replica is an optimisation, never a reason to answer late.
    db_replica_timeout_s: float = Field(default=0.5, gt=0)
    #: After a replica failure, reads skip it for this long (straight to the
    #: primary) instead of paying the timeout on every request.
    db_replica_retry_s: float = Field(default=1.0, ge=0)
    redis_pool_max: int = Field(default=16, ge=1)
    redis_timeout_s: float = Field(default=2.0, gt=0)
    #: Idle customer/terminal feature keys expire after this long (wall clock);
    #: longer than the 39 days of history the windows need.
    feature_key_ttl_s: int = Field(default=45 * 86_400, ge=40 * 86_400)
    #: While the online features cannot be trusted (Redis down, or its histories
    #: lost and being rebuilt from PostgreSQL), these classes (comma-separated) are
    #: refused with a 503 and Retry-After; the others are scored on degraded
    #: features and flagged FEATURES_DEGRADED. Empty: none fails closed.
    features_fail_closed: str = Field(
        default="low", pattern=r"^((critical|high|normal|low)(,(critical|high|normal|low))*)?$"
    )
    #: How often each process checks Redis and the rebuild marker.
    feature_check_s: float = Field(default=0.5, gt=0)

    # Model and decision policy.
    #: The champion's artefact (JSON, any supported format); unset: the shipped default.
    model_path: Path | None = None
    #: A challenger scored in the same batches and stored beside the champion,
    #: never changing the decision (``sankofa shadow report`` compares them).
    shadow_model_path: Path | None = None
    review_threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    decline_threshold: float | None = Field(default=None, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _refuse_unsafe(self) -> Settings:
        if self.environment == "production" and self.hmac_key.get_secret_value() == DEV_HMAC_KEY:
            raise ValueError("SANKOFA_HMAC_KEY must be set to a secret outside development")
        if len(self.hmac_key.get_secret_value()) < 16:
            raise ValueError("SANKOFA_HMAC_KEY must be at least 16 characters")
        if self.redis_cluster and self.redis_url is None:
            # The embedded Redis is a single server.
            raise ValueError(
                "SANKOFA_REDIS_CLUSTER needs SANKOFA_REDIS_URL (a node of the cluster)"
            )
        if self.db_pool_min > self.db_pool_max:
            raise ValueError("SANKOFA_DB_POOL_MIN must not exceed SANKOFA_DB_POOL_MAX")
        if (
            self.review_threshold is not None
            and self.decline_threshold is not None
            and self.review_threshold > self.decline_threshold
        ):
            raise ValueError("SANKOFA_REVIEW_THRESHOLD must not exceed SANKOFA_DECLINE_THRESHOLD")
        return self
