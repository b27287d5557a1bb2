"""Decisions, risk levels and reason codes from scores and contributions."""

from __future__ import annotations

import numpy as np
import pytest

from sankofa.engine import constants as C
from sankofa.engine.decision import DecisionPolicy, decide
from sankofa.engine.feature_names import FEATURE_NAMES, N_FEATURES
from sankofa.engine.model import load_packaged_logreg
from sankofa.engine.serving import load_default_model

POLICY = DecisionPolicy(review_threshold=0.3, decline_threshold=0.8, level_bounds=(0.1, 0.3, 0.8))


def test_thresholds_and_levels() -> None:
    scores = np.array([0.0, 0.1, 0.29, 0.3, 0.79, 0.8, 1.0])
    d = decide(POLICY, scores, np.zeros((7, N_FEATURES)), FEATURE_NAMES)
    assert d.decision == ["approve", "approve", "approve", "review", "review", "decline", "decline"]
    assert d.risk_level == ["LOW", "MEDIUM", "MEDIUM", "HIGH", "HIGH", "CRITICAL", "CRITICAL"]


def test_reasons_are_the_largest_positive_contributions_first() -> None:
    c = np.zeros((2, N_FEATURES))
    c[0, FEATURE_NAMES.index("TX_AMOUNT")] = 2.0
    c[0, FEATURE_NAMES.index("TERMINAL_ID_RISK_7DAY_WINDOW")] = 3.0
    c[0, FEATURE_NAMES.index("TX_DURING_NIGHT")] = 0.05  # below the floor
    c[0, FEATURE_NAMES.index("CUSTOMER_ID_NB_TX_1DAY_WINDOW")] = -4.0  # lowered the risk
    d = decide(POLICY, np.array([0.9, 0.01]), c, FEATURE_NAMES)
    assert d.reasons[0] == ["TERMINAL_RISK_7D", "AMOUNT"]
    assert d.reasons[1] == [C.REASON_NO_RISK_FACTOR]


def test_every_decision_has_a_reason_and_codes_are_stable() -> None:
    rng = np.random.default_rng(1)
    d = decide(POLICY, rng.uniform(size=500), rng.normal(size=(500, N_FEATURES)), FEATURE_NAMES)
    allowed = set(C.FEATURE_REASON_CODES.values()) | {C.REASON_NO_RISK_FACTOR}
    assert all(r and len(r) <= C.REASON_MAX_CODES and set(r) <= allowed for r in d.reasons)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("which", ["logreg", "default"])
def test_non_finite_features_give_a_finite_score_and_a_fallback_reason(
    bad: float, which: str
) -> None:
    """C9: a degenerate feature never becomes a NaN score or a null in a response."""
    model = load_packaged_logreg() if which == "logreg" else load_default_model()
    typical = load_default_model().fill  # type: ignore[attr-defined]
    x = np.tile(np.asarray(typical), (3, 1))
    x[1, 4] = bad  # an average that came out non-finite
    scores, contributions, fallback = model.predict(x)
    assert np.all(np.isfinite(scores)) and np.all((0 <= scores) & (scores <= 1))
    assert np.all(np.isfinite(contributions))
    assert fallback.tolist() == [False, True, False]
    d = decide(POLICY, scores, contributions, model.contribution_names, fallback)
    assert d.reasons[1][0] == C.REASON_FEATURE_FALLBACK
    assert C.REASON_FEATURE_FALLBACK not in d.reasons[0]


def test_policy_checks_its_arguments() -> None:
    with pytest.raises(ValueError):
        DecisionPolicy(review_threshold=0.9, decline_threshold=0.5, level_bounds=(0.1, 0.2, 0.3))
    with pytest.raises(ValueError):
        DecisionPolicy(review_threshold=0.1, decline_threshold=0.5, level_bounds=(0.3, 0.2, 0.9))
