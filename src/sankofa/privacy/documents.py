"""CPF and CNPJ: the Brazilian taxpayer numbers of people and of companies.

Validated by their two check digits (modulus 11) where a field is declared as
one, and normalised (punctuation removed, letters in capitals) before they are
pseudonymised, so ``123.456.789-09`` and ``12345678909`` give the same ref.

CNPJ: the alphanumeric form the Receita Federal issues from July 2026 (IN RFB
2.229/2024: twelve characters of 0-9 A-Z, then two check digits, each character
valued by its ASCII code minus 48) is accepted; for all-digit CNPJs it is the
classic rule.
"""

from __future__ import annotations

import re
from typing import Final

_CPF: Final = re.compile(r"[0-9]{3}\.?[0-9]{3}\.?[0-9]{3}-?[0-9]{2}")
_CNPJ: Final = re.compile(r"[0-9A-Z]{2}\.?[0-9A-Z]{3}\.?[0-9A-Z]{3}/?[0-9A-Z]{4}-?[0-9]{2}")
_PUNCTUATION: Final = str.maketrans("", "", "./-")
KINDS: Final = ("cpf", "cnpj")


def _check_digit(values: list[int], weights: list[int]) -> int:
    r = sum(v * w for v, w in zip(values, weights, strict=True)) % 11
    return 0 if r < 2 else 11 - r


def normalise_cpf(value: str) -> str | None:
    """The 11 digits of a valid CPF, or None."""
    if not _CPF.fullmatch(value):
        return None
    digits = value.translate(_PUNCTUATION)
    if digits == digits[0] * 11:  # 000.000.000-00 and the like pass the arithmetic
        return None
    v = [int(c) for c in digits]
    d1 = _check_digit(v[:9], list(range(10, 1, -1)))
    d2 = _check_digit([*v[:9], d1], list(range(11, 1, -1)))
    return digits if (d1, d2) == (v[9], v[10]) else None


_CNPJ_WEIGHTS_1: Final = [5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2]
_CNPJ_WEIGHTS_2: Final = [6, 5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2]


def normalise_cnpj(value: str) -> str | None:
    """The 14 characters of a valid CNPJ (numeric or alphanumeric), or None."""
    value = value.upper()
    if not _CNPJ.fullmatch(value):
        return None
    chars = value.translate(_PUNCTUATION)
    if chars == chars[0] * 14:
        return None
    v = [ord(c) - 48 for c in chars]
    d1 = _check_digit(v[:12], _CNPJ_WEIGHTS_1)
    d2 = _check_digit([*v[:12], d1], _CNPJ_WEIGHTS_2)
    return chars if (d1, d2) == (v[12], v[13]) else None


def normalise(kind: str, value: str) -> str | None:
    if kind == "cpf":
        return normalise_cpf(value)
    if kind == "cnpj":
        return normalise_cnpj(value)
    raise ValueError(f"kind must be one of {KINDS}: {kind!r}")
