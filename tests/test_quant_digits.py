"""The digits example end to end: an MLP trained by scikit-learn, run by fastpw in
float32 and in int8 (examples/digits_mlp.py). The example itself checks that fastpw's
float logits match the MLP's and that the predictions match ``clf.predict``; here the
int8 chain must stay close to the float one."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "digits_mlp.py"


@pytest.fixture(scope="module")
def result():
    spec = importlib.util.spec_from_file_location("digits_mlp", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.run(verbose=False)


def test_float_accuracy(result):
    assert result["float_accuracy"] > 0.9


def test_int8_accuracy_close_to_float(result):
    difference = abs(result["int8_accuracy"] - result["float_accuracy"])
    assert difference <= 0.01, (
        f"int8 accuracy {result['int8_accuracy']:.4f} vs float {result['float_accuracy']:.4f}"
    )


def test_logits_sqnr(result):
    assert result["logits_sqnr_db"] >= 25.0


def test_per_layer_sqnr(result):
    sqnrs = result["per_layer_sqnr"]
    assert len(sqnrs) == 3
    for index, value in enumerate(sqnrs):
        assert math.isfinite(value) and value > 25.0, f"layer {index}: SQNR {value} dB"


def test_sizes(result):
    assert result["train_size"] + result["test_size"] == 1797
