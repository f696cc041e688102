"""XNNPACK through LiteRT (``fastpw._peer_litert``) computes the convolution fastpw
computes, on the model built in memory from the layer's operands.

Each layer runs on one and on two threads, NHWC (TensorFlow Lite's only layout), and is
compared with ``fastpw.testing``'s reference: float32 within ``conv1x1_tolerance``,
int8 bit for bit with the int8 formula (``qconv1x1_reference``). XNNPACK requantizes as
fastpw does (one float32 multiply, round half to even) and widens u8/s8 products before
summing them, so, unlike ONNX Runtime on x86 without VNNI, it is exact on full-range
weights too (found with ai-edge-litert 2.3 on AMD Zen 3, AVX2, and on every standard
layer of ``fastpw.shapes``). ai-edge-litert is in the test extra; where it does not
install (it has no wheel for the platform) these tests skip.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fastpw import _peer_litert, _peers
from fastpw.shapes import LayerShape, make_inputs, make_int8_inputs
from fastpw.testing import conv1x1_reference, conv1x1_tolerance

pytest.importorskip("ai_edge_litert")

#: A square layer, a ragged one (odd C, K, H, W: XNNPACK's remainder paths), one of
#: the standard ones, and two strided/grouped ones.
CASES = (
    (LayerShape("square", 64, 96, 9, 7), 1, 1),
    (LayerShape("ragged", 37, 19, 5, 3), 1, 1),
    (LayerShape("mobilenetv2", 16, 96, 28, 28), 1, 1),
    (LayerShape("strided", 24, 40, 9, 11), 2, 1),
    (LayerShape("grouped", 64, 128, 7, 6), 2, 4),
)

cases = pytest.mark.parametrize(
    "shape, stride, groups",
    CASES,
    ids=[f"{shape.slug}-s{stride}-g{groups}" for shape, stride, groups in CASES],
)
threads = pytest.mark.parametrize("threads", [1, 2])


def _grouped_weight(weight: np.ndarray, groups: int) -> np.ndarray:
    """The (K, C/groups) weight of a grouped layer: the first C/groups columns."""
    return np.ascontiguousarray(weight[:, : weight.shape[1] // groups])


@cases
@threads
def test_xnnpack_float32_matches_the_reference(shape, stride, groups, threads):
    x, weight, bias = make_inputs(shape, "NHWC", seed=3)
    weight = _grouped_weight(weight, groups)
    call, out = _peer_litert.xnnpack_conv(x, weight, bias, threads, stride=stride)

    options = dict(layout="NHWC", stride=stride, groups=groups)
    expected = conv1x1_reference(x, weight, bias, **options)
    tolerance = conv1x1_tolerance(x, weight, bias, **options)
    for result in (out, np.array(call())):  # the first call and a repeated one
        assert result.shape == expected.shape
        assert np.all(np.abs(result.astype(np.float64) - expected) <= tolerance)


@pytest.mark.parametrize("shape", [case[0] for case in CASES[:3]], ids=lambda s: s.slug)
@threads
def test_xnnpack_int8_equals_the_formula(shape, threads):
    inputs = make_int8_inputs(shape, "NHWC", seed=5)
    call, out = _peer_litert.xnnpack_qconv(inputs, threads)
    assert out.dtype == np.uint8
    for result in (out, call()):
        assert _peers.int8_differences(result, inputs).exact


def test_xnnpack_int8_shifts_both_ends_of_the_uint8_range():
    """Outputs at 0 and 255 (saturated both ways) survive the int8 round trip."""
    inputs = make_int8_inputs(LayerShape("wide", 32, 48, 6, 5), "NHWC", seed=7)
    y_scale = float(np.float32(inputs.y_quant[0] / 8))
    tight = dataclasses.replace(inputs, y_quant=(y_scale, inputs.y_quant[1]))
    _, out = _peer_litert.xnnpack_qconv(tight, 1)
    assert out.min() == 0 and out.max() == 255
    assert _peers.int8_differences(out, tight).exact


def test_xnnpack_int8_takes_nhwc_uint8_only():
    inputs = make_int8_inputs(LayerShape("square", 16, 8, 3, 3), "NCHW")
    with pytest.raises(ValueError, match="NHWC"):
        _peer_litert.xnnpack_qconv(inputs, 1)


def test_litert_version_names_the_installed_package():
    from importlib.metadata import version

    assert _peer_litert.litert_version() == version("ai-edge-litert")
