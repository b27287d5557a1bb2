"""The served tree ensemble: traversal, contributions, calibration, artefact, and
equality with LightGBM's own scores on real data (committed slice always; the
full data when it and LightGBM are present)."""

from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sankofa.engine.derived_features import DERIVED_NAMES, MODEL_INPUT_NAMES, N_MODEL_INPUTS
from sankofa.engine.feature_names import N_SERVED_FEATURES, SERVED_FEATURE_NAMES
from sankofa.engine.model import ModelFormatError, Thresholds, load_packaged_logreg
from sankofa.engine.serving import (
    default_model_path,
    load_default_model,
    load_model_file,
    model_from_dict,
)
from sankofa.engine.tree_eval import LeafCodes, walk
from sankofa.engine.trees import ROWS_PER_BLOCK, Calibration, TreeArrays, TreeEnsembleModel
from sankofa.evaluation.train import raw_features
from sankofa.sim.data import load_raw

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SLICE = FIXTURES / "handbook-slice.csv.gz"
BOOSTER = FIXTURES / "gbdt-handbook-v1.lightgbm.txt"
REFERENCE = FIXTURES / "gbdt-handbook-v1-slice-scores.csv.gz"
HAS_LIGHTGBM = importlib.util.find_spec("lightgbm") is not None
THRESHOLDS = Thresholds(
    review=0.3, decline=0.7, risk_levels={"MEDIUM": 0.1, "HIGH": 0.3, "CRITICAL": 0.7}
)


def random_trees(seed: int, n_trees: int, max_splits: int) -> TreeArrays:
    """Random binary trees over the model inputs, built depth-first."""
    rng = np.random.default_rng(seed)
    feature: list[int] = []
    threshold: list[float] = []
    left: list[int] = []
    right: list[int] = []
    value: list[float] = []
    roots: list[int] = []

    def grow(splits: int) -> int:
        i = len(value)
        feature.append(0)
        threshold.append(0.0)
        left.append(i)
        right.append(i)
        value.append(float(rng.normal()))
        if splits == 0:
            return i
        feature[i] = int(rng.integers(0, N_MODEL_INPUTS))
        threshold[i] = float(rng.choice([-1.0, 0.0, 0.5, 1.0, 2.0, 5.0]))
        k = int(rng.integers(0, splits))
        left[i] = grow(k)
        right[i] = grow(splits - 1 - k)
        return i

    for _ in range(n_trees):
        roots.append(grow(int(rng.integers(0, max_splits + 1))))
    return TreeArrays(
        feature=np.asarray(feature, dtype=np.intp),
        threshold=np.asarray(threshold),
        left=np.asarray(left, dtype=np.intp),
        right=np.asarray(right, dtype=np.intp),
        value=np.asarray(value),
        roots=np.asarray(roots, dtype=np.intp),
    )


def make_model(trees: TreeArrays, **changes: Any) -> TreeEnsembleModel:
    fields: dict[str, Any] = {
        "name": "t",
        "version": "1",
        "feature_names": SERVED_FEATURE_NAMES,
        "input_names": MODEL_INPUT_NAMES,
        "fill": np.ones(N_SERVED_FEATURES),
        "trees": trees,
        "calibration": Calibration(slope=0.8, intercept=-1.0),
        "thresholds": THRESHOLDS,
    }
    fields.update(changes)
    return TreeEnsembleModel(**fields)


def per_row_margin(model: TreeEnsembleModel, z: np.ndarray) -> np.ndarray:
    """The plain definition: each row down each tree, one node at a time."""
    t = model.trees
    out = []
    for row in z.tolist():
        total = 0.0
        for root in t.roots.tolist():
            node = root
            while not (t.left[node] == node and t.right[node] == node):
                go_right = row[int(t.feature[node])] > t.threshold[node]
                node = int(t.right[node] if go_right else t.left[node])
            total += float(t.value[node])
        out.append(total)
    return np.asarray(out)


