"""Serving needs numpy only: the app, its default tree model and a scored batch pull in
none of the training libraries (the ``train`` extra), even where they are installed."""

from __future__ import annotations

import subprocess
import sys

TRAINING_ONLY = ("lightgbm", "sklearn", "scipy", "pandas", "matplotlib")


def test_the_app_and_its_model_import_no_training_library() -> None:
    # A fresh interpreter: this test process may have imported LightGBM already.
    code = f"""
import sys
import numpy as np
from sankofa.api.app import create_app
from sankofa.engine.serving import load_default_model
from sankofa.engine.trees import TreeEnsembleModel
from sankofa.settings import Settings

app = create_app(Settings())
model = load_default_model()
assert isinstance(model, TreeEnsembleModel), type(model)
result = model.predict(np.tile(model.fill, (4, 1)))
assert result.scores.shape == (4,)
bad = [m for m in {TRAINING_ONLY!r} if m in sys.modules]
print(bad)
sys.exit(1 if bad else 0)
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
