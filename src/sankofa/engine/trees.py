"""A gradient-boosted tree ensemble served in numpy: flattened trees, one pass per depth.

Training uses LightGBM (``evaluation.lightgbm_export`` turns its booster into
this artefact); serving must not. The artefact (format ``sankofa.gbdt/1``) is
JSON: every tree's nodes concatenated into flat arrays (split input,
threshold, left and right child, node value), the calibration, the decision
thresholds and where the model came from. Loading checks the feature list:
the leading served features it reads and the derived inputs
(``engine.derived_features``) must be exactly those this service computes.

Scoring is vectorised over rows *and* trees (``engine.tree_eval``): every
input is binned by the thresholds the trees use, each tree's split outcomes
are packed into one byte, and a table maps it to the leaf; trees with more
than 8 splits are walked one depth per round instead. Either way the cost is
a fixed number of array operations per batch, which keeps single
transactions cheap and large batches fast.

Reasons come from the model's own contributions (Saabas): each step from a
node to its child changes the expected output by ``value[child] -
value[node]``, credited to the input the node splits on; a node's value is
the training-count-weighted mean of the leaves below it. Per row the credits
add up, with the bias (the roots' values), to the tree output exactly.

Scores are calibrated probabilities: Platt scaling ``sigmoid(a * margin + b)``
fitted on a week held out from training. It is a positive affine map of the
margin, so the contributions times ``a`` stay additive in the calibrated
log-odds that the decision policy reads, and the ranking (hence AUC, AP and
CP@100) is the tree output's own. Non-finite served values are replaced by
their training means and the row flagged, as the logistic regression does.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from sankofa.engine.derived_features import DERIVED_NAMES, derive
from sankofa.engine.feature_names import N_SERVED_FEATURES, SERVED_FEATURE_NAMES
from sankofa.engine.model import ModelFormatError, ScoreResult, Thresholds, sigmoid
from sankofa.engine.tree_eval import LeafCodes, LeafPaths, is_leaf, walk

FloatArray = npt.NDArray[np.float64]
IndexArray = npt.NDArray[np.intp]

FORMAT: Final = "sankofa.gbdt/1"
#: Rows scored per block: a block's (pairs x rows) contribution indices and
#: gathers (``tree_eval.LeafCodes.evaluate``) stay within cache, and memory
#: stays bounded whatever the number of rows (one block of 1.75 million rows
#: was killed for memory). Measured (a scratch loop over ``predict``) on the shared
#: 2-core machine (best of many, noisy): 1000 rows in blocks of 128, 256 and 512
#: took 3.5-4.0 ms alike, in blocks of 1024 4.3 ms. Scores do not depend on it.
ROWS_PER_BLOCK: Final = 256


@dataclass(frozen=True, slots=True)
class Calibration:
    """``p = sigmoid(slope * margin + intercept)``; slope > 0 keeps the ranking."""

    slope: float = 1.0
    intercept: float = 0.0

    def __post_init__(self) -> None:
        if not (np.isfinite(self.slope) and self.slope > 0 and np.isfinite(self.intercept)):
            raise ModelFormatError("calibration slope must be finite and > 0, intercept finite")


@dataclass(frozen=True, slots=True)
class TreeArrays:
    """Every tree's nodes, concatenated. A leaf has ``left == right == itself``."""

    feature: IndexArray
    threshold: FloatArray
    left: IndexArray
    right: IndexArray
    value: FloatArray
    roots: IndexArray

    def __post_init__(self) -> None:
        n = self.value.shape[0]
        for name in ("feature", "threshold", "left", "right", "value"):
            arr = getattr(self, name)
            if arr.shape != (n,):
                raise ModelFormatError(f"trees.{name} must have one entry per node ({n})")
        if n == 0 or self.roots.ndim != 1 or self.roots.shape[0] == 0:
            raise ModelFormatError("a model needs at least one tree")
        for name in ("left", "right", "roots"):
            arr = getattr(self, name)
            if arr.min() < 0 or arr.max() >= n:
                raise ModelFormatError(f"trees.{name} must index nodes")
        if not (np.all(np.isfinite(self.value)) and not np.any(np.isnan(self.threshold))):
            raise ModelFormatError("node values must be finite and thresholds numbers")
        for name in ("feature", "threshold", "left", "right", "value", "roots"):
            getattr(self, name).setflags(write=False)