def served_inputs(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.choice([-2.0, -1.0, 0.0, 0.5, 1.0, 1.5, 3.0, 7.0], size=(n, N_SERVED_FEATURES))


@pytest.mark.parametrize("max_splits", [3, 8, 14])
def test_scores_equal_a_per_row_walk(max_splits: int) -> None:
    """Small trees go through leaf codes, large ones through the walk: same leaves."""
    model = make_model(random_trees(max_splits, 40, max_splits))
    x = served_inputs(np.random.default_rng(1), 300)
    z, _ = model.inputs(x)
    np.testing.assert_allclose(model.margin(z), per_row_margin(model, z), rtol=0, atol=1e-12)
    assert np.array_equal(model.leaves(z), walk(model.trees, z, model.depth))
    codes = LeafCodes.build(model.trees, N_MODEL_INPUTS, model.depth)
    assert (codes is not None) == (max_splits <= 8)


@pytest.mark.parametrize("max_splits", [4, 12])
def test_contributions_add_up_to_the_calibrated_log_odds(max_splits: int) -> None:
    model = make_model(random_trees(10 + max_splits, 30, max_splits))
    x = served_inputs(np.random.default_rng(2), 200)
    result = model.predict(x)
    log_odds = np.log(result.scores / (1 - result.scores))
    cal = model.calibration
    total = result.contributions.sum(axis=1) + cal.slope * model.bias + cal.intercept
    np.testing.assert_allclose(total, log_odds, atol=1e-9)
    assert result.contributions.shape == (200, N_MODEL_INPUTS)
    np.testing.assert_allclose(result.scores, model.scores(x), rtol=1e-12)


@pytest.mark.parametrize("max_splits", [6, 12])
def test_a_large_batch_scores_each_row_as_alone(max_splits: int) -> None:
    """Rows are scored in blocks: a batch spanning several blocks gives every row
    exactly what it gets on its own (scores and contributions)."""
    model = make_model(random_trees(20 + max_splits, 30, max_splits))
    n = 2 * ROWS_PER_BLOCK + 7
    x = served_inputs(np.random.default_rng(3), n)
    batch = model.predict(x)
    alone = [model.predict(x[i : i + 1]) for i in range(n)]
    assert np.array_equal(batch.scores, np.concatenate([r.scores for r in alone]))
    assert np.array_equal(batch.contributions, np.concatenate([r.contributions for r in alone]))
    z, _ = model.inputs(x)
    np.testing.assert_allclose(model.margin(z), per_row_margin(model, z), rtol=0, atol=1e-12)


def per_row_credit(model: TreeEnsembleModel, z: np.ndarray) -> np.ndarray:
    """Saabas credits walked row by row: each step's value change to its split input."""
    t = model.trees
    out = np.zeros_like(z)
    for i, row in enumerate(z.tolist()):
        for root in t.roots.tolist():
            node = root
            while not (t.left[node] == node and t.right[node] == node):
                go_right = row[int(t.feature[node])] > t.threshold[node]
                child = int(t.right[node] if go_right else t.left[node])
                out[i, int(t.feature[node])] += float(t.value[child] - t.value[node])
                node = child
    return out * model.calibration.slope


@pytest.mark.parametrize(("max_splits", "n"), [(3, 1), (8, 2), (8, 300), (12, 37)])
def test_contributions_equal_a_per_row_walk(max_splits: int, n: int) -> None:
    """Leaf codes (<= 8 splits) and the walk (more) credit each input what a row-by-row
    walk of the same trees credits it, for one row, two, and blocks of any width."""
    model = make_model(random_trees(30 + max_splits, 60, max_splits))
    x = served_inputs(np.random.default_rng(4 + n), n)
    z, _ = model.inputs(x)
    np.testing.assert_allclose(model.predict(x).contributions, per_row_credit(model, z), atol=1e-12)


def test_contributions_credit_the_split_input() -> None:
    # One tree: input 0 <= 1 goes left (value 0), else right (value 2); root value 1.
    trees = TreeArrays(
        feature=np.asarray([0, 0, 0], dtype=np.intp),
        threshold=np.asarray([1.0, 0.0, 0.0]),
        left=np.asarray([1, 1, 2], dtype=np.intp),
        right=np.asarray([2, 1, 2], dtype=np.intp),
        value=np.asarray([1.0, 0.0, 2.0]),
        roots=np.asarray([0], dtype=np.intp),
    )
    model = make_model(trees, calibration=Calibration())
    x = np.ones((2, N_SERVED_FEATURES))
    x[1, 0] = 5.0
    result = model.predict(x)
    assert result.contributions[:, 0].tolist() == [-1.0, 1.0]
    assert np.count_nonzero(result.contributions[:, 1:]) == 0
    assert model.bias == 1.0


def test_non_finite_inputs_take_the_fill_and_are_flagged() -> None:
    model = make_model(random_trees(3, 20, 6))
    x = np.tile(model.fill, (3, 1))
    x[1, 4] = np.nan
    x[2, 0] = np.inf
    result = model.predict(x)
    assert result.fallback.tolist() == [False, True, True]
    assert np.all(np.isfinite(result.scores)) and np.all(np.isfinite(result.contributions))
    assert result.scores[0] == result.scores[1] == result.scores[2]


def test_absurd_finite_inputs_stay_finite() -> None:
    model = make_model(random_trees(4, 20, 6))
    x = np.full((2, N_SERVED_FEATURES), 1e308)
    x[1] = -1e308
    result = model.predict(x)
    assert np.all(np.isfinite(result.scores)) and np.all(np.isfinite(result.contributions))


def test_artefact_round_trip_and_format_dispatch(tmp_path: Path) -> None:
    model = make_model(random_trees(5, 10, 5), metadata={"note": "x"})
    path = tmp_path / "m.json"
    model.save(path)
    loaded = load_model_file(path)
    assert isinstance(loaded, TreeEnsembleModel)
    assert loaded.to_dict() == model.to_dict()
    x = served_inputs(np.random.default_rng(3), 50)
    assert np.array_equal(loaded.predict(x).scores, model.predict(x).scores)
    assert isinstance(
        model_from_dict(load_packaged_logreg().to_dict()), type(load_packaged_logreg())
    )
    with pytest.raises(ModelFormatError, match="unknown model format"):
        model_from_dict({"format": "sankofa.nope/1"})


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("feature_names", SERVED_FEATURE_NAMES[:-1], "trained on features"),
        ("input_names", SERVED_FEATURE_NAMES + DERIVED_NAMES[::-1], "derived inputs"),
        ("fill", np.ones(N_SERVED_FEATURES - 1), "fill"),
    ],
)
def test_loading_checks_the_feature_list(field: str, value: Any, message: str) -> None:
    data = make_model(random_trees(6, 3, 3)).to_dict()
    data[field] = list(value)
    with pytest.raises(ModelFormatError, match=message):
        TreeEnsembleModel.from_dict(json.loads(json.dumps(data)))


