"""Card numbers (PANs): recognised, tokenised, and refused where they do not belong.

A PAN-looking value is a run of 13 to 19 digits, optionally grouped by single
spaces or dashes (``4111 1111 1111 1111``, ``4111-1111-1111-1111``), that passes
the Luhn check. The run is found anywhere in a text (``"card 4111..."``); a run
of more than 19 digits is not a card number. One in ten random digit strings
of that length passes the Luhn check, so numeric identifiers of 13-19 digits are
refused one time in ten: clients should not use such identifiers (documented in
docs/security.md).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Final

#: Digits with at most one space or dash between two of them, 13 or more digits.
_RUN: Final = re.compile(r"[0-9](?:[ -]?[0-9]){12,}")
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
