"""Train and evaluate models on the handbook's data: ``sankofa train`` and ``sankofa evaluate``.

Model kinds (``--model``):

* ``logreg``: the handbook's baseline, a logistic regression solved in numpy
  (``evaluation.logreg``) on the handbook's 15 features;
* ``lightgbm``: the tree ensemble served by default (``engine.trees``),
  trained with LightGBM (``evaluation.gbdt``, the optional ``train`` extra)
  on the served features and the values derived from them;
* a path to an artefact: evaluated as it is, without retraining.

Features always come from ``engine.features_offline``, the offline twin that
tests hold equal to the online store. Each protocol (``evaluation.protocol``)
trains one model per training window, scores its test rows, and reports AUC
ROC, Average Precision, Card Precision@100 (``evaluation.metrics``) and the
Brier score of the probabilities, beside the handbook's published figures.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from sankofa.engine.features_offline import compute_served_features
from sankofa.engine.model import LogisticModel
from sankofa.engine.serving import ScoringModel, load_model_file
from sankofa.engine.trees import TreeEnsembleModel
from sankofa.evaluation.logreg import fit_model, fit_scaler, train_logreg
from sankofa.evaluation.metrics import average_precision, card_precision_top_k, roc_auc
from sankofa.evaluation.protocol import (
    PREQUENTIAL_TEST_START,
    SPLIT_TRAIN_START,
    WEEK_DAYS,
    Split,
    day_of,
    prequential_folds,
    single_split,
    train_test_split,
)
from sankofa.evaluation.thresholds import (
    DECLINE_CARDS_PER_DAY,
    MEDIUM_CARDS_PER_DAY,
    REVIEW_CARDS_PER_DAY,
    choose_thresholds,
    policy_metadata,
)
from sankofa.sim.data import RawData, load_raw

__all__ = [
    "DECLINE_CARDS_PER_DAY",
    "MEDIUM_CARDS_PER_DAY",
    "REVIEW_CARDS_PER_DAY",
    "choose_thresholds",
    "evaluate_prequential",
    "evaluate_split",
    "fit_model",
    "fit_scaler",
    "main_evaluate",
    "main_train",
    "train_logreg",
    "train_model",
]

FloatArray = npt.NDArray[np.float64]

MODEL_KINDS: Final = ("lightgbm", "logreg")
DEFAULT_NAMES: Final = {"lightgbm": "gbdt-handbook", "logreg": "logreg-handbook"}
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
#: The best published figure of any model, per metric (handbook-spec.md section 4).
BEST_PUBLISHED_SPLIT: Final = {
    "auc_roc": 0.871,
    "average_precision": 0.658,
    "card_precision_at_100": 0.291,
}
BEST_PUBLISHED_PREQUENTIAL: Final = {
    "auc_roc": 0.876,
    "average_precision": 0.694,
    "card_precision_at_100": 0.304,
}
_METRICS: Final = ("auc_roc", "average_precision", "card_precision_at_100")


@dataclass(frozen=True, slots=True)
class FoldScores:
    """One test set's labels and scores, kept for plots (never written to JSON)."""

    label: str
    y: npt.NDArray[np.bool_]
    scores: FloatArray


@dataclass
class Collected:
    folds: list[FoldScores] = field(default_factory=list)


def raw_features(raw: RawData) -> FloatArray:
    """The (n, 18) served features of the published rows (naive time is event and local time)."""
    t = raw.tx_datetime.astype(np.float64)
    return compute_served_features(
        event_time_s=t,
        local_time_s=t,
        customer=raw.customer_id,
        terminal=raw.terminal_id,
        amount_cents=raw.amount_cents,
        fraud=raw.fraud,
    )


