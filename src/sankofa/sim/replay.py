"""``sankofa replay``: stream a transactions file through a running service.

Ordering, so that the service's online features equal what a stream in time
order gives (and, on the handbook's data, the published features):

* Customers are split into ``--concurrency`` lanes (customer id modulo the
  number of lanes). Each lane sends its own transactions in time order, one
  request of up to ``--batch`` transactions at a time, and never sends a
  customer's next transaction before the previous one is answered.
* Labels: each transaction's label is posted once simulated time (the latest
  time a lane is about to send) passes its time plus ``--label-delay-days``,
  and only after that transaction was answered. A lane does not send a request
  ending at time T until every label due by T is posted, so terminal risk sees
  exactly the labels that would be known by then.

503s are retried (after Retry-After, up to 5 times), since shedding is the
service asking to come back; other failures are counted and the transaction's
label is not posted. The report gives counts, errors by status, throughput,
latency per priority class, decisions by outcome, and AUC ROC, Average
Precision and Card Precision@100 of the live scores against the file's labels.

``--protocol split`` adds the handbook protocol's own figures computed from
the live scores: the same test days, the same removal of known compromised
cards and the same CP@100 rules as ``sankofa evaluate`` (both use
``evaluation.protocol``), so the two can be compared figure for figure. The
features need 37 days of history before the first test day and the removal
needs the training week: replaying from 2018-07-01 to 2018-08-14 suffices.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import orjson

from sankofa.evaluation.metrics import average_precision, card_precision_top_k, roc_auc
from sankofa.evaluation.protocol import day_of, single_split
from sankofa.progress import Progress
from sankofa.queues.priority import PRIORITY_NAMES
from sankofa.sim.data import RawData, load_raw

MAX_RETRIES = 5
#: A request spans at most this much event time; lanes stay within MAX_SKEW_S of
#: each other. Together well inside the service's out-of-order grace (2 days).
MAX_SPAN_S = 6 * 3600
MAX_SKEW_S = 12 * 3600
#: Refused requests listed in the report, with the service's explanation.
MAX_REFUSED_LISTED = 100
LABEL_CHUNK = 1000


def parse_mix(text: str) -> dict[str, float]:
    mix: dict[str, float] = {}
    for part in text.split(","):
        name, sep, share = part.partition("=")
        name = name.strip().lower()
        if not sep or name not in PRIORITY_NAMES:
            raise ValueError(
                f"--priority-mix: {part!r} is not CLASS=SHARE with CLASS in {PRIORITY_NAMES}"
            )
        mix[name] = float(share)
    if not mix or any(v < 0 for v in mix.values()) or sum(mix.values()) <= 0:
        raise ValueError("--priority-mix: shares must be >= 0 and not all 0")
    total = sum(mix.values())
    return {k: v / total for k, v in mix.items()}


def parse_offset(text: str) -> int:
    if len(text) != 6 or text[0] not in "+-" or text[3] != ":":
        raise ValueError(f"--offset must look like -03:00, not {text!r}")
    seconds = int(text[1:3]) * 3600 + int(text[4:6]) * 60
    return -seconds if text[0] == "-" else seconds


@dataclass
class Outcome:
    status: Counter[int] = field(default_factory=Counter)
    retried: Counter[int] = field(default_factory=Counter)
    decisions: Counter[str] = field(default_factory=Counter)
    latency_ms: dict[str, list[float]] = field(default_factory=dict)
    accepted: int = 0
    sent: int = 0
    requests: int = 0
    labels_posted: int = 0
    label_errors: Counter[int] = field(default_factory=Counter)
    transport_errors: int = 0
    refused: list[dict[str, Any]] = field(default_factory=list)
    refused_tx: Counter[int] = field(default_factory=Counter)
    model_versions: Counter[str] = field(default_factory=Counter)


class Replay:
    def __init__(
        self,
        raw: RawData,
        *,
        url: str,
        concurrency: int,
        batch: int,
        mix: dict[str, float],
        label_delay_s: float,
        offset_s: int,
        rate: float | None,
        id_prefix: str,
        seed: int,
        progress: bool,
    ) -> None:
        self.raw = raw
        self.n = len(raw)
        self.url = url.rstrip("/")
        self.concurrency = concurrency
        self.batch = batch
        self.mix_names = list(mix)
        self.mix_p = np.asarray([mix[k] for k in self.mix_names])
        self.rng = random.Random(seed)
        self.label_delay_s = label_delay_s
        self.offset_s = offset_s
        self.rate = rate
        self.id_prefix = id_prefix
        # Event time (true UTC instant) of each row: the naive local time minus its offset.
        self.t = raw.tx_datetime.astype(np.int64) - offset_s
        self.scores = np.full(self.n, np.nan)
        self.answered = np.zeros(self.n, dtype=bool)
        self.stored = np.zeros(self.n, dtype=bool)
        self.out = Outcome()
        self.bar = Progress(self.n, "replay", unit="tx", enabled=progress)
        # Labels: rows in time order; posted_upto = all labels due at or before it are posted.
        self.label_next = 0
        self.posted_upto = -np.inf
        self.wanted_time = -np.inf
        self.lane_next_time = [np.inf] * concurrency
        self.progress_event = asyncio.Event()
        self.labels_event = asyncio.Event()
        self.lanes_event = asyncio.Event()
        self.done = False
        self._pace_next = 0.0
        self._order: npt.NDArray[np.intp] = np.arange(self.n)

    # -- payloads ------------------------------------------------------------------

    def _tx(self, i: int) -> dict[str, Any]:
        local = datetime.fromtimestamp(int(self.raw.tx_datetime[i]), UTC).replace(tzinfo=None)
        c = int(self.raw.amount_cents[i])
        return {
            "transaction_id": f"{self.id_prefix}{int(self.raw.transaction_id[i])}",
            "timestamp": local.strftime("%Y-%m-%dT%H:%M:%S") + self._offset_text,
            "amount": f"{c // 100}.{c % 100:02d}",
            "customer_id": str(int(self.raw.customer_id[i])),
            "terminal_id": str(int(self.raw.terminal_id[i])),
            "type": "card",
        }

    @property
    def _offset_text(self) -> str:
        s = self.offset_s
        sign = "-" if s < 0 else "+"
        s = abs(s)
        return f"{sign}{s // 3600:02d}:{(s % 3600) // 60:02d}"

    # -- lanes ---------------------------------------------------------------------

    async def run(self, client: httpx.AsyncClient) -> None:
        lanes = [
            np.flatnonzero(self.raw.customer_id % self.concurrency == k)
            for k in range(self.concurrency)
        ]
        for k, rows in enumerate(lanes):
            self.lane_next_time[k] = float(self.t[rows[0]]) if rows.size else np.inf
        self._pace_next = time.monotonic()
        self._order = np.argsort(self.t, kind="stable")
        self.posted_upto = self._due(0) - 1e-6
        poster = asyncio.create_task(self._post_labels(client))
        try:
            await asyncio.gather(*(self._lane(client, k, rows) for k, rows in enumerate(lanes)))
        finally:
            self.done = True
            self.progress_event.set()
            await poster
        self.bar.close()

    def _requests(self, rows: npt.NDArray[np.intp]) -> list[npt.NDArray[np.intp]]:
        """A lane's rows cut into requests of up to ``batch`` rows spanning at most MAX_SPAN_S."""
        out: list[npt.NDArray[np.intp]] = []
        start = 0
        t = self.t[rows]
        while start < rows.size:
            end = min(start + self.batch, rows.size)
            end = start + max(
                1, int(np.searchsorted(t[start:end], t[start] + MAX_SPAN_S, side="right"))
            )
            out.append(rows[start:end])
            start = end
        return out

    async def _lane(self, client: httpx.AsyncClient, k: int, rows: npt.NDArray[np.intp]) -> None:
        for chunk in self._requests(rows):
            first_t, last_t = float(self.t[chunk[0]]), float(self.t[chunk[-1]])
            await self._wait_others(k, first_t)
            await self._wait_labels(last_t)
            await self._pace(len(chunk))
            await self._send(client, chunk)
            self.answered[chunk] = True
            after = int(np.searchsorted(rows, chunk[-1], side="right"))
            self.lane_next_time[k] = float(self.t[rows[after]]) if after < rows.size else np.inf
            self.progress_event.set()
            self.lanes_event.set()
            self.bar.advance(len(chunk))

    async def _wait_others(self, k: int, first_t: float) -> None:
        """Keep lanes within MAX_SKEW_S of each other in event time.

        The service keeps each customer's and terminal's history for a grace
        period past its longest window and tolerates transactions that much
        out of order; lanes racing days apart would exceed it. The lane with
        the earliest next transaction never waits, so lanes cannot deadlock.
        """
        while True:
            others = min((t for j, t in enumerate(self.lane_next_time) if j != k), default=np.inf)
            if others >= first_t - MAX_SKEW_S:
                return
            self.lanes_event.clear()
            await self.lanes_event.wait()

    async def _pace(self, n: int) -> None:
        if self.rate is None:
            return
        now = time.monotonic()
        send_at = self._pace_next
        self._pace_next = max(self._pace_next, now) + n / self.rate
        if send_at > now:
            await asyncio.sleep(send_at - now)

    async def _send(self, client: httpx.AsyncClient, chunk: npt.NDArray[np.intp]) -> None:
        """Send one request; a batch refused for some items is sent again without them."""
        priority = self.rng.choices(self.mix_names, weights=self.mix_p.tolist())[0]
        self.out.sent += len(chunk)
        while chunk.size:
            resp = await self._post_transactions(client, chunk, priority)
            if resp is None:
                self.out.status[-1] += 1  # gave up after transport errors
                return
            if resp.status_code == 200:
                data = orjson.loads(resp.content)
                results = [data] if self.batch == 1 else data["results"]
                for i, r in zip(chunk, results, strict=True):
                    self.scores[i] = r["risk_score"]
                    self.out.decisions[r["decision"]] += 1
                    self.out.model_versions[r["model_version"]] += 1
                self.stored[chunk] = True
                self.out.accepted += len(chunk)
                return
            detail = _problem_detail(resp)
            bad = [
                i for i in detail.get("indexes", []) if isinstance(i, int) and 0 <= i < chunk.size
            ]
            if resp.status_code not in (409, 422) or self.batch == 1 or not bad:
                bad = list(range(chunk.size))
            self.out.refused_tx[resp.status_code] += len(bad)
            if len(self.out.refused) < MAX_REFUSED_LISTED:
                ids = [f"{self.id_prefix}{int(self.raw.transaction_id[chunk[i]])}" for i in bad]
                self.out.refused.append(
                    {"status": resp.status_code, "transaction_ids": ids, **detail}
                )
            # A request is all or nothing: send the rest again without the refused items.
            chunk = np.delete(chunk, bad)

    async def _post_transactions(
        self, client: httpx.AsyncClient, chunk: npt.NDArray[np.intp], priority: str
    ) -> httpx.Response | None:
        txs = [self._tx(int(i)) for i in chunk]
        if self.batch == 1:
            path, body = "/v1/transactions", orjson.dumps(txs[0])
        else:
            path, body = "/v1/transactions/batch", orjson.dumps({"transactions": txs})
        headers = {"content-type": "application/json", "x-priority": priority}
        for attempt in range(MAX_RETRIES + 1):
            t0 = time.perf_counter()
            try:
                resp = await client.post(path, content=body, headers=headers)
            except httpx.HTTPError:
                self.out.transport_errors += 1
                await asyncio.sleep(0.5)
                continue
            elapsed_ms = (time.perf_counter() - t0) * 1000.0
            self.out.requests += 1
            if resp.status_code == 503 and attempt < MAX_RETRIES:
                self.out.retried[503] += 1
                await asyncio.sleep(min(float(resp.headers.get("retry-after", "1")), 5.0))
                continue
            self.out.status[resp.status_code] += 1
            self.out.latency_ms.setdefault(priority, []).append(elapsed_ms)
            return resp
        return None

    # -- labels --------------------------------------------------------------------

    async def _wait_labels(self, until_t: float) -> None:
        """Before sending a request ending at until_t: labels due by then must be posted."""
        if self.wanted_time < until_t:
            self.wanted_time = until_t
            self.progress_event.set()
        while self.posted_upto < until_t:
            self.labels_event.clear()
            await self.labels_event.wait()

    def _due(self, k: int) -> float:
        """When the k-th label in time order is due (inf past the end)."""
        if k >= self.n:
            return np.inf
        return float(self.t[self._order[k]] + self.label_delay_s)

    async def _post_labels(self, client: httpx.AsyncClient) -> None:
        """Post labels in time order, each once due and once its transaction is answered."""
        while True:
            self.progress_event.clear()
            while True:
                target = self.wanted_time
                watermark = min(self.lane_next_time)  # every row before this time is answered
                rows: list[int] = []
                while self.label_next < self.n and len(rows) < LABEL_CHUNK:
                    i = int(self._order[self.label_next])
                    if self._due(self.label_next) > target or self.t[i] >= watermark:
                        break
                    rows.append(i)
                    self.label_next += 1
                if not rows:
                    break
                await self._post(client, rows)
                # Invariant: every label due before the next one's due time is posted.
                self.posted_upto = self._due(self.label_next) - 1e-6
                self.labels_event.set()
            if self.label_next >= self.n:
                self.posted_upto = np.inf
                self.labels_event.set()
                return
            if self.done:
                return
            await self.progress_event.wait()

    async def _post(self, client: httpx.AsyncClient, rows: list[int]) -> None:
        labels = [
            {
                "transaction_id": f"{self.id_prefix}{int(self.raw.transaction_id[i])}",
                "fraud": bool(self.raw.fraud[i]),
                "labelled_at": _iso(self.t[i] + self.label_delay_s),
            }
            for i in rows
            if self.stored[i]
        ]
        if not labels:
            return
        for _attempt in range(MAX_RETRIES + 1):
            try:
                resp = await client.post(
                    "/v1/labels",
                    content=orjson.dumps({"labels": labels}),
                    headers={"content-type": "application/json"},
                )
            except httpx.HTTPError:
                await asyncio.sleep(0.5)
                continue
            if resp.status_code == 503:
                await asyncio.sleep(min(float(resp.headers.get("retry-after", "1")), 5.0))
                continue
            if resp.status_code == 200:
                self.out.labels_posted += len(labels)
            else:
                self.out.label_errors[resp.status_code] += 1
                print(
                    f"replay: labels refused: {resp.status_code} {resp.text[:300]}", file=sys.stderr
                )
            return
        self.out.label_errors[-1] += 1

    # -- report --------------------------------------------------------------------

    def report(self, elapsed_s: float) -> dict[str, Any]:
        o = self.out
        lat = {
            p: _percentiles(v)
            for p, v in sorted(o.latency_ms.items(), key=lambda kv: PRIORITY_NAMES.index(kv[0]))
        }
        all_lat = [x for v in o.latency_ms.values() for x in v]
        rep: dict[str, Any] = {
            "sent": o.sent,
            "accepted": o.accepted,
            "requests": o.requests,
            "status": {str(k): v for k, v in sorted(o.status.items())},
            "errors_by_status": {str(k): v for k, v in sorted(o.status.items()) if k != 200},
            "retried": {str(k): v for k, v in o.retried.items()},
            "transport_errors": o.transport_errors,
            "refused_transactions": {str(k): v for k, v in sorted(o.refused_tx.items())},
            "refused": o.refused,
            "labels_posted": o.labels_posted,
            "label_errors": {str(k): v for k, v in o.label_errors.items()},
            "elapsed_s": round(elapsed_s, 3),
            "throughput_tx_per_s": round(o.accepted / elapsed_s, 1) if elapsed_s > 0 else None,
            "latency_ms": {**lat, "all": _percentiles(all_lat)},
            "decisions": dict(o.decisions),
            "model_versions": dict(o.model_versions),
            "batch": self.batch,
            "concurrency": self.concurrency,
        }
        ok = self.stored & np.isfinite(self.scores)
        y = self.raw.fraud[ok]
        s = self.scores[ok]
        quality: dict[str, Any] = {"scored": int(ok.sum()), "frauds": int(y.sum())}
        if y.any() and not y.all():
            quality["auc_roc"] = round(roc_auc(y, s), 4)
            quality["average_precision"] = round(average_precision(y, s), 4)
            cp, _per_day = card_precision_top_k(
                self.raw.tx_time_days[ok], self.raw.customer_id[ok], y, s, k=100
            )
            quality["card_precision_at_100"] = round(cp, 4)
        rep["quality"] = quality
        return rep


