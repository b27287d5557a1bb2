"""``sankofa tune``: choose the tree ensemble's hyperparameters on the validation folds.

The handbook validates on the prequential folds a week earlier than the test
folds (training weeks from 2018-07-11 back to 06-20: handbook-spec.md section
3), so the test folds never influence the choice. Each grid point is trained
once per validation fold with the most trees of the grid, and scored at each
tree count of ``TREE_COUNTS``; the criterion is the sum of the mean AUC ROC,
Average Precision and Card Precision@100 over the four folds (the three
figures the handbook reports, weighted alike).

The chosen point is the *cheapest to serve* among those within
``CRITERION_TOLERANCE`` of the best criterion: differences that small are
noise between four folds (a CP@100 of 0.001 is one card in four weeks).
Serving cost (``serving_cost``): a tree of at most 8 splits costs one table
lookup (``engine.tree_eval.LeafCodes``), a larger one a walk of up to
``num_leaves - 1`` steps. The choice is written into
``evaluation.gbdt.DEFAULT_PARAMS`` by hand, with this command's report.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path
from typing import Any, Final

import numpy as np

from sankofa.engine.derived_features import derive
from sankofa.engine.tree_eval import SLOTS
from sankofa.evaluation.gbdt import fit_booster
from sankofa.evaluation.metrics import average_precision, card_precision_top_k, roc_auc
from sankofa.evaluation.protocol import PREQUENTIAL_VALIDATION_START, day_of, prequential_folds
from sankofa.evaluation.train import features_with_progress, load_with_progress, progress

#: Kept small on purpose (2 cores): leaves and depth bound the serving cost too.
GRID: Final[dict[str, tuple[Any, ...]]] = {
    "num_leaves": (7, 15),
    "max_depth": (-1, 4),
    "learning_rate": (0.05, 0.1),
    "min_data_in_leaf": (20, 100),
    "lambda_l2": (0.0, 10.0),
}
TREE_COUNTS: Final = (50, 100, 200, 300)
#: Criteria closer than this to the best are taken as equal (module docstring).
CRITERION_TOLERANCE: Final = 0.002


def serving_cost(point: dict[str, Any]) -> int:
    """Table lookups or walk steps per row: trees, times the walk when trees are large."""
    leaves = int(point["params"]["num_leaves"])
    per_tree = 1 if leaves - 1 <= SLOTS else leaves - 1
    return int(point["trees"]) * per_tree


def choose(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The cheapest point to serve within tolerance of the best criterion (then the best)."""
    best = max(r["criterion"] for r in results)
    near = [r for r in results if r["criterion"] >= best - CRITERION_TOLERANCE]
    return min(near, key=lambda r: (serving_cost(r), -r["criterion"]))


def grid_points() -> list[dict[str, Any]]:
    keys = list(GRID)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*GRID.values())]


def main_tune(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    raw = load_with_progress(Path(args.input))
    feats = features_with_progress(raw)
    days = day_of(raw.tx_datetime)
    folds = prequential_folds(
        day=days, customer=raw.customer_id, fraud=raw.fraud, start=PREQUENTIAL_VALIDATION_START
    )
    data = [(derive(feats[f.train]), raw.fraud[f.train], derive(feats[f.test]), f) for f in folds]
    results: list[dict[str, Any]] = []
    points = grid_points()
    for k, params in enumerate(points):
        progress(f"grid point {k + 1}/{len(points)}: {params}")
        per_count: dict[int, list[tuple[float, float, float]]] = {c: [] for c in TREE_COUNTS}
        for train_x, train_y, test_x, split in data:
            booster = fit_booster(train_x, train_y, params=params, n_trees=max(TREE_COUNTS))
            y = raw.fraud[split.test]
            for count in TREE_COUNTS:
                s = np.asarray(booster.predict(test_x, num_iteration=count, raw_score=True))
                cp, _ = card_precision_top_k(days[split.test], raw.customer_id[split.test], y, s)
                per_count[count].append((roc_auc(y, s), average_precision(y, s), cp))
        for count, values in per_count.items():
            mean = np.mean(values, axis=0)
            results.append(
                {
                    "params": params,
                    "trees": count,
                    "auc_roc": float(mean[0]),
                    "average_precision": float(mean[1]),
                    "card_precision_at_100": float(mean[2]),
                    "criterion": float(mean.sum()),
                }
            )
    results.sort(key=lambda r: -r["criterion"])
    print(f"{'criterion':>9}  {'AUC':>6}  {'AP':>6}  {'CP@100':>6}  trees  params")
    for r in results[:10]:
        print(
            f"{r['criterion']:9.4f}  {r['auc_roc']:6.4f}  {r['average_precision']:6.4f}"
            f"  {r['card_precision_at_100']:6.4f}  {r['trees']:5d}  {r['params']}"
        )
    chosen = choose(results)
    print(
        f"chosen (cheapest within {CRITERION_TOLERANCE} of the best): {chosen['trees']} trees,"
        f" {chosen['params']}, criterion {chosen['criterion']:.4f}"
    )
    report = {
        "folds": [f.train_start.isoformat() for f in folds],
        "criterion": "mean AUC ROC + mean AP + mean CP@100 over the validation folds",
        "tolerance": CRITERION_TOLERANCE,
        "chosen": chosen,
        "chosen_rule": "cheapest to serve (sankofa.evaluation.tune.serving_cost) within"
        f" {CRITERION_TOLERANCE} of the best criterion",
        "best": results[0],
        "results": results,
        "seconds": round(time.perf_counter() - started, 1),
    }
    if args.report is not None:
        Path(args.report).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"report written to {args.report}")
    return 0
