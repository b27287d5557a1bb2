"""The batch handler: features, model, decision and a durable commit for a batch.

For one batch of jobs (each job = one request of 1..1000 transactions):

1. One PostgreSQL transaction is opened; the ids already stored are read.
   An id stored with the same content is a replay (its stored decision comes
   back, ``replayed: true``, nothing is counted again); with other content it is
   a conflict, and that whole request is refused with 409 (requests are atomic).
   An id repeated within the batch by another request is treated the same way.
2. One Redis round trip computes the online features of the new transactions.
3. One numpy call scores them; the decision policy turns scores into decisions.
   A shadow (challenger) model, when configured, scores the same matrix in
   the same pass; its score, decision (by its own thresholds) and version are
   stored beside the champion's and never change the answer.
4. Transactions and decisions are written with COPY; the transaction commits.
   Only then are the futures resolved, so a 200 means committed.

If the commit fails, what step 2 counted is taken back out of Redis, so a
refused transaction leaves no trace and its retry is counted exactly once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import asyncpg
import numpy as np
import numpy.typing as npt

from sankofa.engine import constants as C
from sankofa.engine.decision import DecisionPolicy, decide
from sankofa.engine.feature_guard import FeatureGuard
from sankofa.engine.features_online import (
    ADDED_CUSTOMER,
    ADDED_TERMINAL,
    FeatureStore,
    degraded_matrix,
)
from sankofa.engine.serving import ScoringModel, model_version, own_policy
from sankofa.engine.transaction import Transaction
from sankofa.errors import (
    ConflictError,
    FeatureStoreUnavailableError,
    OutcomeUnknownError,
    SankofaError,
    StorageUnavailableError,
    UnstorableValueError,
)
from sankofa.metrics import Metrics
from sankofa.queues.dispatcher import Job
from sankofa.queues.priority import Priority
from sankofa.rules.verdict import RULE_REASON_PREFIX, Prepared, RulesEngine
from sankofa.store import repository as repo
from sankofa.store.db import discard_on_failure

log = logging.getLogger(__name__)

#: asyncpg / socket failures that mean "the database is unavailable".
DB_DOWN: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.QueryCanceledError,
    asyncpg.AdminShutdownError,
    # "cannot switch to state ...; another operation is in progress": a connection
    # left mid-operation by a cancellation while the server went away.
    asyncpg.InternalClientError,
    OSError,
    TimeoutError,
)


def _stored_as_is(existing: dict[str, repo.StoredDecision], tx: Transaction) -> bool:
    stored = existing.get(tx.transaction_id)
    return stored is not None and stored.content_hash == tx.content_hash


@dataclass(frozen=True, slots=True)
class ScoreRequest:
    transactions: list[Transaction]


DecisionOut = dict[str, Any]
ScoreJob = Job[ScoreRequest, list[DecisionOut]]


_ADDED_ALL = ADDED_CUSTOMER | ADDED_TERMINAL


class _Unstorable(Exception):
    """The database refused a value of this batch (see ScoringEngine.handle)."""


#: Failures about the data (or ours, already answered): the connection stays sound.
_DATA_ERRORS: Final = (asyncpg.UniqueViolationError, _Unstorable, SankofaError)


class ScoringEngine:
    """Scores batches of requests; see the module docstring for the steps."""

    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        features: FeatureStore,
        model: ScoringModel,
        policy: DecisionPolicy,
        db_timeout_s: float,
        now: Callable[[], float] = time.monotonic,
        metrics: Metrics | None = None,
        shadow: ScoringModel | None = None,
        guard: FeatureGuard | None = None,
        fail_closed: frozenset[Priority] = frozenset(),
        rules: RulesEngine | None = None,
    ) -> None:
        if not db_timeout_s > 0:
            raise ValueError("db_timeout_s must be > 0")
        self._pool = pool
        self._features = features
        self._model = model
        self._policy = policy
        self._shadow = shadow
        self._shadow_policy = own_policy(shadow) if shadow is not None else None
        self._db_timeout_s = db_timeout_s
        self._now = now
        self._metrics = metrics
        self._guard = guard
        self._fail_closed = fail_closed
        self._rules = rules
        self.db_transactions = 0

    @property
    def model(self) -> ScoringModel:
        return self._model

    @property
    def policy(self) -> DecisionPolicy:
        return self._policy

    @property
    def shadow(self) -> ScoringModel | None:
        return self._shadow

    async def handle(self, jobs: Sequence[ScoreJob]) -> list[list[DecisionOut] | BaseException]:
        started = self._now()
        results = await self._handle_isolating(jobs, started)
        if self._metrics is not None:
            decided: dict[str, int] = dict.fromkeys(C.DECISIONS, 0)
            for r in results:
                if isinstance(r, list):
                    for d in r:
                        if not d["replayed"]:
                            decided[d["decision"]] += 1
            items = sum(len(job.payload.transactions) for job in jobs)
            self._metrics.observe_batch(items, self._now() - started, decided)
        return results

    async def _handle_isolating(
        self, jobs: Sequence[ScoreJob], started: float
    ) -> list[list[DecisionOut] | BaseException]:
        try:
            try:
                return await self._handle(jobs, started)
            except asyncpg.UniqueViolationError:
                # Another batch stored one of our ids between our read and our COPY.
                # Everything was rolled back and un-counted: run again, and the read
                # will now classify that id as a replay or a conflict.
                log.info("id race with a concurrent batch; retrying the batch once")
                return await self._handle(jobs, started)
        except _Unstorable as exc:
            # One request's value broke the COPY for the whole batch: never let it
            # fail the others. Run each request alone to find which one it was.
            if len(jobs) == 1:
                # The type only: a database error's message or DETAIL may quote the
                # refused value, which may be personal data (the client still gets
                # the message in its answer).
                txs = jobs[0].payload.transactions
                log.warning(
                    "unstorable value (%s) in a request of %d transactions, the first %s",
                    type(exc.__cause__).__name__,
                    len(txs),
                    txs[0].transaction_id if txs else None,
                    extra={"request_id": jobs[0].request_id},
                )
                return [UnstorableValueError(f"a value could not be stored: {exc.__cause__}")]
            log.warning("unstorable value in a batch of %d requests; isolating it", len(jobs))
            results: list[list[DecisionOut] | BaseException] = []
            for job in jobs:
                results.extend(await self._handle_isolating([job], started))
            return results

    async def _handle(
        self, jobs: Sequence[ScoreJob], started: float
    ) -> list[list[DecisionOut] | BaseException]:
        results: list[list[DecisionOut] | BaseException | None] = [None] * len(jobs)
        plan = self._plan(jobs, {}, results)  # repeats within the batch
        guard = self._guard
        degraded = guard is not None and guard.degraded
        if degraded:
            plan = self._close(jobs, plan, results)
        new_txs = [tx for _, tx in plan]
        new_job = [j for j, _ in plan]
        flags: npt.NDArray[np.int64] | None = None
        counting = False
        storing = False
        existing: dict[str, repo.StoredDecision] = {}
        keep: list[bool] = []
        # The batch must finish by its most urgent request's deadline (and within
        # the database timeout): a slow database or Redis gives a fast 503, not a
        # late 200 nobody waits for.
        loop = asyncio.get_running_loop()
        budget_s = min(self._db_timeout_s, min(job.deadline for job in jobs) - loop.time())
        lists_read: asyncio.Task[Prepared] | None = None
        try:
            async with asyncio.timeout(max(budget_s, 0.0)):
                if self._rules is not None and new_txs:
                    # Lists and limits: one read for the batch, while Redis computes.
                    lists_read = asyncio.create_task(self._rules.prepare(new_txs))
                matrix: npt.NDArray[np.float64] | None = None
                if guard is None or guard.available:
                    counting = bool(new_txs)
                    trips = self._features.round_trips
                    try:
                        online = await self._features.compute(new_txs)
                        flags, matrix = online.flags, online.matrix
                        if self._metrics is not None:
                            # One per batch; on a Redis Cluster, one per master.
                            self._metrics.redis_round_trips.inc(self._features.round_trips - trips)
                    except FeatureStoreUnavailableError:
                        if guard is None:
                            raise
                        # Score without it (a circuit breaker: the next batches do
                        # not wait for Redis either, until the guard reaches it).
                        guard.redis_failed()
                        log.warning("Redis unavailable: scoring on degraded features")
                        counting = False
                        if not degraded:
                            degraded = True
                            plan = self._close(jobs, plan, results)
                            new_txs = [tx for _, tx in plan]
                            new_job = [j for j, _ in plan]
                if matrix is None or flags is None:
                    # Redis never counted these: every id may be a replay (0 = "held",
                    # looked up in the database), and a rebuild must add them.
                    flags = np.zeros(len(new_txs), dtype=np.int64)
                    matrix = degraded_matrix(new_txs)
                prepared = await lists_read if lists_read is not None else None
                records, outs = self._decide(
                    jobs, new_txs, new_job, matrix, started, degraded=degraded, prepared=prepared
                )
                async with (
                    self._pool.acquire() as conn,
                    discard_on_failure(conn, keep_on=_DATA_ERRORS),
                ):
                    if prepared is not None and self._rules is not None:
                        # Night PIX: lock their customers' nights until the COPY
                        # commits; if another batch stored one meanwhile, judge again.
                        again = await self._rules.recheck_night(conn, prepared)
                        if again is not None:
                            prepared = again
                            records, outs = self._decide(
                                jobs, new_txs, new_job, matrix, started,
                                degraded=degraded, prepared=prepared,
                            )  # fmt: skip
                    # An id the feature store already held is most likely a replay:
                    # only those need a look in the database before the write.
                    held = [
                        tx.transaction_id
                        for tx, f in zip(new_txs, flags.tolist(), strict=True)
                        if f == 0
                    ]
                    if held:
                        existing = await repo.find_existing(conn, held)
                    keep = self._keep(jobs, new_txs, new_job, existing, results)
                    # From here a failure leaves the outcome in doubt: the COPY may
                    # have committed though its reply never came.
                    storing = True
                    try:
                        await self._store(
                            conn, [r for r, k in zip(records, keep, strict=True) if k]
                        )
                    except asyncpg.UniqueViolationError:
                        # Stored before, though Redis did not know it (trimmed, or
                        # Redis restarted): classify everything against the database.
                        existing = await repo.find_existing(
                            conn, [tx.transaction_id for tx in new_txs]
                        )
                        # Judge every request against the stored rows: with none
                        # given, the batch's first request of an id would stand for
                        # the stored one (other content answered 200 `replayed`,
                        # the stored content 409).
                        results = [None] * len(jobs)
                        self._plan(jobs, existing, results)
                        keep = self._keep(jobs, new_txs, new_job, existing, results)
                        await self._store(
                            conn, [r for r, k in zip(records, keep, strict=True) if k]
                        )
        except BaseException as exc:
            if lists_read is not None:
                _reap(lists_read)
            if counting and new_txs:
                # Not stored: take back what the script counted. If its reply never
                # came (a timeout), it may still have run: take back everything.
                added = flags.tolist() if flags is not None else [_ADDED_ALL] * len(new_txs)
                await self._forget(new_txs, added)
            if isinstance(exc, asyncpg.UniqueViolationError | _Unstorable):
                raise
            if isinstance(exc, SankofaError):
                return [exc] * len(jobs)
            if storing and isinstance(exc, DB_DOWN):
                if self._metrics is not None:
                    self._metrics.outcome_unknown.inc(sum(keep))
                unknown = OutcomeUnknownError(
                    f"the database did not confirm the write ({type(exc).__name__}); it may"
                    " have been stored: send the same request again, a stored transaction"
                    " is answered with its decision",
                    retry_after_s=1.0,
                )
                return [unknown] * len(jobs)
            if isinstance(exc, TimeoutError):
                err = StorageUnavailableError(
                    "the batch did not finish by its deadline (the database or Redis is slow)",
                    retry_after_s=1.0,
                )
                return [err] * len(jobs)
            if isinstance(exc, DB_DOWN):
                err = StorageUnavailableError(
                    f"storage unavailable: {type(exc).__name__}", retry_after_s=1.0
                )
                return [err] * len(jobs)
            raise
        if guard is not None and not counting and any(keep):
            guard.scored_without_redis()
        if self._metrics is not None and self._rules is not None:
            counts = _rule_counts(r for r, k in zip(records, keep, strict=True) if k)
            if counts:
                self._metrics.observe_rules(counts)
        if degraded and self._metrics is not None:
            self._metrics.degraded_decisions.inc(sum(keep))
        assert flags is not None or not new_txs
        if flags is not None:
            # Counted in Redis but not stored now: refused requests, and replays
            # of other content. A replay of a stored transaction Redis had lost (an
            # earlier write whose outcome was in doubt, a Redis restart) stays
            # counted: the history matches the database again.
            untaken = [
                (tx, f)
                for tx, f, k in zip(new_txs, flags.tolist(), keep, strict=True)
                if f and not k and not _stored_as_is(existing, tx)
            ]
            if untaken:
                await self._forget([tx for tx, _ in untaken], [f for _, f in untaken])
        return self._results(jobs, results, existing, new_txs, new_job, outs, keep)

    async def _store(self, conn: asyncpg.Connection, records: list[repo.Record]) -> None:
        """One COPY, its own transaction: all the batch's rows or none."""
        if not records:
            return
        self.db_transactions += 1
        if self._metrics is not None:
            self._metrics.db_transactions.inc()
        try:
            await repo.insert_batch(conn, records)
        except (asyncpg.DataError, OverflowError, ValueError, TypeError) as exc:
            raise _Unstorable() from exc

    def _keep(
        self,
        jobs: Sequence[ScoreJob],
        txs: list[Transaction],
        job_of: list[int],
        existing: dict[str, repo.StoredDecision],
        results: list[list[DecisionOut] | BaseException | None],
    ) -> list[bool]:
        """Which new transactions to store: not stored already (a replay), and not in a
        request refused for a conflict (requests are all or nothing)."""
        refused: dict[int, list[int]] = {}
        for tx, j in zip(txs, job_of, strict=True):
            stored = existing.get(tx.transaction_id)
            if stored is not None and stored.content_hash != tx.content_hash:
                index = next(i for i, t in enumerate(jobs[j].payload.transactions) if t is tx)
                refused.setdefault(j, []).append(index)
        for j, indexes in refused.items():
            if len(jobs[j].payload.transactions) > 1:
                where = f" at index {', '.join(map(str, indexes))}"
                results[j] = ConflictError(
                    f"transaction_id already used with other content{where}", indexes=indexes
                )
            else:
                results[j] = ConflictError("transaction_id already used with other content")
        return [
            tx.transaction_id not in existing and results[j] is None
            for tx, j in zip(txs, job_of, strict=True)
        ]

    def _close(
        self,
        jobs: Sequence[ScoreJob],
        plan: list[tuple[int, Transaction]],
        results: list[list[DecisionOut] | BaseException | None],
    ) -> list[tuple[int, Transaction]]:
        """Refuse the jobs of the classes that fail closed while features are degraded."""
        closed = {
            j
            for j, job in enumerate(jobs)
            if results[j] is None and job.priority in self._fail_closed
        }
        for j in closed:
            results[j] = FeatureStoreUnavailableError(
                "online features unavailable (Redis down, or its histories being rebuilt);"
                f" {jobs[j].priority.label} requests are refused until they are back",
                retry_after_s=1.0,
            )
        return [(j, tx) for j, tx in plan if j not in closed]

    def _plan(
        self,
        jobs: Sequence[ScoreJob],
        existing: dict[str, repo.StoredDecision],
        results: list[list[DecisionOut] | BaseException | None],
    ) -> list[tuple[int, Transaction]]:
        """Which transactions are new; fills ``results`` with 409s for conflicting jobs."""
        seen: dict[str, bytes] = {}
        plan: list[tuple[int, Transaction]] = []
        for j, job in enumerate(jobs):
            mine: list[tuple[int, Transaction]] = []
            conflicts: list[int] = []
            for i, tx in enumerate(job.payload.transactions):
                stored = existing.get(tx.transaction_id)
                known_hash = (
                    stored.content_hash if stored is not None else seen.get(tx.transaction_id)
                )
                if known_hash is None:
                    mine.append((j, tx))
                elif known_hash != tx.content_hash:
                    conflicts.append(i)
            if conflicts:
                if len(job.payload.transactions) > 1:
                    where = f" at index {', '.join(map(str, conflicts))}"
                    results[j] = ConflictError(
                        f"transaction_id already used with other content{where}",
                        indexes=conflicts,
                    )
                else:
                    results[j] = ConflictError("transaction_id already used with other content")
                continue
            for _, tx in mine:
                seen[tx.transaction_id] = tx.content_hash
            plan.extend(mine)
        return plan

    def _decide(
        self,
        jobs: Sequence[ScoreJob],
        txs: list[Transaction],
        job_of: list[int],
        x: npt.NDArray[np.float64],
        started: float,
        *,
        degraded: bool = False,
        prepared: Prepared | None = None,
    ) -> tuple[list[repo.Record], list[DecisionOut]]:
        """Rows to store and answers to give, built together in one pass."""
        if not txs:
            return [], []
        scores, contributions, fallback = self._model.predict(x)
        d = decide(self._policy, scores, contributions, self._model.contribution_names, fallback)
        if degraded:
            for r in d.reasons:
                r.insert(0, C.REASON_FEATURES_DEGRADED)
        n = len(txs)
        rule_hits: list[list[str] | None] = [None] * n
        shadow_hits: list[list[str] | None] = [None] * n
        if self._rules is not None:
            judged = self._rules.judge(
                txs,
                x,
                prepared.entities if prepared is not None else {},
                d.decision,
                d.reasons,
                night_spent=prepared.night_spent if prepared is not None else None,
            )
            rule_hits, shadow_hits = judged.rule_hits, judged.shadow_hits
        shadow_scores, shadow_decisions, shadow_version = self._shadow_decide(x)
        processing_ms = round((self._now() - started) * 1000.0, 3)
        batch_size = sum(len(job.payload.transactions) for job in jobs)
        version = model_version(self._model)
        features = repo.encode_features(x)
        priority = [job.priority.label for job in jobs]
        queue_ms = [round(job.queue_s * 1000.0, 3) for job in jobs]
        records: list[repo.Record] = []
        outs: list[DecisionOut] = []
        for tx, score, decision, level, reasons, feats, j, s_score, s_decision, hits, s_hits in zip(
            txs,
            scores.tolist(),
            d.decision,
            d.risk_level,
            d.reasons,
            features,
            job_of,
            shadow_scores,
            shadow_decisions,
            rule_hits,
            shadow_hits,
            strict=True,
        ):
            records.append(
                (
                    tx.transaction_id,
                    tx.timestamp,
                    tx.utc_offset_s,
                    tx.amount_cents,
                    tx.currency,
                    tx.customer_ref,
                    tx.terminal_id,
                    tx.type,
                    tx.channel,
                    tx.device_ref,
                    tx.ip_ref,
                    repo.metadata_json(tx),
                    tx.content_hash,
                    decision,
                    score,
                    level,
                    reasons,
                    version,
                    feats,
                    priority[j],
                    queue_ms[j],
                    processing_ms,
                    batch_size,
                    s_score,
                    s_decision,
                    shadow_version,
                    tx.card_token,
                    tx.card_last4,
                    hits,
                    s_hits,
                )
            )
            outs.append(
                {
                    "transaction_id": tx.transaction_id,
                    "decision": decision,
                    "risk_score": score,
                    "risk_level": level,
                    "reasons": reasons,
                    "model_version": version,
                    "priority": priority[j],
                    "replayed": False,
                    "queue_ms": queue_ms[j],
                    "processing_ms": processing_ms,
                    "batch_size": batch_size,
                }
            )
        return records, outs

    def _shadow_decide(
        self, x: npt.NDArray[np.float64]
    ) -> tuple[list[float | None], list[str | None], str | None]:
        """The shadow model's scores and decisions for the batch (Nones without one).

        A failing shadow must never fail the champion's answer: it is logged
        and its columns stay empty for this batch.
        """
        n = x.shape[0]
        if self._shadow is None or self._shadow_policy is None:
            return [None] * n, [None] * n, None
        try:
            scores = self._shadow.predict(x).scores
        except Exception:
            log.exception("shadow model %s failed; stored without its score", self._shadow.name)
            return [None] * n, [None] * n, None
        policy = self._shadow_policy
        index = (scores >= policy.review_threshold).astype(np.int64) + (
            scores >= policy.decline_threshold
        )
        return (
            list(scores.tolist()),
            [C.DECISIONS[i] for i in index.tolist()],
            model_version(self._shadow),
        )

    def _results(
        self,
        jobs: Sequence[ScoreJob],
        results: list[list[DecisionOut] | BaseException | None],
        existing: dict[str, repo.StoredDecision],
        new_txs: list[Transaction],
        new_job: list[int],
        outs: list[DecisionOut],
        keep: list[bool],
    ) -> list[list[DecisionOut] | BaseException]:
        fresh = {
            tx.transaction_id: (out, j, k)
            for tx, out, j, k in zip(new_txs, outs, new_job, keep, strict=True)
        }
        answers: list[list[DecisionOut] | BaseException] = []
        for j, job in enumerate(jobs):
            done = results[j]
            if done is not None:
                answers.append(done)
                continue
            decisions: list[DecisionOut] = []
            failed: BaseException | None = None
            for tx in job.payload.transactions:
                stored = existing.get(tx.transaction_id)
                hit = fresh.get(tx.transaction_id)
                if stored is not None:
                    decisions.append(stored_out(stored))
                elif hit is not None and hit[2]:
                    decisions.append(hit[0] if hit[1] == j else {**hit[0], "replayed": True})
                else:
                    # The same id came in another request of this batch, which was
                    # refused: nothing to replay. The client may simply retry.
                    failed = StorageUnavailableError(
                        "a request of the same batch with this transaction_id was refused; retry",
                        retry_after_s=1.0,
                    )
                    break
            answers.append(failed if failed is not None else decisions)
        return answers

    async def _forget(self, txs: list[Transaction], flags: list[int]) -> None:
        try:
            await self._features.forget(txs, flags)
        except Exception:
            log.exception(
                "could not take %d uncommitted transactions back out of the feature store;"
                " run `sankofa features rebuild` if Redis stays inconsistent",
                len(txs),
            )


