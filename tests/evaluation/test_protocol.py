"""Evaluation protocols and the training that runs on them.

Always: the split rules on hand-made data, the Newton solver against
scikit-learn's optimum (values hard-coded), and the entry points on the
committed slice. With ``../shared/data``: the handbook's published counts and
logistic-regression figures.
"""

from __future__ import annotations

import argparse
import json
import os
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pytest

from sankofa.engine.feature_names import FEATURE_NAMES
from sankofa.engine.model import LOGREG_MODEL_FILE, LogisticModel, packaged_model_path
from sankofa.evaluation.protocol import (
    PREQUENTIAL_VALIDATION_START,
    day_of,
    epoch_day,
    prequential_folds,
    single_split,
    train_test_split,
)
from sankofa.evaluation.train import (
    BEST_PUBLISHED_PREQUENTIAL,
    BEST_PUBLISHED_SPLIT,
    DECLINE_CARDS_PER_DAY,
    choose_thresholds,
    evaluate_prequential,
    evaluate_split,
    fit_scaler,
    main_evaluate,
    main_train,
    raw_features,
    train_logreg,
)
from sankofa.sim.data import load_raw

SLICE = Path(__file__).resolve().parents[1] / "fixtures" / "handbook-slice.csv.gz"
D0 = date(2018, 7, 25)


def shared_raw() -> Path:
    env = os.environ.get("SANKOFA_SHARED_DATA")
    data = Path(env) if env else Path(__file__).resolve().parents[2].parent / "shared" / "data"
    path = data / "handbook-raw.csv.gz"
    if not path.exists():
        pytest.skip(f"published data not found in {data}")
    return path


# -- split rules ---------------------------------------------------------------------


def test_split_windows_and_known_card_removal() -> None:
    s = epoch_day(D0)
    rows = [
        # (day offset from training start, customer, fraud)
        (0, 1, True),  # training fraud: card 1 known from the start
        (6, 2, False),
        (6, 3, True),  # last training day: card 3 known from the start too
        (7, 4, True),  # delay day 0: label known from test day 1 (= day 15) on
        (8, 5, True),  # delay day 1: known from test day 2 (= day 16) on
        (13, 6, True),  # delay day 6: only in the delay period, never known in the test
        (14, 1, True),
        (14, 3, False),
        (14, 4, True),  # test day 0: card 4 not known yet
        (14, 5, False),
        (15, 4, False),  # test day 1: card 4 known now
        (15, 5, True),
        (16, 5, False),  # test day 2: card 5 known now
        (16, 6, True),
        (20, 7, False),  # last test day
        (21, 8, False),  # after the test week
    ]
    day = np.array([s + r[0] for r in rows])
    customer = np.array([r[1] for r in rows])
    fraud = np.array([r[2] for r in rows])
    split = train_test_split(day=day, customer=customer, fraud=fraud, train_start=D0)
    assert split.train.tolist() == [0, 1, 2]
    assert split.test.tolist() == [8, 9, 11, 13, 14]
    assert split.test_start == D0 + timedelta(days=14)


def test_single_split_defaults_are_the_handbook_dates() -> None:
    s = epoch_day(D0)
    day = np.arange(s - 1, s + 22)
    split = single_split(day=day, customer=np.arange(day.size), fraud=np.zeros(day.size, bool))
    assert day[split.train].tolist() == list(range(s, s + 7))
    assert day[split.test].tolist() == list(range(s + 14, s + 21))
    assert split.test_start == date(2018, 8, 8)


def test_prequential_folds_step_back_a_week() -> None:
    day = np.arange(epoch_day(date(2018, 6, 1)), epoch_day(date(2018, 9, 30)))
    kw = {"day": day, "customer": np.arange(day.size), "fraud": np.zeros(day.size, bool)}
    folds = prequential_folds(**kw)  # type: ignore[arg-type]
    assert [f.train_start for f in folds] == [
        date(2018, 8, 15),
        date(2018, 8, 8),
        date(2018, 8, 1),
        date(2018, 7, 25),
    ]
    assert all(f.train.size == 7 and f.test.size == 7 for f in folds)
    validation = prequential_folds(start=PREQUENTIAL_VALIDATION_START, **kw)  # type: ignore[arg-type]
    assert [f.train_start for f in validation][-1] == date(2018, 6, 20)


