"""Role-based access: every route declares who may call it, in one line.

    @router.post("/v1/labels", dependencies=[requires(SCORER, ANALYST)])
    @router.get("/health/live", dependencies=[public()])

or, on hot routes, as a decorator that skips FastAPI's dependency machinery:

    @router.post("/v1/transactions")
    @requires(SCORER)
    async def score_one(request: Request) -> Response: ...

``requires`` authenticates the bearer token (401), checks the caller holds one
of the roles (403) and takes one request from the client's rate (429). With
authentication off (development mode, ``Settings.auth_enabled``) it lets every
request through, as before.

``route_roles`` reads the declarations back from an app; the test suite walks
every route with it and fails on any route that declares nothing
(tests/auth/test_rbac_matrix.py). Routes the framework adds itself (the API
description) are listed in ``PUBLIC_FRAMEWORK_PATHS``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from typing import Any, Final

from fastapi import FastAPI, Request, params

from sankofa.api import schemas
from sankofa.auth.roles import ROLES
from sankofa.auth.service import ACTOR_SCOPE_KEY, PRINCIPAL_SCOPE_KEY
from sankofa.errors import ForbiddenError, RateLimitedError

_ROLES_ATTR: Final = "__sankofa_roles__"
#: A route anyone may call (health, metrics, the token endpoint).
PUBLIC: Final = frozenset({"*"})
#: Paths the framework serves beside our routes: the API description, which
#: holds nothing secret.
PUBLIC_FRAMEWORK_PATHS: Final = frozenset(
    {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc", "/static-offline-docs"}
)


class RoleRequirement(params.Depends):
    """What ``requires`` / ``public`` return: a FastAPI dependency, and a decorator.

    As a dependency (``dependencies=[requires(ADMIN)]``, on a route or a router)
    FastAPI runs the check through its dependency machinery, which costs about
    12 µs of CPU per request even for a no-op (measured, see docs/security.md).
    As a decorator (``@requires(SCORER)`` under the route decorator) the check is
    a plain call inside the endpoint: what the hot scoring routes use.
    """

    def __call__(self, endpoint: Callable[..., Any]) -> Callable[..., Any]:
        check = self.dependency
        allowed = getattr(check, _ROLES_ATTR)
        if allowed == PUBLIC:
            setattr(endpoint, _ROLES_ATTR, PUBLIC)
            return endpoint
        if "request" not in inspect.signature(endpoint).parameters:
            raise TypeError(f"{endpoint.__name__}: @requires needs a `request: Request` parameter")
        assert check is not None

        @functools.wraps(endpoint)
        async def guarded(*args: Any, **kwargs: Any) -> Any:
            await check(kwargs["request"])
            return await endpoint(*args, **kwargs)

        setattr(guarded, _ROLES_ATTR, allowed)
        return guarded


def requires(*roles: str) -> RoleRequirement:
    """The caller must hold one of ``roles``: ``dependencies=[requires(...)]`` or
    ``@requires(...)`` on the endpoint."""
    allowed = frozenset(roles)
    if not allowed or not allowed <= ROLES:
        raise ValueError(f"roles must be a non-empty subset of {sorted(ROLES)}, got {roles}")

    async def check_roles(request: Request) -> None:
        auth = request.state.services.auth
        if not auth.enabled:
            return
        principal, held = await auth.authenticate(request.scope)
        if not held & allowed:
            raise ForbiddenError(f"this endpoint requires one of the roles {sorted(allowed)}")
        wait_s = auth.limits.take(principal.subject, auth.rate_of(principal))
        if wait_s:
            raise RateLimitedError(
                f"client {principal.subject} is over its request rate", retry_after_s=wait_s
            )
        request.scope[PRINCIPAL_SCOPE_KEY] = principal
        request.scope[ACTOR_SCOPE_KEY] = principal.client_id or principal.subject

    setattr(check_roles, _ROLES_ATTR, allowed)
    return RoleRequirement(check_roles)


def public() -> RoleRequirement:
    """The route is open to anyone: ``dependencies=[public()]`` or ``@public()``."""

    async def open_to_all() -> None:
        return None

    setattr(open_to_all, _ROLES_ATTR, PUBLIC)
    return RoleRequirement(open_to_all)


def _route_contexts(app: FastAPI) -> Iterator[Any]:
    """Every route with its effective settings (router prefixes and router-level
    dependencies included). Recent FastAPI keeps included routers as one entry
    each and resolves them lazily; older ones flatten them into app.routes."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:
        yield from app.routes
        return
    yield from iter_route_contexts(app.routes)


def declared_roles(route: Any) -> frozenset[str] | None:
    """The roles a route declared (``PUBLIC`` for a public one), None if none."""
    dependant = getattr(route, "dependant", None)
    calls = [d.call for d in dependant.dependencies] if dependant is not None else []
    calls.append(getattr(route, "endpoint", None))
    declared = [r for c in calls if (r := getattr(c, _ROLES_ATTR, None)) is not None]
    if len(declared) > 1:
        raise ValueError(f"{getattr(route, 'path', route)} declares its roles twice")
    return declared[0] if declared else None


def route_roles(app: FastAPI) -> dict[tuple[str, str], frozenset[str] | None]:
    """(method, path) -> declared roles, for every route of the app; None where a
    route declares none. The framework's own pages (PUBLIC_FRAMEWORK_PATHS) are
    PUBLIC."""
    table: dict[tuple[str, str], frozenset[str] | None] = {}
    for route in _route_contexts(app):
        path = getattr(route, "path", None) or ""
        roles = declared_roles(route)
        if roles is None and path in PUBLIC_FRAMEWORK_PATHS:
            roles = PUBLIC
        for method in sorted(getattr(route, "methods", None) or {"*"}):
            table[(method, path)] = roles
    return table


def document_security(app: FastAPI, doc: dict[str, Any]) -> None:
    """Describe the authentication in an OpenAPI document: the bearer scheme, the
    client-credentials flow (so /docs can get and send a token), and on each
    protected operation the roles it takes (as OAuth scopes)."""
    schemes = doc.setdefault("components", {}).setdefault("securitySchemes", {})
    schemes["bearer"] = {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    schemes["oauth2"] = {
        "type": "oauth2",
        "flows": {
            "clientCredentials": {
                "tokenUrl": "/v1/oauth/token",
                "scopes": {
                    "scorer": "submit transactions and labels",
                    "analyst": "read transactions and decisions, post labels",
                    "admin": "clients, rules, lists, limits, erasure",
                    "auditor": "read the audit trail",
                },
            }
        },
    }
    for (method, path), roles in route_roles(app).items():
        operation = doc.get("paths", {}).get(path, {}).get(method.lower())
        if operation is None or roles is None or roles == PUBLIC:
            continue
        operation["security"] = [{"bearer": []}, {"oauth2": sorted(roles)}]
        # What the dependency itself can answer: no or a bad token, a missing
        # role, the client over its rate (schemas.problem_responses).
        for code, entry in schemas.problem_responses(401, 403, 429).items():
            operation.setdefault("responses", {}).setdefault(str(code), entry)
        operation.setdefault("description", "")
        operation["description"] = (
            operation["description"] + f"\n\nRoles: {', '.join(sorted(roles))}."
        ).strip()
