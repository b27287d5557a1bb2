"""PCI DSS: a PAN is accepted only in card_number, as a token and last four; refused elsewhere."""

from __future__ import annotations

import asyncpg
import httpx
import pytest

from sankofa.engine.transaction import TransactionParser
from sankofa.errors import InvalidFieldError
from sankofa.privacy.cards import CardTokeniser, looks_like_pan, luhn_ok, pan_digits
from tests_support import tx

VISA = "4111111111111111"
AMEX = "378282246310005"  # 15 digits
MASTER_19 = "6011000990139424"  # Discover, 16
ELO = "6362970000457013"
LUHN_FAIL = "4111111111111112"


@pytest.mark.parametrize(
    "pan",
    [VISA, AMEX, MASTER_19, ELO, "4111 1111 1111 1111", "4111-1111-1111-1111", "3782 822463 10005"],
)
def test_pans_are_recognised_alone_and_inside_text(pan: str) -> None:
    assert looks_like_pan(pan)
    assert looks_like_pan(f"paid with {pan}.")
    assert looks_like_pan(f"tx:{pan}")
    assert pan_digits(pan) is not None


@pytest.mark.parametrize(
    "text",
    [
        LUHN_FAIL,
        "411111111111",  # 12 digits
        "41111111111111111111111",  # 23 digits: not a card number
        "4111  1111 1111 1111",  # two spaces: not one run
        "4111 1111-1111 1111",  # mixed separators
        "12345678-1234567",  # a run id and a counter, not a card's grouping
        "lt20251204-1754154",
        "2018-04-01T10:00:00-03:00",
        "c-596",
        "",
    ],
)
def test_other_values_are_not_pans(text: str) -> None:
    assert not looks_like_pan(text)


def test_luhn() -> None:
    assert luhn_ok("79927398713") and not luhn_ok("79927398710")


def test_card_field_rules() -> None:
    assert pan_digits("4111 1111 1111 1111") == VISA
    for bad in (LUHN_FAIL, int(VISA), "4111111111111111x", "411111111111", " 4111111111111111"):
        assert pan_digits(bad) is None


def test_tokens_are_keyed() -> None:
    a = CardTokeniser(key=b"k" * 32).tokenise(VISA)
    assert a == CardTokeniser(key=b"k" * 32).tokenise(VISA)
    assert a[1] == "1111" and VISA not in a[0]
    assert CardTokeniser(key=b"j" * 32).tokenise(VISA)[0] != a[0]


def _parser() -> TransactionParser:
    return TransactionParser(hmac_key=b"test-hmac-key-0123456789", max_metadata_bytes=2048)


@pytest.mark.parametrize(
    ("field", "over"),
    [
        ("transaction_id", {"transaction_id": f"tx-{VISA}"}),
        ("customer_id", {"customer_id": VISA}),
        ("terminal_id", {"terminal_id": f"t {AMEX}"}),
        ("device_id", {"device_id": "4111-1111-1111-1111"}),
        ("metadata.note", {"metadata": {"note": f"card {VISA} declined"}}),
        ("metadata.n", {"metadata": {"n": int(VISA)}}),
        ("metadata", {"metadata": {VISA: "x"}}),
    ],
)
def test_a_pan_anywhere_else_is_refused_without_quoting_it(
    field: str, over: dict[str, object]
) -> None:
    with pytest.raises(InvalidFieldError) as e:
        _parser().parse(tx(1, **over))
    (issue,) = e.value.issues
    assert issue.field == field
    assert "card number" in issue.message
    assert "4111" not in str(e.value.issues) and "3782" not in str(e.value.issues)


def test_numbers_that_are_not_pans_pass() -> None:
    t = _parser().parse(
        tx(1, metadata={"order": LUHN_FAIL, "n": 12345678901234}, transaction_id="tx-411111111111")
    )
    assert t.metadata == {"order": LUHN_FAIL, "n": 12345678901234}


def test_card_number_becomes_token_and_last_four() -> None:
    p = _parser()
    a = p.parse(tx(1, card_number="4111 1111 1111 1111"))
    b = p.parse(tx(1, card_number=VISA))
    assert a.card_token == b.card_token and a.card_last4 == "1111"
    assert a.content_hash == b.content_hash  # the same card, however written
    assert p.parse(tx(1, card_number=ELO)).content_hash != a.content_hash
    # Without a card the content hash is what it was before cards existed.
    assert p.parse(tx(1)).card_token is None
    with pytest.raises(InvalidFieldError) as e:
        p.parse(tx(1, card_number=LUHN_FAIL))
    assert e.value.issues[0].field == "card_number" and LUHN_FAIL not in str(e.value.issues)


async def test_the_api_stores_a_token_never_the_pan(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    r = await client.post("/v1/transactions", json=tx(1, card_number="4111 1111 1111 1111"))
    assert r.status_code == 200, r.text
    row = await db.fetchrow(
        "SELECT card_token, card_last4 FROM transactions WHERE transaction_id = 'tx-1'"
    )
    assert row["card_last4"] == "1111" and len(row["card_token"]) == 32
    got = (await client.get("/v1/transactions/tx-1")).json()["transaction"]
    assert got["card_last4"] == "1111" and got["card_token"] == row["card_token"]
    r = await client.post("/v1/transactions", json=tx(2, metadata={"pan": VISA}))
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "metadata.pan" and VISA not in r.text
    r = await client.get(f"/v1/transactions/{VISA}")
    assert r.status_code == 422 and VISA not in r.text
    assert await db.fetchval("SELECT count(*) FROM transactions") == 1