def split_not_covered(raw: RawData) -> str | None:
    """Why the replayed rows cannot give the split's figures, or None if they can."""
    days = day_of(raw.tx_datetime)
    split = single_split(day=days, customer=raw.customer_id, fraud=raw.fraud)
    train_first = (split.train_start - date(1970, 1, 1)).days
    test_last = (split.test_start - date(1970, 1, 1)).days + split.test_days - 1
    if len(raw) == 0 or int(days.min()) > train_first or int(days.max()) < test_last:
        return (
            f"--protocol split needs the replay to cover {split.train_start} to"
            f" {split.test_start} + {split.test_days - 1} days (and 37 days of history before"
            " the first test day for its features)"
        )
    return None


def protocol_quality(raw: RawData, scores: npt.NDArray[np.float64]) -> dict[str, Any]:
    """The handbook's single-split figures from live scores (``nan``: not stored).

    The test set is the protocol's (``evaluation.protocol.single_split`` on the
    replayed rows); rows of it that were refused have no live score and are
    counted apart, not scored.
    """
    problem = split_not_covered(raw)
    if problem is not None:
        raise ValueError(problem)
    days = day_of(raw.tx_datetime)
    split = single_split(day=days, customer=raw.customer_id, fraud=raw.fraud)
    test = split.test
    live = scores[test]
    ok = np.isfinite(live)
    y = raw.fraud[test][ok]
    s = live[ok]
    cp, per_day = card_precision_top_k(days[test][ok], raw.customer_id[test][ok], y, s)
    return {
        "protocol": "split",
        "train": {"start": split.train_start.isoformat(), "days": split.train_days},
        "test": {
            "start": split.test_start.isoformat(),
            "days": split.test_days,
            "transactions": int(test.shape[0]),
            "frauds": int(raw.fraud[test].sum()),
            "scored": int(ok.sum()),
            "not_stored": int((~ok).sum()),
        },
        "metrics": {
            "auc_roc": roc_auc(y, s),
            "average_precision": average_precision(y, s),
            "card_precision_at_100": cp,
            "card_precision_per_day": per_day,
            "brier": float(np.mean((s - y) ** 2)),
        },
    }


