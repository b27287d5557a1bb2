"""``sankofa client create | delete | list`` and ``sankofa token``.

    sankofa client create --name N --role R [R ...] [--rate PER_S] [--json]
    sankofa client delete ID_OR_NAME
    sankofa client list
    sankofa token --role R [R ...] [--ttl S] [--subject NAME]

``client create`` prints the new client's secret once; only its scrypt hash is
stored. ``token`` signs a token with the configured key (SANKOFA_JWT_SECRET,
SANKOFA_JWT_KID) without asking the service: for operators, scripts and tests.
Both read the same SANKOFA_* settings as the service; without
SANKOFA_DATABASE_URL the client commands use the embedded PostgreSQL under
SANKOFA_DATA_DIR, like ``make run``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sankofa.argtypes import positive_float as _positive_float
from sankofa.argtypes import positive_int as _positive_int
from sankofa.auth.roles import ROLES

T = TypeVar("T")


def add_auth_parsers(sub: Any) -> None:
    roles = sorted(ROLES)
    c = sub.add_parser(
        "client",
        help="register, list and delete OAuth clients",
        description="OAuth 2.0 clients of the service (client credentials). A client gets"
        " access tokens from POST /v1/oauth/token with its id and secret.",
    )
    csub = c.add_subparsers(dest="client_command", required=True, metavar="ACTION")
    cr = csub.add_parser(
        "create",
        help="register a client and print its secret (once)",
        description="Register a client with one or more roles; its secret is printed once"
        " and stored only as an scrypt hash.",
    )
    cr.add_argument("--name", required=True, help="a unique name (1-64 of A-Z a-z 0-9 . _ -)")
    cr.add_argument(
        "--role", required=True, action="extend", nargs="+", choices=roles, dest="roles"
    )
    cr.add_argument(
        "--rate",
        type=_positive_float,
        help="requests per second (default SANKOFA_RATE_LIMIT_PER_S)",
    )
    cr.add_argument("--json", action="store_true", help="print a JSON object")
    d = csub.add_parser("delete", help="delete a client: its tokens stop working")
    d.add_argument("client", help="client id or name")
    csub.add_parser("list", help="the registered clients (never their secrets)")

    t = sub.add_parser(
        "token",
        help="print an access token signed with the configured key",
        description="Sign an access token with SANKOFA_JWT_SECRET (for operators, scripts and"
        " tests); print it alone on stdout. Its lifetime is capped at SANKOFA_JWT_MAX_TTL_S.",
    )
    t.add_argument("--role", required=True, action="extend", nargs="+", choices=roles, dest="roles")
    t.add_argument(
        "--ttl", type=_positive_int, help="lifetime in seconds (default SANKOFA_JWT_TTL_S)"
    )
    t.add_argument("--subject", default="operator", help="the token's sub (default operator)")


def run_token(args: argparse.Namespace) -> int:
    from sankofa.auth.keys import build_keyring
    from sankofa.auth.tokens import TokenIssuer
    from sankofa.settings import DEV_JWT_SECRET, Settings

    settings = Settings()
    if args.ttl is not None and args.ttl > settings.jwt_max_ttl_s:
        print(
            f"sankofa token: --ttl {args.ttl} exceeds SANKOFA_JWT_MAX_TTL_S"
            f" ({settings.jwt_max_ttl_s}); the service would refuse it",
            file=sys.stderr,
        )
        return 2
    keyring = build_keyring(
        signing_kid=settings.jwt_kid,
        signing_secret=settings.jwt_secret.get_secret_value().encode(),
        issuer=settings.jwt_issuer,
    )
    issuer = TokenIssuer(
        keyring=keyring,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        default_ttl_s=settings.jwt_ttl_s,
        max_ttl_s=settings.jwt_max_ttl_s,
    )
    token, _ = issuer.issue(subject=args.subject, roles=args.roles, ttl_s=args.ttl)
    if settings.jwt_secret.get_secret_value() == DEV_JWT_SECRET:
        # Seen in a trial: a new shell without the secret signs with the default,
        # and the service (which has one) answers 401 with no hint why.
        print(
            "sankofa token: SANKOFA_JWT_SECRET is not set: signed with the development"
            " secret, which only a service in development mode without its own secret"
            " accepts",
            file=sys.stderr,
        )
    print(token)
    return 0


def _with_database(command: str, work: Callable[[Any], Awaitable[T]]) -> tuple[int, T | None]:
    from sankofa.embedded import EmbeddedUnavailableError, embedded_servers
    from sankofa.settings import Settings
    from sankofa.store.db import create_pool, migrate

    settings = Settings()

    async def run(url: str) -> T:
        pool = await create_pool(url, min_size=1, max_size=1, timeout_s=settings.db_timeout_s)
        try:
            async with pool.acquire() as conn:
                await migrate(conn)
                return await work(conn)
        finally:
            await pool.close()

    try:
        with embedded_servers(
            settings.data_dir, need_database=settings.database_url is None, need_redis=False
        ) as urls:
            url = settings.database_url or urls.database_url
            assert url is not None
            return 0, asyncio.run(run(url))
    except EmbeddedUnavailableError as exc:
        print(f"sankofa {command}: {exc}", file=sys.stderr)
        return 2, None


def run_client(args: argparse.Namespace) -> int:
    from sankofa.auth import clients
    from sankofa.auth.audit_hook import audit

    if args.client_command == "create":

        async def create(conn: Any) -> tuple[clients.Client, str] | str:
            try:
                async with conn.transaction():
                    made = await clients.create_client(
                        conn, name=args.name, roles=args.roles, rate_per_s=args.rate
                    )
                    await audit(
                        conn,
                        "client.create",
                        "cli",
                        {
                            "client_id": made[0].client_id,
                            "name": made[0].name,
                            "roles": sorted(made[0].roles),
                        },
                    )
            except ValueError as exc:
                return str(exc)
            return made

        code, result = _with_database("client create", create)
        if code or result is None:
            return code or 1
        if isinstance(result, str):
            print(f"sankofa client create: {result}", file=sys.stderr)
            return 1
        client, secret = result
        if args.json:
            print(json.dumps({**client.public(), "client_secret": secret}))
        else:
            print(f"client_id      {client.client_id}")
            print(f"client_secret  {secret}")
            print(f"roles          {' '.join(sorted(client.roles))}")
            print(
                "The secret is shown only now; store it. A token:\n"
                f"  curl -s -u {client.client_id}:SECRET -d grant_type=client_credentials"
                " http://127.0.0.1:8000/v1/oauth/token",
                file=sys.stderr,
            )
        return 0

    if args.client_command == "delete":

        async def delete(conn: Any) -> clients.Client | None:
            async with conn.transaction():
                gone = await clients.delete_client(conn, args.client)
                if gone is not None:
                    await audit(
                        conn,
                        "client.delete",
                        "cli",
                        {
                            "client_id": gone.client_id,
                            "name": gone.name,
                            "roles": sorted(gone.roles),
                        },
                    )
            return gone

        code, gone = _with_database("client delete", delete)
        if code:
            return code
        if gone is None:
            print(f"sankofa client delete: no client {args.client}", file=sys.stderr)
            return 1
        print(f"deleted {gone.client_id} ({gone.name}); its tokens stop working")
        return 0

    code, found = _with_database("client list", clients.list_clients)
    if code:
        return code
    for c in found or []:
        print(json.dumps(c.public()))
    return 0
