"""Where authentication events reach the audit trail.

The audit trail itself (an append-only, hash-chained table) is built apart
(issue 6, item 3). Until it is wired in, ``audit`` only logs: every call site
below is where a record must be written.

Kinds sent from here: ``token.issued`` (subject: client id; details: roles,
ttl_s, jti), ``token.refused`` (subject: the presented client id; details:
reason), ``client.created`` and ``client.deleted`` (subject: client id;
details: name, roles, by). Details never hold a secret or a token.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("sankofa.audit")


async def audit(kind: str, subject: str, details: dict[str, Any]) -> None:
    """Record one security event. Placeholder: the audit-trail helper replaces the
    body with an append to the audit table (same transaction where there is one)."""
    log.info("audit %s %s %s", kind, subject, details)