def test_broken_trees_are_refused() -> None:
    data = make_model(random_trees(7, 3, 3)).to_dict()
    data["trees"]["left"][0] = 10_000
    with pytest.raises(ModelFormatError, match="index nodes"):
        TreeEnsembleModel.from_dict(data)
    with pytest.raises(ModelFormatError, match="calibration"):
        Calibration(slope=-1.0)


# -- the shipped model against LightGBM ---------------------------------------------


def slice_reference() -> tuple[np.ndarray, np.ndarray]:
    lines = gzip.decompress(REFERENCE.read_bytes()).decode().splitlines()[1:]
    ids, scores = zip(*(line.split(",") for line in lines), strict=True)
    return np.asarray(ids, dtype=np.int64), np.asarray(scores, dtype=np.float64)


def test_default_model_is_the_tree_ensemble_with_provenance() -> None:
    model = load_default_model()
    assert isinstance(model, TreeEnsembleModel)
    assert default_model_path().name == "gbdt-handbook-v1.json"
    meta = model.metadata
    assert meta["training"]["start"] == "2018-07-25" and meta["training"]["frauds"] == 598
    assert len(meta["data"]["sha256"]) == 64
    assert meta["calibration"]["start"] == "2018-07-18"
    assert meta["trainer"]["library"].startswith("lightgbm")
    assert 0 < model.thresholds.review < model.thresholds.decline < 1


def test_served_scores_equal_lightgbm_on_the_slice() -> None:
    """The committed LightGBM scores (tests/fixtures/make_gbdt_reference.py), to 1e-6."""
    raw = load_raw(SLICE)
    ids, reference = slice_reference()
    assert np.array_equal(ids, raw.transaction_id)
    model = load_default_model()
    assert isinstance(model, TreeEnsembleModel)
    z, _ = model.inputs(raw_features(raw))
    margin = model.margin(z)
    assert np.max(np.abs(margin - reference)) < 1e-6
    cal = model.calibration
    expected = 1 / (1 + np.exp(-(cal.slope * reference + cal.intercept)))
    assert np.max(np.abs(model.predict(raw_features(raw)).scores - expected)) < 1e-6


@pytest.mark.skipif(not HAS_LIGHTGBM, reason="LightGBM (the 'train' extra) is not installed")
def test_served_scores_equal_the_booster_file_on_the_slice() -> None:
    import lightgbm as lgb

    raw = load_raw(SLICE)
    model = load_default_model()
    assert isinstance(model, TreeEnsembleModel)
    z, _ = model.inputs(raw_features(raw))
    booster = lgb.Booster(model_file=str(BOOSTER))
    assert np.max(np.abs(model.margin(z) - booster.predict(z, raw_score=True))) < 1e-6


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.skipif(not HAS_LIGHTGBM, reason="LightGBM (the 'train' extra) is not installed")
def test_served_scores_equal_lightgbm_on_the_full_data() -> None:
    import lightgbm as lgb

    from conftest import shared_data_dir

    path = shared_data_dir() / "handbook-raw.csv.gz"
    if not path.exists():
        pytest.skip(f"published data not found in {path.parent}")
    raw = load_raw(path)
    model = load_default_model()
    assert isinstance(model, TreeEnsembleModel)
    booster = lgb.Booster(model_file=str(BOOSTER))
    feats = raw_features(raw)
    worst = 0.0
    for lo in range(0, len(raw), 100_000):
        z, _ = model.inputs(feats[lo : lo + 100_000])
        worst = max(
            worst, float(np.max(np.abs(model.margin(z) - booster.predict(z, raw_score=True))))
        )
    assert worst < 1e-6, worst