def test_day_of_naive_seconds() -> None:
    assert day_of([0, 86_399, 86_400]).tolist() == [0, 0, 1]
    assert day_of([1_522_540_831]).tolist() == [epoch_day(date(2018, 4, 1))]


# -- training -------------------------------------------------------------------------


def synthetic() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.RandomState(0)
    X = rng.normal(size=(200, 3)) * np.array([1.0, 5.0, 0.2]) + np.array([0.0, 10.0, -1.0])
    logit = 0.8 * X[:, 0] - 0.3 * (X[:, 1] - 10) + 2.0 * (X[:, 2] + 1) - 1.0
    y = rng.rand(200) < 1 / (1 + np.exp(-logit))
    return X, y


# scikit-learn 1.9.1: StandardScaler, then LogisticRegression(C=C, tol=1e-14,
# max_iter=100000) on the data of ``synthetic()`` (a tight tolerance, so that
# its result is the optimum and not where lbfgs happened to stop).
SKLEARN_SCALER = (
    [0.03199869688493604, 9.867059710689928, -1.0340524454597932],
    [1.0197049750082314, 5.0586802163574625, 0.1934924450120446],
)
SKLEARN_LOGREG = {
    1.0: ([0.886346293338038, -1.1340126410880096, 0.3145172775866251], -1.0348624517983376),
    0.1: ([0.6235444561052643, -0.8078787198326988, 0.22904766357093664], -0.9168165957783674),
}


@pytest.mark.parametrize("C", [1.0, 0.1])
def test_train_logreg_reaches_scikit_learns_optimum(C: float) -> None:
    X, y = synthetic()
    assert int(y.sum()) == 64  # the same data as the reference
    mean, scale = fit_scaler(X)
    np.testing.assert_allclose(mean, SKLEARN_SCALER[0], rtol=1e-12)
    np.testing.assert_allclose(scale, SKLEARN_SCALER[1], rtol=1e-12)
    coef, intercept = train_logreg((X - mean) / scale, y, C=C)
    expected_coef, expected_intercept = SKLEARN_LOGREG[C]
    np.testing.assert_allclose(coef, expected_coef, atol=1e-6)
    assert intercept == pytest.approx(expected_intercept, abs=1e-6)


def test_train_logreg_gradient_is_zero_at_the_result() -> None:
    X, y = synthetic()
    coef, intercept = train_logreg(X, y, C=0.5)
    p = 1 / (1 + np.exp(-(X @ coef + intercept)))
    grad = 0.5 * X.T @ (p - y) + coef
    assert np.abs(grad).max() < 1e-8
    assert abs(0.5 * np.sum(p - y)) < 1e-8


def test_train_logreg_needs_both_classes() -> None:
    with pytest.raises(ValueError, match="both classes"):
        train_logreg(np.ones((3, 2)), np.zeros(3))


def test_scaler_leaves_constant_columns_unscaled() -> None:
    mean, scale = fit_scaler(np.array([[1.0, 5.0], [3.0, 5.0]]))
    assert mean.tolist() == [2.0, 5.0]
    assert scale.tolist() == [1.0, 1.0]


def test_thresholds_follow_the_card_budget() -> None:
    # Two days, DECLINE_CARDS_PER_DAY + 1 cards each, scores 0.001 .. (n + 1) * 0.001.
    n = DECLINE_CARDS_PER_DAY + 1
    day = np.repeat([0, 1], n)
    customer = np.tile(np.arange(n), 2)
    scores = np.tile(np.arange(1, n + 1) / 1000, 2)
    th = choose_thresholds(scores, day, customer)
    # 2 * DECLINE_CARDS_PER_DAY highest card-days: everything but score 0.001 on both days.
    assert th.decline == pytest.approx(0.002)
    assert th.review == pytest.approx(0.001)
    assert th.level_bounds == (th.review, th.review, th.decline)


# -- entry points on the committed slice ------------------------------------------------


