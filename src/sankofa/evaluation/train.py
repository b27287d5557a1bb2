"""Train and evaluate the project's logistic regression on the handbook's data.

The handbook's yardstick figures come from scikit-learn's ``LogisticRegression``
with default settings on standardised features. Training here solves exactly
that problem (L2 penalty, C = 1, unpenalised intercept, features standardised
with the training rows' mean and population standard deviation) by Newton's
method, in numpy, so the project reproduces the yardstick without a
scikit-learn dependency and the serving artefact comes from the same code.

Decision thresholds follow one stated policy, computed on the training rows
(a later issue refines it): investigators review about ``REVIEW_CARDS_PER_DAY``
cards a day (100, the k of Card Precision@100), so the review threshold is the
score that, over the training days, flags that many distinct cards per day on
average (a card counts with its highest score of the day). Automatic declines
are kept to the few cards the model is surest of (``DECLINE_CARDS_PER_DAY``),
since a decline blocks a customer's money without a human look. The MEDIUM
risk level uses the same rule with a larger budget (``MEDIUM_CARDS_PER_DAY``);
HIGH starts at review and CRITICAL at decline.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from sankofa.engine.feature_names import FEATURE_NAMES
from sankofa.engine.features_offline import compute_features
from sankofa.engine.model import LogisticModel, Thresholds, sigmoid
from sankofa.evaluation.metrics import average_precision, card_precision_top_k, roc_auc
from sankofa.evaluation.protocol import (
    SPLIT_TRAIN_START,
    WEEK_DAYS,
    Split,
    day_of,
    prequential_folds,
    single_split,
    train_test_split,
)
from sankofa.sim.data import RawData, load_raw

FloatArray = npt.NDArray[np.float64]

DECLINE_CARDS_PER_DAY: Final = 20
REVIEW_CARDS_PER_DAY: Final = 100
MEDIUM_CARDS_PER_DAY: Final = 500
#: Newton stops when no coefficient moves by more than this (relative to the largest).
NEWTON_STEP_TOL: Final = 1e-10
NEWTON_MAX_ITER: Final = 100
#: The handbook's published logistic-regression figures (handbook-spec.md section 4).
PUBLISHED_SPLIT: Final = {
    "auc_roc": 0.871,
    "average_precision": 0.606,
    "card_precision_at_100": 0.291,
}
PUBLISHED_PREQUENTIAL: Final = {
    "auc_roc": 0.868,
    "average_precision": 0.623,
    "card_precision_at_100": 0.297,
}
_METRICS: Final = ("auc_roc", "average_precision", "card_precision_at_100")


def raw_features(raw: RawData) -> FloatArray:
    """The (n, 15) features of the published rows (naive time is both event and local time)."""
    t = raw.tx_datetime.astype(np.float64)
    return compute_features(
        event_time_s=t,
        local_time_s=t,
        customer=raw.customer_id,
        terminal=raw.terminal_id,
        amount_cents=raw.amount_cents,
        fraud=raw.fraud,
    )


def fit_scaler(X: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Column mean and population standard deviation; constant columns get scale 1."""
    x = np.asarray(X, dtype=np.float64)
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    # As scikit-learn: a (near-)constant column is centred, not blown up.
    scale[scale < 10 * np.finfo(np.float64).eps * np.maximum(np.abs(mean), 1.0)] = 1.0
    return mean, scale


