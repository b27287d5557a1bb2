"""The Fraud Detection Handbook's transaction simulator, reproduced draw for draw.

Sankofa measures itself against the Handbook's published data, so the simulator
must give back exactly the published transactions, not merely similar ones.
That pins down every random draw: the Handbook draws from numpy's *legacy*
global generator and from the standard library's ``random``, and the order of
those draws (handbook-spec.md section 1) is part of the data. The draws that
depend on each other stay in plain Python loops in that order; everything that
does not (profile tables, customer/terminal distances, the fraud scenarios) is
vectorised.

Both global generators are reseeded many times while simulating; their previous
states are saved and restored, so calling :func:`simulate` does not disturb
the caller's own randomness.

The one thing a faithful implementation may not reproduce is the order of
transactions that fall on the same second: ``TRANSACTION_ID`` is the rank after
an (unstable) sort by time. We sort with numpy's ``quicksort`` on a
``datetime64`` array, the plain introsort the Handbook's pandas call ran, over
the same customer-major input order. On the published data that gives back
every TRANSACTION_ID; a stable sort, or numpy's SIMD quicksort on int64, moves
about 119,000 ids within their same-second groups (the tuples stay equal).
"""

from __future__ import annotations

import datetime
import gzip
import random
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import numpy.typing as npt

from sankofa.sim.data import RAW_COLUMNS

__all__ = [
    "COLUMNS",
    "Columns",
    "SimulationSummary",
    "read_csv_gz",
    "simulate",
    "simulate_to_csv",
    "summarize",
    "write_csv_gz",
]

#: Column order of the published raw data (and of every dict returned here).
COLUMNS: tuple[str, ...] = RAW_COLUMNS

Columns = dict[str, npt.NDArray[Any]]
IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

_SECONDS_PER_DAY = 86_400
# Time of day ~ Normal(noon, 20000 s), as the Handbook draws it.
_TIME_MEAN_S = _SECONDS_PER_DAY / 2
_TIME_STD_S = 20_000.0
# Scenario 1: every amount above this is fraud.
_S1_AMOUNT_THRESHOLD = 220.0
# Scenario 2: 2 terminals a day, compromised for 28 days.
_S2_TERMINALS_PER_DAY = 2
_S2_DURATION_DAYS = 28
# Scenario 3: 3 customers a day; a third of their next 14 days' transactions
# have their amount multiplied by 5.
_S3_CUSTOMERS_PER_DAY = 3
_S3_DURATION_DAYS = 14
_S3_AMOUNT_FACTOR = 5
# Seeds of the profile tables.
_CUSTOMER_SEED = 0
_TERMINAL_SEED = 1
# Customers per block in the distance computation (block x n_terminals floats).
_DISTANCE_BLOCK = 256
# Rows per chunk when writing CSV, to bound memory.
_CSV_CHUNK_ROWS = 100_000


def _customer_profiles(n_customers: int) -> FloatArray:
    """Rows of (x, y, mean_amount, mean_nb_tx_per_day), drawn from seed 0.

    One vectorised draw gives the same numbers as the Handbook's per-customer
    loop: the legacy generator fills the (n, 4) array in C order, i.e. x, y,
    mean_amount, mean_nb_tx customer after customer, each as low + range * u.
    """
    np.random.seed(_CUSTOMER_SEED)
    low = np.array([0.0, 0.0, 5.0, 0.0])
    high = np.array([100.0, 100.0, 100.0, 4.0])
    profiles: FloatArray = np.random.uniform(low, high, size=(n_customers, 4))
    return profiles


def _terminal_positions(n_terminals: int) -> FloatArray:
    """Rows of (x, y) for each terminal, drawn from seed 1 (C order, as above)."""
    np.random.seed(_TERMINAL_SEED)
    positions: FloatArray = np.random.uniform(0.0, 100.0, size=(n_terminals, 2))
    return positions