def test_main_train_writes_a_loadable_artefact(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "model.json"
    args = argparse.Namespace(
        input=str(SLICE),
        out=str(out),
        model="logreg",
        train_start="2018-07-25",
        train_days=7,
        name="t",
        version="9",
    )
    assert main_train(args) == 0
    model = LogisticModel.load(out)
    assert (model.name, model.version, model.feature_names) == ("t", "9", FEATURE_NAMES)
    meta = model.metadata
    assert meta["training"]["start"] == "2018-07-25"
    assert meta["training"]["end"] == "2018-07-31"
    assert len(meta["data"]["sha256"]) == 64
    assert meta["metrics"]["test"]["transactions"] > 0
    assert 0.0 < model.thresholds.review <= model.thresholds.decline < 1.0
    assert "AUC ROC" in capsys.readouterr().out


@pytest.mark.parametrize("protocol", ["split", "prequential"])
def test_main_evaluate_reports(
    protocol: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report_path = tmp_path / "report.json"
    args = argparse.Namespace(
        protocol=protocol, input=str(SLICE), report=str(report_path), model="logreg", plots=None
    )
    assert main_evaluate(args) == 0
    report = json.loads(report_path.read_text())
    assert report["protocol"] == protocol
    metrics = report["metrics"] if protocol == "split" else report["mean"]
    assert set(metrics) >= {"auc_roc", "average_precision", "card_precision_at_100", "brier"}
    assert "CP@100" in capsys.readouterr().out


def test_main_evaluate_takes_an_artefact_and_writes_plots(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("matplotlib")
    args = argparse.Namespace(
        protocol="split",
        input=str(SLICE),
        report=None,
        model=str(packaged_model_path(LOGREG_MODEL_FILE)),
        plots=str(tmp_path),
    )
    assert main_evaluate(args) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "split-logreg-handbook-v1-calibration.png",
        "split-logreg-handbook-v1-pr.png",
    ]


def test_evaluations_agree_on_the_shared_fold() -> None:
    raw = load_raw(SLICE)
    split = evaluate_split(raw)
    last_fold = evaluate_prequential(raw)["folds"][-1]
    assert last_fold["train"]["start"] == "2018-07-25"
    assert last_fold["metrics"] == split["metrics"]


# -- the handbook's figures ------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_published_split_counts() -> None:
    raw = load_raw(shared_raw())
    split = single_split(day=day_of(raw.tx_datetime), customer=raw.customer_id, fraud=raw.fraud)
    assert (split.train.size, int(raw.fraud[split.train].sum())) == (67_240, 598)
    assert (split.test.size, int(raw.fraud[split.test].sum())) == (58_264, 385)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_published_logistic_regression_figures() -> None:
    raw = load_raw(shared_raw())
    split = evaluate_split(raw)
    m = split["metrics"]
    print(f"\nsplit: AUC {m['auc_roc']:.4f} AP {m['average_precision']:.4f} "
          f"CP@100 {m['card_precision_at_100']:.4f}")  # fmt: skip
    assert m["auc_roc"] == pytest.approx(0.871, abs=0.01)
    assert m["average_precision"] == pytest.approx(0.606, abs=0.01)
    assert m["card_precision_at_100"] == pytest.approx(0.291, abs=0.01)
    preq = evaluate_prequential(raw)
    assert [f["train"]["start"] for f in preq["folds"]] == [
        "2018-08-15",
        "2018-08-08",
        "2018-08-01",
        "2018-07-25",
    ]
    print(f"prequential mean {preq['mean']} std {preq['std']}")
    assert preq["mean"]["auc_roc"] == pytest.approx(0.868, abs=0.01)
    assert preq["mean"]["average_precision"] == pytest.approx(0.623, abs=0.01)
    assert preq["mean"]["card_precision_at_100"] == pytest.approx(0.297, abs=0.01)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_tree_model_beats_every_published_figure() -> None:
    """The served model's kind, trained per window as the protocols say, against the best
    figure the handbook publishes for any model (handbook-spec.md section 4)."""
    pytest.importorskip("lightgbm")
    raw = load_raw(shared_raw())
    feats = raw_features(raw)
    split = evaluate_split(raw, model="lightgbm", features=feats)
    preq = evaluate_prequential(raw, model="lightgbm", features=feats)
    print(f"\nsplit {split['metrics']}\nprequential mean {preq['mean']}")
    for got, best in (
        (split["metrics"], BEST_PUBLISHED_SPLIT),
        (preq["mean"], BEST_PUBLISHED_PREQUENTIAL),
    ):
        for metric, published in best.items():
            assert got[metric] > published, (metric, got[metric], published)
