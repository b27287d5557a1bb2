"""The serving model: artefact format, scoring, non-finite fallback, shipped artefact."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sankofa.engine.feature_names import FEATURE_NAMES, N_FEATURES
from sankofa.engine.features_offline import compute_features
from sankofa.engine.model import (
    FORMAT,
    LOGREG_MODEL_FILE,
    RISK_LEVELS,
    LogisticModel,
    ModelFormatError,
    Thresholds,
    load_packaged_logreg,
    packaged_model_path,
    sigmoid,
)
from sankofa.sim.data import load_raw

SLICE = Path(__file__).resolve().parents[1] / "fixtures" / "handbook-slice.csv.gz"


def make_model(**changes: Any) -> LogisticModel:
    rng = np.random.RandomState(1)
    fields: dict[str, Any] = {
        "name": "test",
        "version": "1",
        "feature_names": FEATURE_NAMES,
        "mean": rng.normal(size=N_FEATURES),
        "scale": rng.uniform(0.5, 2.0, N_FEATURES),
        "coef": rng.normal(size=N_FEATURES),
        "intercept": -2.0,
        "thresholds": Thresholds(
            review=0.3, decline=0.7, risk_levels={"MEDIUM": 0.1, "HIGH": 0.3, "CRITICAL": 0.7}
        ),
        "metadata": {"note": "unit test"},
    }
    fields.update(changes)
    return LogisticModel(**fields)


def test_scores_are_the_logistic_of_summed_contributions() -> None:
    model = make_model()
    X = np.random.RandomState(2).normal(size=(50, N_FEATURES)) * 3
    scores, contributions = model.score(X)
    z = (X - model.mean) / model.scale
    np.testing.assert_allclose(contributions, z * model.coef, rtol=1e-14)
    logit = z @ model.coef + model.intercept
    np.testing.assert_allclose(scores, 1 / (1 + np.exp(-logit)), rtol=1e-12)
    np.testing.assert_allclose(contributions.sum(axis=1) + model.intercept, logit, rtol=1e-12)
    assert scores.shape == (50,)
    assert contributions.shape == (50, N_FEATURES)


def test_non_finite_features_fall_back_to_the_mean_and_are_flagged() -> None:
    model = make_model()
    X = np.tile(model.mean + 1.0, (4, 1))
    X[1, 3] = np.nan
    X[2, 0] = np.inf
    X[2, 14] = -np.inf
    result = model.predict(X)
    assert result.fallback.tolist() == [False, True, True, False]
    assert result.contributions[1, 3] == 0.0
    assert result.contributions[2, 0] == 0.0 and result.contributions[2, 14] == 0.0
    assert np.all(np.isfinite(result.scores))
    assert result.scores[0] == result.scores[3]
    # The other features of a fallback row still count as usual.
    np.testing.assert_array_equal(result.contributions[1, :3], result.contributions[0, :3])


def test_scores_stay_finite_and_bounded_for_absurd_inputs() -> None:
    model = make_model()
    X = np.array(
        [np.full(N_FEATURES, 1e308), np.full(N_FEATURES, -1e308), np.full(N_FEATURES, np.nan)]
    )
    scores, contributions = model.score(X)
    assert np.all(np.isfinite(scores)) and np.all((scores >= 0) & (scores <= 1))
    assert np.all(np.isfinite(contributions))


def test_sigmoid_is_stable_at_the_extremes() -> None:
    z = np.array([-1e308, -1000.0, -30.0, 0.0, 30.0, 1000.0, 1e308])
    s = sigmoid(z)  # warnings are errors: an overflow in exp would fail here
    assert s[0] == 0.0 and s[-1] == 1.0 and s[3] == 0.5
    assert s[2] == pytest.approx(np.exp(-30.0) / (1 + np.exp(-30.0)), rel=1e-15)
    assert np.all(np.diff(s) >= 0)


def test_score_checks_the_shape() -> None:
    with pytest.raises(ValueError, match="shape"):
        make_model().score(np.zeros((3, N_FEATURES - 1)))


def test_risk_levels_by_band() -> None:
    levels = make_model().risk_level([0.0, 0.1, 0.29, 0.3, 0.69, 0.7, 1.0])
    assert [RISK_LEVELS[i] for i in levels] == [
        "LOW", "MEDIUM", "MEDIUM", "HIGH", "HIGH", "CRITICAL", "CRITICAL",
    ]  # fmt: skip


def test_round_trip_through_json(tmp_path: Path) -> None:
    model = make_model()
    path = tmp_path / "m.json"
    model.save(path)
    data = json.loads(path.read_text())
    assert data["format"] == FORMAT == "sankofa.logreg/1"
    loaded = LogisticModel.load(path)
    assert loaded.to_dict() == model.to_dict()
    X = np.random.RandomState(3).normal(size=(10, N_FEATURES))
    np.testing.assert_array_equal(loaded.score(X)[0], model.score(X)[0])
    assert LogisticModel.from_dict(model.to_dict()).to_dict() == model.to_dict()


def test_other_features_refuse_to_load() -> None:
    data = make_model().to_dict()
    data["feature_names"] = [*FEATURE_NAMES[1:], FEATURE_NAMES[0]]
    with pytest.raises(ModelFormatError, match="trained on features"):
        LogisticModel.from_dict(data)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("format",), "sankofa.logreg/2", "unknown model format"),
        (("coef",), [1.0] * 14, "coef"),
        (("scaler", "scale"), [0.0] * N_FEATURES, "scale"),
        (("scaler", "mean"), [float("nan")] * N_FEATURES, "mean"),
        (("thresholds", "review"), 0.9, "review"),
        (("thresholds", "risk_levels"), {"MEDIUM": 0.1, "HIGH": 0.3}, "risk_levels"),
        (
            ("thresholds", "risk_levels"),
            {"MEDIUM": 0.5, "HIGH": 0.3, "CRITICAL": 0.7},
            "non-decreasing",
        ),
        (("intercept",), "x", "malformed"),
    ],
)
def test_malformed_artefacts_are_refused(path: tuple[str, ...], value: Any, message: str) -> None:
    data = make_model().to_dict()
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(ModelFormatError, match=message):
        LogisticModel.from_dict(data)


def test_model_arrays_are_read_only() -> None:
    model = make_model()
    with pytest.raises(ValueError):
        model.coef[0] = 1.0


# -- the shipped artefact --------------------------------------------------------------


def test_packaged_logistic_regression_is_package_data() -> None:
    path = packaged_model_path(LOGREG_MODEL_FILE)
    assert path.name == "logreg-handbook-v1.json"
    assert path.is_file()
    model = load_packaged_logreg()
    assert model.to_dict() == LogisticModel.load(path).to_dict()
    assert model.feature_names == FEATURE_NAMES
    meta = model.metadata
    assert meta["training"] == {
        "start": "2018-07-25",
        "end": "2018-07-31",
        "days": 7,
        "transactions": 67_240,
        "frauds": 598,
    }
    test = meta["metrics"]["test"]
    assert (test["transactions"], test["frauds"]) == (58_264, 385)
    assert test["auc_roc"] == pytest.approx(0.871, abs=0.01)
    assert test["average_precision"] == pytest.approx(0.606, abs=0.01)
    assert test["card_precision_at_100"] == pytest.approx(0.291, abs=0.01)
    assert len(meta["data"]["sha256"]) == 64


def test_packaged_logistic_regression_scores_the_slice() -> None:
    raw = load_raw(SLICE)
    t = raw.tx_datetime.astype(np.float64)
    X = compute_features(
        event_time_s=t,
        local_time_s=t,
        customer=raw.customer_id,
        terminal=raw.terminal_id,
        amount_cents=raw.amount_cents,
        fraud=raw.fraud,
    )
    scores, _ = load_packaged_logreg().score(X)
    assert np.all((scores >= 0) & (scores <= 1))
    # Frauds score higher than genuine transactions on average, by a wide margin.
    assert scores[raw.fraud].mean() > 5 * scores[~raw.fraud].mean()


def test_serving_modules_import_numpy_only() -> None:
    code = (
        "import sys, sankofa.engine.serving, sankofa.engine.features_offline;"
        "sankofa.engine.serving.load_default_model();"
        "bad = [m for m in ('pandas', 'sklearn', 'scipy', 'lightgbm', 'matplotlib')"
        " if m in sys.modules];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
