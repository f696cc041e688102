"""fastpw's quantized conv1x1 against ONNX Runtime's QLinearConv, bit for bit.

With no activation and an 8-bit output, fastpw's contract is QLinearConv exactly as
ONNX Runtime computes it on CPU (an int32 accumulator, then float32(acc) times the
float32 multiplier (x_scale * w_scale[k]) / y_scale, rounded half to even, plus y_zp,
saturated). Each test builds a one-node QLinearConv model with onnx.helper (x, x_scale
and x_zero_point are graph inputs; w, w_scale, w_zero_point, y_scale, y_zero_point and B
are initializers), runs it with the CPU execution provider on one thread, and compares.
fastpw's NHWC layout is checked by transposing x to NCHW for ONNX Runtime and its
result back.

What ONNX Runtime supports decides what is compared here: its CPU QLinearConv takes
uint8 x with uint8 y and int8 x with int8 y (mixed x/y types have no kernel), and int8
weights with zero point 0 (symmetric, as fastpw requires).

Saturation caveat: on x86-64 CPUs without VNNI, ONNX Runtime's u8 x s8 GEMM uses
VPMADDUBSW, whose int16 pair sums saturate when |w| is large (ONNX Runtime's own docs
suggest reduce_range, i.e. 7-bit weights). On such CPUs the weights here stay within
[-64, 64], where no pair sum can saturate (2 * 255 * 64 < 2**15); with VNNI (or off
x86-64) they use the full int8 range. Extreme weights are always covered against the
numpy reference in test_int8.py.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass

import kernels
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given
from hypothesis import strategies as st
from layouts import x_shape
from onnx import TensorProto, helper, numpy_helper
from witnesses import requantization_witnesses

import fastpw
from fastpw.testing import (
    INT32_MAX,
    INT32_MIN,
    QDTYPE_RANGES,
    qconv1x1_accumulators,
    qconv1x1_reference,
)

LAYOUTS = ("NCHW", "NHWC")
X_DTYPES = (np.uint8, np.int8)
ONNX_TYPES = {np.dtype(np.uint8): TensorProto.UINT8, np.dtype(np.int8): TensorProto.INT8}
#: The operation these tests go through (its kernels' edge sizes: tests/kernels.py).
KERNEL_OPERATION = "int8"
#: Register-tile edges of every int8 kernel in the build (tests/kernels.py).
EDGE_SIZES = kernels.edge_sizes(KERNEL_OPERATION)


def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            line = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return set()
    return set(line.split(":", 1)[-1].split())


def _weight_bound():
    """Largest |w| for which ONNX Runtime's result is exact on this CPU (see above)."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return 128
    flags = _cpu_flags()
    return 128 if {"avx512_vnni", "avx_vnni"} & flags else 64


WEIGHT_BOUND = _weight_bound()


# ---------------------------------------------------------------------------- helpers


