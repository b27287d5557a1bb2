"""Training the tree ensemble on the committed slice (skipped without LightGBM)."""

from __future__ import annotations

import importlib.util
from datetime import date
from pathlib import Path

import numpy as np
import pytest

from sankofa.engine.derived_features import derive
from sankofa.engine.serving import load_model_file
from sankofa.engine.trees import TreeEnsembleModel
from sankofa.evaluation.gbdt import calibration_rows, platt
from sankofa.evaluation.protocol import day_of
from sankofa.evaluation.train import raw_features, train_model
from sankofa.sim.data import load_raw

SLICE = Path(__file__).resolve().parents[1] / "fixtures" / "handbook-slice.csv.gz"

needs_lightgbm = pytest.mark.skipif(
    importlib.util.find_spec("lightgbm") is None,
    reason="LightGBM (the 'train' extra) is not installed",
)


def test_platt_recovers_a_known_calibration() -> None:
    rng = np.random.default_rng(0)
    margin = rng.normal(-3, 2, 200_000)
    p = 1 / (1 + np.exp(-(0.5 * margin - 1.0)))
    y = rng.random(margin.shape[0]) < p
    cal = platt(margin, y)
    assert cal.slope == pytest.approx(0.5, abs=0.03)
    assert cal.intercept == pytest.approx(-1.0, abs=0.1)
    # Nothing to fit: the identity.
    assert (platt(margin[:10], np.zeros(10, bool)).slope, platt(margin[:0], y[:0]).slope) == (1, 1)


def test_calibration_week_is_the_week_before_training() -> None:
    days = np.arange(day_of([0])[0], day_of([0])[0] + 60)
    start = date(1970, 1, 15)
    rows = calibration_rows(days, start)
    assert rows.tolist() == list(range(7, 14))


@needs_lightgbm
def test_train_on_the_slice_gives_a_served_model_equal_to_lightgbm(tmp_path: Path) -> None:
    import lightgbm as lgb

    raw = load_raw(SLICE)
    booster_path = tmp_path / "booster.txt"
    model = train_model(raw, kind="lightgbm", name="slice", version="0", booster_out=booster_path)
    assert isinstance(model, TreeEnsembleModel)
    path = tmp_path / "m.json"
    model.save(path)
    loaded = load_model_file(path)
    assert isinstance(loaded, TreeEnsembleModel)
    meta = loaded.metadata
    assert meta["training"]["start"] == "2018-07-25"
    assert meta["calibration"]["start"] == "2018-07-18"
    assert meta["threshold_policy"]["review_cards_per_day"] == 100
    assert meta["metrics"]["test"]["brier"] >= 0
    feats = raw_features(raw)
    z = derive(feats)
    reference = lgb.Booster(model_file=str(booster_path)).predict(z, raw_score=True)
    assert np.max(np.abs(loaded.margin(z) - reference)) < 1e-6
