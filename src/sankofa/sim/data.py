"""Readers for the Fraud Detection Handbook's published data (``shared/data``).

The published files are 1.75M-row gzipped CSVs. pandas would read them, but
serving and evaluation must not depend on it, and ``np.loadtxt`` takes about
a minute. The reader here decompresses the file once, finds every field
boundary with one vectorised scan of the bytes, and turns each column into a
fixed-width byte-string array that numpy converts in C. A whole file loads in
a few seconds.

Amounts are kept as exact integer cents. The published text carries a few
hundred float artefacts of the simulator (``85.64999999999999``: an amount
multiplied by 5 in fraud scenario 3), so cents are read from the decimal
digits and rounded to the nearest cent, never via ``float(text) * 100``.
Rows keep file order, which is the published time order.
"""

from __future__ import annotations

import gzip
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

from sankofa.engine.feature_names import FEATURE_NAMES

RAW_COLUMNS: Final[tuple[str, ...]] = (
    "TRANSACTION_ID",
    "TX_DATETIME",
    "CUSTOMER_ID",
    "TERMINAL_ID",
    "TX_AMOUNT",
    "TX_TIME_SECONDS",
    "TX_TIME_DAYS",
    "TX_FRAUD",
    "TX_FRAUD_SCENARIO",
)
#: The 14 published feature columns, in file order (handbook-spec.md section 2):
#: the model's input vector without the amount.
PUBLISHED_FEATURE_COLUMNS: Final[tuple[str, ...]] = FEATURE_NAMES[1:]

_COMMA: Final = ord(",")
_NEWLINE: Final = ord("\n")
_DOT: Final = ord(".")
_ZERO: Final = ord("0")
#: Rows converted per block, to bound the (rows x width) index matrices.
_BLOCK_ROWS: Final = 1 << 18

Int64Array = npt.NDArray[np.int64]
ByteColumn = npt.NDArray[np.bytes_]


@dataclass(frozen=True, slots=True)
class RawData:
    """The published raw transactions as column arrays, in file order.

    ``tx_datetime`` is the naive timestamp as seconds since 1970-01-01 (no
    offset applied: the data has none). ``amount_cents`` is exact.
    """

    transaction_id: Int64Array
    tx_datetime: Int64Array
    customer_id: Int64Array
    terminal_id: Int64Array
    amount_cents: Int64Array
    tx_time_seconds: Int64Array
    tx_time_days: Int64Array
    fraud: npt.NDArray[np.bool_]
    scenario: npt.NDArray[np.int8]

    def __len__(self) -> int:
        return int(self.transaction_id.shape[0])

    def take(self, index: npt.NDArray[np.intp] | npt.NDArray[np.bool_]) -> RawData:
        """Rows selected by an index or mask, as a new ``RawData``."""
        return RawData(
            transaction_id=self.transaction_id[index],
            tx_datetime=self.tx_datetime[index],
            customer_id=self.customer_id[index],
            terminal_id=self.terminal_id[index],
            amount_cents=self.amount_cents[index],
            tx_time_seconds=self.tx_time_seconds[index],
            tx_time_days=self.tx_time_days[index],
            fraud=self.fraud[index],
            scenario=self.scenario[index],
        )


def read_csv_columns(path: str | Path) -> dict[str, ByteColumn]:
    """Every column of a (possibly gzipped) CSV as a byte-string array.

    The file must be plain: no quoting, no embedded commas, one header line.
    Each array has the width of its longest field; empty fields are ``b""``.
    """
    names, body = _header_and_body(path)
    buf = np.frombuffer(body, dtype=np.uint8)
    ends = np.flatnonzero((buf == _COMMA) | (buf == _NEWLINE))
    if ends.shape[0] == 0:
        return {name: np.zeros(0, dtype="S1") for name in names}
    if ends.shape[0] % len(names):
        raise ValueError(f"{path}: rows do not all have {len(names)} fields")
    flat_starts = np.empty_like(ends)
    flat_starts[0] = 0
    flat_starts[1:] = ends[:-1] + 1
    row_starts = flat_starts.reshape(-1, len(names))
    row_ends = ends.reshape(-1, len(names))
    # Each row must end at a newline: a row with too many or too few fields
    # shifts every later boundary, so this check catches it.
    if not np.all(buf[row_ends[:, -1]] == _NEWLINE):
        raise ValueError(f"{path}: rows do not all have {len(names)} fields")
    return {name: _gather(buf, row_starts[:, k], row_ends[:, k]) for k, name in enumerate(names)}


def load_raw(path: str | Path) -> RawData:
    """Read ``handbook-raw.csv.gz`` (or a file with the same leading columns)."""
    cols = read_csv_columns(path)
    _require(cols, RAW_COLUMNS, path)
    datetime = cols["TX_DATETIME"].astype("datetime64[s]").astype(np.int64)
    return RawData(
        transaction_id=cols["TRANSACTION_ID"].astype(np.int64),
        tx_datetime=datetime,
        customer_id=cols["CUSTOMER_ID"].astype(np.int64),
        terminal_id=cols["TERMINAL_ID"].astype(np.int64),
        amount_cents=parse_cents(cols["TX_AMOUNT"]),
        tx_time_seconds=cols["TX_TIME_SECONDS"].astype(np.int64),
        tx_time_days=cols["TX_TIME_DAYS"].astype(np.int64),
        fraud=cols["TX_FRAUD"].astype(np.int8) == 1,
        scenario=cols["TX_FRAUD_SCENARIO"].astype(np.int8),
    )


