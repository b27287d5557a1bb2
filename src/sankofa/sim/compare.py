"""``sankofa features compare``: the stored online features against the published ones.

After a replay of the handbook's data, every decision row holds the feature
vector the service computed online. This compares them, value by value, with
``handbook-features.csv.gz`` and explains each difference it can:

* a transaction the API refused (the published data holds 42 amounts of 0.00,
  refused by contract since amount must be > 0) is missing from the windows
  of the rows that follow it: rows whose window held one are counted apart;
* two transactions of one customer in the same second may be stored in either
  order (the handbook's own sort leaves such ties in no particular order), so
  each sees the other or not: their customer features are counted apart;
* rows never stored (refused, or outside the replayed dates) are not compared.

Whatever remains unexplained is a real mismatch, listed.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import numpy.typing as npt
import orjson

from sankofa.engine.feature_names import DAY_S, FEATURE_NAMES, LABEL_DELAY_DAYS
from sankofa.sim.data import PUBLISHED_FEATURE_COLUMNS, RawData, load_features, load_raw
from sankofa.store.repository import FEATURE_DTYPE

_FETCH_ROWS = 50_000


@dataclass
class Comparison:
    rows_published: int
    rows_stored: int
    values_compared: int = 0
    values_equal: int = 0
    values_explained: int = 0
    values_ties: int = 0
    rows_differing: int = 0
    rows_explained: int = 0
    rows_ties: int = 0
    per_feature: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)

    @property
    def values_unexplained(self) -> int:
        return self.values_compared - self.values_equal - self.values_explained - self.values_ties

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows_published": self.rows_published,
            "rows_stored": self.rows_stored,
            "values_compared": self.values_compared,
            "values_equal": self.values_equal,
            "values_explained_by_refused_transactions": self.values_explained,
            "values_explained_by_same_second_ties": self.values_ties,
            "values_unexplained": self.values_unexplained,
            "rows_differing": self.rows_differing,
            "rows_explained_by_refused_transactions": self.rows_explained,
            "rows_explained_by_same_second_ties": self.rows_ties,
            "unexplained_per_feature": self.per_feature,
            "examples": self.examples,
        }


def refused_reach(raw: RawData, stored: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    """(n, 14) mask: the published value's window held a transaction that was not stored."""
    n = len(raw)
    reach = np.zeros((n, len(PUBLISHED_FEATURE_COLUMNS)), dtype=bool)
    t = raw.tx_datetime
    delay = LABEL_DELAY_DAYS * DAY_S
    for z in np.flatnonzero(~stored):
        for j, name in enumerate(PUBLISHED_FEATURE_COLUMNS):
            if not ("_NB_TX_" in name or "_AVG_" in name or "_RISK_" in name):
                continue
            w = int(name.split("_")[-2].removesuffix("DAY")) * DAY_S
            dt = t - t[z]
            if name.startswith("CUSTOMER_ID"):
                hit = (raw.customer_id == raw.customer_id[z]) & (dt >= 0) & (dt < w)
            else:
                hit = (raw.terminal_id == raw.terminal_id[z]) & (dt >= delay) & (dt < delay + w)
            reach[hit, j] = True
    return reach


def same_second_ties(raw: RawData) -> npt.NDArray[np.bool_]:
    """(n, 14) mask: customer features of rows sharing their second with another row of that customer."""
    key = raw.customer_id.astype(np.int64) * (1 << 34) + raw.tx_datetime.astype(np.int64)
    _, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    tied = counts[inverse] > 1
    mask = np.zeros((len(raw), len(PUBLISHED_FEATURE_COLUMNS)), dtype=bool)
    for j, name in enumerate(PUBLISHED_FEATURE_COLUMNS):
        if name.startswith("CUSTOMER_ID"):
            mask[:, j] = tied
    return mask


