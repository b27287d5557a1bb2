"""Which model the service scores with, and the decision policy around it."""

from __future__ import annotations

from pathlib import Path

from sankofa.engine.decision import DecisionPolicy
from sankofa.engine.model import LogisticModel, load_default_model
from sankofa.settings import Settings


def load_model(path: Path | None) -> LogisticModel:
    """The artefact at ``path``, or the shipped default model."""
    return load_default_model() if path is None else LogisticModel.load(path)


def policy_for(model: LogisticModel, settings: Settings) -> DecisionPolicy:
    """The model's own thresholds, each overridable by settings."""
    t = model.thresholds
    review = settings.review_threshold if settings.review_threshold is not None else t.review
    decline = settings.decline_threshold if settings.decline_threshold is not None else t.decline
    if review > decline:
        raise ValueError(
            f"review threshold {review} exceeds decline threshold {decline}"
            " (check SANKOFA_REVIEW_THRESHOLD / SANKOFA_DECLINE_THRESHOLD)"
        )
    return DecisionPolicy(
        review_threshold=review, decline_threshold=decline, level_bounds=t.level_bounds
    )
