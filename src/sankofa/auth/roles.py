"""The roles a client may hold. A route names the roles that may call it
(``rbac.requires``); holding any one of them is enough. No role implies another:
a client that must both score and read is given both."""

from __future__ import annotations

from typing import Final

#: Submit transactions and labels.
SCORER: Final = "scorer"
#: Read transactions and decisions; post labels (an analyst's verdict).
ANALYST: Final = "analyst"
#: Rules, lists, limits, clients, erasure.
ADMIN: Final = "admin"
#: Read the audit trail.
AUDITOR: Final = "auditor"

ROLES: Final = frozenset({SCORER, ANALYST, ADMIN, AUDITOR})


def check_roles(roles: object, *, what: str = "roles") -> frozenset[str]:
    """The roles as a set, or ValueError naming the unknown ones."""
    if isinstance(roles, str) or not hasattr(roles, "__iter__"):
        raise ValueError(f"{what} must be a list of role names")
    got = list(roles)
    if not got:
        raise ValueError(f"{what} must name at least one role")
    bad = sorted({str(r) for r in got} - ROLES)
    if bad:
        raise ValueError(
            f"{what}: unknown role(s) {', '.join(bad)}; known: {', '.join(sorted(ROLES))}"
        )
    return frozenset(str(r) for r in got)
