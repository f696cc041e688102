"""The benchmark peers of ``fastpw._peers`` compute the convolution fastpw computes.

A timing compared with a peer means something only if the peer does the same work and
gets the same answer. Each peer here runs on one thread on small layers (one ragged:
odd C, K, H and W) in its own layout, and its result is compared with
``fastpw.testing``'s reference:

- float32 peers (ONNX Runtime Conv, PyTorch conv2d; NCHW and NHWC): every value within
  ``conv1x1_tolerance``;
- 8-bit peers (ONNX Runtime QLinearConv NCHW and ``com.microsoft`` NHWC, PyTorch's
  quantized Conv2d on each quantized engine): measured with
  ``int8_differences`` against the formula (``qconv1x1_reference``), on two kinds of
  weights.

What was found (ONNX Runtime 1.32, torch 2.13, AMD Zen 3: AVX2, no VNNI):

- With 7-bit weights (-64..63: no pair of u8 x s8 products can leave int16), ONNX
  Runtime, torch's "fbgemm" and "qnnpack" engines equal the formula bit for bit: they
  round half to even after one float32 multiply, as fastpw does. "onednn" adds the
  bias in float32 after scaling, so a value can land on the other side of a rounding
  tie: off by 1 at most (1 value in 100352 on resnet50 512->2048 7x7). "x86" picked
  fbgemm here; it may pick oneDNN elsewhere, so it is held to oneDNN's bound.
- With full-range weights (-127..127, what ``make_int8_inputs`` and the benchmarks use),
  on x86 without VNNI (AVX512-VNNI or AVX-VNNI), ONNX Runtime, "fbgemm", "x86" and
  "onednn" multiply with VPMADDUBSW, whose int16 sums of adjacent-channel product pairs
  saturate (onnxruntime#16105): most outputs differ from the formula (by up to ~60).
  Their results equal, bit for bit, the formula with each pair sum
  ``x[2i] * w[2i] + x[2i+1] * w[2i+1]`` clamped to int16 (``_saturated_pairs_reference``)
  ("onednn" again within 1 of it). "qnnpack" widens to 16 bits before multiplying and
  equals the formula. With VNNI the saturating peers are expected to be exact (within
  1 for oneDNN), as bench/test_bench_int8.py assumes.

Each 8-bit test records the number of values that differ from the formula as a
``differs_from_formula`` property (``--junitxml`` shows it). onnxruntime and onnx are
in the test extra; torch is not (it is too big): the torch tests skip where it is not
installed, so CI does not run them.
"""

from __future__ import annotations

import dataclasses
import platform

import numpy as np
import pytest

import fastpw
from fastpw import _peers
from fastpw.shapes import Int8Inputs, LayerShape, make_inputs, make_int8_inputs
from fastpw.testing import qconv1x1_accumulators

SHAPES = (
    LayerShape("square", 64, 96, 9, 7),
    LayerShape("ragged", 37, 19, 5, 3),
    # python -m fastpw --shape: a strided, grouped layer (odd H and W: ceil of H/stride)
    LayerShape("strided-grouped", 48, 64, 9, 7, stride=2, groups=4),
)
#: float32 peers also run batches (python -m fastpw --batch); the int8 tests' saturating
#: model is written for one image.
F32_SHAPES = (*SHAPES, LayerShape("batched", 24, 40, 6, 5, stride=2, batch=3))
LAYOUTS = ("NCHW", "NHWC")
TORCH_ENGINES = ("x86", "fbgemm", "onednn", "qnnpack")

_FEATURES = fastpw.cpu_features()
#: VNNI multiplies u8 x s8 into int32 without an int16 step: no pair sum saturates.
VNNI = _FEATURES["avx512_vnni"] or _FEATURES["avx_vnni"]
#: Where the VPMADDUBSW-based peers saturate int16 pair sums (x86 without VNNI).
PAIRS_SATURATE = platform.machine().lower() in ("x86_64", "amd64") and not VNNI

shape_ids = pytest.mark.parametrize("shape", SHAPES, ids=lambda shape: shape.slug)
f32_shape_ids = pytest.mark.parametrize("shape", F32_SHAPES, ids=lambda shape: shape.slug)
layouts = pytest.mark.parametrize("layout", LAYOUTS)


@pytest.fixture
def onnxruntime():
    pytest.importorskip("onnx")
    return pytest.importorskip("onnxruntime")


@pytest.fixture
def torch():
    torch = pytest.importorskip("torch")
    engine, threads = torch.backends.quantized.engine, torch.get_num_threads()
    yield torch
    torch.backends.quantized.engine = engine  # both are process-wide: put them back
    torch.set_num_threads(threads)