def qlinearconv_model(x_dtype, weight, bias, w_scale, y_scale, y_zero_point, stride, groups):
    """A serialized one-node QLinearConv model (opset 13, 1x1 kernel, no padding)."""
    x_type = ONNX_TYPES[np.dtype(x_dtype)]
    k, cg = weight.shape
    w_scale = np.asarray(w_scale, np.float32)
    w_zero_point = np.zeros(w_scale.shape, np.int8)
    initializers = [
        numpy_helper.from_array(weight.reshape(k, cg, 1, 1).astype(np.int8), "w"),
        numpy_helper.from_array(w_scale, "w_scale"),
        numpy_helper.from_array(w_zero_point, "w_zero_point"),
        numpy_helper.from_array(np.asarray(y_scale, np.float32), "y_scale"),
        numpy_helper.from_array(np.asarray(y_zero_point, x_dtype), "y_zero_point"),
    ]
    inputs = ["x", "x_scale", "x_zero_point", "w", "w_scale", "w_zero_point"]
    inputs += ["y_scale", "y_zero_point"]
    if bias is not None:
        initializers.append(numpy_helper.from_array(np.asarray(bias, np.int32), "B"))
        inputs.append("B")
    node = helper.make_node(
        "QLinearConv",
        inputs,
        ["y"],
        kernel_shape=[1, 1],
        strides=list(stride),
        group=groups,
    )
    graph = helper.make_graph(
        [node],
        "qlinearconv1x1",
        [
            helper.make_tensor_value_info("x", x_type, ["N", groups * cg, "H", "W"]),
            helper.make_tensor_value_info("x_scale", TensorProto.FLOAT, []),
            helper.make_tensor_value_info("x_zero_point", x_type, []),
        ],
        [helper.make_tensor_value_info("y", x_type, ["N", k, "Ho", "Wo"])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # old enough for any onnxruntime that reads opset 13
    onnx.checker.check_model(model)
    return model.SerializeToString()


def ort_session(model_bytes):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def ort_qconv1x1(x, weight, bias, *, x_quant, w_quant, y_quant, layout, stride, groups):
    """ONNX Runtime's QLinearConv on fastpw-style arguments; the result has x's layout."""
    x_scale, x_zp = x_quant
    w_scale, _ = w_quant
    y_scale, y_zp = y_quant
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    session = ort_session(
        qlinearconv_model(x.dtype, weight, bias, w_scale, y_scale, y_zp, (sh, sw), groups)
    )
    x_nchw = x if layout == "NCHW" else x.transpose(0, 3, 1, 2)
    feeds = {
        "x": np.ascontiguousarray(x_nchw),
        "x_scale": np.asarray(x_scale, np.float32),
        "x_zero_point": np.asarray(x_zp, x.dtype),
    }
    (y,) = session.run(None, feeds)
    return y if layout == "NCHW" else y.transpose(0, 2, 3, 1)


def assert_same(got, expected, what=""):
    assert got.dtype == expected.dtype, f"{what}: dtype {got.dtype} vs {expected.dtype}"
    assert got.shape == expected.shape, f"{what}: shape {got.shape} vs {expected.shape}"
    differ = np.argwhere(got != expected)
    if differ.size:
        i = tuple(differ[0])
        raise AssertionError(
            f"{what}: {len(differ)} of {got.size} entries differ; first at {i}: "
            f"fastpw {got[i]!r}, ONNX Runtime {expected[i]!r}"
        )


def compare(x, weight, bias, **kwargs):
    """fastpw vs ONNX Runtime (and, as a cross-check, vs the numpy reference)."""
    expected = ort_qconv1x1(x, weight, bias, **kwargs)
    got = fastpw.conv1x1(x, weight, bias, **kwargs)
    reference = qconv1x1_reference(x, weight, bias, **kwargs)
    assert_same(reference, expected, "numpy reference vs ONNX Runtime")
    assert_same(got, expected, "fastpw vs ONNX Runtime")
    return got


def random_problem(rng, layout, n, c, h, w, k, x_dtype, groups=1, per_channel=True):
    lo, hi = QDTYPE_RANGES[np.dtype(x_dtype)]
    x = rng.integers(lo, hi + 1, x_shape(layout, n, c, h, w)).astype(x_dtype)
    weight = rng.integers(-WEIGHT_BOUND, min(WEIGHT_BOUND, 127) + 1, (k, c // groups))
    bias = rng.integers(-(2**20), 2**20, k).astype(np.int32)
    w_scale = (10.0 ** rng.uniform(-4, -1, k if per_channel else ())).astype(np.float32)
    return x, weight.astype(np.int8), bias, w_scale


def fit_y_scale(x, weight, bias, x_scale, x_zp, w_scale, layout, stride, groups, spread):
    acc = qconv1x1_accumulators(
        x, weight, bias, x_zero_point=x_zp, layout=layout, stride=stride, groups=groups
    )
    typical = max(float(np.percentile(np.abs(acc), 90)), 1.0) if acc.size else 1.0
    return float(np.float32(x_scale) * np.max(w_scale)) * typical / spread


# -------------------------------------------------------------------- explicit cases


def test_ort_rejects_mixed_x_and_y_types():
    """Documents why only x dtype == y dtype is compared: this ONNX Runtime has no CPU
    QLinearConv kernel for uint8 x with int8 y (or the reverse). If a later version adds
    one, this test says so and the comparisons can grow."""
    weight = np.ones((2, 3), np.int8)
    model = qlinearconv_model(np.uint8, weight, None, 0.1, 0.1, 0, (1, 1), 1)
    graph = onnx.load_from_string(model)
    graph.graph.output[0].type.tensor_type.elem_type = TensorProto.INT8
    graph.graph.initializer[4].CopyFrom(numpy_helper.from_array(np.int8(0), "y_zero_point"))
    try:
        ort_session(graph.SerializeToString())
    except Exception as error:  # onnxruntime raises its own exception types
        assert "QLinearConv" in str(error) or "NOT_IMPLEMENTED" in str(error), error
    else:
        pytest.skip("this onnxruntime has a mixed uint8 -> int8 QLinearConv kernel")


@pytest.mark.parametrize("x_dtype", X_DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("per_channel", [False, True], ids=["per_tensor", "per_channel"])
@pytest.mark.parametrize(
    "stride,groups", [(1, 1), (2, 1), ((2, 1), 1), (1, 3), ((1, 2), 2)], ids=str
)
def test_matches_ort(isa, x_dtype, layout, per_channel, stride, groups):
    rng = np.random.default_rng(1)
    n, c, h, w, k = 2, 24, 7, 9, 18
    x, weight, bias, w_scale = random_problem(
        rng, layout, n, c, h, w, k, x_dtype, groups, per_channel
    )
    x_zp = int(rng.integers(*QDTYPE_RANGES[np.dtype(x_dtype)]))
    x_scale = 0.03
    y_scale = fit_y_scale(x, weight, bias, x_scale, x_zp, w_scale, layout, stride, groups, 100)
    lo, _ = QDTYPE_RANGES[np.dtype(x_dtype)]
    compare(
        x,
        weight,
        bias,
        x_quant=(x_scale, x_zp),
        w_quant=(w_scale, 0),
        y_quant=(y_scale, lo + 128),
        layout=layout,
        stride=stride,
        groups=groups,
    )


@pytest.mark.parametrize("x_dtype", X_DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("multiplier", [1e-6, 1e-3, 0.5, 1.0, 3.0, 1e3, 1e6], ids=str)
def test_multipliers_match_ort(isa, x_dtype, layout, multiplier):
    """Tiny multipliers (outputs at y_zp), exact ones (0.5 puts many values on x.5: ties
    to even) and large ones (y_scale far below x_scale * w_scale: saturation)."""
    rng = np.random.default_rng(2)
    x, weight, bias, _ = random_problem(rng, layout, 1, 19, 6, 7, 13, x_dtype)
    w_scale = np.float32(2.0**-6)
    x_scale = 2.0**-3
    y_scale = float(np.float32(x_scale) * w_scale / np.float32(multiplier))
    lo, hi = QDTYPE_RANGES[np.dtype(x_dtype)]
    for y_zp in (lo, lo + 128, hi):
        for bias_used in (bias, None, bias // 1024):
            compare(
                x,
                weight,
                bias_used,
                x_quant=(x_scale, (lo + hi) // 2),
                w_quant=(w_scale, 0),
                y_quant=(y_scale, y_zp),
                layout=layout,
                stride=1,
                groups=1,
            )


@pytest.mark.parametrize("x_dtype", X_DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_zero_points_match_ort(isa, x_dtype, layout):
    rng = np.random.default_rng(3)
    x, weight, bias, w_scale = random_problem(rng, layout, 1, 13, 5, 6, 11, x_dtype)
    lo, hi = QDTYPE_RANGES[np.dtype(x_dtype)]
    for x_zp in (lo, lo + 1, lo + 127, lo + 128, hi - 1, hi):
        y_scale = fit_y_scale(x, weight, bias, 0.05, x_zp, w_scale, layout, 1, 1, 60)
        for y_zp in (lo, lo + 60, lo + 128, hi - 60, hi):
            compare(
                x,
                weight,
                bias,
                x_quant=(0.05, x_zp),
                w_quant=(w_scale, 0),
                y_quant=(y_scale, y_zp),
                layout=layout,
                stride=1,
                groups=1,
            )


@pytest.mark.parametrize("x_dtype", X_DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("x_kind", ["min", "max"])
def test_extreme_inputs_match_ort(isa, x_dtype, layout, x_kind):
    """x all at its min or max, zero point at the other end, weights at the bound this
    CPU's ONNX Runtime computes exactly, a long reduction (C = 515)."""
    rng = np.random.default_rng(4)
    lo, hi = QDTYPE_RANGES[np.dtype(x_dtype)]
    value, x_zp = (lo, hi) if x_kind == "min" else (hi, lo)
    c, k = 515, 9
    x = np.full(x_shape(layout, 2, c, 3, 5), value, x_dtype)
    top = min(WEIGHT_BOUND, 127)
    weight = np.array([[-WEIGHT_BOUND], [top], [-top], [0], [1], [-1], [top], [0], [5]])
    weight = np.repeat(weight, c, axis=1).astype(np.int8)
    weight[6, ::2] = -WEIGHT_BOUND
    bias = rng.integers(-(2**24), 2**24, k).astype(np.int32)
    w_scale = (10.0 ** rng.uniform(-4, -2, k)).astype(np.float32)
    for y_scale in (1e-3, 0.3, 50.0):
        compare(
            x,
            weight,
            bias,
            x_quant=(0.02, x_zp),
            w_quant=(w_scale, 0),
            y_quant=(y_scale, lo + 100),
            layout=layout,
            stride=1,
            groups=1,
        )


@pytest.mark.parametrize("x_dtype", X_DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_accumulator_wraparound_matches_ort(isa, x_dtype, layout):
    """Biases within 2**16 of either int32 limit push many of the sums out of
    int32: ONNX Runtime's accumulators wrap modulo 2**32, and so do fastpw's."""
    rng = np.random.default_rng(5)
    c, k = 257, 19
    x, weight, _, w_scale = random_problem(rng, layout, 2, c, 3, 7, k, x_dtype)
    near_max = INT32_MAX - rng.integers(0, 2**16, k)
    near_min = INT32_MIN + rng.integers(0, 2**16, k)
    bias = np.where(np.arange(k) % 2 == 0, near_max, near_min).astype(np.int32)
    lo, hi = QDTYPE_RANGES[np.dtype(x_dtype)]
    x_zp = int(rng.integers(lo, hi + 1))
    acc = qconv1x1_accumulators(x, weight, bias, x_zero_point=x_zp, layout=layout)
    assert acc.max() > INT32_MAX and acc.min() < INT32_MIN
    # Multiplier 100 / 2**31: wrapped accumulators land on the whole 8-bit range.
    compare(
        x,
        weight,
        bias,
        x_quant=(1.0, x_zp),
        w_quant=(np.ones(k, np.float32), 0),
        y_quant=(2.0**31 / 100, lo + 128),
        layout=layout,
        stride=1,
        groups=1,
    )


@pytest.mark.parametrize("x_dtype", X_DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_depthwise_groups_match_ort(isa, x_dtype, layout):
    """groups == C (one input channel per group): ONNX Runtime's depthwise path."""
    rng = np.random.default_rng(5)
    for c, multiplier in ((16, 1), (7, 3)):
        x, weight, bias, w_scale = random_problem(
            rng, layout, 2, c, 6, 5, c * multiplier, x_dtype, groups=c
        )
        x_zp = int(rng.integers(*QDTYPE_RANGES[np.dtype(x_dtype)]))
        y_scale = fit_y_scale(x, weight, bias, 0.1, x_zp, w_scale, layout, 1, c, 100)
        compare(
            x,
            weight,
            bias,
            x_quant=(0.1, x_zp),
            w_quant=(w_scale, 0),
            y_quant=(y_scale, QDTYPE_RANGES[np.dtype(x_dtype)][0] + 130),
            layout=layout,
            stride=1,
            groups=c,
        )


@pytest.mark.parametrize("x_dtype", X_DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("per_channel", [False, True], ids=["per_tensor", "per_channel"])
def test_requantization_order_matches_ort(isa, x_dtype, layout, per_channel):
    """Accumulators on which one float32 rounding of the multiplier taken in another
    order or precision changes the output (witnesses.requantization_witnesses): ONNX
    Runtime, the reference and fastpw agree on every one, so the contract's order is
    ONNX Runtime's."""
    x_scale, y_scale = 0.03, 3.7
    w_scales, accs = requantization_witnesses(x_scale, y_scale)
    rng = np.random.default_rng(6)
    lo, hi = QDTYPE_RANGES[np.dtype(x_dtype)]
    c, k = 29, accs.size
    x_zp = int(rng.integers(lo, hi + 1))
    x = rng.integers(lo, hi + 1, x_shape(layout, 1, c, 1, 1)).astype(x_dtype)
    weight = rng.integers(-WEIGHT_BOUND, min(WEIGHT_BOUND, 127) + 1, (k, c)).astype(np.int8)
    dot = qconv1x1_accumulators(x, weight, None, x_zero_point=x_zp, layout=layout)
    bias = (accs - dot[0, :, 0, 0]).astype(np.int32)
    if per_channel:
        channel_sets = [np.arange(k)]
    else:
        channel_sets = [np.flatnonzero(w_scales == s) for s in np.unique(w_scales)]
    for channels in channel_sets:
        w_scale = w_scales[channels] if per_channel else w_scales[channels[0]]
        compare(
            x,
            weight[channels],
            bias[channels],
            x_quant=(x_scale, x_zp),
            w_quant=(w_scale, 0),
            y_quant=(y_scale, lo + 128),
            layout=layout,
            stride=1,
            groups=1,
        )


# -------------------------------------------------------------- hypothesis property test


def sizes(max_value):
    edges = [s for s in EDGE_SIZES if s <= max_value]
    return st.one_of(st.sampled_from(edges), st.integers(1, max_value))


@dataclass
class OrtProblem:
    layout: str
    x_dtype: type
    n: int
    cg: int
    kg: int
    groups: int
    h: int
    w: int
    stride: object
    per_channel: bool
    x_zp_code: int
    y_zp_code: int
    x_scale: float
    multiplier: str
    bias: bool
    seed: int


@st.composite
def ort_problems(draw):
    groups = draw(st.one_of(st.just(1), st.integers(2, 4)))
    return OrtProblem(
        layout=draw(st.sampled_from(LAYOUTS)),
        x_dtype=draw(st.sampled_from(X_DTYPES)),
        n=draw(st.integers(1, 2)),
        cg=draw(sizes(100 // groups)),
        kg=draw(sizes(100 // groups)),
        groups=groups,
        h=draw(sizes(20)),
        w=draw(sizes(40)),
        stride=draw(st.sampled_from([1, 2, (2, 1), (1, 3)])),
        per_channel=draw(st.booleans()),
        x_zp_code=draw(st.one_of(st.sampled_from([0, 127, 128, 255]), st.integers(0, 255))),
        y_zp_code=draw(st.one_of(st.sampled_from([0, 127, 128, 255]), st.integers(0, 255))),
        x_scale=draw(st.one_of(st.sampled_from([1.0, 0.5, 2.0**-7]), st.floats(1e-3, 10.0))),
        multiplier=draw(st.sampled_from(["fit", "fit", "tiny", "large"])),
        bias=draw(st.booleans()),
        seed=draw(st.integers(0, 2**32 - 1)),
    )


@given(p=ort_problems())
def test_matches_ort_property(isa, p):
    """Each example builds its own ONNX Runtime session (a few ms for these sizes)."""
    rng = np.random.default_rng(p.seed)
    c, k = p.cg * p.groups, p.kg * p.groups
    x, weight, bias, w_scale = random_problem(
        rng, p.layout, p.n, c, p.h, p.w, k, p.x_dtype, p.groups, p.per_channel
    )
    bias = bias if p.bias else None
    lo, _ = QDTYPE_RANGES[np.dtype(p.x_dtype)]
    x_zp = lo + p.x_zp_code
    if p.multiplier == "fit":
        y_scale = fit_y_scale(
            x, weight, bias, p.x_scale, x_zp, w_scale, p.layout, p.stride, p.groups, 120
        )
    else:
        target = 10.0 ** rng.uniform(*{"tiny": (-6.3, -5.7), "large": (0.3, 3.0)}[p.multiplier])
        y_scale = float(np.float32(p.x_scale) * np.max(w_scale)) / target
    compare(
        x,
        weight,
        bias,
        x_quant=(p.x_scale, x_zp),
        w_quant=(w_scale, 0),
        y_quant=(y_scale, lo + p.y_zp_code),
        layout=p.layout,
        stride=p.stride,
        groups=p.groups,
    )
