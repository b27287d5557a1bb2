"""LGPD: CPF/CNPJ check digits, pseudonymised customers, erasure, retention."""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from pydantic import ValidationError

from sankofa import cli
from sankofa.privacy.cards import luhn_ok
from sankofa.privacy.documents import normalise_cnpj, normalise_cpf
from sankofa.privacy.erasure import enforce_retention
from sankofa.settings import Settings
from sankofa.store import audit
from tests_support import tx

CPF = "529.982.247-25"
CPF_DIGITS = "52998224725"
CNPJ = "11.222.333/0001-81"


def _cnpj_passing_luhn() -> str:
    """A valid CNPJ whose 14 digits also pass the Luhn check (a PAN shape, if undeclared)."""
    w1, w2 = [5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2], [6, 5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2]
    for base in range(112223330001, 112223339999):
        v = [int(c) for c in str(base)]
        r = sum(a * b for a, b in zip(v, w1, strict=True)) % 11
        d1 = 0 if r < 2 else 11 - r
        r = sum(a * b for a, b in zip([*v, d1], w2, strict=True)) % 11
        d2 = 0 if r < 2 else 11 - r
        text = f"{base}{d1}{d2}"
        if luhn_ok(text):
            return text
    raise AssertionError("none found")


@pytest.mark.parametrize("good", [CPF, CPF_DIGITS, "111.444.777-35"])
def test_valid_cpfs(good: str) -> None:
    assert normalise_cpf(good) is not None


@pytest.mark.parametrize(
    "bad",
    ["529.982.247-26", "52998224735", "111.111.111-11", "5299822472", "529.982.247/25", "abc"],
)
def test_invalid_cpfs(bad: str) -> None:
    assert normalise_cpf(bad) is None


def test_cnpjs() -> None:
    assert normalise_cnpj(CNPJ) == "11222333000181"
    assert normalise_cnpj("11222333000182") is None
    assert normalise_cnpj("00.000.000/0000-00") is None
    # The alphanumeric CNPJ (from July 2026), the Receita Federal's own example.
    assert normalise_cnpj("12.ABC.345/01DE-35") == "12ABC34501DE35"
    assert normalise_cnpj("12abc34501de35") == "12ABC34501DE35"
    assert normalise_cnpj("12.ABC.345/01DE-36") is None


