"""Request bytes from the Fraud Detection Handbook's transactions, built before the timed phase.

Each transaction keeps its customer, terminal, amount and time from the data,
so the server's online features work on realistic histories. What changes:

* ``transaction_id`` is ``<run id>-<handbook id>`` (``...p<pass>`` on a second
  pass over the data), unique per run, so nothing is answered as a replay;
* ``timestamp`` is the naive local time with an explicit offset (``-03:00``);
* ``amount`` is a decimal string from exact cents; zero amounts are never
  selected (``plan.select_rows``), since the API refuses them.

JSON is written with f-strings, not a serialiser: every value is digits or a
validated run id, so nothing needs escaping, and it is several times cheaper
for the million payloads of a long run.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from sankofa.load.http import Target, build_request
from sankofa.queues.priority import PRIORITY_NAMES

_RUN_ID = re.compile(r"^[A-Za-z0-9._:-]{1,40}$")
_OFFSET = re.compile(r"^[+-](0\d|1[0-4]):[0-5]\d$")
FULL_DATA_NAME = "handbook-raw.csv.gz"
SLICE_NAME = "handbook-slice.csv.gz"


def default_input() -> Path | None:
    """The full published data beside the checkout, else the committed slice, else None.

    "Beside the checkout" is ``../shared/data`` from the repository root (or
    ``SANKOFA_SHARED_DATA``), as for the tests; it exists only in an editable
    install, where this file lives under ``src/sankofa/load``.
    """
    root = Path(__file__).resolve().parents[3]
    env = os.environ.get("SANKOFA_SHARED_DATA")
    shared = Path(env) if env else root.parent / "shared" / "data"
    for candidate in (shared / FULL_DATA_NAME, root / "tests" / "fixtures" / SLICE_NAME):
        if candidate.is_file():
            return candidate
    return None


@dataclass(frozen=True, slots=True)
class TxColumns:
    """The fields of the transactions one worker sends, in sending order.

    Only these columns travel to a worker process, not the whole data set.
    ``tx_datetime`` already includes the shift of later passes.
    """

    transaction_id: npt.NDArray[np.int64]
    tx_datetime: npt.NDArray[np.int64]
    customer_id: npt.NDArray[np.int64]
    terminal_id: npt.NDArray[np.int64]
    amount_cents: npt.NDArray[np.int64]
    passes: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return int(self.transaction_id.shape[0])

    def take(self, index: npt.NDArray[np.intp]) -> TxColumns:
        return TxColumns(
            self.transaction_id[index],
            self.tx_datetime[index],
            self.customer_id[index],
            self.terminal_id[index],
            self.amount_cents[index],
            self.passes[index],
        )


def check_run_id(run_id: str) -> str:
    if not _RUN_ID.match(run_id):
        raise ValueError(f"run id must be 1-40 characters of A-Z a-z 0-9 . _ : -, not {run_id!r}")
    return run_id


def check_utc_offset(offset: str) -> str:
    if not _OFFSET.match(offset):
        raise ValueError(f"UTC offset must look like -03:00, not {offset!r}")
    return offset


def transaction_bodies(
    cols: TxColumns, *, run_id: str, utc_offset: str, pix_every: int = 0
) -> list[bytes]:
    """One JSON object per transaction, as bytes, in order. The handbook's data
    has no payment type: every transaction is a card payment, except, with
    ``pix_every`` = k > 0, those whose id is a multiple of k, sent as PIX (so the
    night PIX limit's reads and locks are exercised)."""
    if pix_every < 0:
        raise ValueError("pix_every must be >= 0")
    check_run_id(run_id)
    check_utc_offset(utc_offset)
    if np.any(cols.amount_cents <= 0):
        raise ValueError("amounts must be > 0 (the API refuses 0)")
    stamps = np.datetime_as_string(cols.tx_datetime.astype("datetime64[s]"), unit="s").tolist()
    units, cents = np.divmod(cols.amount_cents, 100)
    out: list[bytes] = []
    append = out.append
    for tid, ts, u, c, cust, term, p in zip(
        cols.transaction_id.tolist(),
        stamps,
        units.tolist(),
        cents.tolist(),
        cols.customer_id.tolist(),
        cols.terminal_id.tolist(),
        cols.passes.tolist(),
        strict=True,
    ):
        ident = f"{run_id}-{tid}" if p == 0 else f"{run_id}-{tid}p{p}"
        kind = "pix" if pix_every and tid % pix_every == 0 else "card"
        append(
            f'{{"transaction_id":"{ident}","timestamp":"{ts}{utc_offset}",'
            f'"amount":"{u}.{c:02d}","customer_id":"{cust}","terminal_id":"{term}",'
            f'"type":"{kind}"}}'.encode()
        )
    return out


def request_payloads(
    bodies: Sequence[bytes],
    priorities: npt.NDArray[np.int8],
    *,
    target: Target,
    path: str,
    batch: int,
    extra_headers: Sequence[tuple[str, str]] = (),
) -> list[bytes]:
    """Complete HTTP requests: ``batch`` transactions each (batch > 1: ``{"transactions": [...]}``)."""
    if batch < 1:
        raise ValueError("batch must be >= 1")
    if len(bodies) != len(priorities) * batch:
        raise ValueError("need exactly batch transactions per request")
    heads = [
        (("Content-Type", "application/json"), ("X-Priority", name), *extra_headers)
        for name in PRIORITY_NAMES
    ]
    out: list[bytes] = []
    for j, p in enumerate(priorities.tolist()):
        if batch == 1:
            body = bodies[j]
        else:
            body = b'{"transactions":[' + b",".join(bodies[j * batch : (j + 1) * batch]) + b"]}"
        out.append(build_request(target, path, body, heads[p]))
    return out