def _seven_bit(inputs: Int8Inputs) -> Int8Inputs:
    """The same operands with weights halved to -64..63: 2 * 255 * 64 < 2**15, so no
    pair of u8 x s8 products saturates int16."""
    return dataclasses.replace(inputs, weight=(inputs.weight // 2).astype(np.int8))


def _saturated_pairs_reference(inputs: Int8Inputs) -> np.ndarray:
    """The formula with VPMADDUBSW's saturation: the raw products ``x[c] * w[k, c]`` of
    channels 2i and 2i+1 (a zero channel pads an odd C) are summed and clamped to int16,
    then the pairs, the zero-point term ``-x_zp * sum_c w[k, c]`` and the bias are
    summed exactly and requantized as ``qconv1x1_reference`` does."""
    s, groups = inputs.stride, inputs.groups
    pixels = inputs.x_nchw[0, :, ::s, ::s]
    out_spatial = pixels.shape[1:]
    x_all = pixels.reshape(pixels.shape[0], -1).astype(np.int64)  # (C, output pixels)
    k, c = inputs.weight.shape  # c: C/groups
    # Each output channel sums the products of its group's channels, in pairs.
    x = x_all.reshape(groups, c, -1).repeat(k // groups, axis=0)  # (K, C/groups, P)
    w = inputs.weight.astype(np.int64)[:, :, None]  # (K, C/groups, 1)
    if c % 2:
        x = np.concatenate([x, np.zeros_like(x[:, :1])], axis=1)
        w = np.concatenate([w, np.zeros_like(w[:, :1])], axis=1)
    products = w * x  # (K, C/groups, P)
    pairs = np.clip(products[:, 0::2] + products[:, 1::2], -(2**15), 2**15 - 1)
    exact = qconv1x1_accumulators(
        inputs.x_nchw,
        inputs.weight,
        inputs.bias,
        x_zero_point=inputs.x_quant[1],
        stride=s,
        groups=groups,
    )[0].reshape(k, -1)
    # The saturated accumulator is the exact one minus what the clamps took away. That
    # varies per pixel, so it cannot reach qconv1x1_reference as a bias: the float32
    # requantization steps of its formula are repeated here.
    acc = exact + pairs.sum(axis=1) - products.sum(axis=1)
    x_scale, w_scale, y_scale = (
        np.float32(inputs.x_quant[0]),
        np.asarray(inputs.w_quant[0], np.float32),
        np.float32(inputs.y_quant[0]),
    )
    multiplier = (x_scale * w_scale) / y_scale
    value = acc.astype(np.float32) * multiplier[:, None]
    q = np.clip(np.rint(value.astype(np.float64)) + inputs.y_quant[1], 0, 255).astype(np.uint8)
    y = q.reshape((1, k) + out_spatial)
    return y if inputs.layout == "NCHW" else np.ascontiguousarray(y.transpose(0, 2, 3, 1))


def _count_differences(result: np.ndarray, expected: np.ndarray) -> tuple[int, int]:
    """(values off by exactly 1, values off by more) between two uint8 results."""
    diff = np.abs(result.astype(np.int16) - expected.astype(np.int16))
    return int(np.count_nonzero(diff == 1)), int(np.count_nonzero(diff > 1))


def _check_int8(result, inputs, record_property, *, within_one, saturates):
    """Exact (or within 1 with ``within_one``) against the formula, or, for a peer that
    ``saturates`` on a machine where pairs saturate, against the saturating model."""
    differences = _peers.int8_differences(result, inputs)
    record_property("differs_from_formula", differences.by_one + differences.by_more)
    if saturates and PAIRS_SATURATE:
        by_one, by_more = _count_differences(result, _saturated_pairs_reference(inputs))
        what = f"the saturating-pairs model (the formula: {differences})"
    else:
        by_one, by_more = differences.by_one, differences.by_more
        what = f"the formula: {differences}"
    assert by_more == 0 and (within_one or by_one == 0), (
        f"{by_one} values off by 1 and {by_more} by more from {what}"
    )


# --------------------------------------------------------------------------- float32


@pytest.mark.parametrize("peer", ["onnxruntime", "torch"])
@layouts
@f32_shape_ids
def test_float32_peer_matches_reference(request, peer, shape, layout):
    request.getfixturevalue(peer)  # skips when the peer is not installed
    x, weight, bias = make_inputs(shape, layout)
    make_peer = _peers.onnxruntime_conv if peer == "onnxruntime" else _peers.torch_conv2d
    call, out = make_peer(x, weight, bias, 1, layout, **shape.options)
    result = call()
    assert result.shape == out.shape == (shape.batch,) + _layout_shape(shape, layout)
    assert result.dtype == np.float32
    outside, relative = _peers.float32_errors(result, x, weight, bias, layout, **shape.options)
    assert outside == 0, f"{outside} values outside conv1x1_tolerance (max rel {relative:.2g})"


def _layout_shape(shape: LayerShape, layout: str) -> tuple[int, int, int]:
    if layout == "NCHW":
        return (shape.c_out, shape.out_height, shape.out_width)
    return (shape.out_height, shape.out_width, shape.c_out)


@layouts
@f32_shape_ids
def test_numpy_baseline_is_the_bare_matmul(shape, layout):
    """numpy's baseline: the GEMM without the bias, on the strided pixels; a grouped layer
    is refused (it would be one GEMM per group)."""
    x, weight, _ = make_inputs(shape, layout)
    if shape.groups != 1:
        with pytest.raises(ValueError, match="groups"):
            _peers.numpy_baseline(x, weight, layout, **shape.options)
        return
    call, out = _peers.numpy_baseline(x, weight, layout, **shape.options)
    assert call() is out and out.shape == (shape.batch,) + _layout_shape(shape, layout)
    bias = np.zeros(shape.c_out, np.float32)
    outside, relative = _peers.float32_errors(out, x, weight, bias, layout, **shape.options)
    assert outside == 0, f"{outside} values outside conv1x1_tolerance (max rel {relative:.2g})"


def test_onnxruntime_conv_writes_out_in_place(onnxruntime):
    x, weight, bias = make_inputs(SHAPES[0], "NHWC")
    call, out = _peers.onnxruntime_conv(x, weight, bias, 1, "NHWC")
    assert call() is out


# ---------------------------------------------------------------------- ONNX Runtime int8


ORT_QLINEARCONV = {
    "NCHW": _peers.onnxruntime_qlinearconv,
    "NHWC": _peers.onnxruntime_qlinearconv_nhwc,
}


@pytest.mark.parametrize("weights", ["7-bit", "full-range"])
@layouts
@shape_ids
def test_onnxruntime_qlinearconv(onnxruntime, record_property, shape, layout, weights):
    """QLinearConv in its own layout: NCHW (the ONNX operator) and NHWC (the
    ``com.microsoft`` contrib op with ``channels_last=1``)."""
    inputs = make_int8_inputs(shape, layout)
    if weights == "7-bit":
        inputs = _seven_bit(inputs)
    call, out = ORT_QLINEARCONV[layout](inputs, 1)
    assert call() is out and out.dtype == np.uint8
    _check_int8(out, inputs, record_property, within_one=False, saturates=True)


@shape_ids
def test_onnxruntime_qlinearconv_layouts_agree(onnxruntime, shape):
    """Both layouts run the same NHWC kernel (ONNX Runtime rewrites the NCHW node into
    Transpose, channels_last QLinearConv, Transpose): same numbers, bit for bit."""
    inputs = make_int8_inputs(shape, "NCHW")
    nchw = _peers.onnxruntime_qlinearconv(inputs, 1)[0]()
    nhwc = _peers.onnxruntime_qlinearconv_nhwc(inputs, 1)[0]()
    assert nhwc.shape == (1, shape.out_height, shape.out_width, shape.c_out)
    np.testing.assert_array_equal(nhwc, nchw.transpose(0, 2, 3, 1))


# --------------------------------------------------------------------------- torch int8


@pytest.mark.parametrize("weights", ["7-bit", "full-range"])
@pytest.mark.parametrize("engine", TORCH_ENGINES)
@layouts
@shape_ids
def test_torch_qconv2d(torch, record_property, shape, layout, engine, weights):
    """torch's quantized Conv2d on each engine the build has (see the module docstring
    for who rounds how)."""
    if engine not in _peers.torch_quantized_engines():
        pytest.skip(f"this torch has no {engine!r} quantized engine")
    inputs = make_int8_inputs(shape, layout)
    if weights == "7-bit":
        inputs = _seven_bit(inputs)
    call, out = _peers.torch_qconv2d(inputs, 1, engine)
    result = call()
    assert result.dtype == np.uint8 and result.shape == out.shape
    assert torch.backends.quantized.engine == engine
    _check_int8(
        result,
        inputs,
        record_property,
        within_one=engine in ("onednn", "x86"),
        saturates=engine != "qnnpack",
    )


def test_torch_reports(torch):
    assert _peers.torch_version() == torch.__version__
    assert _peers.torch_cpu_capability()
    assert set(_peers.torch_quantized_engines()) <= set(torch.backends.quantized.supported_engines)
