"""The audit trail: append-only, hash-chained records in PostgreSQL.

Each record is one row of ``audit_log`` (migration 0005): ``payload``, the
canonical JSON text of ``{seq, at, kind, actor, details}``; ``prev_hash``, the
previous record's hash; ``hash = sha256(prev_hash || payload)``. Records are
appended by the SQL function ``audit_append`` only, which takes the single
``audit_head`` row's lock first: concurrent writers get one total order, and a
record commits or rolls back with the transaction that wrote it.

What is recorded, and by whom:

* ``decision_batch``: every batch of decided transactions, by a statement
  trigger on ``transactions`` (ids and a digest of the decisions), inside the
  batch's own COPY: no extra round trip on the hot path.
* ``labels``, ``erasure``, ``retention``: by their code paths, through
  :func:`record`, in the same transaction as the change.
* Rule and list changes, client changes, token issues: :func:`record` is the
  hook (``await audit.record(conn, "client.create", actor, {...})`` inside the
  transaction that makes the change).

``details`` must hold no personal data and no secret: the trail can never be
edited, so it could never be erased either. Pseudonymised references made for
the trail use their own HMAC domain (see sankofa.privacy).

:func:`verify` walks the chain and names each altered, removed or reordered
record; ``sankofa audit verify`` runs it.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import asyncpg
import orjson

GENESIS: Final = bytes(32)
_KIND: Final = re.compile(r"^[a-z][a-z0-9_.]{0,63}$")
#: Kinds written by this project's code paths (others may add their own).
KINDS: Final = (
    "decision_batch",
    "labels",
    "erasure",
    "retention",
    "rules.change",
    "lists.change",
    "client.create",
    "client.delete",
    "token.issue",
)
#: Problems listed in a report at most (all are counted).
MAX_LISTED: Final = 50
#: Records read per round trip while verifying.
_FETCH: Final = 2000


async def record(
    conn: asyncpg.Connection, kind: str, actor: str | None, details: Mapping[str, Any]
) -> int:
    """Append one record; returns its sequence number.

    Call it inside the transaction that makes the change it records, last,
    just before the commit: the head row's lock is held until then, so a slow
    step after it would hold every other writer up.
    """
    if not _KIND.fullmatch(kind):
        raise ValueError(f"kind must match {_KIND.pattern}: {kind!r}")
    seq: int = await conn.fetchval(
        "SELECT audit_append($1, $2, $3::jsonb)", kind, actor, orjson.dumps(details).decode()
    )
    return seq


def record_hash(prev_hash: bytes, payload: str) -> bytes:
    return hashlib.sha256(prev_hash + payload.encode("utf-8")).digest()


@dataclass(slots=True)
class Problem:
    seq: int
    kind: str  # altered | removed | reordered | broken-link | head | decisions | anchor
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "kind": self.kind, "message": self.message}


@dataclass(slots=True)
class VerifyReport:
    records: int = 0
    head_seq: int = 0
    head_hash: str = ""
    problems: list[Problem] = field(default_factory=list)
    problem_count: int = 0
    decision_batches_checked: int = 0

    @property
    def ok(self) -> bool:
        return self.problem_count == 0

    def add(self, seq: int, kind: str, message: str) -> None:
        self.problem_count += 1
        if len(self.problems) < MAX_LISTED:
            self.problems.append(Problem(seq, kind, message))

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "records": self.records,
            "head_seq": self.head_seq,
            "head_hash": self.head_hash,
            "problem_count": self.problem_count,
            "problems": [p.as_dict() for p in self.problems],
            "decision_batches_checked": self.decision_batches_checked,
        }


#: A batch's digest from the stored rows, in the order its record lists the ids.
_DIGEST_SQL: Final = """
SELECT count(t.transaction_id) AS n,
       encode(sha256(string_agg(audit_decision_line(t), '\\x0a'::bytea ORDER BY i.ord)), 'hex')
           AS digest
