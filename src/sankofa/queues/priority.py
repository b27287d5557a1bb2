"""Priority classes and how a request names one.

Two headers can carry a priority:

* ``X-Priority: critical | high | normal | low`` (case-insensitive). Any other
  value is the client's mistake and is refused (422 listing the allowed values).
* RFC 9218 ``Priority: u=N`` (a structured-field dictionary). u=0-1 is critical,
  2 high, 3-4 normal, 5-7 low. As the RFC says, a member that is missing,
  malformed or out of range (u=9) is ignored, so the default applies.

When both are present, ``X-Priority`` wins: it is this API's own, explicit
header, while ``Priority`` may have been set by an intermediary.
"""

from __future__ import annotations

import re
from enum import IntEnum
from typing import Final


class Priority(IntEnum):
    """Lower value = served first."""

    CRITICAL = 0
    HIGH = 1
    NORMAL = 2
    LOW = 3

    @property
    def label(self) -> str:
        return self.name.lower()


PRIORITY_NAMES: Final = tuple(p.label for p in Priority)
_BY_NAME: Final = {p.label: p for p in Priority}
_URGENCY: Final = {
    0: Priority.CRITICAL,
    1: Priority.CRITICAL,
    2: Priority.HIGH,
    3: Priority.NORMAL,
    4: Priority.NORMAL,
    5: Priority.LOW,
    6: Priority.LOW,
    7: Priority.LOW,
}
# sf-dictionary member "u" with an sf-integer value, parameters ignored.
_U_MEMBER: Final = re.compile(r"^u=(-?[0-9]{1,3})(;.*)?$")


class PriorityHeaderError(ValueError):
    """X-Priority carried a value outside the allowed names."""


def parse_x_priority(value: str) -> Priority:
    p = _BY_NAME.get(value.strip().lower())
    if p is None:
        raise PriorityHeaderError(f"X-Priority must be one of {', '.join(PRIORITY_NAMES)}")
    return p


def parse_rfc9218(value: str) -> Priority | None:
    """The class an RFC 9218 ``Priority`` field asks for, or None to ignore it."""
    found: Priority | None = None
    for member in value.split(","):
        m = _U_MEMBER.fullmatch(member.strip())
        if m is None:
            continue
        # The last occurrence of a dictionary key wins (RFC 8941 section 3.2).
        found = _URGENCY.get(int(m.group(1)))
    return found


def resolve_priority(
    x_priority: str | None, rfc9218: str | None, default: Priority = Priority.NORMAL
) -> Priority:
    if x_priority is not None:
        return parse_x_priority(x_priority)
    if rfc9218 is not None:
        p = parse_rfc9218(rfc9218)
        if p is not None:
            return p
    return default
