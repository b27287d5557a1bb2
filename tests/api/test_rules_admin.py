"""The admin API of rules, lists and limits over HTTP, on real PostgreSQL."""

from __future__ import annotations

import asyncpg
import httpx
import pytest

PROBLEM = "application/problem+json"


def rule(rule_id: str = "big-pix", **over: object) -> dict[str, object]:
    body: dict[str, object] = {
        "id": rule_id,
        "action": "review",
        "priority": 10,
        "mode": "active",
        "expression": 'type == "pix" and amount > 1000',
    }
    body.update(over)
    return body


async def test_rule_versions_create_update_delete(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    r = await client.post("/v1/rules", json=rule(description="large PIX"))
    assert r.status_code == 201, r.text
    assert r.json()["version"] == 1 and r.json()["description"] == "large PIX"
    again = await client.post("/v1/rules", json=rule())
    assert again.status_code == 409 and again.headers["content-type"] == PROBLEM

    r = await client.put("/v1/rules/big-pix", json=rule(action="decline", priority=5))
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 2 and r.json()["action"] == "decline"
    got = (await client.get("/v1/rules/big-pix")).json()
    assert got["version"] == 2 and got["priority"] == 5

    listed = (await client.get("/v1/rules")).json()
    assert [x["id"] for x in listed["rules"]] == ["big-pix"] and listed["revision"] > 0

    assert (await client.delete("/v1/rules/big-pix")).status_code == 204
    assert (await client.get("/v1/rules/big-pix")).status_code == 404
    assert (await client.delete("/v1/rules/big-pix")).status_code == 404
    assert (await client.put("/v1/rules/big-pix", json=rule())).status_code == 404
    assert (await client.get("/v1/rules")).json()["rules"] == []

    history = (await client.get("/v1/rules/big-pix/versions")).json()["versions"]
    assert [(v["version"], v["action"], v.get("deleted", False)) for v in history] == [
        (1, "review", False),
        (2, "decline", False),
        (3, "decline", True),
    ]
    # A deleted id can be created again; its history goes on.
    r = await client.post("/v1/rules", json=rule())
    assert r.status_code == 201 and r.json()["version"] == 4
    assert await db.fetchval("SELECT count(*) FROM rule_versions") == 4


async def test_a_put_keeps_the_fields_it_leaves_out(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    """A PUT naming only the expression must not turn a shadow rule active or
    drop its description (the defaults of a create are not an update's)."""
    r = await client.post("/v1/rules", json=rule(mode="shadow", description="trial"))
    assert r.status_code == 201, r.text
    r = await client.put("/v1/rules/big-pix", json={"expression": "amount > 2000"})
    assert r.status_code == 200, r.text
    got = r.json()
    assert (got["version"], got["mode"], got["description"]) == (2, "shadow", "trial")
    assert (got["action"], got["priority"], got["expression"]) == ("review", 10, "amount > 2000")
    # Null is not "left out": it is refused, and nothing is stored.
    for field in ("mode", "description", "expression"):
        r = await client.put("/v1/rules/big-pix", json={field: None})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == field, r.text
    # Only unknown fields: named as unknown, not as "nothing to change".
    r = await client.put("/v1/rules/big-pix", json={"bogus": 1})
    assert r.status_code == 422 and "bogus" in r.text, r.text
    # A body naming nothing to change is refused rather than stored as a copy.
    for body in ({}, {"id": "big-pix"}):
        r = await client.put("/v1/rules/big-pix", json=body)
        assert r.status_code == 422 and r.headers["content-type"] == PROBLEM, r.text
    # A bad field is refused even when the others are left out.
    r = await client.put("/v1/rules/big-pix", json={"priority": -1})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "priority"
    assert await db.fetchval("SELECT max(version) FROM rule_versions") == 2


async def test_if_match_refuses_a_change_to_a_version_that_moved_on(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    """Two analysts read version 1; the first change wins, the second is a 412
    instead of silently replacing it."""
    created = await client.post("/v1/rules", json=rule())
    assert created.headers["etag"] == '"1"'
    read = await client.get("/v1/rules/big-pix")
    assert read.headers["etag"] == '"1"'

    first = await client.put(
        "/v1/rules/big-pix", json={"priority": 5}, headers={"If-Match": read.headers["etag"]}
    )
    assert first.status_code == 200 and first.headers["etag"] == '"2"'
    second = await client.put(
        "/v1/rules/big-pix", json={"action": "decline"}, headers={"If-Match": '"1"'}
    )
    assert second.status_code == 412 and second.headers["content-type"] == PROBLEM
    assert "version 2" in second.json()["detail"]
    gone = await client.delete("/v1/rules/big-pix", headers={"If-Match": '"1"'})
    assert gone.status_code == 412
    # A weak tag never matches (If-Match compares strongly); a list may name the
    # latest among others; * matches any existing version.
    weak = await client.put(
        "/v1/rules/big-pix", json={"priority": 6}, headers={"If-Match": 'W/"2"'}
    )
    assert weak.status_code == 412
    listed = await client.put(
        "/v1/rules/big-pix", json={"priority": 7}, headers={"If-Match": '"1", "2"'}
    )
    assert listed.status_code == 200 and listed.json()["version"] == 3
    # A malformed If-Match is the client's mistake (422), not a version that moved
    # on (412); * mixed with tags is malformed, not a wildcard.
    for bad in (b'"1",*', b"3", b'"3', b"garbage", b"W/*", '"\uff14"'.encode()):
        r = await client.put(
            "/v1/rules/big-pix", json={"priority": 8}, headers={"If-Match": bad}
        )  # fmt: skip
        assert r.status_code == 422 and r.headers["content-type"] == PROBLEM, (bad, r.text)
        assert r.json()["errors"][0]["field"] == "header If-Match"
    rows = await db.fetch("SELECT version, priority FROM rule_versions ORDER BY version")
    assert [(r["version"], r["priority"]) for r in rows] == [(1, 10), (2, 5), (3, 7)]
    assert (await client.delete("/v1/rules/big-pix", headers={"If-Match": "*"})).status_code == 204
    # On a rule that does not exist the answer is 404 whatever If-Match says.
    r = await client.put("/v1/rules/big-pix", json={"priority": 1}, headers={"If-Match": "*"})
    assert r.status_code == 404


async def test_unknown_rule_is_404(client: httpx.AsyncClient) -> None:
    for path in ("/v1/rules/nope", "/v1/rules/nope/versions", "/v1/rules/..bad"):
        r = await client.get(path)
        assert r.status_code == 404 and r.headers["content-type"] == PROBLEM


@pytest.mark.parametrize(
    "over, field",
    [
        ({"action": "block"}, "action"),
        ({"priority": -1}, "priority"),
        ({"priority": 1.5}, "priority"),
        ({"priority": True}, "priority"),
        ({"mode": "dry"}, "mode"),
        ({"id": ""}, "id"),
        ({"id": "a b"}, "id"),
        ({"expression": 3}, "expression"),
        ({"colour": "red"}, "colour"),
        ({"description": "x" * 501}, "description"),
    ],
)
async def test_bad_rule_fields_are_422(
    client: httpx.AsyncClient, db: asyncpg.Connection, over: dict[str, object], field: str
) -> None:
    r = await client.post("/v1/rules", json=rule(**over))
    assert r.status_code == 422 and r.headers["content-type"] == PROBLEM
    assert field in [e["field"] for e in r.json()["errors"]]
    assert await db.fetchval("SELECT count(*) FROM rule_versions") == 0


@pytest.mark.parametrize(
    "expression, position, name",
    [
        ('type == "pix" and amout > 1000', 18, "amout"),
        ("amount >", 8, None),
        ('type == "wire"', 8, None),
        ("amount > 1 and (is_night", 24, None),
        ("(" * 40 + "is_night" + ")" * 40, 32, None),
        ("is_night or " * 200 + "true", 2000, None),
    ],
)
async def test_a_rule_that_does_not_parse_is_422_pointing_at_the_problem(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    expression: str,
    position: int,
    name: str | None,
) -> None:
    r = await client.post("/v1/rules", json=rule(expression=expression))
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["type"] == "urn:sankofa:problem:invalid-field"
    assert body["errors"][0]["field"] == "expression"
    assert body["expression_error"]["position"] == position
    assert body["expression_error"].get("name") == name
    if name:
        assert f"unknown field {name!r}" in body["detail"]
    # An update with a broken expression leaves the rule as it was.
    await client.post("/v1/rules", json=rule("ok"))
    r = await client.put("/v1/rules/ok", json=rule("ok", expression=expression))
    assert r.status_code == 422
    assert await db.fetchval("SELECT max(version) FROM rule_versions WHERE rule_id = 'ok'") == 1


async def test_lists_add_replace_read_delete(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    r = await client.post(
        "/v1/lists/hot/customers", json={"value": "cust-9", "reason": "account takeover"}
    )
    assert r.status_code == 201, r.text
    entry = r.json()
    assert entry["kind"] == "customer" and entry["active"] and entry["expires_at"] is None
    assert entry["value_ref"] != "cust-9"  # pseudonymised, never stored in clear
    assert await db.fetchval("SELECT count(*) FROM list_entries WHERE value_ref = 'cust-9'") == 0
    r = await client.post(
        "/v1/lists/hot/customers",
        json={"value": "cust-9", "reason": "confirmed", "expires_at": "2099-01-01T00:00:00Z"},
    )
    assert r.status_code == 200 and r.json()["reason"] == "confirmed"
    assert r.json()["expires_at"].startswith("2099-01-01")
    one = await client.get("/v1/lists/hot/customers/cust-9")
    assert one.status_code == 200 and one.json()["value_ref"] == entry["value_ref"]
    assert (await client.get("/v1/lists/allow/customers/cust-9")).status_code == 404
    page = (await client.get("/v1/lists/hot/customers")).json()
    assert [e["value_ref"] for e in page["entries"]] == [entry["value_ref"]]
    assert "cust-9" not in str(page)
    # Terminals are kept as their id, IPs normalised before hashing.
    t = await client.post("/v1/lists/allow/terminals", json={"value": "term-1", "reason": "ours"})
    assert t.status_code == 201 and t.json()["value_ref"] == "term-1"
    a = await client.post("/v1/lists/hot/ips", json={"value": "2001:db8::1", "reason": "bot"})
    b = await client.post(
        "/v1/lists/hot/ips", json={"value": "2001:0db8:0:0:0:0:0:1", "reason": "bot"}
    )
    assert a.status_code == 201 and b.status_code == 200
    assert a.json()["value_ref"] == b.json()["value_ref"]

    assert (await client.delete("/v1/lists/hot/customers/cust-9")).status_code == 204
    assert (await client.delete("/v1/lists/hot/customers/cust-9")).status_code == 404
    assert (await client.get("/v1/lists/hot/customers")).json()["entries"] == []


@pytest.mark.parametrize(
    "path, body, status, field",
    [
        ("/v1/lists/hot/ips", {"value": "999.1.1.1", "reason": "x"}, 422, "value"),
        ("/v1/lists/hot/customers", {"value": "c", "reason": ""}, 422, "reason"),
        ("/v1/lists/hot/customers", {"reason": "x"}, 422, "value"),
        ("/v1/lists/hot/customers", {"value": "c", "reason": "x", "until": 1}, 422, "until"),
        (
            "/v1/lists/hot/customers",
            {"value": "c", "reason": "x", "expires_at": "2001-01-01T00:00:00Z"},
            422,
            "expires_at",
        ),
        (
            "/v1/lists/hot/customers",
            {"value": "c", "reason": "x", "expires_at": "2099-01-01T00:00:00"},
            422,
            "expires_at",
        ),
        # A transaction cannot carry such an id: the entry could never match.
        ("/v1/lists/hot/customers", {"value": " cust-1", "reason": "x"}, 422, "value"),
        ("/v1/lists/allow/terminals", {"value": "t-1 ", "reason": "x"}, 422, "value"),
        ("/v1/lists/cold/customers", {"value": "c", "reason": "x"}, 404, None),
        ("/v1/lists/hot/merchants", {"value": "c", "reason": "x"}, 404, None),
    ],
)
async def test_bad_list_entries(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    path: str,
    body: dict[str, object],
    status: int,
    field: str | None,
) -> None:
    r = await client.post(path, json=body)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    if field:
        assert field in [e["field"] for e in r.json()["errors"]]
    assert await db.fetchval("SELECT count(*) FROM list_entries") == 0


async def test_limits_own_and_default(client: httpx.AsyncClient) -> None:
    d = (await client.get("/v1/limits")).json()
    assert d == {
        "night_pix_limit": "1000.00",
        "night_start": "20:00",
        "night_end": "06:00",
        "timezone": "America/Sao_Paulo",
        "max_amount": None,
    }
    got = (await client.get("/v1/limits/customers/cust-1")).json()
    assert got["default"] is True and got["night_pix_limit"] == "1000.00"
    r = await client.put(
        "/v1/limits/customers/cust-1", json={"night_pix_limit": "2500.5", "max_amount": 10000}
    )
    assert r.status_code == 200, r.text
    assert r.json()["night_pix_limit"] == "2500.50" and r.json()["max_amount"] == "10000.00"
    got = (await client.get("/v1/limits/customers/cust-1")).json()
    assert got["default"] is False and got["night_pix_limit"] == "2500.50"
    r = await client.put("/v1/limits/customers/cust-1", json={"night_pix_limit": None})
    assert r.json()["night_pix_limit"] is None and r.json()["max_amount"] is None
    assert len((await client.get("/v1/limits/customers")).json()["limits"]) == 1
    assert (await client.delete("/v1/limits/customers/cust-1")).status_code == 204
    assert (await client.get("/v1/limits/customers/cust-1")).json()["default"] is True
    assert (await client.delete("/v1/limits/customers/cust-1")).status_code == 404


@pytest.mark.parametrize(
    "body, field",
    [
        ({}, "night_pix_limit"),
        ({"night_pix_limit": "-1"}, "night_pix_limit"),
        ({"night_pix_limit": 0}, "night_pix_limit"),
        ({"night_pix_limit": "10.001"}, "night_pix_limit"),
        ({"night_pix_limit": 100, "max_amount": "lots"}, "max_amount"),
        ({"night_pix_limit": 100, "daily": 5}, "daily"),
    ],
)
async def test_bad_limits_are_422(
    client: httpx.AsyncClient, db: asyncpg.Connection, body: dict[str, object], field: str
) -> None:
    r = await client.put("/v1/limits/customers/cust-1", json=body)
    assert r.status_code == 422 and r.headers["content-type"] == PROBLEM
    assert field in [e["field"] for e in r.json()["errors"]]
    assert await db.fetchval("SELECT count(*) FROM customer_limits") == 0


async def test_a_limit_for_an_id_no_transaction_can_carry_is_422(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    for path in ("/v1/limits/customers/%20cust-1", "/v1/limits/customers/cust-1%20"):
        r = await client.put(path, json={"night_pix_limit": "5000"})
        assert r.status_code == 422 and r.headers["content-type"] == PROBLEM, r.text
        assert r.json()["errors"][0]["field"] == "customer_id (path)"
    assert await db.fetchval("SELECT count(*) FROM customer_limits") == 0


async def test_page_limit_is_checked(client: httpx.AsyncClient) -> None:
    for q in ("0", "1001", "x", "-1"):
        r = await client.get(f"/v1/lists/hot/terminals?limit={q}")
        assert r.status_code == 422


async def test_every_change_is_in_the_audit_trail_and_the_chain_verifies(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    """Rule, list and limit changes are audit records written with the change;
    a refused or empty change writes none; no customer reference is in them."""
    import orjson

    from sankofa.store import audit

    start = await db.fetchval("SELECT coalesce(max(seq), 0) FROM audit_log")
    assert (await client.post("/v1/rules", json=rule())).status_code == 201
    assert (await client.post("/v1/rules", json=rule())).status_code == 409
    assert (await client.put("/v1/rules/big-pix", json=rule(action="decline"))).status_code == 200
    assert (await client.delete("/v1/rules/big-pix")).status_code == 204
    entry = {"value": "customer-secret-7", "reason": "chargebacks"}
    assert (await client.post("/v1/lists/hot/customers", json=entry)).status_code == 201
    assert (await client.delete("/v1/lists/hot/customers/customer-secret-7")).status_code == 204
    assert (await client.delete("/v1/lists/hot/customers/customer-secret-7")).status_code == 404
    rows = await db.fetch("SELECT payload FROM audit_log WHERE seq > $1 ORDER BY seq", start)
    records = [orjson.loads(r["payload"]) for r in rows]
    changes = [(r["kind"], r["details"]["op"]) for r in records if r["kind"] != "decision_batch"]
    assert changes == [
        ("rules.change", "create"),
        ("rules.change", "update"),
        ("rules.change", "delete"),
        ("lists.change", "put"),
        ("lists.change", "delete"),
    ]
    text = " ".join(r["payload"] for r in rows)
    assert "customer-secret-7" not in text and "chargebacks" not in text
    report = await audit.verify(db)
    assert report.ok, report


PAN = "4111111111111111"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/rules", rule(description=f"card {PAN}")),
        ("POST", "/v1/rules", rule(expression=f'terminal_id == "{PAN}"')),
        ("POST", "/v1/rules", rule(rule_id=PAN)),
        ("PUT", f"/v1/rules/{PAN}", rule(rule_id=PAN)),
        ("POST", "/v1/lists/hot/terminals", {"value": "t-1", "reason": f"card {PAN[:4]} {PAN[4:8]} {PAN[8:12]} {PAN[12:]}"}),
        ("POST", "/v1/lists/hot/terminals", {"value": PAN, "reason": "x"}),
        ("POST", "/v1/lists/allow/customers", {"value": PAN, "reason": "x"}),
        ("DELETE", f"/v1/lists/hot/terminals/{PAN}", None),
        ("PUT", "/v1/limits/customers/c-1", {"night_pix_limit": "500.00", "reason": f"card {PAN}"}),
        ("PUT", f"/v1/limits/customers/{PAN}", {"night_pix_limit": "500.00"}),
        ("POST", "/v1/rules/backtest", {"expression": f'terminal_id == "{PAN}"', "from": "2018-04-01T00:00:00Z", "to": "2018-04-02T00:00:00Z"}),
        ("POST", "/v1/privacy/erasure", {"customer_id": "c-9", "request_ref": PAN}),
    ],
)  # fmt: skip
async def test_a_card_number_in_any_admin_input_is_refused_and_stored_nowhere(
    client: httpx.AsyncClient, db: asyncpg.Connection, method: str, path: str, body: object
) -> None:
    """PCI DSS: what operators type goes into tables, cache keys and the audit trail
    (which can never be edited): a PAN there is a 422 that does not quote it."""
    start = await db.fetchval("SELECT coalesce(max(seq), 0) FROM audit_log")
    r = await client.request(method, path, json=body)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == PROBLEM
    assert PAN not in r.text and PAN[-12:] not in r.text
    for table in ("rule_versions", "list_entries", "customer_limits"):
        assert await db.fetchval(f"SELECT count(*) FROM {table}") == 0, table
    assert await db.fetchval("SELECT count(*) FROM audit_log WHERE seq > $1", start) == 0


async def test_an_ip_list_entry_with_a_zone_is_refused(client: httpx.AsyncClient) -> None:
    """A zone names an interface of the sender's host: transactions refuse it, so an
    entry with one could never match."""
    r = await client.post("/v1/lists/hot/ips", json={"value": "fe80::1%eth0", "reason": "x"})
    assert r.status_code == 422, r.text
    assert (
        await client.post("/v1/lists/hot/ips", json={"value": "fe80::1", "reason": "x"})
    ).status_code == 201