def _reap(task: asyncio.Task[Any]) -> None:
    """Stop a helper task the batch no longer needs; its outcome is read, never lost."""
    if task.done():
        if not task.cancelled():
            task.exception()
    else:
        task.cancel()
        task.add_done_callback(lambda t: t.cancelled() or t.exception())


def stored_out(s: repo.StoredDecision) -> DecisionOut:
    return {
        "transaction_id": s.transaction_id,
        "decision": s.decision,
        "risk_score": s.risk_score,
        "risk_level": s.risk_level,
        "reasons": s.reasons,
        "model_version": s.model_version,
        "priority": s.priority,
        "replayed": True,
        "queue_ms": round(s.queue_ms, 3),
        "processing_ms": round(s.processing_ms, 3),
        "batch_size": s.batch_size,
    }


_RECORD_REASONS: Final = repo.COLUMNS.index("reasons")
_RECORD_RULE_HITS: Final = repo.COLUMNS.index("rule_hits")
_RECORD_SHADOW_HITS: Final = repo.COLUMNS.index("shadow_rule_hits")


def _rule_counts(records: Iterable[repo.Record]) -> list[tuple[str, str, int, int]]:
    """Per rule, of the rows stored: (id, mode, rows matched, rows it decided). A
    row's active hits are ``id@version`` tags; the rule that decided it is its
    first reason (``RULE:<id>``), as ``RulesEngine.judge`` puts it there."""
    matched: dict[tuple[str, str], int] = {}
    decided: dict[tuple[str, str], int] = {}
    for r in records:
        hits, s_hits = r[_RECORD_RULE_HITS], r[_RECORD_SHADOW_HITS]
        if hits:
            first = r[_RECORD_REASONS][0] if r[_RECORD_REASONS] else ""
            for tag in hits:
                key = (tag.rpartition("@")[0], "active")
                matched[key] = matched.get(key, 0) + 1
                if first == RULE_REASON_PREFIX + key[0]:
                    decided[key] = decided.get(key, 0) + 1
        if s_hits:
            for tag in s_hits:
                key = (tag.rpartition("@")[0], "shadow")
                matched[key] = matched.get(key, 0) + 1
    return [(rid, mode, n, decided.get((rid, mode), 0)) for (rid, mode), n in matched.items()]