FROM unnest($1::text[]) WITH ORDINALITY AS i (transaction_id, ord)
LEFT JOIN transactions t USING (transaction_id)
"""


async def verify(
    conn: asyncpg.Connection,
    *,
    decisions: bool = False,
    anchor: tuple[int, bytes] | None = None,
) -> VerifyReport:
    """Check the whole chain in one consistent snapshot.

    ``decisions``: also recompute each decision batch's digest from the stored
    transactions (catches a decision altered or deleted in ``transactions``).
    ``anchor``: a (seq, hash) kept outside the database (``sankofa audit head``);
    a chain rewritten from that point on by someone able to bypass the grants
    no longer matches it.
    """
    rep = VerifyReport()
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        head = await conn.fetchrow("SELECT seq, hash FROM audit_head")
        head_seq: int = head["seq"] if head else 0
        head_hash: bytes = bytes(head["hash"]) if head else GENESIS
        rep.head_seq, rep.head_hash = head_seq, head_hash.hex()
        expected_seq = 1
        prev = GENESIS
        anchor_seen = False
        cur = await conn.cursor("SELECT seq, payload, prev_hash, hash FROM audit_log ORDER BY seq")
        while rows := await cur.fetch(_FETCH):
            for r in rows:
                seq: int = r["seq"]
                payload: str = r["payload"]
                prev_hash, h = bytes(r["prev_hash"]), bytes(r["hash"])
                rep.records += 1
                if seq != expected_seq:
                    if seq > expected_seq:
                        gap = f"{expected_seq}" + (f"..{seq - 1}" if seq - 1 > expected_seq else "")
                        rep.add(seq, "removed", f"record(s) {gap} missing before {seq}")
                    else:
                        rep.add(seq, "reordered", f"record {seq} out of order")
                try:
                    inner = orjson.loads(payload)
                    stated = inner.get("seq") if isinstance(inner, dict) else None
                except orjson.JSONDecodeError:
                    inner, stated = None, None
                if record_hash(prev_hash, payload) != h:
                    rep.add(seq, "altered", f"record {seq}: its hash does not match its content")
                elif stated != seq:
                    rep.add(seq, "reordered", f"record {seq} holds record {stated}: moved")
                if prev_hash != prev:
                    rep.add(
                        seq,
                        "broken-link",
                        f"record {seq} does not follow the record before it"
                        " (a record before it was removed, reordered or rewritten)",
                    )
                if anchor is not None and seq == anchor[0]:
                    anchor_seen = True
                    if h != anchor[1]:
                        rep.add(seq, "anchor", f"record {seq} differs from the anchor kept outside")
                if decisions and isinstance(inner, dict) and inner.get("kind") == "decision_batch":
                    await _check_decisions(conn, seq, inner.get("details") or {}, rep)
                prev = h
                expected_seq = seq + 1
        if expected_seq - 1 != head_seq or prev != head_hash:
            rep.add(
                head_seq,
                "head",
                f"the trail ends at record {expected_seq - 1} but its head says {head_seq}"
                " (the last records were removed or rewritten)",
            )
        if anchor is not None and not anchor_seen:
            rep.add(anchor[0], "anchor", f"record {anchor[0]} of the anchor is missing")
    return rep


async def _check_decisions(
    conn: asyncpg.Connection, seq: int, details: dict[str, Any], rep: VerifyReport
) -> None:
    ids = details.get("transaction_ids") or []
    row = await conn.fetchrow(_DIGEST_SQL, ids)
    rep.decision_batches_checked += 1
    if row["n"] != len(ids):
        rep.add(
            seq, "decisions", f"record {seq}: {len(ids) - row['n']} recorded decision(s) missing"
        )
    elif row["digest"] != details.get("digest"):
        rep.add(seq, "decisions", f"record {seq}: the stored decisions differ from those recorded")


def _anchor(text: str) -> tuple[int, bytes]:
    seq, _, hexhash = text.partition(":")
    try:
        value = (int(seq), bytes.fromhex(hexhash))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not SEQ:HASH (hex): {text!r}") from None
    if len(value[1]) != 32:
        raise argparse.ArgumentTypeError("the hash must be 64 hex digits")
    return value


def add_audit_parser(sub: Any) -> None:
    s = sub.add_parser(
        "audit",
        help="the audit trail",
        description="The tamper-evident audit trail in PostgreSQL (SANKOFA_DATABASE_URL).",
    )
    asub = s.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    v = asub.add_parser(
        "verify",
        help="check the hash chain; exit 1 on any altered, removed or reordered record",
        description="Walk the whole trail and recompute every hash and link. Exit 0 when"
        " intact, 1 when not (each problem printed), 2 when it cannot run.",
    )
    v.add_argument(
        "--decisions",
        action="store_true",
        help="also recompute each decision batch's digest from the stored transactions",
    )
    v.add_argument(
        "--anchor",
        type=_anchor,
        help="SEQ:HASH printed earlier by `sankofa audit head` and kept outside the database",
    )
    v.add_argument("--json", action="store_true", help="print the report as JSON")
    asub.add_parser(
        "head",
        help="print the last record's SEQ:HASH, to keep outside the database as an anchor",
    )


def run_audit(args: argparse.Namespace) -> int:
    from sankofa.settings import Settings

    url = Settings().database_url
    if not url:
        print("sankofa audit: set SANKOFA_DATABASE_URL", file=sys.stderr)
        return 2

    async def run() -> int:
        conn = await asyncpg.connect(url)
        try:
            if args.audit_command == "head":
                head = await conn.fetchrow("SELECT seq, hash FROM audit_head")
                print(f"{head['seq']}:{bytes(head['hash']).hex()}")
                return 0
            rep = await verify(conn, decisions=args.decisions, anchor=args.anchor)
        finally:
            await conn.close()
        if args.json:
            print(orjson.dumps(rep.as_dict(), option=orjson.OPT_INDENT_2).decode())
        else:
            for p in rep.problems:
                print(f"{p.kind}: {p.message}")
            more = rep.problem_count - len(rep.problems)
            if more:
                print(f"... and {more} more")
            state = "intact" if rep.ok else f"NOT intact ({rep.problem_count} problems)"
            print(f"audit trail {state}: {rep.records} records, head {rep.head_seq}")
        return 0 if rep.ok else 1

    try:
        return asyncio.run(run())
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"sankofa audit: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
