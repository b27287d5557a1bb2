"""argparse types shared by every ``sankofa`` command: one meaning of "positive".

A number on the command line is finite: ``inf`` and ``nan`` parse as floats
but would make a rate, a radius or a timeout meaningless, so they are refused
with the same message wherever they are given.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import TypeVar

N = TypeVar("N", int, float)


def _number(text: str, cast: Callable[[str], N], low: N, strict: bool) -> N:
    """``text`` as a finite number above ``low`` (``strict``) or at least it."""
    try:
        v = cast(text)
    except ValueError:
        what = "a whole number" if cast is int else "a number"
        raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None
    if not ((v > low if strict else v >= low) and math.isfinite(v)):
        if cast is int:
            bound = f">= {low + 1 if strict else low}"
        else:
            bound = f"a finite number {'>' if strict else '>='} {low:g}"
        raise argparse.ArgumentTypeError(f"must be {bound}: {text!r}")
    return v


def positive_int(text: str) -> int:
    return _number(text, int, 0, strict=True)


def non_negative_int(text: str) -> int:
    return _number(text, int, 0, strict=False)


def positive_float(text: str) -> float:
    return _number(text, float, 0.0, strict=True)


def non_negative_float(text: str) -> float:
    return _number(text, float, 0.0, strict=False)