def train_logreg(
    X: npt.ArrayLike,
    y: npt.ArrayLike,
    *,
    C: float = 1.0,
    max_iter: int = NEWTON_MAX_ITER,
) -> tuple[FloatArray, float]:
    """Minimise C * sum(log-loss) + ||coef||^2 / 2 (intercept free); return (coef, intercept).

    Newton's method with a backtracking line search: the objective is smooth
    and strictly convex, so a few iterations reach the optimum to machine
    precision, which makes the result independent of solver tolerances.
    """
    if C <= 0:
        raise ValueError("C must be > 0")
    x = np.asarray(X, dtype=np.float64)
    target = np.asarray(y).astype(np.float64)
    if x.ndim != 2 or target.shape != (x.shape[0],):
        raise ValueError("X must be (n, d) and y (n,)")
    if not np.all(np.isfinite(x)):
        raise ValueError("X must be finite")
    if target.min() == target.max():
        raise ValueError("y must contain both classes")
    n, d = x.shape
    design = np.hstack([x, np.ones((n, 1))])
    penalty = np.r_[np.ones(d), 0.0]

    def objective(w: FloatArray) -> float:
        z = design @ w
        return float(C * np.sum(np.logaddexp(0.0, z) - target * z) + 0.5 * np.sum(w[:d] ** 2))

    w = np.zeros(d + 1)
    value = objective(w)
    for _ in range(max_iter):
        z = design @ w
        p = sigmoid(z)
        grad = C * (design.T @ (p - target)) + penalty * w
        hess = (design * (C * p * (1.0 - p))[:, None]).T @ design + np.diag(penalty)
        step = np.linalg.solve(hess, grad)
        decrement = float(grad @ step)
        t = 1.0
        while True:
            candidate = w - t * step
            new_value = objective(candidate)
            if new_value <= value - 1e-4 * t * decrement or t < 1e-10:
                break
            t /= 2
        moved = float(np.max(np.abs(t * step)))
        w, value = candidate, min(new_value, value)
        if moved <= NEWTON_STEP_TOL * max(1.0, float(np.max(np.abs(w)))):
            return w[:d].copy(), float(w[d])
    raise RuntimeError(f"logistic regression did not converge in {max_iter} Newton steps")


def choose_thresholds(
    scores: npt.ArrayLike, day: npt.ArrayLike, customer: npt.ArrayLike
) -> Thresholds:
    """Thresholds from card budgets per day on the training rows (module docstring)."""
    s = np.asarray(scores, dtype=np.float64)
    days = np.asarray(day, dtype=np.int64)
    cust = np.asarray(customer, dtype=np.int64)
    n_days = np.unique(days).shape[0]
    # Highest score of each (day, card): one entry per card and day.
    key = (days - days.min()) * (int(cust.max()) + 1) + cust
    order = np.lexsort((s, key))
    last = np.r_[key[order][1:] != key[order][:-1], True]
    card_day_max = np.sort(s[order][last])[::-1]

    def budget(cards_per_day: int) -> float:
        k = min(cards_per_day * n_days, card_day_max.shape[0])
        return float(card_day_max[k - 1])

    decline = budget(DECLINE_CARDS_PER_DAY)
    review = budget(REVIEW_CARDS_PER_DAY)
    medium = budget(MEDIUM_CARDS_PER_DAY)
    return Thresholds(
        review=review,
        decline=decline,
        risk_levels={"MEDIUM": medium, "HIGH": review, "CRITICAL": decline},
    )


def fit_model(
    features: FloatArray,
    labels: npt.NDArray[np.bool_],
    *,
    name: str,
    version: str,
    C: float = 1.0,
) -> LogisticModel:
    """Scaler and logistic regression on the given rows, thresholds left at 1 (never fire)."""
    mean, scale = fit_scaler(features)
    coef, intercept = train_logreg((features - mean) / scale, labels, C=C)
    never = Thresholds(
        review=1.0, decline=1.0, risk_levels={"MEDIUM": 1.0, "HIGH": 1.0, "CRITICAL": 1.0}
    )
    return LogisticModel(
        name=name,
        version=version,
        feature_names=FEATURE_NAMES,
        mean=mean,
        scale=scale,
        coef=coef,
        intercept=intercept,
        thresholds=never,
    )


