"""Training the tree ensemble with LightGBM (the optional ``train`` extra).

LightGBM is imported only when a tree model is trained, never by serving or
by the tests that always run. A fit is reproducible: one thread, fixed seeds,
LightGBM's deterministic mode.

The hyperparameters (``DEFAULT_PARAMS``, ``DEFAULT_TREES``) were chosen by
``sankofa tune`` on the handbook's *validation* folds (training weeks from
2018-07-11 back to 06-20), never on the test folds; the command and its
report are in docs/model.md.

Calibration and thresholds use the week before the training week: held out
from training, with all its labels known at deployment time (the week after
training is not: its labels arrive during the 7-day delay). Platt scaling is
fitted there, and the review and decline thresholds are the card budgets of
``evaluation.thresholds`` on its calibrated scores.
"""

from __future__ import annotations

import importlib
from datetime import date, timedelta
from types import ModuleType
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from sankofa.engine.derived_features import MODEL_INPUT_NAMES, derive
from sankofa.engine.feature_names import SERVED_FEATURE_NAMES
from sankofa.engine.model import Thresholds, sigmoid
from sankofa.engine.trees import Calibration, TreeEnsembleModel
from sankofa.evaluation.lightgbm_export import trees_from_dump
from sankofa.evaluation.logreg import train_logreg
from sankofa.evaluation.thresholds import choose_thresholds

FloatArray = npt.NDArray[np.float64]
IndexArray = npt.NDArray[np.intp]

#: Fixed for every fit: reproducible, one core (the other serves benchmarks).
BASE_PARAMS: Final[dict[str, Any]] = {
    "objective": "binary",
    "verbosity": -1,
    "num_threads": 1,
    "seed": 0,
    "deterministic": True,
    "force_col_wise": True,
}
#: Chosen by ``sankofa tune`` on the validation folds (module docstring).
DEFAULT_PARAMS: Final[dict[str, Any]] = {
    "num_leaves": 7,
    "max_depth": -1,
    "learning_rate": 0.1,
    "min_data_in_leaf": 100,
    "lambda_l2": 10.0,
}
DEFAULT_TREES: Final = 200
#: Platt scaling is an unpenalised 1-d logistic regression: C this large makes the
#: L2 term of ``train_logreg`` vanish.
_PLATT_C: Final = 1e8
CALIBRATION_DAYS: Final = 7


def require_lightgbm() -> ModuleType:
    """LightGBM, or an error that says how to get it."""
    try:
        return importlib.import_module("lightgbm")
    except ImportError as exc:
        raise RuntimeError(
            "training a tree model needs LightGBM: pip install 'sankofa[train]'"
            " (or evaluate --model logreg)"
        ) from exc


def lightgbm_version() -> str:
    return str(require_lightgbm().__version__)


def fit_booster(
    inputs: FloatArray,
    labels: npt.NDArray[np.bool_],
    *,
    params: dict[str, Any] | None = None,
    n_trees: int = DEFAULT_TREES,
) -> Any:
    """A LightGBM booster on model inputs (n, 29) (``engine.derived_features.derive``)."""
    lgb = require_lightgbm()
    data = lgb.Dataset(
        inputs, label=labels.astype(np.float64), feature_name=list(MODEL_INPUT_NAMES)
    )
    merged = {**BASE_PARAMS, **(DEFAULT_PARAMS if params is None else params)}
    return lgb.train(merged, data, num_boost_round=n_trees)


def platt(margin: FloatArray, labels: npt.NDArray[np.bool_]) -> Calibration:
    """``sigmoid(a * margin + b)`` fitted by maximum likelihood; identity if it cannot be."""
    if labels.shape[0] == 0 or labels.all() or not labels.any():
        return Calibration()
    coef, intercept = train_logreg(margin[:, None], labels, C=_PLATT_C)
    if not coef[0] > 0:
        return Calibration()
    return Calibration(slope=float(coef[0]), intercept=float(intercept))


def calibration_rows(days: npt.NDArray[np.int64], train_start: date) -> IndexArray:
    """The week before ``train_start`` (days numbered as ``evaluation.protocol.day_of``)."""
    first = (train_start - timedelta(days=CALIBRATION_DAYS) - date(1970, 1, 1)).days
    rows: IndexArray = np.flatnonzero((days >= first) & (days < first + CALIBRATION_DAYS))
    return rows


def fit_gbdt(
    served: FloatArray,
    fraud: npt.NDArray[np.bool_],
    days: npt.NDArray[np.int64],
    customer: npt.NDArray[np.int64],
    *,
    train: IndexArray,
    train_start: date,
    name: str,
    version: str,
    params: dict[str, Any] | None = None,
    n_trees: int = DEFAULT_TREES,
) -> tuple[TreeEnsembleModel, Any]:
    """The served artefact (without provenance metadata) and LightGBM's booster.

    ``served`` is the (n, 18) matrix of every row; ``train`` the training rows.
    """
    booster = fit_booster(derive(served[train]), fraud[train], params=params, n_trees=n_trees)
    trees = trees_from_dump(booster.dump_model(), MODEL_INPUT_NAMES)
    never = Thresholds(
        review=1.0, decline=1.0, risk_levels={"MEDIUM": 1.0, "HIGH": 1.0, "CRITICAL": 1.0}
    )
    raw_model = TreeEnsembleModel(
        name=name,
        version=version,
        feature_names=SERVED_FEATURE_NAMES,
        input_names=MODEL_INPUT_NAMES,
        fill=served[train].mean(axis=0),
        trees=trees,
        calibration=Calibration(),
        thresholds=never,
    )
    held_out = calibration_rows(days, train_start)
    chosen_on = "calibration week"
    if held_out.shape[0] == 0 or not fraud[held_out].any():
        # No usable held-out week (a small test file): fall back to the training rows.
        held_out, chosen_on = train, "training rows (no labelled week before training)"
    margin = raw_model.margin(derive(served[held_out]))
    calibration = platt(margin, fraud[held_out])
    calibrated = sigmoid(calibration.slope * margin + calibration.intercept)
    thresholds = choose_thresholds(calibrated, days[held_out], customer[held_out])
    first_day = date(1970, 1, 1) + timedelta(days=int(days[held_out].min()))
    last_day = date(1970, 1, 1) + timedelta(days=int(days[held_out].max()))
    model = TreeEnsembleModel(
        name=name,
        version=version,
        feature_names=SERVED_FEATURE_NAMES,
        input_names=MODEL_INPUT_NAMES,
        fill=raw_model.fill,
        trees=trees,
        calibration=calibration,
        thresholds=thresholds,
        metadata={
            "calibration": {
                "method": "platt",
                "chosen_on": chosen_on,
                "start": first_day.isoformat(),
                "end": last_day.isoformat(),
                "transactions": int(held_out.shape[0]),
                "frauds": int(fraud[held_out].sum()),
            },
            "trainer": {
                "library": f"lightgbm {lightgbm_version()}",
                "params": {**BASE_PARAMS, **(DEFAULT_PARAMS if params is None else params)},
                "trees": n_trees,
            },
        },
    )
    return model, booster