def fit_kind(
    kind: str,
    raw: RawData,
    feats: FloatArray,
    days: npt.NDArray[np.int64],
    split: Split,
    *,
    name: str,
    version: str,
) -> ScoringModel:
    """A model of ``kind`` trained on ``split.train``, with its thresholds."""
    train = split.train
    if kind == "logreg":
        model = fit_model(feats[train], raw.fraud[train], name=name, version=version)
        scores = model.predict(feats[train]).scores
        thresholds = choose_thresholds(scores, days[train], raw.customer_id[train])
        return LogisticModel(
            name=name,
            version=version,
            feature_names=model.feature_names,
            mean=model.mean,
            scale=model.scale,
            coef=model.coef,
            intercept=model.intercept,
            thresholds=thresholds,
            metadata={
                "solver": "newton, L2, C=1.0, intercept unpenalised, population-std scaler",
                "threshold_policy": policy_metadata("training rows"),
            },
        )
    if kind == "lightgbm":
        from sankofa.evaluation.gbdt import fit_gbdt

        tree_model, _ = fit_gbdt(
            feats,
            raw.fraud,
            days,
            raw.customer_id,
            train=train,
            train_start=split.train_start,
            name=name,
            version=version,
        )
        return tree_model
    raise ValueError(f"unknown model kind {kind!r}: expected one of {MODEL_KINDS} or a file")


def _scorer(
    model_arg: str, raw: RawData, feats: FloatArray, days: npt.NDArray[np.int64], split: Split
) -> ScoringModel:
    if model_arg in MODEL_KINDS:
        return fit_kind(model_arg, raw, feats, days, split, name="eval", version="0")
    return load_model_file(model_arg)


def evaluate_split(
    raw: RawData,
    *,
    model: str = "logreg",
    features: FloatArray | None = None,
    collect: Collected | None = None,
) -> dict[str, Any]:
    """The handbook's chapter-3 split with a model kind (or a fixed artefact)."""
    feats = features_with_progress(raw) if features is None else features
    days = day_of(raw.tx_datetime)
    split = single_split(day=days, customer=raw.customer_id, fraud=raw.fraud)
    progress(f"training {model} (single split)")
    scorer = _scorer(model, raw, feats, days, split)
    report = _split_report(raw, feats, days, split, scorer, collect=collect, label="split")
    return {
        "protocol": "split",
        "model": model,
        **report,
        "published": dict(PUBLISHED_SPLIT),
        "best_published": dict(BEST_PUBLISHED_SPLIT),
    }


def evaluate_prequential(
    raw: RawData,
    *,
    model: str = "logreg",
    features: FloatArray | None = None,
    start: date = PREQUENTIAL_TEST_START,
    collect: Collected | None = None,
) -> dict[str, Any]:
    """Four prequential folds from ``start`` (the test folds by default); mean and sample std."""
    feats = features_with_progress(raw) if features is None else features
    days = day_of(raw.tx_datetime)
    folds = []
    for k, split in enumerate(
        prequential_folds(day=days, customer=raw.customer_id, fraud=raw.fraud, start=start)
    ):
        progress(f"training {model}, fold {k + 1} (train from {split.train_start})")
        scorer = _scorer(model, raw, feats, days, split)
        label = f"train {split.train_start.isoformat()}"
        folds.append(_split_report(raw, feats, days, split, scorer, collect=collect, label=label))
    metrics = (*_METRICS, "brier")
    values = {m: np.array([fold["metrics"][m] for fold in folds]) for m in metrics}
    return {
        "protocol": "prequential",
        "model": model,
        "folds": folds,
        "mean": {m: float(v.mean()) for m, v in values.items()},
        "std": {m: float(v.std(ddof=1)) for m, v in values.items()},
        "published": dict(PUBLISHED_PREQUENTIAL),
        "best_published": dict(BEST_PUBLISHED_PREQUENTIAL),
    }


