"""The project's logistic regression: the handbook's baseline, solved in numpy.

The handbook's yardstick figures come from scikit-learn's ``LogisticRegression``
with default settings on standardised features. Training here solves exactly
that problem (L2 penalty, C = 1, unpenalised intercept, features standardised
with the training rows' mean and population standard deviation) by Newton's
method, in numpy, so the project reproduces the yardstick without a
scikit-learn dependency and the serving artefact comes from the same code.
The same solver fits the tree ensemble's Platt calibration.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

from sankofa.engine.feature_names import FEATURE_NAMES, N_FEATURES
from sankofa.engine.model import LogisticModel, Thresholds, sigmoid

FloatArray = npt.NDArray[np.float64]

#: Newton stops when no coefficient moves by more than this (relative to the largest).
NEWTON_STEP_TOL: Final = 1e-10
NEWTON_MAX_ITER: Final = 100


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


def fit_model(
    features: FloatArray,
    labels: npt.NDArray[np.bool_],
    *,
    name: str,
    version: str,
    C: float = 1.0,
) -> LogisticModel:
    """Scaler and logistic regression on the handbook's 15 columns of the given rows.

    ``features`` may be the handbook matrix (n, 15) or the served one (n, 18):
    the logistic regression reads the leading 15. Thresholds are left at 1
    (never fire).
    """
    x = np.asarray(features, dtype=np.float64)[:, :N_FEATURES]
    mean, scale = fit_scaler(x)
    coef, intercept = train_logreg((x - mean) / scale, labels, C=C)
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
