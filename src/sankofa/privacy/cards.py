"""Card numbers (PANs): recognised, tokenised, and refused where they do not belong.

A PAN-looking value, anywhere in a text, is one of:

* a run of 13 to 19 digits (not part of a longer run: a 25-digit number is not
  a card number);
* digits grouped as cards print them, with spaces or dashes (the same one
  throughout): 4-4-4-1..4 and 4-4-4-4-3 (``4111 1111 1111 1111``), 4-6-4 and
  4-6-5 (``3782 822463 10005``);

that passes the Luhn check. Other groupings (``12345678-1234567``, an id made
of a run number and a counter) are not taken for cards. One random string of
13-19 digits in ten passes the Luhn check, so numeric identifiers of that
length are refused one time in ten: clients should not use such identifiers
(docs/security.md).

The card field itself is more lenient (single spaces or dashes anywhere
between digits): a PAN is expected there, and only its token is kept.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Final

_RUN: Final = re.compile(
    r"(?<![0-9])(?:"
    r"[0-9]{13,19}"
    r"|[0-9]{4}([ -])[0-9]{4}\1[0-9]{4}\1[0-9]{1,4}(?:\1[0-9]{3})?"
    r"|[0-9]{4}([ -])[0-9]{6}\2[0-9]{4,5}"
    r")(?![0-9])"
)
_SEPARATORS: Final = str.maketrans("", "", " -")
_CARD_FIELD: Final = re.compile(r"[0-9](?:[ -]?[0-9]){12,18}")
MIN_PAN_DIGITS: Final = 13
MAX_PAN_DIGITS: Final = 19
#: Luhn's doubled digit: 2d, minus 9 when above 9.
_DOUBLED: Final = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        total += _DOUBLED[d] if i & 1 else d
    return total % 10 == 0


def looks_like_pan(text: str) -> bool:
    """True when ``text`` holds a PAN-looking run of digits (see the module docstring)."""
    if len(text) < MIN_PAN_DIGITS:
        return False
    for m in _RUN.finditer(text):
        digits = m.group().translate(_SEPARATORS)
        if len(digits) <= MAX_PAN_DIGITS and luhn_ok(digits):
            return True
    return False


def mask_pans(text: str) -> str:
    """``text`` with each PAN-looking run replaced by ``[PAN]`` (for paths quoted back)."""
    if len(text) < MIN_PAN_DIGITS:
        return text

    def mask(m: re.Match[str]) -> str:
        digits = m.group().translate(_SEPARATORS)
        return "[PAN]" if len(digits) <= MAX_PAN_DIGITS and luhn_ok(digits) else m.group()

    return _RUN.sub(mask, text)


def pan_digits(value: object) -> str | None:
    """The digits of a card field's value, or None when it is not a valid PAN."""
    if not isinstance(value, str) or not _CARD_FIELD.fullmatch(value):
        return None
    digits = value.translate(_SEPARATORS)
    return digits if luhn_ok(digits) else None


class CardTokeniser:
    """PAN -> (token, last four). The token is HMAC-SHA256 under its own key, so
    the same card gives the same token (a feature can count a card's history)
    and no one without the key can get the PAN back, nor test a guess."""

    __slots__ = ("_key",)

    def __init__(self, *, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("key must be at least 16 bytes")
        self._key = key

    def tokenise(self, digits: str) -> tuple[str, str]:
        token = hmac.digest(self._key, b"card\x1f" + digits.encode("ascii"), "sha256")[:16].hex()
        return token, digits[-4:]


def derived_card_key(hmac_key: bytes) -> bytes:
    """The card key when none is given (tests, tools): separate from the identifiers'."""
    return hashlib.sha256(b"sankofa-card-token:" + hmac_key).digest()


def pan_fields(value: object, path: str = "") -> list[str]:
    """Where in a parsed JSON value (objects, arrays, strings, numbers; keys too) a
    PAN-looking value sits, as field paths (``reason``, ``items[2].value``). The
    admin API refuses such bodies: nothing an operator types may carry a card
    number into a table, a cache key or the audit trail (which can never be
    edited)."""
    found: list[str] = []
    if isinstance(value, str):
        if looks_like_pan(value):
            found.append(path or "body")
    elif isinstance(value, bool) or value is None:
        pass
    elif isinstance(value, (int, float)):
        if looks_like_pan(str(value)):
            found.append(path or "body")
    elif isinstance(value, dict):
        for k, v in value.items():
            key = str(k)
            where = f"{path}.{key}" if path else key
            if looks_like_pan(key):
                found.append(f"{path}.[key]" if path else "[key]")
            found += pan_fields(v, where)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found += pan_fields(v, f"{path}[{i}]")
    return found
