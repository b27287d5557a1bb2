"""Champion and challenger: a shadow model scored in the same batch, stored beside the
champion's decision without changing it, and the report of how they differ."""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx
import numpy as np
import pytest

from sankofa.engine.decision import DecisionPolicy
from sankofa.engine.model import LOGREG_MODEL_FILE, load_packaged_logreg, packaged_model_path
from sankofa.engine.scorer import ScoringEngine
from sankofa.engine.serving import load_default_model, model_version
from sankofa.settings import Settings
from sankofa.store.repository import decode_features
from sankofa.store.shadow import shadow_report
from tests_support import tx


@pytest.fixture
def settings(settings_factory: Any) -> Settings:
    s: Settings = settings_factory(shadow_model_path=packaged_model_path(LOGREG_MODEL_FILE))
    return s


def batch(n: int) -> dict[str, Any]:
    return {
        "transactions": [
            tx(i, customer_id=f"c{i % 5}", terminal_id=f"t{i % 3}", amount=f"{20 + 37 * i}.00")
            for i in range(n)
        ]
    }


async def test_shadow_scores_are_stored_and_the_champion_decides(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    r = await client.post("/v1/transactions/batch", json=batch(40))
    assert r.status_code == 200, r.text
    answers = {d["transaction_id"]: d for d in r.json()["results"]}
    champion, shadow = load_default_model(), load_packaged_logreg()
    assert {d["model_version"] for d in answers.values()} == {model_version(champion)}
    rows = await db.fetch(
        "SELECT transaction_id, risk_score, decision, features, shadow_risk_score,"
        " shadow_decision, shadow_model_version FROM transactions"
    )
    assert len(rows) == 40
    x = np.asarray([decode_features(row["features"]) for row in rows])
    champion_scores = champion.predict(x).scores
    shadow_scores = shadow.predict(x).scores
    t = shadow.thresholds
    for row, mine, theirs in zip(rows, champion_scores, shadow_scores, strict=True):
        # The answer is the champion's, computed on the stored features.
        assert row["risk_score"] == answers[row["transaction_id"]]["risk_score"] == mine
        assert row["decision"] == answers[row["transaction_id"]]["decision"]
        # The shadow scored the same matrix and decided by its own thresholds.
        assert row["shadow_model_version"] == model_version(shadow)
        assert row["shadow_risk_score"] == theirs
        expected = (
            "decline" if theirs >= t.decline else "review" if theirs >= t.review else "approve"
        )
        assert row["shadow_decision"] == expected


async def test_shadow_report_counts_agreement_and_scores_labels(
    client: httpx.AsyncClient, database_url: str
) -> None:
    r = await client.post("/v1/transactions/batch", json=batch(30))
    assert r.status_code == 200, r.text
    labels = [{"transaction_id": f"tx-{i}", "fraud": i % 4 == 0} for i in range(20)]
    r = await client.post("/v1/labels", json={"labels": labels})
    assert r.status_code == 200, r.text
    rep = await shadow_report(database_url)
    assert rep["transactions"] == 30
    matrix = rep["agreement_matrix"]
    assert sum(sum(row.values()) for row in matrix.values()) == 30
    assert rep["agreeing"] + rep["would_change"] == 30
    assert list(rep["versions"]) == [
        f"{model_version(load_default_model())} vs {model_version(load_packaged_logreg())}"
    ]
    lab = rep["labelled"]
    assert (lab["transactions"], lab["frauds"]) == (20, 5)
    for side in ("champion", "shadow"):
        assert 0.0 <= lab[side]["auc_roc"] <= 1.0
        assert 0.0 <= lab[side]["average_precision"] <= 1.0


async def test_without_a_shadow_the_columns_stay_empty(
    settings_factory: Any, db: asyncpg.Connection
) -> None:
    from conftest import _with_state
    from sankofa.api.app import create_app

    app = create_app(settings_factory())
    async with app.router.lifespan_context(app) as state:
        transport = httpx.ASGITransport(app=_with_state(app, state))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            assert (await c.post("/v1/transactions", json=tx(1))).status_code == 200
    row = await db.fetchrow(
        "SELECT shadow_risk_score, shadow_decision, shadow_model_version FROM transactions"
    )
    assert tuple(row) == (None, None, None)


class _Broken:
    name = "broken"
    version = "0"
    feature_names = load_packaged_logreg().feature_names
    contribution_names = feature_names
    thresholds = load_packaged_logreg().thresholds

    def predict(self, x: Any) -> Any:
        raise RuntimeError("shadow failure")


def test_a_failing_shadow_leaves_its_columns_empty(caplog: pytest.LogCaptureFixture) -> None:
    champion = load_default_model()
    engine = ScoringEngine(
        pool=None,
        features=None,  # type: ignore[arg-type]
        model=champion,
        policy=DecisionPolicy(
            review_threshold=0.5, decline_threshold=0.9, level_bounds=(0.1, 0.5, 0.9)
        ),
        db_timeout_s=1.0,
        shadow=_Broken(),
    )
    scores, decisions, version = engine._shadow_decide(np.tile(champion.fill, (3, 1)))  # type: ignore[attr-defined]
    assert (scores, decisions, version) == ([None] * 3, [None] * 3, None)
    assert "shadow model broken failed" in caplog.text