def load_features(
    path: str | Path,
) -> tuple[Int64Array, npt.NDArray[np.float64]]:
    """Read ``handbook-features.csv.gz``: transaction ids and the (n, 14) matrix.

    Columns are in ``PUBLISHED_FEATURE_COLUMNS`` order. Empty fields become
    NaN (the committed test slice blanks values it cannot reproduce).
    """
    wanted = ("TRANSACTION_ID", *PUBLISHED_FEATURE_COLUMNS)
    names, body = _header_and_body(path)
    if tuple(names) == wanted and not _has_empty_fields(body):
        # All numeric and complete (the published file): numpy's C text parser
        # reads it in one call, about three times faster than column by column.
        values = _fromstring(body)
        if values is not None and values.shape[0] == body.count(b"\n") * len(names):
            table = values.reshape(-1, len(names))
            return table[:, 0].astype(np.int64), np.ascontiguousarray(table[:, 1:])
    cols = read_csv_columns(path)
    _require(cols, wanted, path)
    ids = cols["TRANSACTION_ID"].astype(np.int64)
    matrix = np.empty((ids.shape[0], len(PUBLISHED_FEATURE_COLUMNS)), dtype=np.float64)
    for k, name in enumerate(PUBLISHED_FEATURE_COLUMNS):
        matrix[:, k] = parse_floats(cols[name])
    return ids, matrix


def parse_floats(column: ByteColumn) -> npt.NDArray[np.float64]:
    """Decimal text to float64; empty fields become NaN."""
    empty = column == b""
    if not empty.any():
        return column.astype(np.float64)
    out = np.full(column.shape, np.nan)
    out[~empty] = column[~empty].astype(np.float64)
    return out


def parse_cents(column: ByteColumn) -> Int64Array:
    """Non-negative decimal amounts (``12.5``, ``85.64999999999999``) to exact cents.

    The digits after the second decimal are rounded half up; they are only
    ever float noise (``...999`` or ``...0001``) in the published data. The
    digits are folded in column by column (Horner's rule), which keeps the
    work at a few vector operations per character position.
    """
    width = column.dtype.itemsize
    mat = np.frombuffer(column.tobytes(), dtype=np.uint8).reshape(-1, width)
    n = mat.shape[0]
    cents = np.zeros(n, dtype=np.int64)
    seen_dot = np.zeros(n, dtype=bool)
    decimals = np.zeros(n, dtype=np.int64)
    round_up = np.zeros(n, dtype=bool)
    taken = np.zeros(n, dtype=np.int64)
    for j in range(width):
        char = mat[:, j]
        is_dot = char == _DOT
        is_digit = (char >= _ZERO) & (char <= _ZERO + 9)
        if np.any(~(is_digit | is_dot | (char == 0))) or np.any(is_dot & seen_dot):
            raise ValueError("amounts must be plain non-negative decimals")
        digit = char.astype(np.int64) - _ZERO
        take = is_digit & ~(seen_dot & (decimals >= 2))
        cents = np.where(take, cents * 10 + digit, cents)
        taken += take
        # The first digit past the cents decides the rounding.
        round_up |= is_digit & seen_dot & (decimals == 2) & (digit >= 5)
        decimals += (take & seen_dot) | (is_digit & seen_dot & (decimals == 2))
        seen_dot |= is_dot
    if np.any(mat[:, 0] == 0):
        raise ValueError("empty amount")
    if np.any(taken > 16):
        raise ValueError("amount too large for int64 cents")
    scale = np.where(decimals >= 2, 1, np.where(decimals == 1, 10, 100))
    return cents * scale + round_up


def _header_and_body(path: str | Path) -> tuple[list[str], bytes]:
    data = _read_bytes(Path(path))
    header, sep, body = data.partition(b"\n")
    if not sep:
        raise ValueError(f"{path}: no header line")
    if body and not body.endswith(b"\n"):
        body += b"\n"
    return header.decode("ascii").strip().split(","), body


def _fromstring(body: bytes) -> npt.NDArray[np.float64] | None:
    """All numbers of a comma-separated body, or None if some text is not a number."""
    try:
        with warnings.catch_warnings():
            # Older numpy warns and stops early; the caller's size check catches that.
            warnings.simplefilter("ignore", DeprecationWarning)
            return np.fromstring(body.replace(b"\n", b","), sep=",")
    except ValueError:
        return None


def _has_empty_fields(body: bytes) -> bool:
    return (
        b",," in body
        or b",\n" in body
        or b"\n," in body
        or body.startswith(b",")
        or b"\n\n" in body
    )


def _read_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n")
    return data


def _gather(buf: npt.NDArray[np.uint8], starts: Int64Array, ends: Int64Array) -> ByteColumn:
    """Fields [starts, ends) of ``buf`` as a zero-padded ``S<width>`` array."""
    width = max(int((ends - starts).max(initial=0)), 1)
    out = np.zeros((starts.shape[0], width), dtype=np.uint8)
    offsets = np.arange(width)
    last = buf.shape[0] - 1
    for lo in range(0, starts.shape[0], _BLOCK_ROWS):
        s = starts[lo : lo + _BLOCK_ROWS, None]
        e = ends[lo : lo + _BLOCK_ROWS, None]
        idx = s + offsets
        block = buf[np.minimum(idx, last)]
        block[idx >= e] = 0
        out[lo : lo + _BLOCK_ROWS] = block
    return out.view(f"S{width}").ravel()


def _require(cols: dict[str, ByteColumn], names: tuple[str, ...], path: str | Path) -> None:
    missing = [name for name in names if name not in cols]
    if missing:
        raise ValueError(f"{path}: missing columns {', '.join(missing)}")