def _problem_detail(resp: httpx.Response) -> dict[str, Any]:
    try:
        body = resp.json()
    except ValueError:
        return {"detail": resp.text[:200]}
    if not isinstance(body, dict):
        return {}
    return {k: body[k] for k in ("detail", "errors", "indexes") if k in body}


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(float(epoch_s), UTC).isoformat()


def _percentiles(values: list[float]) -> dict[str, float | int]:
    if not values:
        return {"n": 0}
    a = np.asarray(values)
    return {
        "n": int(a.size),
        "p50": round(float(np.percentile(a, 50)), 3),
        "p95": round(float(np.percentile(a, 95)), 3),
        "p99": round(float(np.percentile(a, 99)), 3),
        "max": round(float(a.max()), 3),
    }


def select_days(raw: RawData, date_from: date | None, date_to: date | None) -> RawData:
    day = raw.tx_datetime // 86_400
    mask = np.ones(len(raw), dtype=bool)
    epoch = date(1970, 1, 1)
    if date_from is not None:
        mask &= day >= (date_from - epoch).days
    if date_to is not None:
        mask &= day <= (date_to - epoch).days
    return raw.take(mask)


def print_report(rep: dict[str, Any]) -> None:
    print(
        f"sent {rep['sent']:,} transactions in {rep['requests']:,} requests; accepted {rep['accepted']:,}"
    )
    print(
        f"status: {rep['status']}  retried: {rep['retried']}  transport errors: {rep['transport_errors']}"
    )
    print(f"labels posted: {rep['labels_posted']:,}  label errors: {rep['label_errors']}")
    if rep["refused_transactions"]:
        print(f"transactions refused: {rep['refused_transactions']}")
    for r in rep["refused"][:5]:
        print(f"  refused ({r['status']}): {r['transaction_ids'][:3]}: {r.get('detail', '')}")
    print(
        f"elapsed {rep['elapsed_s']:.1f} s, throughput {rep['throughput_tx_per_s']} tx/s (batch {rep['batch']}, concurrency {rep['concurrency']})"
    )
    print("latency per request (ms):")
    for p, v in rep["latency_ms"].items():
        if v.get("n"):
            print(
                f"  {p:<9} n={v['n']:<8} p50={v['p50']:<9} p95={v['p95']:<9} p99={v['p99']:<9} max={v['max']}"
            )
    print(f"decisions: {rep['decisions']}  model: {rep.get('model_versions')}")
    q = rep["quality"]
    if "auc_roc" in q:
        print(
            f"quality of live scores over {q['scored']:,} transactions ({q['frauds']:,} frauds):"
            f" AUC ROC {q['auc_roc']}, Average Precision {q['average_precision']},"
            f" Card Precision@100 {q['card_precision_at_100']}"
        )
    proto = rep.get("protocol")
    if proto is not None:
        m, t = proto["metrics"], proto["test"]
        print(
            f"{proto['protocol']} protocol, live scores of its test set"
            f" ({t['start']}, {t['days']} days: {t['scored']:,} of {t['transactions']:,} scored,"
            f" {t['frauds']:,} frauds): AUC ROC {m['auc_roc']:.4f}, AP"
            f" {m['average_precision']:.4f}, CP@100 {m['card_precision_at_100']:.4f},"
            f" Brier {m['brier']:.5f}"
        )