async def test_declared_documents_are_checked_and_normalised(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    r = await client.post(
        "/v1/transactions", json=tx(1, customer_id="529.982.247-26", customer_id_type="cpf")
    )
    assert r.status_code == 422
    assert r.json()["errors"] == [
        {"field": "customer_id", "message": "is not a valid CPF (format or check digits)"}
    ]
    r = await client.post("/v1/transactions", json=tx(1, customer_id=CPF, customer_id_type="rg"))
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "customer_id_type"
    r = await client.post("/v1/transactions", json=tx(1, customer_id=CNPJ, customer_id_type="cpf"))
    assert r.status_code == 422
    for i, (cid, kind) in enumerate([(CPF, "cpf"), (CPF_DIGITS, "cpf"), (CPF_DIGITS, None)]):
        body = tx(10 + i, customer_id=cid)
        if kind:
            body["customer_id_type"] = kind
        assert (await client.post("/v1/transactions", json=body)).status_code == 200
    refs = await db.fetch("SELECT customer_ref FROM transactions ORDER BY transaction_id")
    assert len({r["customer_ref"] for r in refs}) == 1  # one person, however written
    stored = " ".join(
        str(v) for r in await db.fetch("SELECT * FROM transactions") for v in r.values()
    )
    assert CPF_DIGITS not in stored and CPF not in stored
    # A CNPJ that also has a PAN's shape is fine where declared as a CNPJ.
    cnpj = _cnpj_passing_luhn()
    r = await client.post(
        "/v1/transactions", json=tx(20, customer_id=cnpj, customer_id_type="cnpj")
    )
    assert r.status_code == 200, r.text
    r = await client.post("/v1/transactions", json=tx(21, customer_id=cnpj))
    assert r.status_code == 422


_DECISION = "decision, risk_score, risk_level, reasons, model_version, features, amount, event_time, terminal_id"


async def test_erasure_strips_personal_data_and_keeps_decisions(
    client: httpx.AsyncClient, db: asyncpg.Connection, services: Any
) -> None:
    person = [
        tx(
            i,
            customer_id=CPF,
            customer_id_type="cpf",
            device_id=f"phone-{i}",
            ip_address="192.0.2.7",
            card_number="4111111111111111",
            metadata={"name": "Maria"},
        )
        for i in range(3)
    ]
    other = tx(9, customer_id="someone-else", metadata={"k": "v"})
    start = await db.fetchval("SELECT seq FROM audit_head")
    r = await client.post("/v1/transactions/batch", json={"transactions": [*person, other]})
    assert r.status_code == 200, r.text
    ref = await db.fetchval("SELECT customer_ref FROM transactions WHERE transaction_id = 'tx-0'")
    key = services.features.customer_key(ref)
    assert await services.redis.exists(key)
    before = {
        r["transaction_id"]: dict(r)
        for r in await db.fetch(f"SELECT transaction_id, {_DECISION} FROM transactions")
    }
    other_before = dict(
        await db.fetchrow("SELECT * FROM transactions WHERE transaction_id = 'tx-9'")
    )
    head = await db.fetchval("SELECT seq FROM audit_head")
    # Read once: the stored view is now in the cache (GET /v1/transactions/{id}).
    seen = (await client.get("/v1/transactions/tx-0")).json()["transaction"]
    assert seen["metadata"] == {"name": "Maria"} and seen["card_last4"] == "1111"

    r = await client.post(
        "/v1/privacy/erasure",
        json={"customer_id": CPF_DIGITS, "customer_id_type": "cpf", "request_ref": "DPO-2026-17"},
    )
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["transactions_erased"] == 3 and out["feature_history_deleted"] is True
    # The cached view went with the data.
    after = (await client.get("/v1/transactions/tx-0")).json()["transaction"]
    assert after["metadata"] is None and after["card_last4"] is None
    assert after["personal_data_erased_at"] is not None

    rows = await db.fetch(
        "SELECT transaction_id, customer_ref, device_ref, ip_ref, metadata, card_token, card_last4,"
        " personal_data_erased_at FROM transactions WHERE transaction_id <> 'tx-9'"
    )
    for row in rows:
        assert row["customer_ref"] == f"erased:{row['transaction_id']}"
        assert row["device_ref"] is row["ip_ref"] is row["metadata"] is None
        assert row["card_token"] is row["card_last4"] is None
        assert row["personal_data_erased_at"] is not None
    after = {
        r["transaction_id"]: dict(r)
        for r in await db.fetch(f"SELECT transaction_id, {_DECISION} FROM transactions")
    }
    assert after == before  # the decision records stay whole
    assert (
        dict(await db.fetchrow("SELECT * FROM transactions WHERE transaction_id = 'tx-9'"))
        == other_before
    )
    assert not await services.redis.exists(key)

    # Recorded, naming no one; the batch's decision digest still matches.
    trail = await db.fetch("SELECT seq, payload FROM audit_log WHERE seq > $1 ORDER BY seq", head)
    (rec,) = [orjson.loads(t["payload"]) for t in trail]
    assert rec["kind"] == "erasure" and rec["seq"] == out["audit_seq"]
    assert rec["details"]["transactions"] == 3 and rec["details"]["request_ref"] == "DPO-2026-17"
    assert rec["details"]["erasure_id"] == out["erasure_id"]
    text = trail[0]["payload"]
    assert CPF_DIGITS not in text and ref not in text and "Maria" not in text
    batch_seq = await db.fetchval(
        "SELECT seq FROM audit_trail WHERE kind = 'decision_batch' AND seq > $1"
        " AND details->'transaction_ids' ? 'tx-0'",
        start,
    )
    batch = orjson.loads(
        await db.fetchval("SELECT payload FROM audit_log WHERE seq = $1", batch_seq)
    )
    rep = audit.VerifyReport()
    await audit._check_decisions(db, batch_seq, batch["details"], rep)
    assert rep.ok and rep.decision_batches_checked == 1

    # A retry of an erased transaction still gets its decision back.
    r = await client.post("/v1/transactions", json=person[0])
    assert r.status_code == 200 and r.json()["replayed"] is True
    # GET shows the erasure.
    got = (await client.get("/v1/transactions/tx-0")).json()["transaction"]
    assert got["personal_data_erased_at"] and got["device_ref"] is None
    # Erasing again finds nothing and is recorded again.
    r = await client.post(
        "/v1/privacy/erasure", json={"customer_id": CPF, "customer_id_type": "cpf"}
    )
    assert r.status_code == 200 and r.json()["transactions_erased"] == 0


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"customer_id": ""},
        {"customer_id": CPF, "customer_id_type": "cpf", "extra": 1},
        {"customer_id": "529.982.247-26", "customer_id_type": "cpf"},
        {"customer_id": "x", "customer_id_type": "passport"},
        {"customer_id": "x", "request_ref": "Maria da Silva"},
        [],
    ],
)
async def test_bad_erasure_requests_are_422_and_change_nothing(
    client: httpx.AsyncClient, db: asyncpg.Connection, body: Any
) -> None:
    head = await db.fetchval("SELECT seq FROM audit_head")
    r = await client.post("/v1/privacy/erasure", json=body)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert await db.fetchval("SELECT seq FROM audit_head") == head