def train_model(
    raw: RawData,
    *,
    train_start: date = SPLIT_TRAIN_START,
    train_days: int = WEEK_DAYS,
    name: str = "logreg-handbook",
    version: str = "1",
    data_sha256: str | None = None,
    data_file: str | None = None,
    features: FloatArray | None = None,
) -> LogisticModel:
    """The serving artefact: trained on ``train_days`` from ``train_start``, with metadata.

    Test metrics on the handbook's protocol for that training window (7-day
    delay, 7 test days, known cards removed) are recorded when the data covers
    them. ``features`` may be passed when already computed for ``raw``.
    """
    feats = raw_features(raw) if features is None else features
    days = day_of(raw.tx_datetime)
    split = train_test_split(
        day=days,
        customer=raw.customer_id,
        fraud=raw.fraud,
        train_start=train_start,
        train_days=train_days,
    )
    if split.train.shape[0] == 0:
        raise ValueError(f"no transactions in the {train_days} days from {train_start}")
    _progress(f"training on {split.train.shape[0]:,} transactions")
    train_y = raw.fraud[split.train]
    model = fit_model(feats[split.train], train_y, name=name, version=version)
    train_scores, _ = model.score(feats[split.train])
    thresholds = choose_thresholds(train_scores, days[split.train], raw.customer_id[split.train])
    test_metrics: dict[str, Any] | None = None
    test_y = raw.fraud[split.test]
    if test_y.any() and not test_y.all():
        report = _split_report(raw, feats, days, split, model)
        test_metrics = {**report["test"], **report["metrics"]}
    metadata: dict[str, Any] = {
        "training": {
            "start": train_start.isoformat(),
            "end": (train_start + timedelta(days=train_days - 1)).isoformat(),
            "days": train_days,
            "transactions": int(split.train.shape[0]),
            "frauds": int(train_y.sum()),
        },
        "data": {"file": data_file, "sha256": data_sha256, "transactions": len(raw)},
        "solver": "newton, L2, C=1.0, intercept unpenalised, population-std scaler",
        "threshold_policy": {
            "rule": "score flagging on average N distinct cards per training day",
            "decline_cards_per_day": DECLINE_CARDS_PER_DAY,
            "review_cards_per_day": REVIEW_CARDS_PER_DAY,
            "medium_cards_per_day": MEDIUM_CARDS_PER_DAY,
        },
        "metrics": {
            "train": {
                "auc_roc": roc_auc(train_y, train_scores),
                "average_precision": average_precision(train_y, train_scores),
            },
            "test": test_metrics,
        },
    }
    return LogisticModel(
        name=model.name,
        version=model.version,
        feature_names=model.feature_names,
        mean=model.mean,
        scale=model.scale,
        coef=model.coef,
        intercept=model.intercept,
        thresholds=thresholds,
        metadata=metadata,
    )


def evaluate_split(raw: RawData, *, features: FloatArray | None = None) -> dict[str, Any]:
    """The handbook's chapter-3 split, with the project's logistic regression."""
    feats = _features_with_progress(raw) if features is None else features
    days = day_of(raw.tx_datetime)
    split = single_split(day=days, customer=raw.customer_id, fraud=raw.fraud)
    _progress("training (single split)")
    model = fit_model(feats[split.train], raw.fraud[split.train], name="eval", version="0")
    report = _split_report(raw, feats, days, split, model)
    return {"protocol": "split", **report, "published": dict(PUBLISHED_SPLIT)}


def evaluate_prequential(raw: RawData, *, features: FloatArray | None = None) -> dict[str, Any]:
    """The handbook's four prequential test folds; mean and sample std (ddof=1) over folds."""
    feats = _features_with_progress(raw) if features is None else features
    days = day_of(raw.tx_datetime)
    folds = []
    for k, split in enumerate(
        prequential_folds(day=days, customer=raw.customer_id, fraud=raw.fraud)
    ):
        _progress(f"training fold {k + 1} (train from {split.train_start})")
        model = fit_model(feats[split.train], raw.fraud[split.train], name="eval", version="0")
        folds.append(_split_report(raw, feats, days, split, model))
    values = {m: np.array([fold["metrics"][m] for fold in folds]) for m in _METRICS}
    return {
        "protocol": "prequential",
        "folds": folds,
        "mean": {m: float(v.mean()) for m, v in values.items()},
        "std": {m: float(v.std(ddof=1)) for m, v in values.items()},
        "published": dict(PUBLISHED_PREQUENTIAL),
    }


def main_train(args: argparse.Namespace) -> int:
    """Train from ``args.input`` and write the artefact to ``args.out``."""
    started = time.perf_counter()
    path = Path(args.input)
    raw = _load_with_progress(path)
    feats = _features_with_progress(raw)
    model = train_model(
        raw,
        train_start=_as_date(args.train_start),
        train_days=int(args.train_days),
        name=str(args.name),
        version=str(args.version),
        data_sha256=file_sha256(path),
        data_file=path.name,
        features=feats,
    )
    model.save(args.out)
    meta = model.metadata
    print(f"model      {model.name} {model.version} -> {args.out}")
    print(
        f"training   {meta['training']['start']}..{meta['training']['end']}: "
        f"{meta['training']['transactions']:,} tx, {meta['training']['frauds']:,} frauds"
    )
    th = model.thresholds
    print(
        f"thresholds review {th.review:.4f}  decline {th.decline:.4f}  "
        f"levels MEDIUM {th.level_bounds[0]:.4f} HIGH {th.level_bounds[1]:.4f} "
        f"CRITICAL {th.level_bounds[2]:.4f}"
    )
    test = meta["metrics"]["test"]
    if test is not None:
        print(_table([("sankofa LR (test)", test), ("handbook LR", PUBLISHED_SPLIT)]))
    print(f"took {time.perf_counter() - started:.1f} s")
    return 0


