"""LightGBM's model description to served arrays, on hand-written dumps (no LightGBM needed)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from sankofa.engine.derived_features import MODEL_INPUT_NAMES
from sankofa.evaluation.lightgbm_export import UnsupportedModelError, trees_from_dump


def split(feature: int, threshold: float, left: Any, right: Any, **extra: Any) -> dict[str, Any]:
    return {
        "split_feature": feature,
        "threshold": threshold,
        "decision_type": "<=",
        "missing_type": "None",
        "left_child": left,
        "right_child": right,
        **extra,
    }


def leaf(value: float, count: int) -> dict[str, Any]:
    return {"leaf_value": value, "leaf_count": count}


def dump(*trees: dict[str, Any]) -> dict[str, Any]:
    return {
        "feature_names": list(MODEL_INPUT_NAMES),
        "tree_info": [{"tree_structure": t} for t in trees],
    }


def test_flattens_trees_with_count_weighted_node_values() -> None:
    t0 = split(3, 1.5, leaf(-1.0, 30), split(0, 220.0, leaf(0.5, 10), leaf(2.0, 10)))
    arrays = trees_from_dump(dump(t0, leaf(0.25, 50)), MODEL_INPUT_NAMES)
    assert arrays.roots.tolist() == [0, 5]
    assert arrays.feature[[0, 2]].tolist() == [3, 0]
    assert arrays.threshold[[0, 2]].tolist() == [1.5, 220.0]
    assert (arrays.left[0], arrays.right[0]) == (1, 2)
    # Leaves point to themselves.
    for node in (1, 3, 4, 5):
        assert arrays.left[node] == arrays.right[node] == node
    # Node 2: (10 * 0.5 + 10 * 2.0) / 20; root: (30 * -1 + 20 * 1.25) / 50.
    assert arrays.value[2] == pytest.approx(1.25)
    assert arrays.value[0] == pytest.approx(-0.1)
    assert arrays.value[5] == 0.25
    assert np.all(arrays.value[[1, 3, 4]] == [-1.0, 0.5, 2.0])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"decision_type": "=="}, "split rule"),
        ({"missing_type": "NaN"}, "missing-value"),
    ],
)
def test_refuses_what_the_traversal_would_serve_differently(
    change: dict[str, Any], message: str
) -> None:
    bad = split(0, 1.0, leaf(0.0, 1), leaf(1.0, 1), **change)
    with pytest.raises(UnsupportedModelError, match=message):
        trees_from_dump(dump(bad), MODEL_INPUT_NAMES)


def test_refuses_other_inputs() -> None:
    data = dump(leaf(0.0, 1))
    data["feature_names"] = ["a", "b"]
    with pytest.raises(UnsupportedModelError, match="model inputs"):
        trees_from_dump(data, MODEL_INPUT_NAMES)
