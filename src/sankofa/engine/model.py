"""The baseline serving model: a standardised logistic regression, in numpy only.

Serving must not import pandas or scikit-learn, and a model must not be used
with features it was not trained on. A model is therefore a small JSON
artefact (format ``sankofa.logreg/1``) holding the scaler, the coefficients,
the decision thresholds and where it came from, and loading checks that it
names exactly ``FEATURE_NAMES``: the handbook's vector, which leads the
served one (``SERVED_FEATURE_NAMES``), so ``predict`` takes either.

Scoring is one vectorised pass. Besides the probability it returns each
feature's contribution to the logit, ``coef * (x - mean) / scale``: they add
up (with the intercept) to the logit, so the largest ones are honest reason
codes.

Non-finite input (NaN or infinity from a broken feature source) must never
become a NaN score, which every comparison would silently treat as "not
fraud". Such a value is replaced by the scaler mean, i.e. the feature then
contributes nothing, and the row is flagged in ``ScoreResult.fallback`` so the
caller can add a reason code. Standardised values are also clipped to
``±STANDARDISED_CLIP`` so that absurd finite inputs cannot overflow the logit.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, NamedTuple

import numpy as np
import numpy.typing as npt

from sankofa.engine.feature_names import FEATURE_NAMES, N_FEATURES, N_SERVED_FEATURES

FloatArray = npt.NDArray[np.float64]

FORMAT: Final = "sankofa.logreg/1"
#: The packaged logistic regression (the handbook's baseline, trained on its split).
LOGREG_MODEL_FILE: Final = "logreg-handbook-v1.json"
#: Standardised values beyond this many standard deviations carry no more
#: information, and bounding them keeps every logit finite.
STANDARDISED_CLIP: Final = 1e6
#: Risk levels from lowest to highest; ``thresholds["risk_levels"]`` maps each
#: level but the first to the lowest score that reaches it.
RISK_LEVELS: Final[tuple[str, ...]] = ("LOW", "MEDIUM", "HIGH", "CRITICAL")


class ModelFormatError(ValueError):
    """A model artefact that cannot be used: wrong format, features or values."""


class ScoreResult(NamedTuple):
    """Scores in [0, 1], per-feature logit contributions, and rows that needed the fallback."""

    scores: FloatArray
    contributions: FloatArray
    fallback: npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Score thresholds: ``review`` <= ``decline``, and the risk-level lower bounds."""

    review: float
    decline: float
    risk_levels: Mapping[str, float]

    def __post_init__(self) -> None:
        object.__setattr__(self, "risk_levels", MappingProxyType(dict(self.risk_levels)))
        if set(self.risk_levels) != set(RISK_LEVELS[1:]):
            raise ModelFormatError(f"risk_levels must name exactly {', '.join(RISK_LEVELS[1:])}")
        bounds = [float(self.risk_levels[level]) for level in RISK_LEVELS[1:]]
        named = [("review", self.review), ("decline", self.decline)]
        named += zip(RISK_LEVELS[1:], bounds, strict=True)
        for name, value in named:
            if not 0.0 <= value <= 1.0:
                raise ModelFormatError(f"threshold {name} must be in [0, 1], got {value}")
        if self.review > self.decline:
            raise ModelFormatError("threshold review must not exceed decline")
        if bounds != sorted(bounds):
            raise ModelFormatError(
                "risk_levels bounds must be non-decreasing from MEDIUM to CRITICAL"
            )

    @property
    def level_bounds(self) -> tuple[float, float, float]:
        """Lower bounds of MEDIUM, HIGH and CRITICAL, in that order."""
        medium, high, critical = (float(self.risk_levels[level]) for level in RISK_LEVELS[1:])
        return medium, high, critical

    def to_dict(self) -> dict[str, Any]:
        return {
            "review": self.review,
            "decline": self.decline,
            "risk_levels": {level: float(self.risk_levels[level]) for level in RISK_LEVELS[1:]},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Thresholds:
        try:
            return cls(
                review=float(data["review"]),
                decline=float(data["decline"]),
                risk_levels={str(k): float(v) for k, v in dict(data["risk_levels"]).items()},
            )
        except ModelFormatError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFormatError(f"bad thresholds: {exc!r}") from exc


@dataclass(frozen=True, slots=True)
class LogisticModel:
    """Standardisation, logistic regression and thresholds, as trained offline."""

    name: str
    version: str
    feature_names: tuple[str, ...]
    mean: FloatArray
    scale: FloatArray
    coef: FloatArray
    intercept: float
    thresholds: Thresholds
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "feature_names", tuple(self.feature_names))
        if self.feature_names != FEATURE_NAMES:
            raise ModelFormatError(
                f"model {self.name!r} was trained on features {list(self.feature_names)}, "
                f"but this service computes {list(FEATURE_NAMES)}"
            )
        for name in ("mean", "scale", "coef"):
            arr = np.asarray(getattr(self, name), dtype=np.float64)
            if arr.shape != (N_FEATURES,) or not np.all(np.isfinite(arr)):
                raise ModelFormatError(f"{name} must be {N_FEATURES} finite numbers")
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)
        if np.any(self.scale <= 0):
            raise ModelFormatError("scale must be positive")
        if not math.isfinite(self.intercept):
            raise ModelFormatError("intercept must be finite")

    @property
    def contribution_names(self) -> tuple[str, ...]:
        """Names of the contribution columns: the features themselves."""
        return self.feature_names

    # -- scoring -----------------------------------------------------------

    def score(self, X: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
        """Fraud probabilities (n,) and per-feature logit contributions (n, 15)."""
        result = self.predict(X)
        return result.scores, result.contributions

    def predict(self, X: npt.ArrayLike) -> ScoreResult:
        """As ``score``, plus the rows whose non-finite values fell back to the mean.

        This is the engine's ``ScoringModel`` call (``sankofa.engine.scorer``).
        """
        x = np.asarray(X, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] not in (N_FEATURES, N_SERVED_FEATURES):
            raise ValueError(
                f"X must have shape (n, {N_FEATURES}) or (n, {N_SERVED_FEATURES}), got {x.shape}"
            )
        x = x[:, :N_FEATURES]
        finite = np.isfinite(x)
        # An absurd finite value may overflow to +-inf here; the clip bounds it.
        with np.errstate(over="ignore"):
            z = (np.where(finite, x, self.mean) - self.mean) / self.scale
        np.clip(z, -STANDARDISED_CLIP, STANDARDISED_CLIP, out=z)
        contributions = z * self.coef
        logit = contributions.sum(axis=1) + self.intercept
        fallback: npt.NDArray[np.bool_] = ~np.all(finite, axis=1)
        return ScoreResult(sigmoid(logit), contributions, fallback)

    def risk_level(self, scores: npt.ArrayLike) -> npt.NDArray[np.intp]:
        """Index into ``RISK_LEVELS`` of each score: the highest level whose bound it reaches."""
        bounds = np.asarray(self.thresholds.level_bounds)
        return np.searchsorted(bounds, np.asarray(scores, dtype=np.float64), side="right")

    # -- artefact ------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "name": self.name,
            "version": self.version,
            "feature_names": list(self.feature_names),
            "scaler": {"mean": self.mean.tolist(), "scale": self.scale.tolist()},
            "coef": self.coef.tolist(),
            "intercept": self.intercept,
            "thresholds": self.thresholds.to_dict(),
            "metadata": dict(self.metadata),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LogisticModel:
        if data.get("format") != FORMAT:
            raise ModelFormatError(
                f"unknown model format {data.get('format')!r}, expected {FORMAT!r}"
            )
        try:
            return cls(
                name=str(data["name"]),
                version=str(data["version"]),
                feature_names=tuple(str(f) for f in data["feature_names"]),
                mean=np.asarray(data["scaler"]["mean"], dtype=np.float64),
                scale=np.asarray(data["scaler"]["scale"], dtype=np.float64),
                coef=np.asarray(data["coef"], dtype=np.float64),
                intercept=float(data["intercept"]),
                thresholds=Thresholds.from_dict(data["thresholds"]),
                metadata=dict(data.get("metadata", {})),
            )
        except ModelFormatError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFormatError(f"malformed model artefact: {exc!r}") from exc

    @classmethod
    def load(cls, path: str | Path) -> LogisticModel:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ModelFormatError(f"{path}: not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ModelFormatError(f"{path}: expected a JSON object")
        return cls.from_dict(data)

    def save(self, path: str | Path) -> None:
        text = json.dumps(self.to_dict(), indent=2, allow_nan=False)
        Path(path).write_text(text + "\n", encoding="utf-8")


def packaged_model_path(file_name: str) -> Path:
    """A shipped artefact, package data ``sankofa/models/<file_name>``."""
    resource = resources.files("sankofa").joinpath("models", file_name)
    if not isinstance(resource, Path):
        raise FileNotFoundError(f"sankofa is not installed as files; cannot locate {file_name}")
    return resource


def read_packaged_model(file_name: str) -> dict[str, Any]:
    """The JSON of a shipped artefact, wherever the package is installed."""
    resource = resources.files("sankofa").joinpath("models", file_name)
    data = json.loads(resource.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ModelFormatError(f"{file_name}: expected a JSON object")
    return data


def load_packaged_logreg() -> LogisticModel:
    """The shipped logistic regression (the baseline; the service's default is in serving)."""
    return LogisticModel.from_dict(read_packaged_model(LOGREG_MODEL_FILE))


def sigmoid(logit: FloatArray) -> FloatArray:
    """1 / (1 + e^-z) without overflow: exp only ever sees a non-positive argument."""
    e = np.exp(-np.abs(logit))
    return np.where(logit >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