def _terminals_within_radius(
    customer_xy: FloatArray, terminal_xy: FloatArray, radius: float
) -> list[list[int]]:
    """Each customer's terminals (ascending ids) at Euclidean distance < radius.

    The list order matters: ``random.choice`` indexes into it. The distance is
    computed as sqrt(dx**2 + dy**2), the Handbook's formula, rather than with
    ``hypot`` or squared radii, so that borderline terminals fall on the same
    side of the radius.
    """
    result: list[list[int]] = []
    tx = terminal_xy[:, 0][np.newaxis, :]
    ty = terminal_xy[:, 1][np.newaxis, :]
    for start in range(0, len(customer_xy), _DISTANCE_BLOCK):
        block = customer_xy[start : start + _DISTANCE_BLOCK]
        dx = block[:, 0][:, np.newaxis] - tx
        dy = block[:, 1][:, np.newaxis] - ty
        within = np.sqrt(dx * dx + dy * dy) < radius
        result.extend(np.flatnonzero(row).tolist() for row in within)
    return result


def _customer_transactions(
    customer_id: int,
    mean_amount: float,
    mean_nb_tx_per_day: float,
    terminals: list[int],
    nb_days: int,
    out: tuple[list[int], list[int], list[float]],
) -> None:
    """Append one customer's (second, terminal, unrounded amount) to ``out``.

    This is the part whose draws interleave (Poisson, normals, the occasional
    uniform, ``random.choice``), so it stays a scalar loop in the exact order of
    the spec. Both generators are reseeded with the customer id, which is what
    makes simulating any subset of customers give the same rows.
    """
    random.seed(customer_id)
    np.random.seed(customer_id)
    poisson = np.random.poisson
    normal = np.random.normal
    uniform = np.random.uniform
    choice = random.choice
    seconds, terms, amounts = out
    std_amount = mean_amount / 2
    for day in range(nb_days):
        day_start = day * _SECONDS_PER_DAY
        for _ in range(poisson(mean_nb_tx_per_day)):
            t = int(normal(_TIME_MEAN_S, _TIME_STD_S))
            if not 0 < t < _SECONDS_PER_DAY:
                continue  # discarded, with no further draws
            amount = normal(mean_amount, std_amount)
            if amount < 0:
                amount = uniform(0, mean_amount * 2)
            seconds.append(day_start + t)
            terms.append(choice(terminals))
            amounts.append(amount)


def _compromised(population: int, count: int, days: int) -> IntArray:
    """Row ``day`` holds the ids compromised that day, as pandas ``sample`` draws them."""
    if population < count:
        raise ValueError(f"need at least {count} to compromise, got {population}")
    return np.array(
        [
            np.random.RandomState(day).choice(population, count, replace=False)
            for day in range(days)
        ],
        dtype=np.int64,
    ).reshape(days, count)