def main_evaluate(args: argparse.Namespace) -> int:
    """Run a protocol on ``args.input``; print a table, write JSON to ``args.report`` if set."""
    started = time.perf_counter()
    raw = _load_with_progress(Path(args.input))
    if args.protocol == "split":
        report = evaluate_split(raw)
        print(
            f"single split: train {report['train']['start']}..{report['train']['end']} "
            f"({report['train']['transactions']:,} tx / {report['train']['frauds']:,} frauds), "
            f"test {report['test']['start']}..{report['test']['end']} "
            f"({report['test']['transactions']:,} / {report['test']['frauds']:,})"
        )
        print(_table([("sankofa LR", report["metrics"]), ("handbook LR", PUBLISHED_SPLIT)]))
    elif args.protocol == "prequential":
        report = evaluate_prequential(raw)
        rows = [(f"fold train {f['train']['start']}", f["metrics"]) for f in report["folds"]]
        print(
            _table(
                [
                    *rows,
                    ("mean", report["mean"]),
                    ("std (ddof=1)", report["std"]),
                    ("handbook LR (mean)", PUBLISHED_PREQUENTIAL),
                ]
            )
        )
    else:
        raise ValueError(f"unknown protocol {args.protocol!r}: expected 'split' or 'prequential'")
    report["seconds"] = round(time.perf_counter() - started, 2)
    if args.report is not None:
        Path(args.report).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"report written to {args.report}")
    print(f"took {report['seconds']:.1f} s")
    return 0


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _split_report(
    raw: RawData, feats: FloatArray, days: npt.NDArray[np.int64], split: Split, model: LogisticModel
) -> dict[str, Any]:
    scores, _ = model.score(feats[split.test])
    y = raw.fraud[split.test]
    cp_mean, cp_days = card_precision_top_k(
        days[split.test], raw.customer_id[split.test], y, scores
    )
    test_start = split.test_start
    return {
        "train": {
            "start": split.train_start.isoformat(),
            "end": (split.train_start + timedelta(days=split.train_days - 1)).isoformat(),
            "transactions": int(split.train.shape[0]),
            "frauds": int(raw.fraud[split.train].sum()),
        },
        "test": {
            "start": test_start.isoformat(),
            "end": (test_start + timedelta(days=split.test_days - 1)).isoformat(),
            "transactions": int(split.test.shape[0]),
            "frauds": int(y.sum()),
        },
        "metrics": {
            "auc_roc": roc_auc(y, scores),
            "average_precision": average_precision(y, scores),
            "card_precision_at_100": cp_mean,
            "card_precision_per_day": cp_days,
        },
    }


def _table(rows: list[tuple[str, dict[str, Any]]]) -> str:
    width = max(len(label) for label, _ in rows)
    lines = [f"{'':{width}}  {'AUC ROC':>8}  {'AP':>8}  {'CP@100':>8}"]
    for label, values in rows:
        cells = "  ".join(f"{values[m]:8.3f}" for m in _METRICS)
        lines.append(f"{label:{width}}  {cells}")
    return "\n".join(lines)


def _load_with_progress(path: Path) -> RawData:
    _progress(f"loading {path}")
    raw = load_raw(path)
    _progress(f"loaded {len(raw):,} transactions")
    return raw


def _features_with_progress(raw: RawData) -> FloatArray:
    _progress("computing features")
    feats = raw_features(raw)
    _progress("features done")
    return feats


def _progress(message: str) -> None:
    """Progress for long steps on stderr, so stdout stays the result."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _as_date(value: date | str) -> date:
    return value if isinstance(value, date) else date.fromisoformat(value)
