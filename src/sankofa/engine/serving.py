"""Which model the service scores with, and the decision policy around it.

A model is anything with the ``ScoringModel`` shape; an artefact's format tag
(``sankofa.logreg/1``, ``sankofa.gbdt/1``) says which class reads it. The
default is the shipped tree ensemble, the best model on the handbook's
protocols (docs/model.md); the logistic regression ships beside it as the
baseline, and either can serve as champion or shadow.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final, Protocol

import numpy as np
import numpy.typing as npt

from sankofa.engine import model as logreg
from sankofa.engine import trees
from sankofa.engine.decision import DecisionPolicy
from sankofa.engine.model import ModelFormatError, ScoreResult, Thresholds
from sankofa.settings import Settings

#: The shipped default: the tree ensemble trained on the handbook split's training week.
DEFAULT_MODEL_FILE: Final = "gbdt-handbook-v1.json"


class ScoringModel(Protocol):
    """What the engine needs of a model: names, a version, thresholds, one vectorised call."""

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> str: ...

    @property
    def feature_names(self) -> tuple[str, ...]:
        """The leading served features the model reads (its artefact's feature list)."""
        ...

    @property
    def contribution_names(self) -> tuple[str, ...]:
        """What each column of ``predict``'s contributions is credited to."""
        ...

    @property
    def thresholds(self) -> Thresholds: ...

    def predict(self, X: npt.NDArray[np.float64]) -> ScoreResult:
        """Scores in [0, 1], contributions in log-odds, rows needing a fallback, for (n, 18)."""
        ...


_READERS: Final[Mapping[str, Callable[[Mapping[str, Any]], ScoringModel]]] = {
    logreg.FORMAT: logreg.LogisticModel.from_dict,
    trees.FORMAT: trees.TreeEnsembleModel.from_dict,
}


def model_from_dict(data: Mapping[str, Any]) -> ScoringModel:
    """The model an artefact describes, chosen by its format tag."""
    reader = _READERS.get(str(data.get("format")))
    if reader is None:
        raise ModelFormatError(
            f"unknown model format {data.get('format')!r}, expected one of {sorted(_READERS)}"
        )
    return reader(data)


def load_model_file(path: str | Path) -> ScoringModel:
    """The artefact at ``path``, whatever its format."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ModelFormatError(f"{path}: not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelFormatError(f"{path}: expected a JSON object")
    return model_from_dict(data)


@functools.cache
def load_default_model() -> ScoringModel:
    """The shipped default model, wherever the package is installed.

    Read once per process: models are immutable, and building a tree model's
    tables takes tens of milliseconds that every app start would otherwise pay.
    """
    return model_from_dict(logreg.read_packaged_model(DEFAULT_MODEL_FILE))


def default_model_path() -> Path:
    return logreg.packaged_model_path(DEFAULT_MODEL_FILE)


def load_model(path: Path | None) -> ScoringModel:
    """The artefact at ``path``, or the shipped default model."""
    return load_default_model() if path is None else load_model_file(path)


def model_version(model: ScoringModel) -> str:
    """``name@version``, as stored with each decision."""
    return f"{model.name}@{model.version}"


def policy_for(model: ScoringModel, settings: Settings) -> DecisionPolicy:
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


def own_policy(model: ScoringModel) -> DecisionPolicy:
    """The model's thresholds alone: a shadow model decides by its own policy."""
    t = model.thresholds
    return DecisionPolicy(
        review_threshold=t.review, decline_threshold=t.decline, level_bounds=t.level_bounds
    )
