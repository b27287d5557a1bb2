"""A transaction as it arrives: every field rule of DESIGN.md, checked in one pass.

Hand-written rather than a pydantic model because the rules are specific
(decimal amounts without float artefacts, RFC 3339 with a mandatory offset,
pseudonymised identifiers) and because this runs for every transaction on the
hot path; every broken rule is reported, each with the field that broke it.

Documented rules beyond the field table:

* ``amount`` as a JSON number is read as the shortest decimal that gives back
  the same double (``0.1`` is 0.10, ``1e3`` is 1000.00). As a string it must be
  plain decimal notation (``"48.70"``): no exponent, sign, spaces or comma, so
  ``"1e3"`` and ``"12,50"`` are refused. Either way at most two decimals,
  greater than 0, at most 10^12.
* ``timestamp``: ``YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM)``. A time
  without an offset is refused, and so is an offset beyond -14:00 / +14:00.
  Leap seconds (second 60) are refused, since no event time can be computed
  for them. Night and weekend are computed in the timestamp's own offset.
* Identifiers (``customer_id``, ``terminal_id``, ``device_id``) are strings of
  1-128 printable characters, not starting or ending with whitespace.
* ``null`` is refused where the schema has no null: in a required field ("is
  required, not null"), and in ``type`` and ``currency``, which are left out to
  get their defaults. The optional ``channel``, ``device_id``, ``ip_address`` and
  ``metadata`` take null as absent.
* ``ip_address``: IPv4 or IPv6, without an IPv6 zone (``fe80::1%eth0`` is
  refused: the zone means something only on the sender's host).
* Unknown fields are refused, so a misspelt field never passes silently.
* ``card_number`` (optional): a card's PAN, 13-19 digits (single spaces or
  dashes between groups allowed) passing the Luhn check. Only its keyed HMAC
  token and last four digits are kept (PCI DSS). A PAN-looking value in any
  other field (ids, channel, metadata keys and values) is refused: see
  sankofa.privacy.cards. No message ever quotes the refused value.
* ``customer_id_type`` (optional): ``cpf`` or ``cnpj`` declares ``customer_id``
  a taxpayer number: its check digits are verified and it is normalised before
  being pseudonymised (sankofa.privacy.documents). Any ``customer_id`` is
  personal data and stored only as a keyed HMAC, declared or not.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any, Final

import orjson

from sankofa.engine import constants as C
from sankofa.errors import FieldIssue, InvalidFieldError
from sankofa.privacy import documents
from sankofa.privacy.cards import CardTokeniser, derived_card_key, looks_like_pan, pan_digits

_TXID: Final = re.compile(C.TRANSACTION_ID_PATTERN)
_AMOUNT_TEXT: Final = re.compile(r"^[0-9]{1,16}(\.[0-9]{1,2})?$")
_CHANNEL: Final = re.compile(r"^[a-z0-9_]{1,32}$")
_RFC3339: Final = re.compile(
    r"^([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(?:\.([0-9]{1,9}))?([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)
_CENT: Final = Decimal("0.01")
_MAX_AMOUNT: Final = Decimal(C.MAX_AMOUNT_CENTS) / 100
_FIELDS: Final = frozenset(
    {
        "transaction_id",
        "timestamp",
        "amount",
        "currency",
        "customer_id",
        "terminal_id",
        "type",
        "channel",
        "device_id",
        "ip_address",
        "metadata",
        "card_number",
        "customer_id_type",
    }
)
_PAN_ELSEWHERE: Final = (
    "looks like a card number (PAN); a PAN is accepted only in card_number, never stored"
)
_REQUIRED: Final = ("transaction_id", "timestamp", "amount", "customer_id", "terminal_id")
_UTC: Final = UTC


@dataclass(slots=True)
class Transaction:
    """A validated transaction, identifiers already pseudonymised.

    Treated as immutable; not declared frozen because frozen dataclasses build
    three times slower, and one is built per transaction on the hot path.
    """

    transaction_id: str
    timestamp: datetime  # aware, in the client's own offset
    event_time_s: float  # seconds since 1970-01-01 UTC
    utc_offset_s: int
    amount: Decimal  # quantized to 0.01
    amount_cents: int
    currency: str
    customer_ref: str  # keyed HMAC of customer_id
    terminal_id: str
    type: str
    channel: str | None
    device_ref: str | None
    ip_ref: str | None
    metadata: dict[str, Any] | None
    content_hash: bytes
    card_token: str | None = None  # keyed HMAC of the PAN, never the PAN
    card_last4: str | None = None

    @property
    def local_time_s(self) -> float:
        return self.event_time_s + self.utc_offset_s


class _Issues:
    """Broken rules of one object; the field path is built only when one is found."""

    __slots__ = ("_base", "_index", "items")

    def __init__(self, base: str, index: int | None = None) -> None:
        self._base = base
        self._index = index
        self.items: list[FieldIssue] = []

    @property
    def prefix(self) -> str:
        return self._base if self._index is None else f"{self._base}[{self._index}]."

    def add(self, field: str, message: str) -> None:
        self.items.append(FieldIssue(self.prefix + field, message))


#: The well-formed RFC 3339 shape with an offset and a second below 60: for
#: these, the C parser is exact and several times faster than building by hand.
_RFC3339_FAST: Final = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-5][0-9](?:\.[0-9]{1,9})?"
    r"(?:Z|[+-](?:(?:0[0-9]|1[0-3]):[0-5][0-9]|14:00))"
)


#: The earliest event time accepted (UTC). Nothing before it is a plausible payment,
#: and the bound keeps every accepted instant representable everywhere it goes.
EARLIEST_EVENT_S: Final = 0.0  # 1970-01-01T00:00:00Z


def parse_timestamp(value: object, latest_s: float | None = None) -> tuple[datetime, str | None]:
    """An aware datetime, or (epoch, the reason it was refused).

    The instant must lie between 1970-01-01 UTC and ``latest_s`` (seconds since
    1970, typically now plus the allowed clock skew) when given.
    """
    if type(value) is str and _RFC3339_FAST.fullmatch(value):
        try:
            dt = datetime.fromisoformat(value)
        except ValueError:
            dt, why = _parse_timestamp_slowly(value)  # e.g. February 30th: say why
            if why:
                return dt, why
    else:
        dt, why = _parse_timestamp_slowly(value)
        if why:
            return dt, why
    try:
        t = dt.timestamp()
    except (OverflowError, ValueError):
        return _EPOCH, "must be between 1970-01-01T00:00:00Z and now"
    if t < EARLIEST_EVENT_S:
        return _EPOCH, "must not be before 1970-01-01T00:00:00Z"
    if latest_s is not None and t > latest_s:
        return (
            _EPOCH,
            "is too far in the future (the allowed clock skew is SANKOFA_MAX_CLOCK_SKEW_S)",
        )
    return dt, None


def _parse_timestamp_slowly(value: object) -> tuple[datetime, str | None]:
    if not isinstance(value, str):
        return _EPOCH, "must be an RFC 3339 string with an offset, e.g. 2018-04-01T10:00:00-03:00"
    m = _RFC3339.fullmatch(value)
    if m is None:
        if re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9:.]+", value):
            return _EPOCH, "has no UTC offset; add Z or +HH:MM (naive times are refused)"
        return (
            _EPOCH,
            "must be an RFC 3339 date-time with an offset, e.g. 2018-04-01T10:00:00-03:00",
        )
    year, month, day, hour, minute, second, frac, off = m.groups()
    if second == "60":
        return _EPOCH, "leap seconds (second 60) are not accepted"
    if off in ("Z", "z"):
        tz = _UTC
    else:
        oh, om = int(off[1:3]), int(off[4:6])
        if om > 59 or oh * 60 + om > MAX_OFFSET_MINUTES:
            return _EPOCH, "offset must be between -14:00 and +14:00"
        sign = -1 if off[0] == "-" else 1
        tz = timezone(sign * timedelta(hours=oh, minutes=om))
    micro = int((frac or "0").ljust(6, "0")[:6])
    try:
        dt = datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), micro, tz
        )
    except ValueError:
        return _EPOCH, "is not a valid calendar date-time"
    return dt, None


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=_UTC)
#: No place on Earth keeps a UTC offset beyond +14:00 (Kiribati) or -12:00; RFC
#: 3339 allows up to 23:59, which only a typo or a forged time would use, and a
#: +20:00 would move night and weekend by most of a day.
MAX_OFFSET_MINUTES: Final = 14 * 60
#: Numbers in metadata must survive a round trip through any JSON parser (2^53).
_EXACT_FLOAT_LIMIT: Final = float(2**53)
#: The only control characters a metadata text may hold (PostgreSQL refuses NUL).
_TEXT_CONTROLS: Final = frozenset("\t\n\r")
#: The smallest number with 13 digits: below it a number cannot hold a PAN.
_SMALLEST_PAN: Final = 10**12


def parse_amount(value: object) -> tuple[Decimal, str | None]:
    """A positive Decimal with at most two decimals, or (0, the reason it was refused)."""
    if type(value) is str and _AMOUNT_TEXT.fullmatch(value):
        d = Decimal(value)
        if 0 < d <= _MAX_AMOUNT:
            return d.quantize(_CENT), None
    return _parse_amount_slowly(value)


def _parse_amount_slowly(value: object) -> tuple[Decimal, str | None]:
    if isinstance(value, bool) or value is None:
        return Decimal(0), "must be a decimal string or a JSON number"
    if isinstance(value, str):
        if not _AMOUNT_TEXT.fullmatch(value):
            return Decimal(0), (
                'must be a plain decimal string such as "48.70" '
                "(no exponent, sign, spaces or comma; at most 2 decimals)"
            )
        d = Decimal(value)
    elif isinstance(value, int):
        d = Decimal(value)
    elif isinstance(value, float):
        # repr gives the shortest decimal that round-trips: 0.1 -> "0.1", never 0.1000000000000000055
        d = Decimal(repr(value))
    elif isinstance(value, Decimal):  # from the fallback JSON parser (1e999 and friends)
        d = value
    else:
        return Decimal(0), "must be a decimal string or a JSON number"
    if not d.is_finite():
        return Decimal(0), "must be finite"
    if d <= 0:
        return Decimal(0), "must be greater than 0"
    if d > _MAX_AMOUNT:
        return Decimal(0), "must be at most 1000000000000"
    try:
        q = d.quantize(_CENT)
    except InvalidOperation:
        return Decimal(0), "must be at most 1000000000000"
    if q != d:
        return Decimal(0), "must have at most 2 decimals"
    return q, None


def _plain_identifier(value: object) -> bool:
    """The common case, checked cheaply: a short string of ASCII letters and digits."""
    return (
        type(value) is str
        and 0 < len(value) <= C.MAX_IDENTIFIER_CHARS
        and value.isalnum()
        and value.isascii()
    )


def _identifier(value: object, issues: _Issues, field: str, max_chars: int) -> str | None:
    if not isinstance(value, str):
        issues.add(field, "must be a string")
        return None
    if not 1 <= len(value) <= max_chars:
        issues.add(field, f"must be 1-{max_chars} characters")
        return None
    if not value.isprintable():
        issues.add(field, "must not contain control or non-printable characters")
        return None
    if value[0].isspace() or value[-1].isspace():
        # " cust-1" and "cust-1" would be two customers with separate histories.
        issues.add(field, "must not start or end with whitespace")
        return None
    return value


def _metadata(value: object, issues: _Issues, max_bytes: int) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        issues.add("metadata", "must be a flat JSON object")
        return None
    if len(value) > C.MAX_METADATA_KEYS:
        issues.add("metadata", f"must have at most {C.MAX_METADATA_KEYS} keys")
        return None
    for k, v in value.items():
        if not (1 <= len(k) <= C.MAX_METADATA_KEY_CHARS and k.isprintable()):
            issues.add(
                "metadata", f"keys must be 1-{C.MAX_METADATA_KEY_CHARS} printable characters"
            )
            return None
        if looks_like_pan(k):
            issues.add("metadata", f"a key {_PAN_ELSEWHERE}")
            return None
        if (isinstance(v, str) and looks_like_pan(v)) or (
            isinstance(v, (int, float))
            and not isinstance(v, bool)
            and abs(v) >= _SMALLEST_PAN
            and looks_like_pan(str(v))
        ):
            issues.add(f"metadata.{k}", _PAN_ELSEWHERE)
            return None
        if isinstance(v, str):
            if len(v) > C.MAX_METADATA_VALUE_CHARS:
                issues.add(
                    f"metadata.{k}", f"must be at most {C.MAX_METADATA_VALUE_CHARS} characters"
                )
                return None
            if not v.isprintable() and not all(c.isprintable() or c in _TEXT_CONTROLS for c in v):
                issues.add(
                    f"metadata.{k}", "must not hold control characters other than tab and newline"
                )
                return None
        elif isinstance(v, float):
            if not abs(v) < _EXACT_FLOAT_LIMIT:
                issues.add(
                    f"metadata.{k}",
                    "must be finite and below 2^53 (send larger numbers as strings)",
                )
                return None
        elif isinstance(v, int) and not isinstance(v, bool):
            if not abs(v) < _EXACT_FLOAT_LIMIT:
                issues.add(
                    f"metadata.{k}",
                    "must be below 2^53 in magnitude (send larger numbers as strings)",
                )
                return None
        elif isinstance(v, Decimal):
            issues.add(f"metadata.{k}", "must be a finite number of ordinary size")
            return None
        elif not (v is None or isinstance(v, (bool, int))):
            issues.add(
                f"metadata.{k}", "must be a string, number, boolean or null (metadata is flat)"
            )
            return None
    if len(orjson.dumps(value)) > max_bytes:
        issues.add("metadata", f"must serialise to at most {max_bytes} bytes")
        return None
    return value


class TransactionParser:
    """Validates transaction objects and pseudonymises their identifiers."""

    def __init__(
        self,
        *,
        hmac_key: bytes,
        max_metadata_bytes: int,
        max_clock_skew_s: float = 3600.0,
        now: Callable[[], float] = time.time,
        card_key: bytes | None = None,
    ) -> None:
        if len(hmac_key) < 16:
            raise ValueError("hmac_key must be at least 16 bytes")
        if max_metadata_bytes < 1:
            raise ValueError("max_metadata_bytes must be >= 1")
        if max_clock_skew_s < 0:
            raise ValueError("max_clock_skew_s must be >= 0")
        self._max_metadata_bytes = max_metadata_bytes
        self._max_clock_skew_s = max_clock_skew_s
        self._now = now
        self._hash_key = hashlib.sha256(b"sankofa-content-hash:" + hmac_key).digest()
        self.pseudonymise: Callable[[str, str], str] = _pseudonymiser(hmac_key)
        self._cards = CardTokeniser(key=card_key or derived_card_key(hmac_key))

    def customer_ref(self, customer_id: str, kind: str | None = None) -> str | None:
        """The stored ref of a customer identifier (None: not a valid ``kind``)."""
        if kind is not None:
            normal = documents.normalise(kind, customer_id)
            if normal is None:
                return None
            customer_id = normal
        return self.pseudonymise("customer", customer_id)

    def parse(self, obj: object, *, prefix: str = "") -> Transaction:
        """One transaction; raises InvalidFieldError naming every broken rule."""
        issues = _Issues(prefix)
        tx = self._parse(obj, issues)
        if issues.items or tx is None:
            raise InvalidFieldError(issues.items or [FieldIssue(prefix or "body", "invalid")])
        return tx

    def parse_many(self, items: list[object], *, prefix: str) -> list[Transaction]:
        """All or nothing: one bad item refuses the lot, naming each bad item's index."""
        out: list[Transaction] = []
        problems: list[FieldIssue] = []
        seen: dict[str, int] = {}
        for i, obj in enumerate(items):
            issues = _Issues(prefix, i)
            tx = self._parse(obj, issues)
            if issues.items:
                problems.extend(issues.items)
            elif tx is not None:
                first = seen.setdefault(tx.transaction_id, i)
                if first != i:
                    problems.append(
                        FieldIssue(
                            f"{prefix}[{i}].transaction_id",
                            f"repeats the transaction_id of item {first}; a batch must not"
                            " hold the same transaction twice",
                        )
                    )
                out.append(tx)
        if problems:
            raise InvalidFieldError(problems)
        return out

    def _parse(self, obj: object, issues: _Issues) -> Transaction | None:
        if not isinstance(obj, dict):
            issues.items.append(
                FieldIssue(issues.prefix.rstrip(".") or "body", "must be a JSON object")
            )
            return None
        if not obj.keys() <= _FIELDS:
            for name in sorted(obj.keys() - _FIELDS):
                issues.add(str(name), "unknown field")
        for name in _REQUIRED:
            if obj.get(name) is None:
                issues.add(name, "is required" if name not in obj else "is required, not null")

        txid = obj.get("transaction_id")
        if txid is not None and not (isinstance(txid, str) and _TXID.fullmatch(txid)):
            issues.add("transaction_id", "must be 1-64 characters of A-Z a-z 0-9 . _ : -")
        elif isinstance(txid, str) and looks_like_pan(txid):
            issues.add("transaction_id", _PAN_ELSEWHERE)

        ts_raw = obj.get("timestamp")
        ts = _EPOCH
        if ts_raw is not None:
            ts, why = parse_timestamp(ts_raw, self._now() + self._max_clock_skew_s)
            if why:
                issues.add("timestamp", why)

        amount_raw = obj.get("amount")
        amount = Decimal(0)
        if amount_raw is not None:
            amount, why = parse_amount(amount_raw)
            if why:
                issues.add("amount", why)

        # A field with a default is left out to get the default; an explicit null
        # is refused like any other value of the wrong type (the schema says so).
        currency = obj.get("currency", C.DEFAULT_CURRENCY)
        if currency is None:
            issues.add("currency", "must not be null; leave it out for BRL")
        elif not (isinstance(currency, str) and currency in C.ISO_4217):
            issues.add("currency", "must be an ISO 4217 currency code in capitals, e.g. BRL")

        customer = obj.get("customer_id")
        if customer is not None and not _plain_identifier(customer):
            customer = _identifier(customer, issues, "customer_id", C.MAX_IDENTIFIER_CHARS)
        customer_kind = obj.get("customer_id_type")
        if customer_kind is not None:
            if customer_kind not in documents.KINDS:
                issues.add("customer_id_type", f"must be one of {', '.join(documents.KINDS)}")
            elif isinstance(customer, str):
                normal = documents.normalise(customer_kind, customer)
                if normal is None:
                    issues.add(
                        "customer_id",
                        f"is not a valid {customer_kind.upper()} (format or check digits)",
                    )
                customer = normal
        elif isinstance(customer, str) and looks_like_pan(customer):
            issues.add("customer_id", _PAN_ELSEWHERE)
        terminal = obj.get("terminal_id")
        if terminal is not None and not _plain_identifier(terminal):
            terminal = _identifier(terminal, issues, "terminal_id", C.MAX_IDENTIFIER_CHARS)
        if isinstance(terminal, str) and looks_like_pan(terminal):
            issues.add("terminal_id", _PAN_ELSEWHERE)

        tx_type = obj.get("type", C.DEFAULT_TYPE)
        if tx_type is None:
            issues.add("type", f"must not be null; leave it out for {C.DEFAULT_TYPE}")
        elif tx_type not in C.TRANSACTION_TYPES:
            issues.add("type", f"must be one of {', '.join(C.TRANSACTION_TYPES)}")

        channel = obj.get("channel")
        if channel is not None and not (isinstance(channel, str) and _CHANNEL.fullmatch(channel)):
            issues.add("channel", "must be 1-32 characters of a-z 0-9 _")
        elif isinstance(channel, str) and looks_like_pan(channel):
            issues.add("channel", _PAN_ELSEWHERE)
        device = obj.get("device_id")
        if device is not None:
            device = _identifier(device, issues, "device_id", C.MAX_IDENTIFIER_CHARS)
            if isinstance(device, str) and looks_like_pan(device):
                issues.add("device_id", _PAN_ELSEWHERE)
        card = obj.get("card_number")
        card_digits: str | None = None
        if card is not None:
            card_digits = pan_digits(card)
            if card_digits is None:
                issues.add(
                    "card_number",
                    "must be a card number (PAN) as a string of 13-19 digits, optionally"
                    " grouped by single spaces or dashes, passing the Luhn check",
                )
        ip = obj.get("ip_address")
        ip_text: str | None = None
        if ip is not None:
            try:
                if not isinstance(ip, str):
                    raise ValueError
                addr = ipaddress.ip_address(ip)
            except ValueError:
                issues.add("ip_address", "must be an IPv4 or IPv6 address")
            else:
                if isinstance(addr, ipaddress.IPv6Address) and addr.scope_id is not None:
                    # fe80::1%eth0: the zone names an interface of the sender's own
                    # host, meaningless here, and the same address with two zone
                    # spellings would get two pseudonyms.
                    issues.add("ip_address", "must not carry a zone (%...); send the address alone")
                else:
                    ip_text = str(addr)
        metadata = _metadata(obj.get("metadata"), issues, self._max_metadata_bytes)

        if issues.items:
            return None
        assert isinstance(txid, str) and isinstance(customer, str) and isinstance(terminal, str)
        offset = ts.utcoffset()
        offset_s = (offset.days * 86_400 + offset.seconds) if offset is not None else 0
        event_time_s = ts.timestamp()
        customer_ref = self.pseudonymise("customer", customer)
        device_ref = self.pseudonymise("device", device) if isinstance(device, str) else None
        ip_ref = self.pseudonymise("ip", ip_text) if ip_text is not None else None
        content: list[Any] = [
            txid,
            round(event_time_s * 1_000_000),
            offset_s,
            str(amount),
            currency,
            customer_ref,
            terminal,
            tx_type,
            channel,
            device_ref,
            ip_ref,
            metadata,
        ]
        card_token = card_last4 = None
        if card_digits is not None:
            card_token, card_last4 = self._cards.tokenise(card_digits)
            # Only when present: the content hashes stored before cards existed stay valid.
            content.append(card_token)
        canonical = orjson.dumps(content, option=orjson.OPT_SORT_KEYS)
        return Transaction(
            transaction_id=txid,
            timestamp=ts,
            event_time_s=event_time_s,
            utc_offset_s=offset_s,
            amount=amount,
            amount_cents=int(amount.scaleb(2)),
            currency=currency,
            customer_ref=customer_ref,
            terminal_id=terminal,
            type=str(tx_type),
            channel=channel,
            device_ref=device_ref,
            ip_ref=ip_ref,
            metadata=metadata,
            content_hash=hashlib.blake2b(canonical, key=self._hash_key, digest_size=16).digest(),
            card_token=card_token,
            card_last4=card_last4,
        )


def _pseudonymiser(key: bytes) -> Callable[[str, str], str]:
    """HMAC-SHA256 of (kind, identifier), 128 bits in hex; cached, since customers repeat.

    The kind separates domains: the same text as a customer id and as a device
    id gives unrelated pseudonyms, so the stored refs cannot be joined across
    fields.
    """

    @lru_cache(maxsize=65_536)
    def pseudonymise(kind: str, value: str) -> str:
        message = f"{kind}\x1f{value}".encode("utf-8", "surrogatepass")
        return hmac.digest(key, message, "sha256")[:16].hex()

    return pseudonymise