def train_model(
    raw: RawData,
    *,
    kind: str = "logreg",
    train_start: date = SPLIT_TRAIN_START,
    train_days: int = WEEK_DAYS,
    name: str = "logreg-handbook",
    version: str = "1",
    data_sha256: str | None = None,
    data_file: str | None = None,
    features: FloatArray | None = None,
    booster_out: Path | None = None,
) -> ScoringModel:
    """The serving artefact: trained on ``train_days`` from ``train_start``, with metadata.

    Test metrics on the handbook's protocol for that training window (7-day
    delay, 7 test days, known cards removed) are recorded when the data covers
    them. ``booster_out`` (tree models): also write LightGBM's own model text
    there, for the served-equals-library tests.
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
    progress(f"training {kind} on {split.train.shape[0]:,} transactions")
    train_y = raw.fraud[split.train]
    if kind == "lightgbm":
        from sankofa.evaluation.gbdt import fit_gbdt

        model: ScoringModel
        model, booster = fit_gbdt(
            feats,
            raw.fraud,
            days,
            raw.customer_id,
            train=split.train,
            train_start=train_start,
            name=name,
            version=version,
        )
        if booster_out is not None:
            booster.save_model(str(booster_out))
    else:
        model = fit_kind(kind, raw, feats, days, split, name=name, version=version)
    train_scores = model.predict(feats[split.train]).scores
    test_metrics: dict[str, Any] | None = None
    test_y = raw.fraud[split.test]
    if test_y.any() and not test_y.all():
        report = _split_report(raw, feats, days, split, model)
        test_metrics = {**report["test"], **report["metrics"]}
    metadata: dict[str, Any] = {
        **dict(_metadata_of(model)),
        "training": {
            "start": train_start.isoformat(),
            "end": (train_start + timedelta(days=train_days - 1)).isoformat(),
            "days": train_days,
            "transactions": int(split.train.shape[0]),
            "frauds": int(train_y.sum()),
        },
        "data": {"file": data_file, "sha256": data_sha256, "transactions": len(raw)},
        "metrics": {
            "train": {
                "auc_roc": roc_auc(train_y, train_scores),
                "average_precision": average_precision(train_y, train_scores),
            },
            "test": test_metrics,
        },
    }
    if kind == "lightgbm":
        metadata["threshold_policy"] = policy_metadata(str(metadata["calibration"]["chosen_on"]))
    return _with_metadata(model, metadata)


def brier_score(y: npt.ArrayLike, p: npt.ArrayLike) -> float:
    """Mean squared difference between probability and outcome (lower is better)."""
    labels = np.asarray(y, dtype=np.float64)
    probs = np.asarray(p, dtype=np.float64)
    return float(np.mean((probs - labels) ** 2))


def main_train(args: argparse.Namespace) -> int:
    """Train from ``args.input`` and write the artefact to ``args.out``."""
    started = time.perf_counter()
    path = Path(args.input)
    kind = str(args.model)
    if kind not in MODEL_KINDS:
        print(f"sankofa train: --model must be one of {MODEL_KINDS}", file=sys.stderr)
        return 2
    raw = load_with_progress(path)
    feats = features_with_progress(raw)
    model = train_model(
        raw,
        kind=kind,
        train_start=_as_date(args.train_start),
        train_days=int(args.train_days),
        name=str(args.name or DEFAULT_NAMES[kind]),
        version=str(args.version),
        data_sha256=file_sha256(path),
        data_file=path.name,
        features=feats,
        booster_out=getattr(args, "booster_out", None),
    )
    _save(model, Path(args.out))
    meta = dict(_metadata_of(model))
    print(f"model      {model.name} {model.version} ({kind}) -> {args.out}")
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
        print(
            _table(
                [
                    (f"sankofa {kind} (test)", test),
                    ("handbook LR", PUBLISHED_SPLIT),
                    ("best published", BEST_PUBLISHED_SPLIT),
                ]
            )
        )
    print(f"took {time.perf_counter() - started:.1f} s")
    return 0


def main_evaluate(args: argparse.Namespace) -> int:
    """Run a protocol on ``args.input``; print a table, write JSON to ``args.report`` if set."""
    started = time.perf_counter()
    model = str(args.model)
    if model not in MODEL_KINDS and not Path(model).is_file():
        print(
            f"sankofa evaluate: --model must be one of {MODEL_KINDS} or a model file",
            file=sys.stderr,
        )
        return 2
    raw = load_with_progress(Path(args.input))
    collect = Collected()
    if args.protocol == "split":
        report = evaluate_split(raw, model=model, collect=collect)
        print(
            f"single split: train {report['train']['start']}..{report['train']['end']} "
            f"({report['train']['transactions']:,} tx / {report['train']['frauds']:,} frauds), "
            f"test {report['test']['start']}..{report['test']['end']} "
            f"({report['test']['transactions']:,} / {report['test']['frauds']:,})"
        )
        rows = [(f"sankofa {model}", report["metrics"])]
    elif args.protocol == "prequential":
        report = evaluate_prequential(raw, model=model, collect=collect)
        rows = [(f"fold train {f['train']['start']}", f["metrics"]) for f in report["folds"]]
        rows += [("mean", report["mean"]), ("std (ddof=1)", report["std"])]
    else:
        raise ValueError(f"unknown protocol {args.protocol!r}: expected 'split' or 'prequential'")
    rows += [
        ("handbook LR", report["published"]),
        ("best published", report["best_published"]),
    ]
    print(_table(rows))
    report["seconds"] = round(time.perf_counter() - started, 2)
    if args.report is not None:
        Path(args.report).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"report written to {args.report}")
    plots = getattr(args, "plots", None)
    if plots is not None:
        from sankofa.evaluation.plots import write_plots

        for written in write_plots(Path(plots), f"{args.protocol}-{Path(model).stem}", collect):
            print(f"plot written to {written}")
    print(f"took {report['seconds']:.1f} s")
    return 0


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _metadata_of(model: ScoringModel) -> dict[str, Any]:
    meta = getattr(model, "metadata", {})
    return dict(meta)


def _with_metadata(model: ScoringModel, metadata: dict[str, Any]) -> ScoringModel:
    if isinstance(model, LogisticModel):
        return LogisticModel(
            name=model.name,
            version=model.version,
            feature_names=model.feature_names,
            mean=model.mean,
            scale=model.scale,
            coef=model.coef,
            intercept=model.intercept,
            thresholds=model.thresholds,
            metadata=metadata,
        )
    if isinstance(model, TreeEnsembleModel):
        return TreeEnsembleModel(
            name=model.name,
            version=model.version,
            feature_names=model.feature_names,
            input_names=model.input_names,
            fill=model.fill,
            trees=model.trees,
            calibration=model.calibration,
            thresholds=model.thresholds,
            metadata=metadata,
        )
    raise TypeError(f"cannot attach metadata to {type(model).__name__}")


def _save(model: ScoringModel, path: Path) -> None:
    if isinstance(model, LogisticModel | TreeEnsembleModel):
        model.save(path)
        return
    raise TypeError(f"cannot save {type(model).__name__}")


def _split_report(
    raw: RawData,
    feats: FloatArray,
    days: npt.NDArray[np.int64],
    split: Split,
    model: ScoringModel,
    *,
    collect: Collected | None = None,
    label: str = "",
) -> dict[str, Any]:
    scores = model.predict(feats[split.test]).scores
    y = raw.fraud[split.test]
    if collect is not None:
        collect.folds.append(FoldScores(label, y, scores))
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
            "brier": brier_score(y, scores),
        },
    }


def _table(rows: list[tuple[str, dict[str, Any]]]) -> str:
    width = max(len(label) for label, _ in rows)
    lines = [f"{'':{width}}  {'AUC ROC':>8}  {'AP':>8}  {'CP@100':>8}  {'Brier':>8}"]
    for label, values in rows:
        cells = "  ".join(f"{values[m]:8.3f}" for m in _METRICS)
        brier = values.get("brier")
        cells += f"  {brier:8.5f}" if brier is not None else f"  {'':8}"
        lines.append(f"{label:{width}}  {cells}")
    return "\n".join(lines)


def load_with_progress(path: Path) -> RawData:
    progress(f"loading {path}")
    raw = load_raw(path)
    progress(f"loaded {len(raw):,} transactions")
    return raw


def features_with_progress(raw: RawData) -> FloatArray:
    progress("computing features")
    feats = raw_features(raw)
    progress("features done")
    return feats


def progress(message: str) -> None:
    """Progress for long steps on stderr, so stdout stays the result."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _as_date(value: date | str) -> date:
    return value if isinstance(value, date) else date.fromisoformat(value)