def _apply_scenarios(
    cols: Columns,
    *,
    n_terminals: int,
    n_scenario_days: int,
    compromised_customers: IntArray,
    s3_days: Iterable[int],
) -> None:
    """Label frauds in place (rows must be sorted by TRANSACTION_ID).

    Scenario 2 runs for days 0..n_scenario_days-1, scenario 3 for ``s3_days``
    (a subset of those: the days that matter to the requested customers).
    Scenario 1 is judged on the drawn amount, before scenario 3 multiplies it;
    a later scenario overwrites an earlier one's label.
    """
    amount: FloatArray = cols["TX_AMOUNT"]
    days: IntArray = cols["TX_TIME_DAYS"]
    terminal: IntArray = cols["TERMINAL_ID"]
    customer: IntArray = cols["CUSTOMER_ID"]
    fraud = np.zeros(len(amount), dtype=np.int64)
    scenario = np.zeros(len(amount), dtype=np.int64)

    s1 = amount > _S1_AMOUNT_THRESHOLD
    fraud[s1] = 1
    scenario[s1] = 1

    # Scenario 2, vectorised: mark (day, terminal) cells covered by some
    # compromise window, then look every transaction up in that table.
    terminals = _compromised(n_terminals, _S2_TERMINALS_PER_DAY, n_scenario_days)
    covered = np.zeros((n_scenario_days + _S2_DURATION_DAYS, n_terminals), dtype=bool)
    for day in range(n_scenario_days):
        covered[day : day + _S2_DURATION_DAYS, terminals[day]] = True
    if len(amount):
        s2 = covered[np.minimum(days, len(covered) - 1), terminal]
        s2 &= days < len(covered)
        fraud[s2] = 1
        scenario[s2] = 2

    # Scenario 3: random.sample picks positions in the pooled transactions of
    # the day's three customers, taken in TRANSACTION_ID order.
    by_customer = np.argsort(customer, kind="stable")
    starts = np.searchsorted(
        customer[by_customer], np.arange(compromised_customers.max(initial=0) + 2)
    )
    for day in s3_days:
        pool_parts = []
        for cid in compromised_customers[day]:
            rows = by_customer[starts[cid] : starts[cid + 1]]  # ascending ids
            lo, hi = np.searchsorted(days[rows], [day, day + _S3_DURATION_DAYS])
            pool_parts.append(rows[lo:hi])
        pool = np.sort(np.concatenate(pool_parts)).tolist()
        random.seed(day)
        chosen = random.sample(pool, k=len(pool) // 3)
        amount[chosen] *= _S3_AMOUNT_FACTOR
        fraud[chosen] = 1
        scenario[chosen] = 3

    cols["TX_FRAUD"] = fraud
    cols["TX_FRAUD_SCENARIO"] = scenario


def simulate(
    *,
    n_customers: int = 5000,
    n_terminals: int = 10000,
    nb_days: int = 183,
    start_date: datetime.date = datetime.date(2018, 4, 1),
    radius: float = 5.0,
    customer_ids: Sequence[int] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Columns:
    """Simulate the Handbook's transactions; return them as columns (see ``COLUMNS``).

    With the defaults the result equals the published raw data tuple for tuple.

    ``customer_ids`` restricts the output to those customers' rows, exactly as
    they appear in the full simulation (same amounts, labels and scenarios),
    which lets a test check real published rows in seconds. To get there the
    profile tables are still drawn in full (their seeds are shared), and the
    customers compromised together with a requested one on some day are
    simulated too, because scenario 3 samples from their pooled transactions.
    ``TRANSACTION_ID`` is then the rank within the subset, and on a tie of
    seconds inside a scenario 3 pool the rank order can differ from the full
    run's. Scenarios 2 and 3 run for days 0..nb_days-2 in that mode (the
    Handbook stops before the last day holding a transaction, which is the
    same at any realistic size).

    ``progress(done, total)`` is called after each simulated customer; with
    ``customer_ids``, total counts the co-compromised customers too.
    """
    if n_customers < 1 or n_terminals < 1 or nb_days < 1:
        raise ValueError("n_customers, n_terminals and nb_days must all be >= 1")
    if not radius > 0:
        raise ValueError(f"radius must be > 0, got {radius!r}")

    np_state = np.random.get_state()
    py_state = random.getstate()
    try:
        return _simulate(
            n_customers=n_customers,
            n_terminals=n_terminals,
            nb_days=nb_days,
            start_date=start_date,
            radius=radius,
            customer_ids=customer_ids,
            progress=progress,
        )
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)


def _simulate(
    *,
    n_customers: int,
    n_terminals: int,
    nb_days: int,
    start_date: datetime.date,
    radius: float,
    customer_ids: Sequence[int] | None,
    progress: Callable[[int, int], None] | None,
) -> Columns:
    """:func:`simulate` without argument checks and generator-state restoring."""
    profiles = _customer_profiles(n_customers)
    terminal_xy = _terminal_positions(n_terminals)

    n_scenario_days = nb_days - 1
    compromised = _compromised(n_customers, _S3_CUSTOMERS_PER_DAY, n_scenario_days)
    if customer_ids is None:
        wanted = np.arange(n_customers, dtype=np.int64)
        s3_days: list[int] | None = None  # decided once the max day is known
        to_simulate = wanted
    else:
        wanted = np.unique(np.asarray(customer_ids, dtype=np.int64))
        if len(wanted) and (wanted[0] < 0 or wanted[-1] >= n_customers):
            raise ValueError(f"customer_ids must lie in 0..{n_customers - 1}")
        hit = np.isin(compromised, wanted).any(axis=1)
        s3_days = np.flatnonzero(hit).tolist()
        to_simulate = np.union1d(wanted, compromised[hit].ravel())

    terminals = _terminals_within_radius(profiles[to_simulate, :2], terminal_xy, radius)

    seconds: list[int] = []
    terms: list[int] = []
    raw_amounts: list[float] = []
    counts: list[int] = []
    total = len(to_simulate)
    for done, (cid, own_terminals) in enumerate(
        zip(to_simulate.tolist(), terminals, strict=True), 1
    ):
        before = len(seconds)
        if own_terminals:  # a customer with no terminal in reach never transacts
            _, _, mean_amount, mean_nb_tx = profiles[cid].tolist()
            _customer_transactions(
                cid, mean_amount, mean_nb_tx, own_terminals, nb_days, (seconds, terms, raw_amounts)
            )
        counts.append(len(seconds) - before)
        if progress is not None:
            progress(done, total)

    secs = np.array(seconds, dtype=np.int64)
    # Introsort on datetime64, over customer-major input, as the Handbook
    # sorted: it decides the order of same-second ties. (numpy sorts int64
    # with a SIMD quicksort whose tie order differs.)
    order = np.argsort(secs.astype("datetime64[s]"), kind="quicksort")
    cols: Columns = {
        "CUSTOMER_ID": np.repeat(to_simulate, counts)[order],
        "TERMINAL_ID": np.array(terms, dtype=np.int64)[order],
        "TX_AMOUNT": np.round(np.array(raw_amounts, dtype=np.float64), 2)[order],
        "TX_TIME_SECONDS": secs[order],
    }
    cols["TX_TIME_DAYS"] = cols["TX_TIME_SECONDS"] // _SECONDS_PER_DAY

    if s3_days is None:
        # The Handbook runs scenarios 2 and 3 up to its last day with a transaction.
        max_day = int(cols["TX_TIME_DAYS"].max()) if len(order) else 0
        n_scenario_days = min(max_day, n_scenario_days)
        s3_days = list(range(n_scenario_days))
    _apply_scenarios(
        cols,
        n_terminals=n_terminals,
        n_scenario_days=n_scenario_days,
        compromised_customers=compromised,
        s3_days=s3_days,
    )

    if customer_ids is not None:
        keep = np.isin(cols["CUSTOMER_ID"], wanted)
        cols = {name: values[keep] for name, values in cols.items()}

    n_rows = len(cols["TX_TIME_SECONDS"])
    cols["TRANSACTION_ID"] = np.arange(n_rows, dtype=np.int64)
    cols["TX_DATETIME"] = np.datetime64(start_date, "s") + cols["TX_TIME_SECONDS"].astype(
        "timedelta64[s]"
    )
    return {name: cols[name] for name in COLUMNS}


def _format_datetimes(values: npt.NDArray[Any]) -> list[str]:
    """'2018-04-01 00:00:31' strings, from datetime64 or from strings as they are."""
    if np.issubdtype(values.dtype, np.datetime64):
        text = np.datetime_as_string(values.astype("datetime64[s]"), unit="s")
        return [s.replace("T", " ") for s in text.tolist()]
    return [str(s) for s in values.tolist()]


def _csv_lines(columns: Columns) -> Iterator[str]:
    """The header, then chunks of rows, formatted as the published file is.

    Amounts are written as Python's ``repr`` of the float (146.0, 57.16,
    85.64999999999999), which is what the published file holds: the shortest
    text that reads back as the same double, so a round trip is exact.
    """
    yield ",".join(COLUMNS) + "\n"
    n_rows = len(columns["TRANSACTION_ID"])
    for start in range(0, n_rows, _CSV_CHUNK_ROWS):
        part = {name: columns[name][start : start + _CSV_CHUNK_ROWS] for name in COLUMNS}
        fields: list[Iterable[str]] = []
        for name in COLUMNS:
            values = part[name]
            if name == "TX_DATETIME":
                fields.append(_format_datetimes(values))
            elif name == "TX_AMOUNT":
                fields.append(map(repr, np.asarray(values, dtype=np.float64).tolist()))
            else:
                fields.append(map(str, np.asarray(values, dtype=np.int64).tolist()))
        yield "".join(",".join(row) + "\n" for row in zip(*fields, strict=True))


def write_csv_gz(columns: Columns, out_path: str | Path) -> None:
    """Write columns as gzipped CSV with the published header and formatting.

    The file is written under a temporary name and renamed, so a reader never
    sees half a file.
    """
    missing = [name for name in COLUMNS if name not in columns]
    if missing:
        raise ValueError(f"columns is missing {missing}")
    out = Path(out_path)
    tmp = out.with_name(out.name + ".tmp")
    try:
        # No name and mtime 0 in the gzip header: the same columns give the same bytes.
        with (
            open(tmp, "wb") as raw,
            gzip.GzipFile(filename="", fileobj=raw, mode="wb", compresslevel=6, mtime=0) as gz,
        ):
            for text in _csv_lines(columns):
                gz.write(text.encode("ascii"))
        tmp.replace(out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_csv_gz(path: str | Path) -> Columns:
    """Read a raw-data CSV (published or written here) back into typed columns.

    TX_DATETIME becomes datetime64[s], TX_AMOUNT float64 (parsed exactly, so
    what :func:`write_csv_gz` wrote reads back bit for bit), the rest int64.
    numpy's C reader takes about a second for the whole published file.
    """
    row_type = np.dtype(
        [
            (
                name,
                "datetime64[s]" if name == "TX_DATETIME" else "f8" if name == "TX_AMOUNT" else "i8",
            )
            for name in COLUMNS
        ]
    )
    with gzip.open(path, "rt", encoding="ascii", newline="") as f:
        header = f.readline().rstrip("\r\n").split(",")
        if tuple(header) != COLUMNS:
            raise ValueError(f"{path}: unexpected header {header}")
        with warnings.catch_warnings():
            # A header-only file is a valid empty table, not worth a warning.
            warnings.filterwarnings(
                "ignore", message="loadtxt: input contained no data", category=UserWarning
            )
            table = np.loadtxt(f, delimiter=",", dtype=row_type, ndmin=1)
    return {name: np.ascontiguousarray(table[name]) for name in COLUMNS}


class SimulationSummary(TypedDict):
    """The figures handbook-spec.md section 1 states, to check a run at a glance."""

    rows: int
    frauds: int
    fraud_rate: float
    scenarios: dict[str, int]  # "S1".."S3": rows finally labelled with that scenario
    active_customers: int
    mean_amount: float
    max_amount: float


def summarize(columns: Columns) -> SimulationSummary:
    """Count rows, frauds and scenarios; see :class:`SimulationSummary`."""
    fraud = columns["TX_FRAUD"]
    scenario = columns["TX_FRAUD_SCENARIO"]
    amount = columns["TX_AMOUNT"]
    rows = len(fraud)
    frauds = int(fraud.sum())
    return {
        "rows": rows,
        "frauds": frauds,
        "fraud_rate": frauds / rows if rows else 0.0,
        "scenarios": {f"S{s}": int((scenario == s).sum()) for s in (1, 2, 3)},
        "active_customers": len(np.unique(columns["CUSTOMER_ID"])),
        "mean_amount": float(amount.mean()) if rows else 0.0,
        "max_amount": float(amount.max()) if rows else 0.0,
    }


def simulate_to_csv(
    out: str | Path,
    *,
    n_customers: int = 5000,
    n_terminals: int = 10000,
    nb_days: int = 183,
    start_date: datetime.date = datetime.date(2018, 4, 1),
    radius: float = 5.0,
    progress: Callable[[int, int], None] | None = None,
) -> SimulationSummary:
    """Simulate, write the result with :func:`write_csv_gz`, return :func:`summarize`."""
    columns = simulate(
        n_customers=n_customers,
        n_terminals=n_terminals,
        nb_days=nb_days,
        start_date=start_date,
        radius=radius,
        progress=progress,
    )
    write_csv_gz(columns, out)
    return summarize(columns)