async def test_retention_strips_old_personal_data_only(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    body = {"transactions": [tx(i, device_id="d", metadata={"a": "b"}) for i in range(5)]}
    assert (await client.post("/v1/transactions/batch", json=body)).status_code == 200
    await db.execute(
        "UPDATE transactions SET received_at = now() - make_interval(days => 400 + length(transaction_id))"
        " WHERE transaction_id IN ('tx-0', 'tx-1')"
    )
    await db.execute(
        "UPDATE transactions SET received_at = now() - interval '300 days' WHERE transaction_id = 'tx-2'"
    )
    head = await db.fetchval("SELECT seq FROM audit_head")
    rep = await enforce_retention(db, days=365, dry_run=True)
    assert rep.transactions == 2 and await db.fetchval("SELECT seq FROM audit_head") == head
    rep = await enforce_retention(db, days=365, actor="cron")
    assert rep.transactions == 2 and len(rep.audit_seqs) >= 1
    erased = await db.fetch(
        "SELECT transaction_id FROM transactions WHERE personal_data_erased_at IS NOT NULL"
        " AND device_ref IS NULL AND metadata IS NULL AND customer_ref LIKE 'erased:%'"
        " ORDER BY 1"
    )
    assert [r["transaction_id"] for r in erased] == ["tx-0", "tx-1"]
    kept = await db.fetchval(
        "SELECT count(*) FROM transactions WHERE device_ref IS NOT NULL AND metadata IS NOT NULL"
    )
    assert kept == 3
    rows = await db.fetch("SELECT payload FROM audit_log WHERE seq > $1", head)
    trail = [orjson.loads(r["payload"]) for r in rows]
    assert {t["kind"] for t in trail} == {"retention"}
    assert sum(t["details"]["transactions"] for t in trail) == 2
    assert (await enforce_retention(db, days=365)).transactions == 0  # twice is safe


def test_retention_cli(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SANKOFA_DATABASE_URL", settings.database_url or "")
    assert cli.main(["privacy", "retention", "--dry-run", "--days", "30"]) == 0
    out = orjson.loads(capsys.readouterr().out)
    assert out["dry_run"] is True and out["transactions"] == 0
    monkeypatch.setenv("SANKOFA_DATABASE_URL", "postgresql://postgres@127.0.0.1:1/none")
    assert cli.main(["privacy", "retention"]) == 2


def test_settings_refuse_unsafe_values() -> None:
    with pytest.raises(ValidationError, match="CARD_TOKEN_KEY"):
        Settings(environment="production", hmac_key="a-production-secret-0123456789")
    with pytest.raises(ValidationError, match="CARD_TOKEN_KEY"):
        Settings(
            environment="production",
            hmac_key="a-production-secret-0123456789",
            card_token_key="a-production-secret-0123456789",
        )
    Settings(
        environment="production",
        hmac_key="a-production-secret-0123456789",
        card_token_key="another-production-secret-987",
        jwt_secret="a-jwt-signing-secret-of-32-bytes-or-more",
    )
    with pytest.raises(ValidationError):
        Settings(personal_data_retention_days=30)
