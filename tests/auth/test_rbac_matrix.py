"""Every route declares who may call it, and the whole role x endpoint matrix holds.

The table is read from the app itself (``rbac.route_roles``), so a route added
later is in the matrix at once, and a route that declares no roles fails
``test_every_route_declares_its_roles``.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI, Request
from starlette.responses import Response

from auth.conftest import AuthApp, bearer, claims, role_token, sign
from conftest import _with_state
from sankofa.api import problems
from sankofa.api.app import create_app
from sankofa.auth.rbac import PUBLIC, PUBLIC_FRAMEWORK_PATHS, public, requires, route_roles
from sankofa.auth.roles import ROLES
from sankofa.settings import Settings

#: The intended matrix for the routes that exist today: a change to any of these
#: declarations must be made here too, on purpose.
EXPECTED: dict[tuple[str, str], frozenset[str]] = {
    ("POST", "/v1/transactions"): frozenset({"scorer"}),
    ("POST", "/v1/transactions/batch"): frozenset({"scorer"}),
    ("POST", "/v1/labels"): frozenset({"scorer", "analyst"}),
    ("GET", "/v1/transactions/{transaction_id}"): frozenset({"analyst"}),
    ("GET", "/v1/clients"): frozenset({"admin"}),
    ("DELETE", "/v1/clients/{client_id}"): frozenset({"admin"}),
    ("POST", "/bench/bare"): frozenset({"scorer"}),
    ("POST", "/bench/naive"): frozenset({"scorer"}),
    ("POST", "/v1/privacy/erasure"): frozenset({"admin"}),
    ("POST", "/v1/rules"): frozenset({"admin"}),
    ("GET", "/v1/rules"): frozenset({"admin", "analyst"}),
    ("GET", "/v1/rules/{rule_id}"): frozenset({"admin", "analyst"}),
    ("GET", "/v1/rules/{rule_id}/versions"): frozenset({"admin", "analyst"}),
    ("PUT", "/v1/rules/{rule_id}"): frozenset({"admin"}),
    ("DELETE", "/v1/rules/{rule_id}"): frozenset({"admin"}),
    ("POST", "/v1/rules/backtest"): frozenset({"admin", "analyst"}),
    ("POST", "/v1/lists/{list_name}/{kinds}"): frozenset({"admin"}),
    ("GET", "/v1/lists/{list_name}/{kinds}"): frozenset({"admin", "analyst"}),
    ("GET", "/v1/lists/{list_name}/{kinds}/{value}"): frozenset({"admin", "analyst"}),
    ("DELETE", "/v1/lists/{list_name}/{kinds}/{value}"): frozenset({"admin"}),
    ("GET", "/v1/limits"): frozenset({"admin", "analyst"}),
    ("GET", "/v1/limits/customers"): frozenset({"admin", "analyst"}),
    ("PUT", "/v1/limits/customers/{customer_id}"): frozenset({"admin"}),
    ("GET", "/v1/limits/customers/{customer_id}"): frozenset({"admin", "analyst"}),
    ("DELETE", "/v1/limits/customers/{customer_id}"): frozenset({"admin"}),
    ("POST", "/v1/oauth/token"): PUBLIC,
    ("GET", "/health/live"): PUBLIC,
    ("HEAD", "/health/live"): PUBLIC,
    ("GET", "/health/ready"): PUBLIC,
    ("HEAD", "/health/ready"): PUBLIC,
    ("GET", "/metrics"): PUBLIC,
}

# Every optional router mounted, so that no route escapes the walk.
TABLE = route_roles(create_app(Settings(environment="test", benchmark_endpoints=True)))
PROTECTED = sorted((k, v) for k, v in TABLE.items() if v is not None and v != PUBLIC)
OUR_PUBLIC = sorted(
    k for k, v in TABLE.items() if v == PUBLIC and k[0] != "*" and k[1] in {p for _, p in EXPECTED}
)


def test_every_route_declares_its_roles() -> None:
    undeclared = sorted(k for k, v in TABLE.items() if v is None)
    assert not undeclared, (
        f"routes without declared roles (rbac.requires / rbac.public): {undeclared}"
    )


def test_the_declarations_are_the_intended_ones() -> None:
    for key, roles in EXPECTED.items():
        assert TABLE.get(key) == roles, key


def test_every_route_is_in_the_intended_matrix() -> None:
    # A new route must be added to EXPECTED on purpose, with its roles.
    ours = {k for k in TABLE if k[0] != "*" and k[1] not in PUBLIC_FRAMEWORK_PATHS}
    assert sorted(ours - set(EXPECTED)) == []


def test_the_walk_sees_the_routes() -> None:
    # The walk must not silently find nothing (a framework change in how routers
    # are included): it finds at least the routes listed above.
    assert set(EXPECTED) <= set(TABLE)


def _path(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x-1", path)


async def _call(app: AuthApp, method: str, path: str, headers: dict[str, str]) -> httpx.Response:
    kwargs: dict[str, Any] = {"headers": headers}
    if method in ("POST", "PUT", "PATCH"):
        kwargs["json"] = {}
    return await app.client.request(method, _path(path), **kwargs)


@pytest.fixture
async def bench_auth_app(auth_settings: Any) -> Any:
    import httpx as _httpx

    from conftest import _with_state

    app = create_app(auth_settings(benchmark_endpoints=True))
    async with app.router.lifespan_context(app) as state:
        transport = _httpx.ASGITransport(app=_with_state(app, state))
        async with _httpx.AsyncClient(transport=transport, base_url="http://sankofa.test") as c:
            yield AuthApp(client=c, services=state["services"])


@pytest.mark.parametrize(("route", "roles"), PROTECTED, ids=[f"{m} {p}" for (m, p), _ in PROTECTED])
async def test_protected_route_role_matrix(
    bench_auth_app: AuthApp, route: tuple[str, str], roles: frozenset[str]
) -> None:
    method, path = route
    app = bench_auth_app
    # No token.
    assert (await _call(app, method, path, {})).status_code == 401
    # Every role, and a wrong audience, and a token holding no role.
    wrong_aud = sign(claims(aud="not-sankofa"))
    assert (await _call(app, method, path, bearer(wrong_aud))).status_code == 401
    assert (await _call(app, method, path, bearer(role_token()))).status_code == 403
    for role in sorted(ROLES):
        status = (await _call(app, method, path, bearer(role_token(role)))).status_code
        if role in roles:
            assert status not in (401, 403), (role, status)
        else:
            assert status == 403, (role, status)


@pytest.mark.parametrize("route", OUR_PUBLIC, ids=[f"{m} {p}" for m, p in OUR_PUBLIC])
async def test_public_route_needs_no_token(auth_app: AuthApp, route: tuple[str, str]) -> None:
    method, path = route
    status = (await _call(auth_app, method, path, {})).status_code
    assert status not in (401, 403), status


async def test_api_description_is_public(auth_app: AuthApp) -> None:
    assert (await auth_app.client.get("/openapi.json")).status_code == 200
    assert (await auth_app.client.get("/docs")).status_code == 200


async def test_a_token_with_several_roles_opens_each_roles_routes(auth_app: AuthApp) -> None:
    token = role_token("scorer", "analyst")
    assert (
        await auth_app.client.get("/v1/transactions/x-1", headers=bearer(token))
    ).status_code == 404
    assert (await auth_app.client.get("/v1/clients", headers=bearer(token))).status_code == 403


async def test_development_mode_lets_requests_in_without_a_token(client: httpx.AsyncClient) -> None:
    # The default test settings: environment test, auth_required unset = off.
    assert (await client.get("/v1/clients")).status_code == 200
    assert (await client.get("/v1/transactions/x-1")).status_code == 404


def test_the_api_description_names_each_operations_roles() -> None:
    doc = create_app(Settings(environment="test")).openapi()
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    flows = doc["components"]["securitySchemes"]["oauth2"]["flows"]
    assert flows["clientCredentials"]["tokenUrl"] == "/v1/oauth/token"
    read = doc["paths"]["/v1/transactions/{transaction_id}"]["get"]
    assert read["security"] == [{"bearer": []}, {"oauth2": ["analyst"]}]
    assert "security" not in doc["paths"]["/health/live"]["get"]
    assert "security" not in doc["paths"]["/v1/oauth/token"]["post"]


async def test_both_forms_of_declaration_are_enforced_and_seen(auth_app: AuthApp) -> None:
    # requires() as a FastAPI dependency (on a route or a router) and as a decorator.
    app = FastAPI()
    problems.install(app)
    guarded = APIRouter(dependencies=[requires("admin")])

    @guarded.get("/by-router")
    async def by_router() -> Response:
        return Response(b"ok")

    @app.get("/by-dependency", dependencies=[requires("auditor")])
    async def by_dependency() -> Response:
        return Response(b"ok")

    @app.get("/by-decorator")
    @requires("auditor")
    async def by_decorator(request: Request) -> Response:
        return Response(b"ok")

    @app.get("/open")
    @public()
    async def open_route() -> Response:
        return Response(b"ok")

    app.include_router(guarded)
    table = route_roles(app)
    assert table[("GET", "/by-router")] == {"admin"}
    assert table[("GET", "/by-dependency")] == {"auditor"}
    assert table[("GET", "/by-decorator")] == {"auditor"}
    assert table[("GET", "/open")] == PUBLIC
    state = {"services": auth_app.services}
    transport = httpx.ASGITransport(app=_with_state(app, state))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        for path, role in (
            ("/by-router", "admin"),
            ("/by-dependency", "auditor"),
            ("/by-decorator", "auditor"),
        ):
            assert (await c.get(path)).status_code == 401
            assert (await c.get(path, headers=bearer(role_token("scorer")))).status_code == 403
            assert (await c.get(path, headers=bearer(role_token(role)))).status_code == 200
        assert (await c.get("/open")).status_code == 200


def test_the_decorator_needs_a_request_parameter() -> None:
    async def no_request() -> None:
        return None

    with pytest.raises(TypeError, match="request"):
        requires("admin")(no_request)
