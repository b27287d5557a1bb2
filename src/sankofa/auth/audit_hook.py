"""Where authentication events reach the audit trail (``sankofa.store.audit``).

``audit`` appends one hash-chained record. Client changes pass the connection
whose transaction makes the change, so the record commits or rolls back with
it; a token issue changes nothing stored and appends on its own.

Kinds written from here: ``token.issue`` (actor: the client id; details:
roles, ttl_s), ``client.create`` and ``client.delete`` (actor: who did it;
details: the client id, name, roles). Details never hold a secret or a token.

A *refused* token request is logged (``sankofa.audit`` logger), not appended:
the token endpoint answers anyone, and a trail that anyone can lengthen at
the rate limit's pace would bury the records that matter under guesses.
"""

from __future__ import annotations

import logging
from typing import Any

from sankofa.store import audit as trail

log = logging.getLogger("sankofa.audit")

#: Kinds that are only logged (see the module docstring).
LOGGED_ONLY = frozenset({"token.refused"})


async def audit(db: Any, kind: str, actor: str | None, details: dict[str, Any]) -> None:
    """Record one security event.

    ``db`` is an asyncpg connection (inside the change's transaction) or a pool
    (an event with nothing else to commit). ``None`` logs only.
    """
    if kind in LOGGED_ONLY or db is None:
        log.info("audit %s %s %s", kind, actor, details)
        return
    await trail.record(db, kind, actor, details)
