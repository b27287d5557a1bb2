"""PNG plots of an evaluation: precision-recall curves per fold, and calibration.

matplotlib is a training-side dependency (the ``train`` extra), imported
here only, and only when ``sankofa evaluate --plots DIR`` asks for plots.

The reliability diagram bins scores on a log scale: with 0.8 % frauds almost
every score is small, and equal-width bins would put nearly all rows in the
first one. Each point is a bin's mean score against its observed fraud rate;
a calibrated model lies on the diagonal.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Final

import numpy as np
import numpy.typing as npt

from sankofa.evaluation.metrics import average_precision

if TYPE_CHECKING:
    from sankofa.evaluation.train import Collected

#: Reliability bins: edges from 1e-4 to 1 on a log scale, below 1e-4 in the first.
_BIN_EDGES: Final = np.r_[0.0, np.logspace(-4, 0, 13)]


def precision_recall(
    y: npt.NDArray[np.bool_], scores: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Recall and precision at each distinct score, highest first."""
    order = np.argsort(scores, kind="mergesort")[::-1]
    s = scores[order]
    tp = np.cumsum(y[order])
    last = np.r_[np.flatnonzero(np.diff(s)), s.shape[0] - 1]
    tps = tp[last].astype(np.float64)
    precision = tps / (last + 1)
    recall = tps / max(float(tps[-1]), 1.0)
    return recall, precision


def reliability(
    y: npt.NDArray[np.bool_], scores: npt.NDArray[np.float64]
) -> list[dict[str, float]]:
    """Per non-empty bin: mean score, observed fraud rate, and row count."""
    which = np.clip(np.searchsorted(_BIN_EDGES, scores, side="right") - 1, 0, _BIN_EDGES.size - 2)
    out = []
    for b in np.unique(which).tolist():
        rows = which == b
        out.append(
            {
                "mean_score": float(scores[rows].mean()),
                "fraud_rate": float(y[rows].mean()),
                "count": float(rows.sum()),
            }
        )
    return out


def write_plots(directory: Path, stem: str, collected: Collected) -> list[Path]:
    """Write ``<stem>-pr.png`` and ``<stem>-calibration.png``; return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    for fold in collected.folds:
        recall, precision = precision_recall(fold.y, fold.scores)
        ap = average_precision(fold.y, fold.scores)
        ax.step(recall, precision, where="post", label=f"{fold.label} (AP {ap:.3f})")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title(f"Precision-recall, test set(s): {stem}")
    ax.legend(loc="lower left", fontsize=8)
    ax.grid(alpha=0.3)
    path = directory / f"{stem}-pr.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)

    y = np.concatenate([f.y for f in collected.folds])
    s = np.concatenate([f.scores for f in collected.folds])
    bins = reliability(y, s)
    brier = float(np.mean((s - y) ** 2))
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    ax.plot([1e-5, 1], [1e-5, 1], color="grey", lw=1, ls="--", label="perfect calibration")
    xs = [b["mean_score"] for b in bins]
    ys = [max(b["fraud_rate"], 1e-5) for b in bins]
    sizes = [20 + 80 * np.log10(b["count"]) / np.log10(max(len(s), 10)) for b in bins]
    ax.scatter(xs, ys, s=sizes, zorder=3, label="bins (size: rows, log)")
    ax.plot(xs, ys, lw=1)
    for b, x_, y_ in zip(bins, xs, ys, strict=True):
        ax.annotate(f"{int(b['count']):,}", (x_, y_), fontsize=6, xytext=(3, -8),
                    textcoords="offset points")  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(1e-5, 1.5)
    ax.set_ylim(1e-5, 1.5)
    ax.set_xlabel("mean predicted fraud probability (bin)")
    ax.set_ylabel("observed fraud rate")
    ax.set_title(f"Reliability, {len(s):,} test transactions; Brier {brier:.5f}")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3, which="both")
    path = directory / f"{stem}-calibration.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)
    return written