def compare(
    raw: RawData,
    published_ids: npt.NDArray[np.int64],
    published: npt.NDArray[np.float64],
    stored: dict[int, npt.NDArray[np.float64]],
    *,
    rtol: float = 1e-9,
    max_examples: int = 20,
) -> Comparison:
    """Compare every non-empty published value of rows that were stored."""
    if not np.array_equal(published_ids, raw.transaction_id):
        raise ValueError("the features file and the raw file list different transactions")
    n = len(raw)
    have = np.full((n, len(PUBLISHED_FEATURE_COLUMNS)), np.nan)
    was_stored = np.zeros(n, dtype=bool)
    cols = [FEATURE_NAMES.index(c) for c in PUBLISHED_FEATURE_COLUMNS]
    for k, tid in enumerate(raw.transaction_id.tolist()):
        vec = stored.get(tid)
        if vec is not None:
            have[k] = vec[cols]
            was_stored[k] = True
    # Rows outside the replayed range are not "refused": only rows inside it count as missing.
    replayed = np.zeros(n, dtype=bool)
    if was_stored.any():
        first, last = np.flatnonzero(was_stored)[[0, -1]]
        replayed[first : last + 1] = True
    missing = replayed & ~was_stored
    result = Comparison(rows_published=n, rows_stored=int(was_stored.sum()))
    mask = was_stored[:, None] & ~np.isnan(published)
    equal = np.isclose(have, published, rtol=rtol, atol=rtol) & mask
    differ = mask & ~equal
    explained = np.zeros_like(differ)
    if missing.any() and differ.any():
        explained = differ & refused_reach(raw, ~missing)
    ties = differ & ~explained & same_second_ties(raw)
    unexplained = differ & ~explained & ~ties
    result.values_compared = int(mask.sum())
    result.values_equal = int(equal.sum())
    result.values_explained = int(explained.sum())
    result.rows_differing = int(differ.any(axis=1).sum())
    result.values_ties = int(ties.sum())
    result.rows_ties = int((ties.any(axis=1) & ~unexplained.any(axis=1)).sum())
    result.rows_explained = int(
        (differ.any(axis=1) & ~unexplained.any(axis=1) & ~ties.any(axis=1)).sum()
    )
    for j, name in enumerate(PUBLISHED_FEATURE_COLUMNS):
        c = int(unexplained[:, j].sum())
        if c:
            result.per_feature[name] = c
    for k, j in zip(*np.nonzero(unexplained), strict=True):
        if len(result.examples) >= max_examples:
            break
        result.examples.append(
            f"{int(raw.transaction_id[k])} {PUBLISHED_FEATURE_COLUMNS[j]}:"
            f" stored {float(have[k, j])!r}, published {float(published[k, j])!r}"
        )
    return result


async def fetch_stored(
    database_url: str, id_prefix: str = ""
) -> dict[int, npt.NDArray[np.float64]]:
    """transaction id (int, prefix removed) -> stored feature vector, read in chunks."""
    out: dict[int, npt.NDArray[np.float64]] = {}
    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            cur = await conn.cursor(
                "SELECT transaction_id, features FROM transactions WHERE starts_with(transaction_id, $1)",
                id_prefix,
            )
            while True:
                rows = await cur.fetch(_FETCH_ROWS)
                if not rows:
                    break
                for r in rows:
                    tail = r["transaction_id"][len(id_prefix) :]
                    if tail.isdigit():
                        out[int(tail)] = np.frombuffer(r["features"], dtype=FEATURE_DTYPE).astype(
                            np.float64
                        )
    finally:
        await conn.close()
    return out


def run_compare(args: argparse.Namespace) -> int:
    from sankofa.settings import Settings

    url = Settings().database_url
    if not url:
        print("sankofa features compare: set SANKOFA_DATABASE_URL", file=sys.stderr)
        return 2
    print(f"loading {args.raw} and {args.published} ...", file=sys.stderr)
    raw = load_raw(args.raw)
    ids, published = load_features(args.published)
    print("reading stored features ...", file=sys.stderr)
    stored = asyncio.run(fetch_stored(url, args.id_prefix))
    result = compare(raw, ids, published, stored)
    rep = result.as_dict()
    print(
        f"rows published {rep['rows_published']:,}, stored {rep['rows_stored']:,};"
        f" values compared {rep['values_compared']:,}: equal {rep['values_equal']:,},"
        f" differing because a refused transaction was in the window"
        f" {rep['values_explained_by_refused_transactions']:,}"
        f" (rows {rep['rows_explained_by_refused_transactions']:,}),"
        f" differing because of same-second ties of one customer"
        f" {rep['values_explained_by_same_second_ties']:,} (rows {rep['rows_explained_by_same_second_ties']:,}),"
        f" unexplained {rep['values_unexplained']:,}"
    )
    for e in rep["examples"]:
        print(f"  {e}")
    if args.report:
        Path(args.report).write_bytes(orjson.dumps(rep, option=orjson.OPT_INDENT_2))
    return 0 if result.values_unexplained == 0 else 1
