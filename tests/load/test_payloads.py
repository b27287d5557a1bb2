"""Payloads from the committed handbook slice: valid for the API, unique, zero amounts skipped."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import numpy as np
import pytest

from conftest import FIXTURES
from sankofa.engine.transaction import TransactionParser
from sankofa.load.http import Target
from sankofa.load.payloads import (
    TxColumns,
    check_run_id,
    request_payloads,
    transaction_bodies,
)
from sankofa.load.plan import pass_shift_s, select_rows
from sankofa.load.runner import load_transactions
from sankofa.sim.data import load_raw

SLICE = FIXTURES / "handbook-slice.csv.gz"
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d-03:00$")
AMOUNT = re.compile(r"^[1-9]\d*\.\d\d$|^0\.(0[1-9]|[1-9]\d)$")


def test_bodies_are_valid_unique_and_faithful_to_the_data() -> None:
    raw = load_raw(SLICE)
    zero_rows = np.flatnonzero(raw.amount_cents == 0)
    assert zero_rows.size > 0, "the slice should hold a zero amount to skip"
    tx = load_transactions(SLICE, len(raw))  # more than the non-zero rows: wraps around
    bodies = transaction_bodies(tx, run_id="ltrun1", utc_offset="-03:00")
    parser = TransactionParser(
        hmac_key=b"0123456789abcdef", max_metadata_bytes=2048, max_clock_skew_s=1e12
    )
    ids = set()
    raw_ids = set(raw.transaction_id[zero_rows].tolist())
    for body, handbook_id, when, cents in zip(
        bodies,
        tx.transaction_id.tolist(),
        tx.tx_datetime.tolist(),
        tx.amount_cents.tolist(),
        strict=True,
    ):
        obj = json.loads(body)
        assert set(obj) == {
            "transaction_id",
            "timestamp",
            "amount",
            "customer_id",
            "terminal_id",
            "type",
        }
        parser.parse(obj)  # the API's own validation accepts it
        assert obj["transaction_id"].startswith(f"ltrun1-{handbook_id}")
        assert handbook_id not in raw_ids  # zero amounts never sent
        assert TIMESTAMP.match(obj["timestamp"])
        local = datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        assert obj["timestamp"] == local + "-03:00"
        assert AMOUNT.match(obj["amount"]) and obj["amount"] == f"{cents // 100}.{cents % 100:02d}"
        ids.add(obj["transaction_id"])
    assert len(ids) == len(bodies)


def test_second_pass_over_the_data_moves_forward_in_whole_weeks() -> None:
    raw = load_raw(SLICE)
    valid = int((raw.amount_cents > 0).sum())
    rows, passes = select_rows(raw.amount_cents, valid + 3)
    assert passes.tolist()[-4:] == [0, 1, 1, 1]
    assert rows[valid] == rows[0]
    shift = pass_shift_s(raw.tx_datetime)
    assert shift % (7 * 86400) == 0 and shift > raw.tx_datetime.max() - raw.tx_datetime.min()
    tx = load_transactions(SLICE, valid + 1)
    assert tx.tx_datetime[-1] == tx.tx_datetime[0] + shift
    bodies = transaction_bodies(tx, run_id="r", utc_offset="-03:00")
    assert json.loads(bodies[-1])["transaction_id"].endswith("p1")


def test_start_row_skips_ahead_in_time_order() -> None:
    raw = load_raw(SLICE)
    rows, passes = select_rows(raw.amount_cents, 10, start_row=100)
    assert rows[0] >= 100 and np.all(np.diff(rows) > 0) and not passes.any()


def test_request_bytes_carry_priority_length_and_batch() -> None:
    tx = load_transactions(SLICE, 6)
    bodies = transaction_bodies(tx, run_id="lt", utc_offset="-03:00")
    target = Target.parse("http://127.0.0.1:8000")
    priorities = np.array([0, 3], dtype=np.int8)
    out = request_payloads(
        bodies, priorities, target=target, path="/v1/transactions/batch", batch=3
    )
    assert len(out) == 2
    head, _, body = out[1].partition(b"\r\n\r\n")
    assert head.startswith(b"POST /v1/transactions/batch HTTP/1.1\r\nHost: 127.0.0.1:8000")
    assert b"\r\nX-Priority: low" in head
    assert f"\r\nContent-Length: {len(body)}".encode() in head
    assert [t["transaction_id"] for t in json.loads(body)["transactions"]] == [
        json.loads(b)["transaction_id"] for b in bodies[3:]
    ]
    single = request_payloads(bodies[:2], priorities, target=target, path="/bench/bare", batch=1)
    assert single[0].endswith(bodies[0]) and b"X-Priority: critical" in single[0]


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="run id"):
        check_run_id("has space")
    one, zero = np.array([1]), np.array([0])
    tx = TxColumns(one, one, one, one, amount_cents=zero, passes=zero)
    with pytest.raises(ValueError, match="> 0"):
        transaction_bodies(tx, run_id="r", utc_offset="-03:00")
    with pytest.raises(ValueError, match="offset"):
        transaction_bodies(tx, run_id="r", utc_offset="-3")


def test_every_kth_transaction_can_be_a_pix() -> None:
    """The data has no payment type; --pix-every k sends ids that are multiples of
    k as PIX (the parser takes them), the rest as card payments."""
    tx = load_transactions(SLICE, 300)
    parser = TransactionParser(
        hmac_key=b"0123456789abcdef", max_metadata_bytes=2048, max_clock_skew_s=1e12
    )
    bodies = transaction_bodies(tx, run_id="lt", utc_offset="-03:00", pix_every=3)
    kinds = [json.loads(b)["type"] for b in bodies]
    want = ["pix" if i % 3 == 0 else "card" for i in tx.transaction_id.tolist()]
    assert kinds == want and "pix" in kinds and "card" in kinds
    assert all(parser.parse(json.loads(b)).type == k for b, k in zip(bodies, kinds, strict=True))
    plain = transaction_bodies(tx, run_id="lt", utc_offset="-03:00")
    assert {json.loads(b)["type"] for b in plain} == {"card"}
    with pytest.raises(ValueError):
        transaction_bodies(tx, run_id="lt", utc_offset="-03:00", pix_every=-1)