def run_replay(args: argparse.Namespace) -> int:
    from sankofa.auth.client_auth import BearerAuth, credentials_from

    try:
        mix = parse_mix(args.priority_mix)
        offset_s = parse_offset(args.offset)
        creds = credentials_from(args)
    except ValueError as exc:
        print(f"sankofa replay: {exc}", file=sys.stderr)
        return 2
    print(f"loading {args.input} ...", file=sys.stderr)
    raw = select_days(load_raw(args.input), args.date_from, args.date_to)
    if len(raw) == 0:
        print("sankofa replay: no transactions in that date range", file=sys.stderr)
        return 2
    if getattr(args, "protocol", None) == "split":
        problem = split_not_covered(raw)
        if problem is not None:
            print(f"sankofa replay: {problem}", file=sys.stderr)
            return 2
    replay = Replay(
        raw,
        url=args.url,
        concurrency=args.concurrency,
        batch=args.batch,
        mix=mix,
        label_delay_s=args.label_delay_days * 86_400,
        offset_s=offset_s,
        rate=args.rate,
        id_prefix=args.id_prefix,
        seed=args.seed,
        progress=not args.no_progress,
    )

    async def go() -> float:
        limits = httpx.Limits(
            max_connections=args.concurrency + 2, max_keepalive_connections=args.concurrency + 2
        )
        # A token from the flags or SANKOFA_CLIENT_*, renewed before it expires; none
        # for a service in development mode.
        auth = None if creds.empty else BearerAuth(replay.url, creds)
        async with httpx.AsyncClient(
            base_url=replay.url, limits=limits, timeout=60.0, auth=auth
        ) as client:
            t0 = time.perf_counter()
            await replay.run(client)
            return time.perf_counter() - t0

    elapsed = asyncio.run(go())
    rep = replay.report(elapsed)
    rep["input"] = str(args.input)
    rep["from"] = str(args.date_from) if args.date_from else None
    rep["to"] = str(args.date_to) if args.date_to else None
    rep["finished_at"] = datetime.now(UTC).isoformat()
    if getattr(args, "protocol", None) == "split":
        try:
            rep["protocol"] = protocol_quality(raw, np.where(replay.stored, replay.scores, np.nan))
        except ValueError as exc:
            print(f"sankofa replay: {exc}", file=sys.stderr)
    print_report(rep)
    if args.report:
        Path(args.report).write_bytes(orjson.dumps(rep, option=orjson.OPT_INDENT_2))
    # Refusals (4xx) are the data's problem and are listed in the report; a
    # server error or a request that never got an answer is the service's.
    # So is a refused token (401/403): nothing was scored.
    failed = any(
        int(k) >= 500 or int(k) < 0 or int(k) in (401, 403) for k in rep["errors_by_status"]
    )
    return 1 if failed else 0
