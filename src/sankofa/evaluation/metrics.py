"""Detection-quality metrics, computed exactly as the Fraud Detection Handbook reports them.

The handbook's figures (handbook-spec.md section 4) are AUC ROC and Average
Precision as scikit-learn computes them, and Card Precision@k. To compare the
project's models with those figures without depending on scikit-learn, the
first two follow scikit-learn's arithmetic step for step (same curve points,
same tie handling, same summation), so they agree to the last bits or so.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


def roc_auc(y: npt.ArrayLike, s: npt.ArrayLike) -> float:
    """Area under the ROC curve; tied scores form one curve point (a diagonal step).

    Raises ``ValueError`` unless ``y`` holds both classes (AUC is undefined).
    """
    fps, tps = _binary_curve(y, s)
    if tps[-1] == 0 or fps[-1] == 0:
        raise ValueError("roc_auc needs both positive and negative labels")
    # Points on a straight segment do not change the area, but dropping them as
    # scikit-learn does keeps the floating-point sum identical to its result.
    if fps.shape[0] > 2:
        keep = np.flatnonzero(
            np.r_[True, np.logical_or(np.diff(fps, 2) != 0, np.diff(tps, 2) != 0), True]
        )
        fps, tps = fps[keep], tps[keep]
    fpr = np.r_[0.0, fps] / fps[-1]
    tpr = np.r_[0.0, tps] / tps[-1]
    return float(np.trapezoid(tpr, fpr))


def average_precision(y: npt.ArrayLike, s: npt.ArrayLike) -> float:
    """Sum over score thresholds of (recall increment x precision at that threshold).

    No interpolation, as in scikit-learn. Raises ``ValueError`` without positives.
    """
    fps, tps = _binary_curve(y, s)
    if tps[-1] == 0:
        raise ValueError("average_precision needs at least one positive label")
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    # Highest threshold last, closed by the (recall 0, precision 1) point.
    recall_rev = np.r_[recall[::-1], 0.0]
    precision_rev = np.r_[precision[::-1], 1.0]
    return float(max(0.0, -np.sum(np.diff(recall_rev) * precision_rev[:-1])))


def card_precision_top_k(
    day: npt.ArrayLike,
    customer: npt.ArrayLike,
    y: npt.ArrayLike,
    s: npt.ArrayLike,
    k: int = 100,
) -> tuple[float, list[float]]:
    """Card Precision@k: the share of true frauds among the k cards an investigator checks per day.

    Per day (ascending), each card (customer) counts once, with its highest
    score and its highest label; the k best-scored cards are checked and the
    precision is the fraudulent ones among them / k (k even when fewer cards
    remain). Cards found fraudulent on an earlier day are known and left out
    of later days. Ties in score are broken by the lower customer id.
    Returns the mean over days and the per-day precisions.
    """
    if k < 1:
        raise ValueError("k must be >= 1")
    days = np.asarray(day)
    cust = np.asarray(customer)
    labels = np.asarray(y).astype(bool)
    scores = np.asarray(s, dtype=np.float64)
    n = days.shape[0]
    for name, arr in (("customer", cust), ("y", labels), ("s", scores)):
        if arr.shape != (n,):
            raise ValueError(f"{name} must have the shape of day, {days.shape}")
    if np.isnan(scores).any():
        raise ValueError("s must not contain NaN")
    detected = np.empty(0, dtype=cust.dtype)
    per_day: list[float] = []
    for d in np.unique(days):
        rows = np.flatnonzero((days == d) & ~np.isin(cust, detected))
        cards, card_score, card_label = _per_card(cust[rows], scores[rows], labels[rows])
        # Highest score first; np.lexsort is stable so equal scores keep card order.
        top = np.lexsort((cards, -card_score))[:k]
        found = cards[top][card_label[top]]
        per_day.append(found.shape[0] / k)
        detected = np.union1d(detected, found)
    if not per_day:
        raise ValueError("card_precision_top_k needs at least one row")
    return float(np.mean(per_day)), per_day


def _per_card(
    cust: npt.NDArray[np.generic], scores: FloatArray, labels: npt.NDArray[np.bool_]
) -> tuple[npt.NDArray[np.generic], FloatArray, npt.NDArray[np.bool_]]:
    """Distinct cards (ascending) with their max score and max label."""
    order = np.argsort(cust, kind="stable")
    cust_sorted = cust[order]
    if cust_sorted.shape[0] == 0:
        return cust_sorted, np.empty(0), np.empty(0, dtype=bool)
    starts = np.flatnonzero(np.r_[True, cust_sorted[1:] != cust_sorted[:-1]])
    max_score = np.maximum.reduceat(scores[order], starts)
    max_label = np.logical_or.reduceat(labels[order], starts)
    return cust_sorted[starts], max_score, max_label


def _binary_curve(y: npt.ArrayLike, s: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Cumulative false and true positives at each distinct score, highest first."""
    labels = np.asarray(y)
    scores = np.asarray(s, dtype=np.float64)
    if labels.ndim != 1 or labels.shape != scores.shape:
        raise ValueError("y and s must be 1-d arrays of the same length")
    if labels.shape[0] == 0:
        raise ValueError("y and s must not be empty")
    if not np.all(np.isfinite(scores)):
        raise ValueError("s must be finite")
    if not np.all((labels == 0) | (labels == 1)):
        raise ValueError("y must be binary (0/1 or bool)")
    order = np.argsort(scores, kind="mergesort")[::-1]
    scores = scores[order]
    truth = labels[order].astype(np.float64)
    last_of_value = np.r_[np.flatnonzero(np.diff(scores)), truth.shape[0] - 1]
    tps = np.cumsum(truth)[last_of_value]
    fps = 1.0 + last_of_value - tps
    return fps, tps
