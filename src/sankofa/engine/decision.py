"""From scores and per-feature contributions to decisions, risk levels and reasons.

Policy (all thresholds configurable, defaults from the model artefact):

* ``risk_score >= decline`` -> decline; ``>= review`` -> review; else approve.
* Risk level by the score's band: below ``MEDIUM`` boundary LOW, then MEDIUM,
  HIGH, and CRITICAL at or above the last boundary.
* Reasons: the inputs that raised this transaction's score most (their logit
  contribution, largest first, at least ``REASON_MIN_LOGIT``, at most
  ``REASON_MAX_CODES``); ``NO_STRONG_RISK_FACTOR`` when none did;
  ``FEATURE_FALLBACK`` first when a feature had to be replaced.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from sankofa.engine import constants as C


@dataclass(frozen=True, slots=True)
class DecisionPolicy:
    review_threshold: float
    decline_threshold: float
    #: Lower bounds of MEDIUM, HIGH and CRITICAL.
    level_bounds: tuple[float, float, float]

    def __post_init__(self) -> None:
        if not 0.0 <= self.review_threshold <= self.decline_threshold <= 1.0:
            raise ValueError("need 0 <= review_threshold <= decline_threshold <= 1")
        a, b, c = self.level_bounds
        if not 0.0 <= a <= b <= c <= 1.0:
            raise ValueError("level_bounds must be increasing within [0, 1]")


@dataclass(frozen=True, slots=True)
class Decisions:
    decision: list[str]
    risk_level: list[str]
    reasons: list[list[str]]


def decide(
    policy: DecisionPolicy,
    scores: npt.NDArray[np.float64],
    contributions: npt.NDArray[np.float64],
    feature_names: Sequence[str],
    fallback: npt.NDArray[np.bool_] | None = None,
) -> Decisions:
    """Vectorised over the batch; only the final lists are built per row."""
    n = scores.shape[0]
    decision_idx = (scores >= policy.review_threshold).astype(np.int64) + (
        scores >= policy.decline_threshold
    )
    level_idx = np.searchsorted(np.asarray(policy.level_bounds), scores, side="right")
    codes = [C.FEATURE_REASON_CODES.get(name, name) for name in feature_names]
    k = min(C.REASON_MAX_CODES, contributions.shape[1]) if n else 0
    if n and k:
        top = np.argsort(-contributions, axis=1, kind="stable")[:, :k]
        top_vals = np.take_along_axis(contributions, top, axis=1)
        strong = top_vals >= C.REASON_MIN_LOGIT
    reasons: list[list[str]] = []
    for i in range(n):
        r = (
            [codes[j] for j, s in zip(top[i].tolist(), strong[i].tolist(), strict=True) if s]
            if k
            else []
        )
        if not r:
            r = [C.REASON_NO_RISK_FACTOR]
        if fallback is not None and fallback[i]:
            r.insert(0, C.REASON_FEATURE_FALLBACK)
        reasons.append(r)
    return Decisions(
        decision=[C.DECISIONS[i] for i in decision_idx.tolist()],
        risk_level=[C.RISK_LEVELS[i] for i in level_idx.tolist()],
        reasons=reasons,
    )
