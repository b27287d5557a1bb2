"""A LightGBM booster as the flat arrays that ``engine.trees`` serves.

Training only: this module takes the booster's own description
(``Booster.dump_model()``) and never imports LightGBM itself, so it is
testable on a hand-written dump. Serving reads the arrays with numpy alone.

Only what the served traversal reproduces exactly is accepted: numerical
splits with LightGBM's ``<=`` rule, and no missing-value handling (the model
never saw a NaN, so LightGBM stores ``missing_type: None``; serving never
passes one either). Anything else is refused rather than served differently.

A node's value, for the contributions, is the mean of the leaf values below
it weighted by their training counts (the Saabas expected value); the roots'
values sum to the bias, and every leaf value equals its root's value plus the
changes along its path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from sankofa.engine.trees import TreeArrays


class UnsupportedModelError(ValueError):
    """A booster using a feature that the numpy traversal does not reproduce."""


def trees_from_dump(dump: Mapping[str, Any], input_names: Sequence[str]) -> TreeArrays:
    """Flatten every tree of ``dump`` (``Booster.dump_model()``) in order."""
    names = list(dump.get("feature_names", []))
    if names != list(input_names):
        raise UnsupportedModelError(
            f"the booster's features {names} are not the model inputs {list(input_names)}"
        )
    feature: list[int] = []
    threshold: list[float] = []
    left: list[int] = []
    right: list[int] = []
    value: list[float] = []
    count: list[float] = []
    roots: list[int] = []

    def add(node: Mapping[str, Any]) -> int:
        index = len(value)
        feature.append(0)
        threshold.append(0.0)
        left.append(index)
        right.append(index)
        value.append(0.0)
        count.append(0.0)
        if "leaf_value" in node:
            value[index] = float(node["leaf_value"])
            count[index] = float(node.get("leaf_count", 1))
            return index
        if node.get("decision_type") != "<=":
            raise UnsupportedModelError(f"split rule {node.get('decision_type')!r} is not '<='")
        if str(node.get("missing_type", "None")) != "None":
            raise UnsupportedModelError(
                f"missing-value handling {node.get('missing_type')!r} is not served"
            )
        feature[index] = int(node["split_feature"])
        threshold[index] = float(node["threshold"])
        lo = add(node["left_child"])
        hi = add(node["right_child"])
        left[index], right[index] = lo, hi
        total = count[lo] + count[hi]
        count[index] = total
        value[index] = (
            (count[lo] * value[lo] + count[hi] * value[hi]) / total
            if total > 0
            else 0.5 * (value[lo] + value[hi])
        )
        return index

    for tree in dump["tree_info"]:
        roots.append(add(tree["tree_structure"]))
    return TreeArrays(
        feature=np.asarray(feature, dtype=np.intp),
        threshold=np.asarray(threshold, dtype=np.float64),
        left=np.asarray(left, dtype=np.intp),
        right=np.asarray(right, dtype=np.intp),
        value=np.asarray(value, dtype=np.float64),
        roots=np.asarray(roots, dtype=np.intp),
    )