@dataclass(frozen=True, slots=True)
class TreeEnsembleModel:
    """Flattened trees, calibration and thresholds, as trained offline."""

    name: str
    version: str
    feature_names: tuple[str, ...]
    input_names: tuple[str, ...]
    fill: FloatArray
    trees: TreeArrays
    calibration: Calibration
    thresholds: Thresholds
    metadata: Mapping[str, Any] = field(default_factory=dict)
    # Derived at construction: evaluation tables (engine.tree_eval).
    depth: int = field(init=False)
    _codes: LeafCodes | None = field(init=False, repr=False)
    _paths: LeafPaths = field(init=False, repr=False)
    _bias: float = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "feature_names", tuple(self.feature_names))
        object.__setattr__(self, "input_names", tuple(self.input_names))
        if self.feature_names != SERVED_FEATURE_NAMES:
            raise ModelFormatError(
                f"model {self.name!r} was trained on features {list(self.feature_names)}, "
                f"but this service computes {list(SERVED_FEATURE_NAMES)}"
            )
        if self.input_names != self.feature_names + DERIVED_NAMES:
            raise ModelFormatError(
                f"model {self.name!r} expects derived inputs {list(self.input_names)}, "
                f"but this service derives {list(self.feature_names + DERIVED_NAMES)}"
            )
        fill = np.asarray(self.fill, dtype=np.float64)
        if fill.shape != (N_SERVED_FEATURES,) or not np.all(np.isfinite(fill)):
            raise ModelFormatError(f"fill must be {N_SERVED_FEATURES} finite numbers")
        fill.setflags(write=False)
        object.__setattr__(self, "fill", fill)
        t = self.trees
        if t.feature.min() < 0 or t.feature.max() >= len(self.input_names):
            raise ModelFormatError("trees.feature must index the model inputs")
        depth = _depth(t, is_leaf(t))
        object.__setattr__(self, "depth", depth)
        object.__setattr__(self, "_codes", LeafCodes.build(t, len(self.input_names), depth))
        object.__setattr__(self, "_paths", LeafPaths.build(t, depth))
        object.__setattr__(self, "_bias", float(t.value[t.roots].sum()))

    @property
    def contribution_names(self) -> tuple[str, ...]:
        """Names of the contribution columns: the model inputs."""
        return self.input_names

    @property
    def n_trees(self) -> int:
        return int(self.trees.roots.shape[0])

    # -- scoring -----------------------------------------------------------

    def inputs(self, X: npt.ArrayLike) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
        """Model inputs (n, 29) of a served matrix (n, 18), and the rows that needed the fill."""
        x = np.asarray(X, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != N_SERVED_FEATURES:
            raise ValueError(f"X must have shape (n, {N_SERVED_FEATURES}), got {x.shape}")
        finite = np.isfinite(x)
        fallback: npt.NDArray[np.bool_] = ~np.all(finite, axis=1)
        if fallback.any():
            x = np.where(finite, x, self.fill)
        return derive(x), fallback

    def leaves(self, inputs: FloatArray) -> IndexArray:
        """Leaf node of every (row, tree) for model inputs (n, 29)."""
        if self._codes is not None:
            return self._codes.leaves(inputs)
        return walk(self.trees, inputs, self.depth)

    def margin(self, inputs: FloatArray) -> FloatArray:
        """The ensemble's raw output (log-odds before calibration) for model inputs."""
        blocks = [
            self.trees.value[self.leaves(inputs[lo : lo + ROWS_PER_BLOCK])].sum(axis=1)
            for lo in range(0, inputs.shape[0], ROWS_PER_BLOCK)
        ]
        margin: FloatArray = np.concatenate(blocks) if blocks else np.zeros(0)
        return margin

    def predict(self, X: npt.ArrayLike) -> ScoreResult:
        """Calibrated probabilities, per-input contributions in calibrated log-odds, fallbacks.

        This is the engine's ``ScoringModel`` call (``sankofa.engine.scorer``). Rows
        are scored in blocks of ``ROWS_PER_BLOCK``: the per-(row, tree) intermediates
        stay in cache, and memory stays bounded whatever the number of rows.
        """
        z, fallback = self.inputs(X)
        if z.shape[0] <= ROWS_PER_BLOCK:
            scores, credit = self._predict_block(z)
        else:
            parts = [
                self._predict_block(z[lo : lo + ROWS_PER_BLOCK])
                for lo in range(0, z.shape[0], ROWS_PER_BLOCK)
            ]
            scores = np.concatenate([p[0] for p in parts])
            credit = np.concatenate([p[1] for p in parts])
        return ScoreResult(scores, credit, fallback)

    def _predict_block(self, z: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Calibrated scores and contributions of a block of model inputs."""
        if self._codes is not None:
            change, credit = self._codes.evaluate(z, z.shape[1])
            margin = change + self._bias
        else:
            leaves = walk(self.trees, z, self.depth)
            credit = self._paths.contributions(leaves, z.shape[1])
            margin = self.trees.value[leaves].sum(axis=1)
        cal = self.calibration
        credit *= cal.slope
        return sigmoid(cal.slope * margin + cal.intercept), credit

    def scores(self, X: npt.ArrayLike) -> FloatArray:
        """Calibrated probabilities only (evaluation, benchmarks)."""
        z, _ = self.inputs(X)
        cal = self.calibration
        return sigmoid(cal.slope * self.margin(z) + cal.intercept)

    @property
    def bias(self) -> float:
        """The roots' values summed: the margin before any split is taken into account."""
        return self._bias

    # -- artefact ------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        t = self.trees
        return {
            "format": FORMAT,
            "name": self.name,
            "version": self.version,
            "feature_names": list(self.feature_names),
            "input_names": list(self.input_names),
            "fill": self.fill.tolist(),
            "calibration": {
                "method": "platt",
                "slope": self.calibration.slope,
                "intercept": self.calibration.intercept,
            },
            "thresholds": self.thresholds.to_dict(),
            "trees": {
                "roots": t.roots.tolist(),
                "feature": t.feature.tolist(),
                "threshold": t.threshold.tolist(),
                "left": t.left.tolist(),
                "right": t.right.tolist(),
                "value": t.value.tolist(),
            },
            "metadata": dict(self.metadata),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TreeEnsembleModel:
        if data.get("format") != FORMAT:
            raise ModelFormatError(
                f"unknown model format {data.get('format')!r}, expected {FORMAT!r}"
            )
        try:
            tr = data["trees"]
            trees = TreeArrays(
                feature=np.asarray(tr["feature"], dtype=np.intp),
                threshold=np.asarray(tr["threshold"], dtype=np.float64),
                left=np.asarray(tr["left"], dtype=np.intp),
                right=np.asarray(tr["right"], dtype=np.intp),
                value=np.asarray(tr["value"], dtype=np.float64),
                roots=np.asarray(tr["roots"], dtype=np.intp),
            )
            cal = data["calibration"]
            return cls(
                name=str(data["name"]),
                version=str(data["version"]),
                feature_names=tuple(str(f) for f in data["feature_names"]),
                input_names=tuple(str(f) for f in data["input_names"]),
                fill=np.asarray(data["fill"], dtype=np.float64),
                trees=trees,
                calibration=Calibration(float(cal["slope"]), float(cal["intercept"])),
                thresholds=Thresholds.from_dict(data["thresholds"]),
                metadata=dict(data.get("metadata", {})),
            )
        except ModelFormatError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFormatError(f"malformed model artefact: {exc!r}") from exc

    @classmethod
    def load(cls, path: str | Path) -> TreeEnsembleModel:
        return cls.from_dict(_read_json(path))

    def save(self, path: str | Path) -> None:
        text = json.dumps(self.to_dict(), allow_nan=True, separators=(",", ":"))
        Path(path).write_text(text + "\n", encoding="utf-8")


def _read_json(path: str | Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ModelFormatError(f"{path}: not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelFormatError(f"{path}: expected a JSON object")
    return data


def _depth(trees: TreeArrays, is_leaf: npt.NDArray[np.bool_]) -> int:
    """Longest root-to-leaf path (in edges); refuses cycles other than a leaf's own loop."""
    n = trees.value.shape[0]
    frontier = np.unique(trees.roots)
    depth = 0
    while True:
        inner = frontier[~is_leaf[frontier]]
        if inner.shape[0] == 0:
            return depth
        depth += 1
        if depth > n:
            raise ModelFormatError("trees must not contain cycles")
        frontier = np.unique(np.concatenate([trees.left[inner], trees.right[inner]]))
