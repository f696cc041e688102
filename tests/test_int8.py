"""int8 ``conv1x1`` and ``QConv1x1`` against the int64 reference, bit for bit, under every ISA.

The quantized path is exact by contract: an integer accumulator, then a fixed sequence of
float32 operations (fastpw.testing spells it out). So every comparison here is exact
equality, never a tolerance. Every test that computes takes the ``isa`` fixture
(conftest.py), so it runs once per kernel family this CPU can run that has an int8
kernel of its own; shapes at MR, NR and lanes -1, +0 and +1 of every kernel (read from
the compiled kernel table) land on the edge tiles, and
channel counts that are not a multiple of 2 or 4 land on the partial reduction steps of
the vpmaddwd (pairs) and vpdpbusd (quads) kernels.

Accumulator bound (random test inputs do not overflow int32): |x - x_zp| <= 255 and
|w| <= 128, so each product is at most 32640 in magnitude. With C/groups <=
MAX_CHANNELS_PER_GROUP = 1100 and |bias| <= MAX_ABS_BIAS = 2**30, |acc| <= 1100 * 32640
+ 2**30 < 1.11e9 < 2**31 - 1. Sums past int32 wrap modulo 2**32 by contract; one test,
``test_accumulator_wraps_past_int32``, makes them on purpose.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import kernels
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from layouts import channel_axis, stride_pair, x_shape, y_shape
from memory import MEMORY_KINDS, rearranged, unaligned_empty
from witnesses import near_miss_requantizations, requantization_witnesses

import fastpw
from fastpw.testing import (
    INT32_MAX,
    INT32_MIN,
    QDTYPE_RANGES,
    qactivation_bounds,
    qconv1x1_accumulators,
    qconv1x1_reference,
)

LAYOUTS = ("NCHW", "NHWC")
X_DTYPES = (np.uint8, np.int8)
#: Every output dtype the contract allows; None means "x's dtype".
OUT_DTYPES = (None, np.uint8, np.int8, np.int32, np.float32)
#: The operation these tests go through (its kernels' edge sizes: tests/kernels.py).
KERNEL_OPERATION = "int8"
#: Register-tile edges of every int8 kernel in the build (tests/kernels.py).
EDGE_SIZES = kernels.edge_sizes(KERNEL_OPERATION)
#: Sizes that span several tiles and end on a partial one.
MULTI_TILE_SIZES = (23, 25, 29, 43, 95, 97, 129)
#: Channel counts around the 2- and 4-channel reduction steps and longer blockings.
REDUCTION_SIZES = (1, 2, 3, 4, 5, 6, 7, 9, 13, 31, 63, 64, 65, 127, 129, 255, 257, 513, 1031)
MAX_CHANNELS_PER_GROUP = 1100
MAX_ABS_BIAS = 2**30
#: The smallest scale a nonzero range gets (float32 epsilon); a zero range gets 1.0.
MIN_SCALE = float(np.finfo(np.float32).eps)
assert MAX_CHANNELS_PER_GROUP * 255 * 128 + MAX_ABS_BIAS <= INT32_MAX
#: Written into ``out`` buffers before a call; checked where nothing may be written.
SENTINELS = {
    np.dtype(np.uint8): 173,
    np.dtype(np.int8): -77,
    np.dtype(np.int32): -1234567,
    np.dtype(np.float32): 12345.0,
}
X_MEMORY = MEMORY_KINDS
OUT_KINDS = (None, "full", "channel_slice", "other_layout", "negative_strides", "unaligned")
X_KINDS = ("uniform", "uniform", "uniform", "all_min", "all_max", "zero_point", "near_zero_point")
W_KINDS = ("uniform", "full", "small", "sparse", "all_-128", "all_-127", "all_127")
BIAS_KINDS = (None, "small", "medium", "large")


# ---------------------------------------------------------------------------- helpers


def to_nchw(a, layout):
    return a if layout.upper() == "NCHW" else a.transpose(0, 3, 1, 2)


def resolved_out_dtype(x_dtype, out_dtype):
    return np.dtype(x_dtype if out_dtype is None else out_dtype)


def is_8bit(dtype):
    return np.dtype(dtype) in QDTYPE_RANGES


def zero_point_in(dtype, u):
    """Map u in 0..255 onto the dtype's range (0 -> its min, 255 -> its max)."""
    return int(u) + QDTYPE_RANGES[np.dtype(dtype)][0]


def random_x(rng, dtype, shape, kind="uniform", zero_point=0):
    lo, hi = QDTYPE_RANGES[np.dtype(dtype)]
    if kind == "uniform":
        values = rng.integers(lo, hi + 1, shape)
    elif kind == "all_min":
        values = np.full(shape, lo)
    elif kind == "all_max":
        values = np.full(shape, hi)
    elif kind == "zero_point":
        values = np.full(shape, zero_point)
    elif kind == "near_zero_point":
        values = np.clip(zero_point + rng.integers(-3, 4, shape), lo, hi)
    else:
        raise AssertionError(kind)
    return values.astype(dtype)


def random_weight(rng, shape, kind="uniform"):
    if kind == "uniform":
        values = rng.integers(-127, 128, shape)
    elif kind == "full":
        values = rng.integers(-128, 128, shape)
    elif kind == "small":
        values = rng.integers(-2, 3, shape)
    elif kind == "sparse":
        values = rng.integers(-128, 128, shape) * (rng.random(shape) < 0.1)
    elif kind.startswith("all_"):
        values = np.full(shape, int(kind[4:]))
    else:
        raise AssertionError(kind)
    return values.astype(np.int8)


def random_bias(rng, k, kind="medium"):
    if kind is None:
        return None
    bound = {"small": 1000, "medium": 2**20, "large": MAX_ABS_BIAS}[kind]
    return rng.integers(-bound, bound + 1, k).astype(np.int32)


def random_w_scale(rng, k, per_channel=True, nice=False):
    """Positive float32 weight scales: powers of two (exact products, many rounding
    ties) or log-uniform in [1e-4, 1e-1]."""
    shape = (k,) if per_channel else ()
    if nice:
        return (2.0 ** -rng.integers(1, 12, shape)).astype(np.float32)
    return (10.0 ** rng.uniform(-4, -1, shape)).astype(np.float32)


def with_memory(arr, kind, layout, rng=None):
    """``arr`` rearranged in memory (tests/memory.py); the padding around a view holds
    random values of the dtype, so a kernel that reads outside the view changes its
    result."""
    rng = np.random.default_rng(0) if rng is None else rng
    lo, hi = QDTYPE_RANGES[arr.dtype]
    return rearranged(
        arr, kind, layout, lambda shape: rng.integers(lo, hi + 1, shape).astype(arr.dtype)
    )


def make_out(kind, shape, layout, dtype, before=3, after=5):
    """``(out, buffer, outside)``: the ``out`` argument, the buffer it lives in (filled
    with the dtype's sentinel) and a mask of the buffer entries that must stay untouched."""
    if kind is None:
        return None, None, None
    dtype = np.dtype(dtype)
    sentinel = SENTINELS[dtype]
    if kind == "channel_slice":
        axis = channel_axis(layout)
        big_shape = list(shape)
        big_shape[axis] += before + after
        buf = np.full(big_shape, sentinel, dtype=dtype)
        index = [slice(None)] * 4
        index[axis] = slice(before, before + shape[axis])
        outside = np.ones(big_shape, dtype=bool)
        outside[tuple(index)] = False
        return buf[tuple(index)], buf, outside
    if kind == "full":
        out = np.empty(shape, dtype=dtype)
    elif kind == "other_layout":
        perm = (0, 2, 3, 1) if layout.upper() == "NCHW" else (0, 3, 1, 2)
        out = np.empty(tuple(shape[p] for p in perm), dtype=dtype).transpose(np.argsort(perm))
    elif kind == "negative_strides":
        out = np.empty(shape, dtype=dtype)[::-1, ::-1, ::-1, ::-1]
    elif kind == "unaligned":
        out = unaligned_empty(shape, dtype)
    else:
        raise AssertionError(kind)
    assert out.shape == tuple(shape)
    out[...] = sentinel
    return out, out, np.zeros(shape, dtype=bool)


def assert_untouched(buf, outside):
    if buf is not None:
        sentinel = SENTINELS[buf.dtype]
        written = np.count_nonzero(buf[outside] != sentinel)
        assert written == 0, f"out: {written} entries outside the slice were written"


def assert_exact(got, expected, what=""):
    """Same dtype, same shape, every entry equal (the quantized path is exact)."""
    got = np.asarray(got)
    assert got.dtype == expected.dtype, f"{what}: dtype {got.dtype}, expected {expected.dtype}"
    assert got.shape == expected.shape, f"{what}: shape {got.shape}, expected {expected.shape}"
    differ = np.argwhere(got != expected)
    if differ.size:
        i = tuple(differ[0])
        raise AssertionError(
            f"{what}: {len(differ)} of {got.size} entries differ; first at {i}: "
            f"got {got[i]!r}, expected {expected[i]!r}"
        )


def quant_kwargs(x_quant, w_quant, y_quant, out_dtype, **rest):
    return dict(x_quant=x_quant, w_quant=w_quant, y_quant=y_quant, out_dtype=out_dtype, **rest)


def fit_y_scale(acc, dequant, rng, spread=120.0):
    """A y_scale that maps the middle of the accumulators onto about +-spread steps, so
    the outputs use the whole 8-bit range without all saturating."""
    typical = float(np.percentile(np.abs(acc), 90)) if acc.size else 1.0
    return float(dequant) * max(typical, 1.0) / spread * float(rng.uniform(0.5, 2.0))


def simple_problem(
    rng, layout, n, c, h, w, k, x_dtype=np.uint8, groups=1, bias_kind="medium", per_channel=True
):
    """Random inputs and quantization parameters whose 8-bit outputs spread over the
    range: returns (x, weight, bias, kwargs for conv1x1 without out_dtype/activation)."""
    lo, hi = QDTYPE_RANGES[np.dtype(x_dtype)]
    x_zp = int(rng.integers(lo, hi + 1))
    x = random_x(rng, x_dtype, x_shape(layout, n, c, h, w))
    weight = random_weight(rng, (k, c // groups), "full")
    bias = random_bias(rng, k, bias_kind)
    x_scale = float(10 ** rng.uniform(-3, 0))
    w_scale = random_w_scale(rng, k, per_channel)
    acc = qconv1x1_accumulators(x, weight, bias, x_zero_point=x_zp, layout=layout, groups=groups)
    y_scale = fit_y_scale(acc, np.float32(x_scale) * np.max(w_scale), rng)
    y_zp = int(rng.integers(0, 21))  # valid for uint8 and int8 outputs
    kwargs = dict(
        layout=layout,
        groups=groups,
        x_quant=(x_scale, x_zp),
        w_quant=(w_scale, 0),
        y_quant=(y_scale, y_zp),
    )
    return x, weight, bias, kwargs


def run_both(x, weight, bias, **kwargs):
    """(fastpw's result, the reference's) for one call."""
    expected = qconv1x1_reference(
        x, weight, bias, **{k: v for k, v in kwargs.items() if k not in ("out", "num_threads")}
    )
    return fastpw.conv1x1(x, weight, bias, **kwargs), expected


# -------------------------------------------------------------- hypothesis property test


def sizes(max_value):
    """Sizes in [1, max_value], the register-tile edges drawn often."""
    max_value = max(1, max_value)
    edges = [s for s in EDGE_SIZES + list(MULTI_TILE_SIZES) if s <= max_value]
    return st.one_of(st.sampled_from(edges), st.integers(1, max_value))


#: 0..255, extremes drawn often; ``zero_point_in`` maps it onto a dtype's range.
zero_point_codes = st.one_of(st.sampled_from([0, 1, 127, 128, 129, 254, 255]), st.integers(0, 255))
#: x_scale: simple values, powers of two, and arbitrary float64 values (the contract
#: rounds them to float32 first).
x_scales = st.one_of(
    st.sampled_from([1.0, 0.5, 2.0**-7, 0.1, 0.02, 1 / 255]),
    st.floats(1e-3, 10.0),
)
#: Clamp bounds in units of the output's step; +-inf leaves that side open.
clamp_units = st.one_of(
    st.floats(-300, 300), st.sampled_from([-math.inf, math.inf, 0.0, 0.5, -0.5, 6.0])
)
activation_kinds = st.one_of(
    st.none(), st.sampled_from(["relu", "relu6"]), st.tuples(clamp_units, clamp_units)
)


@dataclass
class QProblem:
    layout: str
    n: int
    c: int
    k: int
    h: int
    w: int
    groups: int
    stride: int | tuple
    x_dtype: type
    out_dtype: object
    activation: object  # None, a name, or a pair of bounds in output steps
    bias_kind: str | None
    weight_4d: bool
    x_kind: str
    w_kind: str
    x_zp_code: int
    y_zp_code: int
    x_scale: float
    per_channel: bool
    nice_scales: bool
    multiplier: str
    x_memory: str
    out_kind: str | None
    out_pad: tuple
    num_threads: int | None
    use_qparams: bool
    seed: int


@st.composite
def qconv_problems(draw, max_macs=2_000_000, max_x_elements=1_000_000):
    """One quantized conv1x1 call. N*K*(C/groups)*Ho*Wo <= max_macs keeps the int64
    reference quick; C/groups <= 300 stays far inside the accumulator bound."""
    layout = draw(st.sampled_from(LAYOUTS))
    groups = draw(st.one_of(st.just(1), st.integers(2, 4)))
    cg = draw(sizes(300 // groups))
    kg = draw(sizes(300 // groups))
    c, k = cg * groups, kg * groups
    stride = draw(st.sampled_from([1, 2, (2, 1), (1, 3)]))
    sh, sw = stride_pair(stride)
    n = draw(st.integers(1, 3))
    pixels = min(max_macs // (n * k * cg), max_x_elements // (n * c * sh * sw))
    ho = draw(sizes(min(200, pixels)))
    wo = draw(sizes(min(200, pixels // ho)))
    h = ho * sh - draw(st.integers(0, sh - 1))
    w = wo * sw - draw(st.integers(0, sw - 1))
    out_dtype = draw(st.sampled_from(OUT_DTYPES))
    return QProblem(
        layout=layout,
        n=n,
        c=c,
        k=k,
        h=h,
        w=w,
        groups=groups,
        stride=stride,
        x_dtype=draw(st.sampled_from(X_DTYPES)),
        out_dtype=out_dtype,
        activation=None if out_dtype is np.int32 else draw(activation_kinds),
        bias_kind=draw(st.sampled_from(BIAS_KINDS)),
        weight_4d=draw(st.booleans()),
        x_kind=draw(st.sampled_from(X_KINDS)),
        w_kind=draw(st.sampled_from(W_KINDS)),
        x_zp_code=draw(zero_point_codes),
        y_zp_code=draw(zero_point_codes),
        x_scale=draw(x_scales),
        per_channel=draw(st.booleans()),
        nice_scales=draw(st.booleans()),
        multiplier=draw(st.sampled_from(["fit", "fit", "tiny", "large", "random"])),
        x_memory=draw(st.sampled_from(X_MEMORY)),
        out_kind=draw(st.sampled_from(OUT_KINDS)),
        out_pad=(draw(st.integers(0, 17)), draw(st.integers(0, 17))),
        num_threads=draw(st.sampled_from([None, 1, 2, 3])),
        use_qparams=draw(st.booleans()),
        seed=draw(st.integers(0, 2**32 - 1)),
    )


def build_problem(p: QProblem):
    """(x, weight, bias, kwargs) for one QProblem; kwargs hold everything but out and
    num_threads. The y_scale comes from the multiplier regime: "fit" spreads the outputs
    over the 8-bit range, "tiny" makes M about 1e-6 (outputs near y_zp), "large" makes
    M between 2 and 1000 (most outputs saturate), "random" is log-uniform."""
    rng = np.random.default_rng(p.seed)
    out_dtype = resolved_out_dtype(p.x_dtype, p.out_dtype)
    x_zp = zero_point_in(p.x_dtype, p.x_zp_code)
    x = random_x(rng, p.x_dtype, x_shape(p.layout, p.n, p.c, p.h, p.w), p.x_kind, x_zp)
    weight = random_weight(rng, (p.k, p.c // p.groups), p.w_kind)
    if p.weight_4d:
        weight = weight.reshape(p.k, p.c // p.groups, 1, 1)
    bias = random_bias(rng, p.k, p.bias_kind)
    x_scale = float(2.0 ** -rng.integers(0, 8)) if p.nice_scales else p.x_scale
    w_scale = random_w_scale(rng, p.k, p.per_channel, p.nice_scales)
    dequant = np.float32(x_scale) * np.max(w_scale)
    acc = qconv1x1_accumulators(
        x, weight, bias, x_zero_point=x_zp, layout=p.layout, stride=p.stride, groups=p.groups
    )
    if p.multiplier == "fit":
        y_scale = fit_y_scale(acc, dequant, rng)
    else:
        exponent = {"tiny": (-6.3, -5.7), "large": (0.3, 3.0), "random": (-6.0, 2.0)}
        y_scale = float(dequant) / 10.0 ** rng.uniform(*exponent[p.multiplier])
    if p.nice_scales:
        y_scale = float(2.0 ** np.round(np.log2(y_scale)))
    y_quant = None
    activation = p.activation
    if is_8bit(out_dtype):
        y_quant = (y_scale, zero_point_in(out_dtype, p.y_zp_code))
        unit = float(np.float32(y_scale))
    else:
        unit = float(dequant) * max(float(np.percentile(np.abs(acc), 90)), 1.0) / 100.0
    if isinstance(activation, tuple):
        activation = tuple(sorted(float(a) * unit for a in activation))
    w_zero_point = 0 if not p.per_channel or p.seed % 2 else np.zeros(p.k, np.int8)
    quant = [(x_scale, x_zp), (w_scale, w_zero_point), y_quant]
    if p.use_qparams:
        quant = [None if q is None else fastpw.QParams(*q) for q in quant]
    kwargs = dict(
        layout=p.layout,
        stride=p.stride,
        groups=p.groups,
        activation=activation,
        x_quant=quant[0],
        w_quant=quant[1],
        y_quant=quant[2],
        out_dtype=p.out_dtype,
    )
    return x, weight, bias, kwargs


@given(p=qconv_problems())
def test_matches_reference(isa, p):
    x, weight, bias, kwargs = build_problem(p)
    expected = qconv1x1_reference(x, weight, bias, **kwargs)
    out_dtype = resolved_out_dtype(p.x_dtype, p.out_dtype)
    rng = np.random.default_rng(p.seed + 1)
    xv = with_memory(x, p.x_memory, p.layout, rng)
    x_before = xv.copy()
    out, buf, outside = make_out(p.out_kind, expected.shape, p.layout, out_dtype, *p.out_pad)
    y = fastpw.conv1x1(xv, weight, bias, out=out, num_threads=p.num_threads, **kwargs)
    if out is not None:
        assert y is out
    assert_exact(y, expected, "conv1x1 vs reference")
    np.testing.assert_array_equal(xv, x_before, err_msg="x was modified")
    assert_untouched(buf, outside)


@given(p=qconv_problems(max_macs=500_000))
def test_layer_equals_function_property(isa, p):
    x, weight, bias, kwargs = build_problem(p)
    layer = fastpw.QConv1x1(weight, bias, **kwargs)
    assert layer.isa == fastpw.isa("int8")  # the kernel the selected family runs
    out_dtype = resolved_out_dtype(p.x_dtype, p.out_dtype)
    xv = with_memory(x, p.x_memory, p.layout, np.random.default_rng(p.seed + 1))
    shape = y_shape(p.layout, p.n, p.k, p.h, p.w, p.stride)
    out, buf, outside = make_out(p.out_kind, shape, p.layout, out_dtype, *p.out_pad)
    y = layer(xv, out=out, num_threads=p.num_threads)
    if out is not None:
        assert y is out
    assert_untouched(buf, outside)
    assert_exact(y, fastpw.conv1x1(x, weight, bias, **kwargs), "QConv1x1 vs conv1x1")


# ---------------------------------------------------------- the reference, checked by hand


def test_reference_by_hand():
    """The reference itself on values worked out on paper (so a shared misreading of
    the contract by the reference and the package cannot hide)."""
    x = np.array([10, 20, 30], np.uint8).reshape(1, 3, 1, 1)
    weight = np.array([[1, 2, 3], [-1, 0, 1], [127, -128, 0]], np.int8)
    bias = np.array([5, -7, 0], np.int32)
    # x - zp = (0, 10, 20): acc = (0 + 20 + 60 + 5, 0 + 0 + 20 - 7, 0 - 1280 + 0)
    acc = [85, 13, -1280]
    kwargs = dict(x_quant=(0.5, 10), w_quant=(0.25, 0))
    got = qconv1x1_reference(x, weight, bias, out_dtype=np.int32, **kwargs)
    np.testing.assert_array_equal(got.ravel(), acc)
    got = qconv1x1_reference(x, weight, bias, out_dtype=np.float32, **kwargs)
    np.testing.assert_array_equal(got.ravel(), np.float32(acc) * np.float32(0.125))
    # M = 0.125 / 0.5 = 0.25: v = (21.25, 3.25, -320) -> (21, 3, -320) + 100, clamped
    got = qconv1x1_reference(x, weight, bias, y_quant=(0.5, 100), **kwargs)
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got.ravel(), [121, 103, 0])
    got = qconv1x1_reference(x, weight, bias, y_quant=(0.5, -1), out_dtype=np.int8, **kwargs)
    np.testing.assert_array_equal(got.ravel(), [20, 2, -128])
    # relu6 with ys = 0.5: [lo, hi] = [zp, zp + 12]
    got = qconv1x1_reference(x, weight, bias, y_quant=(0.5, 100), activation="relu6", **kwargs)
    np.testing.assert_array_equal(got.ravel(), [112, 103, 100])
    assert qactivation_bounds("relu6", np.uint8, 4.0, 7) == (7, 9)  # rint(1.5) = 2
    assert qactivation_bounds("relu6", np.uint8, 12.0, 7) == (7, 7)  # rint(0.5) = 0
    assert qactivation_bounds("relu", np.int8, 1.0, -5) == (-5, 127)
    assert qactivation_bounds((-2.5, 3.5), np.int8, 1.0, 0) == (-2, 4)
    assert qactivation_bounds((-math.inf, 1e9), np.uint8, 1.0, 3) == (0, 255)


# ------------------------------------------------------------ explicit shape coverage


@pytest.mark.parametrize("x_dtype", X_DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_edge_tiles(isa, layout, x_dtype):
    """Every pair (K, pixels) from the edge sizes of this family's kernel: K and H*W each
    land on MR+-1, NR+-1 and lanes+-1 (whichever way the layout tiles them), with
    channel counts that are not a multiple of 2 or 4. The output dtype cycles through
    all four."""
    rng = np.random.default_rng(1)
    cs = (1, 3, 5, 8, 17, 66)
    out_dtypes = (None, np.int8 if x_dtype is np.uint8 else np.uint8, np.int32, np.float32)
    edges = sorted({1, 2, 3, *kernels.kernel_sizes(kernels.running_kernel(KERNEL_OPERATION))})
    for i, (k, p) in enumerate(itertools.product(edges, edges)):
        h, w = (1, p) if i % 2 else (p, 1)
        x, weight, bias, kwargs = simple_problem(
            rng, layout, 1, cs[i % len(cs)], h, w, k, x_dtype, per_channel=bool(i % 3)
        )
        out_dtype = out_dtypes[i % len(out_dtypes)]
        got, expected = run_both(x, weight, bias, out_dtype=out_dtype, **kwargs)
        assert_exact(got, expected, f"k={k} pixels={p} out_dtype={out_dtype}")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_multi_tile_sizes(isa, layout):
    rng = np.random.default_rng(2)
    for i, (k, p) in enumerate(itertools.product(MULTI_TILE_SIZES, MULTI_TILE_SIZES)):
        x_dtype = X_DTYPES[i % 2]
        x, weight, bias, kwargs = simple_problem(rng, layout, 1, 9, 1, p, k, x_dtype)
        got, expected = run_both(x, weight, bias, activation="relu", **kwargs)
        assert_exact(got, expected, f"k={k} pixels={p}")


@pytest.mark.parametrize("x_dtype", X_DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("c", REDUCTION_SIZES)
def test_reduction_depth(isa, layout, x_dtype, c):
    """Short, long and odd channel counts (the reduction runs 2 or 4 channels at a
    time; any blocking of it must not drop, repeat or mis-pad a channel), with the
    x zero point at both ends of the range."""
    rng = np.random.default_rng(c)
    for x_zp_code in (0, 255):
        x, weight, bias, kwargs = simple_problem(rng, layout, 1, c, 3, 11, 13, x_dtype)
        kwargs["x_quant"] = (kwargs["x_quant"][0], zero_point_in(x_dtype, x_zp_code))
        for out_dtype in (None, np.int32):
            got, expected = run_both(x, weight, bias, out_dtype=out_dtype, **kwargs)
            assert_exact(got, expected, f"out_dtype={out_dtype}")


@pytest.mark.parametrize("x_dtype", X_DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(
    "n,c,k,h,w", [(1, 64, 96, 56, 56), (2, 35, 67, 28, 28), (3, 3, 17, 19, 23)]
)
def test_realistic_shapes(isa, layout, x_dtype, n, c, k, h, w):
    rng = np.random.default_rng(3)
    x, weight, bias, kwargs = simple_problem(rng, layout, n, c, h, w, k, x_dtype)
    got, expected = run_both(x, weight, bias, activation="relu6", **kwargs)
    assert_exact(got, expected)


@pytest.mark.parametrize("out_dtype", OUT_DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("stride", [2, 3, (2, 1), (1, 2), (3, 2), (10, 4)])
def test_stride(isa, layout, stride, out_dtype):
    """Output is ceil(H/sh) x ceil(W/sw) and uses x[..., ::sh, ::sw] (odd H and W)."""
    rng = np.random.default_rng(4)
    x, weight, bias, kwargs = simple_problem(rng, layout, 2, 5, 7, 9, 19, np.int8)
    got, expected = run_both(x, weight, bias, stride=stride, out_dtype=out_dtype, **kwargs)
    assert got.shape == y_shape(layout, 2, 19, 7, 9, stride)
    assert_exact(got, expected)
    pair = fastpw.conv1x1(
        x, weight, bias, stride=stride_pair(stride), out_dtype=out_dtype, **kwargs
    )
    assert_exact(pair, expected, "stride as a pair")


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("stride", [2, (2, 1), (1, 3)])
def test_stride_never_reads_skipped_pixels(isa, layout, stride):
    """Changing every pixel the stride skips changes nothing."""
    rng = np.random.default_rng(6)
    x, weight, bias, kwargs = simple_problem(rng, layout, 1, 7, 9, 11, 13)
    sh, sw = stride_pair(stride)
    y = fastpw.conv1x1(x, weight, bias, stride=stride, **kwargs)
    x2 = x.copy()
    nchw = to_nchw(x2, layout)  # a view: writes go to x2
    keep = np.zeros(nchw.shape[2:], dtype=bool)
    keep[::sh, ::sw] = True
    nchw[:, :, ~keep] = 255 - nchw[:, :, ~keep]
    assert_exact(fastpw.conv1x1(x2, weight, bias, stride=stride, **kwargs), y)


@pytest.mark.parametrize("x_dtype", X_DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(
    "c,k,groups", [(6, 12, 2), (12, 6, 3), (8, 8, 8), (30, 45, 15), (64, 128, 4), (26, 39, 13)]
)
def test_groups(isa, layout, x_dtype, c, k, groups):
    rng = np.random.default_rng(7)
    x, weight, bias, kwargs = simple_problem(rng, layout, 2, c, 5, 13, k, x_dtype, groups)
    for out_dtype in (None, np.int32, np.float32):
        got, expected = run_both(x, weight, bias, out_dtype=out_dtype, **kwargs)
        assert_exact(got, expected, f"out_dtype={out_dtype}")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_groups_use_their_own_channel_block(isa, layout):
    """Output block g depends only on input block g."""
    rng = np.random.default_rng(8)
    x, weight, bias, kwargs = simple_problem(rng, layout, 1, 12, 4, 5, 9, groups=3)
    y = fastpw.conv1x1(x, weight, bias, out_dtype=np.int32, **kwargs)
    x2 = x.copy()
    index = [slice(None)] * 4
    index[channel_axis(layout)] = slice(4, 8)
    x2[tuple(index)] = 255 - x2[tuple(index)]
    y2 = fastpw.conv1x1(x2, weight, bias, out_dtype=np.int32, **kwargs)
    for g, changed in enumerate((False, True, False)):
        index[channel_axis(layout)] = slice(3 * g, 3 * g + 3)
        block, block2 = y[tuple(index)], y2[tuple(index)]
        if changed:
            assert not np.array_equal(block, block2)
        else:
            assert_exact(block, block2)


# --------------------------------------------------- extreme inputs, scales, zero points


@pytest.mark.parametrize("x_dtype", X_DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("x_kind", ["all_min", "all_max", "zero_point"])
@pytest.mark.parametrize("w_kind", ["all_-128", "all_-127", "all_127", "full"])
def test_extreme_inputs(isa, layout, x_dtype, x_kind, w_kind):
    """x all at its min or max and w all at -128, -127 or 127, against the zero point at
    both ends of the range: the largest |x - x_zp| * |w| products, summed over a long
    reduction, through every output dtype. The int32 accumulators are also checked
    against a closed form."""
    rng = np.random.default_rng(30)
    n, c, h, w, k = 2, 1031, 3, 7, 13
    lo, hi = QDTYPE_RANGES[np.dtype(x_dtype)]
    zero_points = (lo, hi, 0 if x_dtype is np.int8 else 128)
    for x_zp, bias_kind in zip(zero_points, ("large", "small", None), strict=False):
        x = random_x(rng, x_dtype, x_shape(layout, n, c, h, w), x_kind, x_zp)
        weight = random_weight(rng, (k, c), w_kind)
        bias = random_bias(rng, k, bias_kind)
        bias = np.zeros(k, np.int32) if bias is None else bias
        x_quant = (0.05, x_zp)
        w_scale = random_w_scale(rng, k)
        w_quant = (w_scale, 0)
        acc = qconv1x1_reference(
            x, weight, bias, x_quant=x_quant, w_quant=w_quant, out_dtype=np.int32, layout=layout
        )
        fit = fit_y_scale(acc, np.float32(0.05) * w_scale.max(), rng)
        if w_kind != "full":
            x_value = {"all_min": lo, "all_max": hi, "zero_point": x_zp}[x_kind]
            closed = c * (x_value - x_zp) * int(w_kind[4:]) + bias.astype(np.int64)
            np.testing.assert_array_equal(to_nchw(acc, layout)[0, :, 0, 0], closed)
        for out_dtype in OUT_DTYPES:
            out = resolved_out_dtype(x_dtype, out_dtype)
            # Spread, saturating and near-zero outputs; zero points at both ends.
            y_codes = [(fit, 255), (1e-3, 0), (1000.0, 200)] if is_8bit(out) else [None]
            for code in y_codes:
                y_quant = None if code is None else (code[0], zero_point_in(out, code[1]))
                got, expected = run_both(
                    x,
                    weight,
                    bias,
                    layout=layout,
                    x_quant=x_quant,
                    w_quant=w_quant,
                    y_quant=y_quant,
                    out_dtype=out_dtype,
                )
                assert_exact(got, expected, f"x_zp={x_zp} out_dtype={out_dtype} y={y_quant}")


@pytest.mark.parametrize("x_dtype", X_DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("cause", ["bias", "products"])
def test_accumulator_wraps_past_int32(isa, layout, x_dtype, cause):
    """A sum that leaves int32 wraps modulo 2**32 (two's complement), in every output
    dtype: pushed out by a bias within 2**16 of either int32 limit (over a third of
    the sums cross it), or by the products alone (70001 channels of |x - x_zp| = 255 times
    |w| >= 121: about 2.2e9, with no bias). The portable kernel accumulates unsigned, so
    under the sanitizer build this also shows that no kernel overflows a signed int."""
    rng = np.random.default_rng(31)
    lo, hi = QDTYPE_RANGES[np.dtype(x_dtype)]
    if cause == "bias":
        c, k, x_zp = 257, 19, int(rng.integers(lo, hi + 1))
        x = random_x(rng, x_dtype, x_shape(layout, 2, c, 3, 7))
        weight = random_weight(rng, (k, c), "full")
        near_max = INT32_MAX - rng.integers(0, 2**16, k)
        near_min = INT32_MIN + rng.integers(0, 2**16, k)
        bias = np.where(np.arange(k) % 2 == 0, near_max, near_min).astype(np.int32)
    else:
        c, k = 70001, 5
        x_zp = lo
        x = np.full(x_shape(layout, 1, c, 2, 3), hi, x_dtype)
        magnitudes = rng.integers(121, 128, (k, c))
        signs = np.array([1, -1, 1, -1, 1])[:, None]
        weight = (signs * magnitudes).astype(np.int8)
        bias = None
    acc = qconv1x1_accumulators(x, weight, bias, x_zero_point=x_zp, layout=layout)
    assert acc.max() > INT32_MAX and acc.min() < INT32_MIN
    common = {"layout": layout, "x_quant": (1.0, x_zp), "w_quant": (1.0, 0)}
    for out_dtype in OUT_DTYPES:
        out = resolved_out_dtype(x_dtype, out_dtype)
        # Multiplier 100 / 2**31: wrapped accumulators land on the whole 8-bit range.
        y_quant = (2.0**31 / 100, zero_point_in(out, 128)) if is_8bit(out) else None
        got, expected = run_both(x, weight, bias, y_quant=y_quant, out_dtype=out_dtype, **common)
        assert_exact(got, expected, f"out_dtype={out_dtype}")


@pytest.mark.parametrize("x_dtype", X_DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("regime", ["tiny", "one", "large", "huge"])
@pytest.mark.parametrize("per_channel", [False, True], ids=["per_tensor", "per_channel"])
def test_multipliers(isa, layout, x_dtype, regime, per_channel):
    """Requantization multipliers M = x_scale * w_scale / y_scale from about 1e-6 (the
    outputs sit at y_zp and its neighbours) to far above 1 (y_scale much smaller than
    x_scale * w_scale: the outputs saturate at both ends)."""
    rng = np.random.default_rng(31)
    n, c, h, w, k = 2, 40, 5, 9, 24
    x_zp = zero_point_in(x_dtype, 77)
    x = random_x(rng, x_dtype, x_shape(layout, n, c, h, w))
    weight = random_weight(rng, (k, c), "full")
    bias = random_bias(rng, k, "medium")
    x_scale = 0.02
    w_scale = random_w_scale(rng, k, per_channel)
    target = {"tiny": 1e-6, "one": 1.0, "large": 37.0, "huge": 1e6}[regime]
    y_scale = float(np.float32(x_scale) * np.max(w_scale)) / target
    for out_dtype in (np.uint8, np.int8):
        y_zp = zero_point_in(out_dtype, 100)
        kwargs = dict(
            layout=layout,
            x_quant=(x_scale, x_zp),
            w_quant=(w_scale, 0),
            y_quant=(y_scale, y_zp),
            out_dtype=out_dtype,
        )
        got, expected = run_both(x, weight, bias, **kwargs)
        assert_exact(got, expected, f"out_dtype={np.dtype(out_dtype)}")
        lo, hi = QDTYPE_RANGES[np.dtype(out_dtype)]
        if regime == "tiny":
            assert np.abs(got.astype(int) - y_zp).max() <= 2
        if regime in ("large", "huge"):
            assert (got == lo).any() and (got == hi).any(), "expected saturation at both ends"


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("x_dtype", X_DTYPES)
def test_zero_points_across_the_range(isa, layout, x_dtype):
    """Every x zero point from the dtype's min to its max (in steps), each against a
    y zero point from the other end, for both 8-bit output dtypes."""
    rng = np.random.default_rng(32)
    x, weight, bias, kwargs = simple_problem(rng, layout, 1, 11, 4, 5, 7, x_dtype)
    y_scale = kwargs["y_quant"][0]
    for code in list(range(0, 256, 17)) + [1, 127, 128, 254, 255]:
        for out_dtype in (np.uint8, np.int8):
            kwargs["x_quant"] = (kwargs["x_quant"][0], zero_point_in(x_dtype, code))
            kwargs["y_quant"] = (y_scale, zero_point_in(out_dtype, 255 - code))
            got, expected = run_both(x, weight, bias, out_dtype=out_dtype, **kwargs)
            assert_exact(got, expected, f"zero point code {code}, out {np.dtype(out_dtype)}")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_per_channel_scales_follow_their_channel(isa, layout):
    """Channel k uses w_scale[k]: with one weight row repeated, scaling row k's scale by
    2**j scales its float32 output by exactly 2**j."""
    rng = np.random.default_rng(33)
    c, k = 21, 19
    x = random_x(rng, np.uint8, x_shape(layout, 1, c, 5, 6))
    weight = np.repeat(random_weight(rng, (1, c)), k, axis=0)
    w_scale = (0.01 * 2.0 ** np.arange(k)).astype(np.float32)
    kwargs = dict(layout=layout, x_quant=(0.5, 128), out_dtype=np.float32)
    y = to_nchw(fastpw.conv1x1(x, weight, w_quant=(w_scale, 0), **kwargs), layout)
    for j in range(k):
        np.testing.assert_array_equal(y[:, j], y[:, 0] * np.float32(2.0**j))
    zeros = np.zeros(k, np.int8)
    y8, expected = run_both(
        x, weight, None, w_quant=(w_scale, zeros), y_quant=(0.7, 5), **dict(kwargs, out_dtype=None)
    )
    assert_exact(y8, expected)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("per_channel", [False, True], ids=["per_tensor", "per_channel"])
def test_scales_not_representable_in_float32(isa, layout, per_channel):
    """Scales are rounded to float32 first (0.1, 1/3, ...): the result equals the one
    for the float32-rounded scales, and the reference."""
    rng = np.random.default_rng(34)
    x, weight, bias, _ = simple_problem(rng, layout, 1, 17, 5, 6, 23, np.int8)
    w_scale = np.full(23, 1 / 3) if per_channel else 1 / 3
    kwargs = dict(layout=layout, x_quant=(0.1, -3), w_quant=(w_scale, 0), y_quant=(0.7, 9))
    got, expected = run_both(x, weight, bias, **kwargs)
    assert_exact(got, expected)
    rounded = dict(
        layout=layout,
        x_quant=(np.float32(0.1), -3),
        w_quant=(np.float32(w_scale), 0),
        y_quant=(np.float32(0.7), 9),
    )
    assert_exact(fastpw.conv1x1(x, weight, bias, **rounded), got, "float32-rounded scales")


def test_zero_dimensional_array_parameters(isa):
    """Scales and zero points as 0-d arrays, the way ONNX initializers hold scalars."""
    rng = np.random.default_rng(35)
    x, weight, bias, _ = simple_problem(rng, "NCHW", 1, 9, 4, 5, 11, np.uint8)
    plain = dict(x_quant=(0.05, 7), w_quant=(0.02, 0), y_quant=(0.3, 120))
    arrays = {name: (np.array(s, np.float32), np.array(z)) for name, (s, z) in plain.items()}
    got, expected = run_both(x, weight, bias, **plain)
    assert_exact(got, expected)
    assert_exact(fastpw.conv1x1(x, weight, bias, **arrays), got, "0-d array parameters")


@pytest.mark.parametrize("out_dtype", [np.uint8, np.int8])
def test_requantization_rounds_half_to_even(isa, out_dtype):
    """M = 0.5 exactly: odd accumulators land on x.5 and round to the even neighbour
    (ONNX Runtime's rounding), never away from zero or up."""
    acc = np.arange(-9, 10)
    k = acc.size
    x = np.zeros((1, 1, 1, 1), np.uint8)  # x - x_zp = 0: acc = bias
    weight = np.ones((k, 1), np.int8)
    bias = acc.astype(np.int32)
    y = fastpw.conv1x1(
        x,
        weight,
        bias,
        x_quant=(1.0, 0),
        w_quant=(0.5, 0),
        y_quant=(1.0, 10),
        out_dtype=out_dtype,
    )
    expected = np.array([-4, -4, -4, -3, -2, -2, -2, -1, 0, 0, 0, 1, 2, 2, 2, 3, 4, 4, 4])
    np.testing.assert_array_equal(np.rint(acc * 0.5), expected)  # the table is right
    np.testing.assert_array_equal(y.ravel(), expected + 10)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_accumulator_rounds_to_float32_half_to_even(isa, layout):
    """float32(acc) rounds to nearest even before the multiply: above 2**24 that changes
    the result. With M = 2**-17 and acc = 2**24 + 2**16 + 1, float32(acc) = 2**24 + 2**16
    and v = 128.5 exactly, which rounds to 128 (exact arithmetic would give 129)."""
    base = 2**24 + 2**16
    bias = np.array([base + 1, base + 3, base - 1, -(base + 1), base, 2**24 + 1], np.int32)
    # float32(bias):   base,  base+4,   base,   -base,     base,  2**24
    expected_v = [128.5, 128.5 + 2**-15, 128.5, -128.5, 128.5, 128.0]
    expected_u8 = [128, 129, 128, 0, 128, 128]
    k = bias.size
    x = np.full(x_shape(layout, 1, 3, 2, 2), 9, np.uint8)
    weight = np.full((k, 3), 5, np.int8)
    kwargs = dict(layout=layout, x_quant=(1.0, 9), w_quant=(2.0**-17, 0), y_quant=(1.0, 0))
    np.testing.assert_array_equal(bias.astype(np.float32) * np.float32(2.0**-17), expected_v)
    y = fastpw.conv1x1(x, weight, bias, **kwargs)
    np.testing.assert_array_equal(to_nchw(y, layout)[0, :, 0, 0], expected_u8)
    got, expected = run_both(x, weight, bias, **kwargs)
    assert_exact(got, expected)
    got, expected = run_both(x, weight, bias, **dict(kwargs, out_dtype=np.float32))
    assert_exact(got, expected)
    np.testing.assert_array_equal(to_nchw(got, layout)[0, :, 1, 1], expected_v)


#: Accumulators (and the weight scale each needs) on which one float32 rounding of the
#: multiplier, taken anywhere else than the contract says, changes the 8-bit output.
WITNESS_X_SCALE, WITNESS_Y_SCALE = 0.03, 3.7
WITNESS_W_SCALES, WITNESS_ACCS = requantization_witnesses(WITNESS_X_SCALE, WITNESS_Y_SCALE)


def test_witnesses_tell_the_formulas_apart():
    """Self-check: every near-miss formula gets some witness output wrong."""
    v = near_miss_requantizations(WITNESS_ACCS, WITNESS_X_SCALE, WITNESS_W_SCALES, WITNESS_Y_SCALE)
    q = {name: np.rint(values.astype(np.float64)) for name, values in v.items()}
    assert np.abs(q["contract"]).max() <= 120
    for name, q_alt in q.items():
        if name != "contract":
            assert (q_alt != q["contract"]).any(), f"no witness for {name!r}"


def witness_problem(rng, layout, x_dtype, channels=37):
    """One pixel, random x and weights, and a bias per channel that makes its
    accumulator exactly the witness."""
    k = WITNESS_ACCS.size
    lo, hi = QDTYPE_RANGES[np.dtype(x_dtype)]
    x_zp = int(rng.integers(lo, hi + 1))
    x = random_x(rng, x_dtype, x_shape(layout, 1, channels, 1, 1))
    weight = random_weight(rng, (k, channels), "full")
    dot = qconv1x1_accumulators(x, weight, None, x_zero_point=x_zp, layout=layout)
    bias = (WITNESS_ACCS - dot[0, :, 0, 0]).astype(np.int32)
    return x, weight, bias, x_zp


@pytest.mark.parametrize("x_dtype", X_DTYPES)
@pytest.mark.parametrize("out_dtype", [np.uint8, np.int8])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("per_channel", [False, True], ids=["per_tensor", "per_channel"])
def test_requantization_follows_the_contract_order(isa, layout, out_dtype, per_channel, x_dtype):
    """M = float32(float32(xs * ws) / ys), then one float32 multiply by float32(acc): on
    the witness accumulators any other order or precision changes the output."""
    rng = np.random.default_rng(35)
    x, weight, bias, x_zp = witness_problem(rng, layout, x_dtype)
    y_zp = zero_point_in(out_dtype, 128)
    v = near_miss_requantizations(WITNESS_ACCS, WITNESS_X_SCALE, WITNESS_W_SCALES, WITNESS_Y_SCALE)[
        "contract"
    ]
    by_hand = (np.rint(v.astype(np.float64)) + y_zp).astype(out_dtype)
    kwargs = dict(
        layout=layout,
        x_quant=(WITNESS_X_SCALE, x_zp),
        y_quant=(WITNESS_Y_SCALE, y_zp),
        out_dtype=out_dtype,
    )
    groups = [np.arange(WITNESS_ACCS.size)] if per_channel else None
    if groups is None:
        groups = [np.flatnonzero(WITNESS_W_SCALES == s) for s in np.unique(WITNESS_W_SCALES)]
    for channels in groups:
        w_scale = WITNESS_W_SCALES[channels] if per_channel else WITNESS_W_SCALES[channels[0]]
        got, expected = run_both(
            x, weight[channels], bias[channels], w_quant=(w_scale, 0), **kwargs
        )
        assert_exact(got, expected)
        np.testing.assert_array_equal(got.reshape(-1), by_hand[channels])


# ------------------------------------------------------------ output dtypes, activations


@pytest.mark.parametrize("x_dtype", X_DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_out_dtypes(isa, layout, x_dtype):
    """None gives x's dtype; uint8/int8 requantize; int32 is the raw accumulator
    (bias included); float32 is the dequantized accumulator. y_quant is not needed for
    int32 and float32 outputs."""
    rng = np.random.default_rng(40)
    x, weight, bias, kwargs = simple_problem(rng, layout, 2, 19, 6, 7, 29, x_dtype)
    for out_dtype in OUT_DTYPES:
        got, expected = run_both(x, weight, bias, out_dtype=out_dtype, **kwargs)
        assert got.dtype == resolved_out_dtype(x_dtype, out_dtype)
        assert_exact(got, expected, f"out_dtype={out_dtype}")
    y_quant = kwargs.pop("y_quant")
    acc = qconv1x1_accumulators(x, weight, bias, x_zero_point=kwargs["x_quant"][1], layout=layout)
    y32 = fastpw.conv1x1(x, weight, bias, out_dtype=np.int32, **kwargs)
    np.testing.assert_array_equal(to_nchw(y32, layout), acc)
    yf = fastpw.conv1x1(x, weight, bias, out_dtype=np.float32, **kwargs)
    assert_exact(yf, qconv1x1_reference(x, weight, bias, out_dtype=np.float32, **kwargs))
    with_y = fastpw.conv1x1(x, weight, bias, out_dtype=np.float32, y_quant=y_quant, **kwargs)
    assert_exact(with_y, yf, "float32 output ignores y_quant")


@pytest.mark.parametrize(
    "spelling,dtype",
    [
        ("uint8", np.uint8),
        ("u1", np.uint8),
        (np.dtype("uint8"), np.uint8),
        ("int8", np.int8),
        ("i1", np.int8),
        (np.int8, np.int8),
        ("int32", np.int32),
        ("<i4", np.int32),
        (np.dtype(np.int32), np.int32),
        ("float32", np.float32),
        ("f4", np.float32),
        (np.float32, np.float32),
    ],
    ids=str,
)
def test_out_dtype_spellings(isa, spelling, dtype):
    rng = np.random.default_rng(41)
    x, weight, bias, kwargs = simple_problem(rng, "NCHW", 1, 6, 3, 4, 5)
    got = fastpw.conv1x1(x, weight, bias, out_dtype=spelling, **kwargs)
    assert_exact(got, qconv1x1_reference(x, weight, bias, out_dtype=dtype, **kwargs))


Q_ACTIVATIONS = [
    None,
    "relu",
    "relu6",
    "RELU6",
    (-1.0, 1.0),
    (0.25, 0.5),
    (-2.5, -0.5),
    (0.0, 0.0),
    (-math.inf, 0.3),
    (-0.3, math.inf),
    (-1e30, 1e30),
]


@pytest.mark.parametrize("x_dtype", X_DTYPES)
@pytest.mark.parametrize("out_dtype", [None, np.uint8, np.int8, np.float32])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("activation", Q_ACTIVATIONS, ids=str)
def test_activation(isa, layout, activation, out_dtype, x_dtype):
    """Fused activations: for 8-bit outputs the clamp bounds are y_zp + rint(b / ys),
    intersected with the dtype's range; for float32 outputs, the clamp in real units.
    y_scale 0.05 puts relu6's upper bound at y_zp + 120, inside the range, and the real
    outputs spread over about +-10."""
    rng = np.random.default_rng(42)
    x, weight, bias, kwargs = simple_problem(rng, layout, 1, 17, 6, 7, 29, x_dtype)
    acc = qconv1x1_accumulators(x, weight, bias, x_zero_point=kwargs["x_quant"][1], layout=layout)
    x_scale = 10.0 / (float(np.percentile(np.abs(acc), 90)) * 0.01)
    kwargs["x_quant"] = (x_scale, kwargs["x_quant"][1])
    kwargs["w_quant"] = (0.01, 0)
    out = resolved_out_dtype(x_dtype, out_dtype)
    y_zp = zero_point_in(out, 100) if is_8bit(out) else 0
    kwargs["y_quant"] = (0.05, y_zp)
    got, expected = run_both(x, weight, bias, activation=activation, out_dtype=out_dtype, **kwargs)
    assert_exact(got, expected)
    if is_8bit(out) and activation is not None:
        lo, hi = qactivation_bounds(activation, out, 0.05, y_zp)
        assert got.min() >= lo and got.max() <= hi
        if activation in ("relu", "relu6", "RELU6"):
            assert got.min() == y_zp, "relu's lower bound is y_zp and the data reaches it"
        if str(activation).lower() == "relu6":
            assert got.max() == y_zp + 120, "relu6's upper bound is y_zp + rint(6 / 0.05)"


@pytest.mark.parametrize("layout", LAYOUTS)
def test_activation_is_applied_after_bias(isa, layout):
    x = np.full(x_shape(layout, 1, 3, 2, 2), 4, np.uint8)  # x - x_zp = 0: acc = bias
    weight = np.ones((4, 3), np.int8)
    bias = np.array([-10, 30, 70, 55], np.int32)
    kwargs = dict(layout=layout, x_quant=(1.0, 4), w_quant=(0.1, 0), activation="relu6")
    y = to_nchw(fastpw.conv1x1(x, weight, bias, out_dtype=np.float32, **kwargs), layout)
    np.testing.assert_array_equal(y[0, :, 0, 0], np.float32([0.0, 3.0, 6.0, 5.5]))
    y8 = to_nchw(fastpw.conv1x1(x, weight, bias, y_quant=(0.5, 3), **kwargs), layout)
    np.testing.assert_array_equal(y8[0, :, 0, 0], [3, 9, 15, 14])
    assert (y8 == y8[:, :, :1, :1]).all()


@pytest.mark.parametrize("y_scale,y_zp,expected_hi", [(4.0, 7, 9), (12.0, 7, 7), (0.8, 0, 7)])
def test_relu6_bound_rounds_half_to_even(isa, y_scale, y_zp, expected_hi):
    """hi = y_zp + rint(6 / ys): 6/4 = 1.5 -> 2, 6/12 = 0.5 -> 0, 6/float32(0.8) =
    7.4999998... -> 7."""
    x = np.full((1, 1, 1, 1), 200, np.uint8)
    weight = np.full((3, 1), 100, np.int8)
    bias = np.array([0, -(10**6), 10**6], np.int32)
    y = fastpw.conv1x1(
        x,
        weight,
        bias,
        x_quant=(1.0, 0),
        w_quant=(1.0, 0),
        y_quant=(y_scale, y_zp),
        activation="relu6",
    )
    np.testing.assert_array_equal(y.ravel(), [expected_hi, y_zp, expected_hi])


# ------------------------------------------------------------------ memory and out


@pytest.mark.parametrize("x_dtype", X_DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("kind", X_MEMORY)
def test_non_contiguous_x(isa, layout, kind, x_dtype):
    rng = np.random.default_rng(50)
    x, weight, bias, kwargs = simple_problem(rng, layout, 2, 19, 6, 9, 23, x_dtype)
    xv = with_memory(x, kind, layout, rng)
    x_before = xv.copy()
    kwargs.update(stride=(1, 2), activation="relu")
    got, expected = run_both(xv, weight, bias, **kwargs)
    assert_exact(got, expected)
    assert_exact(fastpw.conv1x1(x, weight, bias, **kwargs), got, "contiguous x")
    np.testing.assert_array_equal(xv, x_before)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("axis", ["batch", "pixels"])
def test_broadcast_x(isa, layout, axis):
    """Zero strides (np.broadcast_to, read-only) are strides too."""
    rng = np.random.default_rng(51)
    x, weight, bias, kwargs = simple_problem(rng, layout, 1, 12, 4, 1, 20)
    shape = list(x.shape)
    if axis == "batch":
        shape[0] = 3
    else:
        shape[3 if layout == "NCHW" else 2] = 9
    xb = np.broadcast_to(x, shape)
    assert 0 in xb.strides and not xb.flags.writeable
    got, expected = run_both(xb, weight, bias, **kwargs)
    assert_exact(got, expected)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("out_kind", OUT_KINDS[1:])
@pytest.mark.parametrize("out_dtype", OUT_DTYPES)
@pytest.mark.parametrize("stride", [1, 2])
def test_out(isa, layout, out_kind, out_dtype, stride):
    """``out`` (dtype out_dtype) is written and returned, whatever its strides; a
    channel slice of a larger buffer leaves every entry outside the slice untouched."""
    rng = np.random.default_rng(52)
    n, c, h, w, k = 2, 24, 7, 10, 64
    x, weight, bias, kwargs = simple_problem(rng, layout, n, c, h, w, k, np.int8)
    kwargs.update(stride=stride, out_dtype=out_dtype)
    shape = y_shape(layout, n, k, h, w, stride)
    out, buf, outside = make_out(
        out_kind, shape, layout, resolved_out_dtype(np.int8, out_dtype), 64, 61
    )
    got, expected = run_both(x, weight, bias, out=out, **kwargs)
    assert got is out
    assert_exact(got, expected)
    assert_untouched(buf, outside)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_out_slices_build_a_concatenation(isa, layout):
    """Two calls into neighbouring channel slices of one uint8 buffer equal
    np.concatenate of two results (a quantized concat with shared y_quant)."""
    rng = np.random.default_rng(53)
    x, w1, b1, kwargs = simple_problem(rng, layout, 1, 16, 5, 6, 7, per_channel=False)
    w2 = random_weight(rng, (9, 16))
    b2 = random_bias(rng, 9)
    axis = channel_axis(layout)
    buf = np.full(y_shape(layout, 1, 16, 5, 6), SENTINELS[np.dtype(np.uint8)], np.uint8)
    first = buf[:, :7] if layout == "NCHW" else buf[..., :7]
    second = buf[:, 7:] if layout == "NCHW" else buf[..., 7:]
    fastpw.conv1x1(x, w1, b1, out=first, **kwargs)
    fastpw.conv1x1(x, w2, b2, out=second, activation="relu", **kwargs)
    expected = np.concatenate(
        [
            qconv1x1_reference(x, w1, b1, **kwargs),
            qconv1x1_reference(x, w2, b2, activation="relu", **kwargs),
        ],
        axis=axis,
    )
    assert_exact(buf, expected)


@pytest.mark.parametrize("channels_used", [4096, 1500, 1])
def test_nhwc_pixel_rows_4k_apart(isa, channels_used):
    """NHWC int8 pixels 4096 bytes apart (a 4 KiB-aliased row stride), whole rows and
    channel slices. (|x - 128| <= 128 and |bias| <= 2**20 keep even C = 4096 inside
    int32.)"""
    rng = np.random.default_rng(channels_used)
    buffer = random_x(rng, np.uint8, (2, 5, 7, 4096))
    x = buffer[..., :channels_used]
    weight = random_weight(rng, (40, channels_used))
    bias = random_bias(rng, 40)
    kwargs = dict(layout="NHWC", x_quant=(0.01, 128), w_quant=(0.001, 0), y_quant=(2.0, 1))
    for out_dtype in (None, np.int32):
        for num_threads in (1, 2):
            got, expected = run_both(
                x, weight, bias, out_dtype=out_dtype, num_threads=num_threads, **kwargs
            )
            assert_exact(got, expected)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("zero", ["N", "H", "W", "HW"])
@pytest.mark.parametrize("out_dtype", OUT_DTYPES)
@pytest.mark.parametrize("with_out", [False, True])
def test_zero_size(isa, layout, zero, out_dtype, with_out):
    n, h, w = (0 if "N" in zero else 2), (0 if "H" in zero else 5), (0 if "W" in zero else 6)
    rng = np.random.default_rng(54)
    x = random_x(rng, np.int8, x_shape(layout, n, 8, h, w))
    weight = random_weight(rng, (12, 8))
    shape = y_shape(layout, n, 12, h, w, stride=2)
    dtype = resolved_out_dtype(np.int8, out_dtype)
    out = np.empty(shape, dtype=dtype) if with_out else None
    y = fastpw.conv1x1(
        x,
        weight,
        random_bias(rng, 12),
        layout=layout,
        stride=2,
        out=out,
        x_quant=(0.1, 0),
        w_quant=(0.1, 0),
        y_quant=(0.1, 0),
        out_dtype=out_dtype,
    )
    assert y.shape == shape and y.dtype == dtype and y.size == 0
    if with_out:
        assert y is out


def test_layouts_agree(isa):
    """NCHW and NHWC are two views of one convolution, and integer work is exact: the
    same bits both ways."""
    rng = np.random.default_rng(55)
    x, weight, bias, kwargs = simple_problem(rng, "NCHW", 2, 21, 9, 7, 33)
    kwargs.pop("layout")
    for out_dtype in OUT_DTYPES:
        y_nchw = fastpw.conv1x1(x, weight, bias, stride=(1, 2), out_dtype=out_dtype, **kwargs)
        x_nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        y_nhwc = fastpw.conv1x1(
            x_nhwc, weight, bias, layout="NHWC", stride=(1, 2), out_dtype=out_dtype, **kwargs
        )
        assert_exact(y_nhwc.transpose(0, 3, 1, 2), y_nchw, f"out_dtype={out_dtype}")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_weight_forms(isa, layout):
    """(K, C/g, 1, 1) equals (K, C/g); non-contiguous weight and bias; a per-channel scale
    given as a list, or with a non-contiguous array, equals the contiguous array."""
    rng = np.random.default_rng(56)
    x, weight, bias, kwargs = simple_problem(rng, layout, 1, 10, 5, 7, 14, groups=2)
    expected = fastpw.conv1x1(x, weight, bias, **kwargs)
    assert_exact(expected, qconv1x1_reference(x, weight, bias, **kwargs))
    assert_exact(fastpw.conv1x1(x, weight.reshape(14, 5, 1, 1), bias, **kwargs), expected)
    weight_t = np.asfortranarray(weight)
    bias_strided = np.repeat(bias, 2)[::2]
    assert not weight_t.flags.c_contiguous and not bias_strided.flags.c_contiguous
    assert_exact(fastpw.conv1x1(x, weight_t, bias_strided, **kwargs), expected)
    w_scale = kwargs["w_quant"][0]
    as_list = dict(kwargs, w_quant=(w_scale.tolist(), 0))
    assert_exact(fastpw.conv1x1(x, weight, bias, **as_list), expected, "scale as a list")
    strided = dict(kwargs, w_quant=(np.repeat(w_scale, 2)[::2], np.zeros(14, np.int8)))
    assert_exact(fastpw.conv1x1(x, weight, bias, **strided), expected, "strided scale")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_qparams_accepted(isa, layout):
    q = fastpw.QParams(0.25, 3)
    assert isinstance(q, tuple) and q == (0.25, 3)
    assert q.scale == 0.25 and q.zero_point == 3
    scale, zero_point = q
    assert (scale, zero_point) == (0.25, 3)
    rng = np.random.default_rng(57)
    x, weight, bias, kwargs = simple_problem(rng, layout, 1, 9, 4, 6, 10)
    expected = fastpw.conv1x1(x, weight, bias, **kwargs)
    as_qparams = {
        name: fastpw.QParams(*kwargs[name]) if name.endswith("_quant") else kwargs[name]
        for name in kwargs
    }
    assert_exact(fastpw.conv1x1(x, weight, bias, **as_qparams), expected)
    layer = fastpw.QConv1x1(weight, bias, **as_qparams)
    assert_exact(layer(x), expected, "QConv1x1 with QParams")
    # numpy scalars, as read from an ONNX model's initializers
    x_scale, x_zp = kwargs["x_quant"]
    w_scale = kwargs["w_quant"][0]
    y_scale, y_zp = kwargs["y_quant"]
    as_numpy = dict(
        kwargs,
        x_quant=(np.float32(x_scale), np.uint8(x_zp)),
        w_quant=(w_scale.astype(np.float64), np.zeros(w_scale.shape, np.int8)),
        y_quant=fastpw.QParams(np.float64(y_scale), np.uint8(y_zp)),
    )
    assert_exact(fastpw.conv1x1(x, weight, bias, **as_numpy), expected, "numpy scalars")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_repeated_calls_and_input_untouched(isa, layout):
    rng = np.random.default_rng(58)
    x, weight, bias, kwargs = simple_problem(rng, layout, 1, 20, 7, 7, 30)
    w_scale = kwargs["w_quant"][0]
    copies = [a.copy() for a in (x, weight, bias, w_scale)]
    first = fastpw.conv1x1(x, weight, bias, **kwargs)
    for _ in range(3):
        assert_exact(fastpw.conv1x1(x, weight, bias, **kwargs), first)
    for a, before in zip((x, weight, bias, w_scale), copies, strict=False):
        np.testing.assert_array_equal(a, before)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_int8_and_float_paths_share_a_process(isa, layout):
    """Alternating float32 and int8 calls do not disturb each other."""
    rng = np.random.default_rng(59)
    x, weight, bias, kwargs = simple_problem(rng, layout, 1, 13, 5, 5, 11)
    xf = x.astype(np.float32)
    wf = weight.astype(np.float32)
    expected = qconv1x1_reference(x, weight, bias, **kwargs)
    yf = fastpw.conv1x1(xf, wf, layout=layout)
    for _ in range(2):
        assert_exact(fastpw.conv1x1(x, weight, bias, **kwargs), expected)
        np.testing.assert_array_equal(fastpw.conv1x1(xf, wf, layout=layout), yf)


# ------------------------------------------------------------------------ QConv1x1 layer

LAYER_CONFIGS = [
    dict(layout="NCHW"),
    dict(layout="NHWC", activation="relu"),
    dict(layout="nchw", stride=2, activation="relu6"),
    dict(layout="NHWC", stride=(2, 1), groups=3, activation=(-0.5, 0.5)),
    dict(layout="NCHW", groups=4, bias=False),
    dict(layout="NHWC", out_dtype=np.int32),
    dict(layout="NCHW", out_dtype=np.float32, activation="relu"),
    dict(layout="NHWC", out_dtype=np.int8, per_channel=False),
]


@pytest.mark.parametrize("config", LAYER_CONFIGS, ids=str)
def test_layer_equals_function(isa, config):
    """A layer serves any batch and spatial size, and both uint8 and int8 x (a zero point
    valid for both)."""
    config = dict(config)
    bias_kind = "medium" if config.pop("bias", True) else None
    per_channel = config.pop("per_channel", True)
    layout = config.pop("layout")
    groups = config.get("groups", 1)
    rng = np.random.default_rng(60)
    x, weight, bias, kwargs = simple_problem(
        rng, layout, 2, 24, 9, 13, 36, np.uint8, groups, bias_kind, per_channel
    )
    kwargs.update(config)
    kwargs["x_quant"] = (kwargs["x_quant"][0], 17)
    layer = fastpw.QConv1x1(weight, bias, **kwargs)
    assert layer.isa == fastpw.isa("int8")  # the kernel the selected family runs
    for x_dtype in X_DTYPES:
        xq = random_x(rng, x_dtype, x.shape)
        expected = qconv1x1_reference(xq, weight, bias, **kwargs)
        assert_exact(layer(xq), expected, f"x {np.dtype(x_dtype)}")
        assert_exact(fastpw.conv1x1(xq, weight, bias, **kwargs), expected, "conv1x1")
        assert_exact(layer(xq, num_threads=1), expected, "num_threads=1")
        out = np.full(expected.shape, SENTINELS[expected.dtype], dtype=expected.dtype)
        assert layer(xq, out=out) is out
        assert_exact(out, expected, "out=")
        x_other = random_x(rng, x_dtype, x_shape(layout, 1, 24, 3, 70))
        assert_exact(
            layer(x_other), qconv1x1_reference(x_other, weight, bias, **kwargs), "other size"
        )


def test_layer_attributes_and_repr(isa):
    rng = np.random.default_rng(61)
    weight = random_weight(rng, (12, 5, 1, 1))
    bias = random_bias(rng, 12)
    w_scale = random_w_scale(rng, 12)
    layer = fastpw.QConv1x1(
        weight,
        bias,
        x_quant=(0.5, 128),
        w_quant=(w_scale, 0),
        y_quant=(0.25, 3),
        layout="nhwc",
        stride=(2, 1),
        groups=3,
        activation=(-1.0, 2.0),
    )
    assert layer.weight.dtype == np.int8 and layer.weight.shape == (12, 5)
    np.testing.assert_array_equal(layer.weight, weight[:, :, 0, 0])
    assert layer.bias.dtype == np.int32
    np.testing.assert_array_equal(layer.bias, bias)
    for name, (scale, zero_point) in [
        ("x_quant", (0.5, 128)),
        ("y_quant", (0.25, 3)),
        ("w_quant", (w_scale, 0)),
    ]:
        q = getattr(layer, name)
        assert isinstance(q, fastpw.QParams), (name, q)
        np.testing.assert_array_equal(np.asarray(q.scale, np.float32), np.float32(scale))
        assert np.all(np.asarray(q.zero_point) == zero_point), (name, q)
    assert layer.out_dtype is None
    assert layer.in_channels == 15
    assert layer.out_channels == 12
    assert layer.layout.upper() == "NHWC"
    assert tuple(np.broadcast_to(layer.stride, 2)) == (2, 1)
    assert layer.groups == 3
    assert tuple(layer.activation) == (-1.0, 2.0)
    assert layer.isa == fastpw.isa("int8")
    text = repr(layer)
    assert "QConv1x1" in text and "15" in text and "12" in text, text

    plain = fastpw.QConv1x1(
        weight[:, :, 0, 0], x_quant=(1.0, 0), w_quant=(0.5, 0), out_dtype="int32"
    )
    assert plain.bias is None
    assert plain.y_quant is None
    assert np.dtype(plain.out_dtype) == np.int32
    assert plain.in_channels == 5 and plain.out_channels == 12
    assert plain.layout.upper() == "NCHW"
    assert tuple(np.broadcast_to(plain.stride, 2)) == (1, 1)
    assert plain.groups == 1 and plain.activation is None
    assert np.all(np.asarray(plain.w_quant.scale) == 0.5)
    assert "QConv1x1" in repr(plain)


def test_layer_keeps_the_isa_it_was_packed_for(isa):
    rng = np.random.default_rng(62)
    x, weight, bias, kwargs = simple_problem(rng, "NCHW", 1, 29, 7, 9, 31)
    layer = fastpw.QConv1x1(weight, bias, activation="relu", **kwargs)
    packed_for = fastpw.isa("int8")  # the kernel the selected family runs
    expected = qconv1x1_reference(x, weight, bias, activation="relu", **kwargs)
    try:
        for other in fastpw.available_isas():
            fastpw._set_isa(other)
            assert layer.isa == packed_for
            assert_exact(layer(x), expected, f"packed for {isa}, active {other}")
            assert fastpw.QConv1x1(weight, bias, **kwargs).isa == fastpw.isa("int8")
    finally:
        fastpw._set_isa(isa)


def test_layer_packs_weights_once(isa):
    """Changing the caller's arrays after construction does not change the layer."""
    rng = np.random.default_rng(63)
    x, weight, bias, kwargs = simple_problem(rng, "NHWC", 1, 10, 6, 6, 18)
    w_scale = kwargs["w_quant"][0]
    layer = fastpw.QConv1x1(weight, bias, **kwargs)
    expected = qconv1x1_reference(x, weight, bias, **kwargs)
    weight[:] = 0
    bias[:] = 0
    w_scale[:] = 1.0
    assert_exact(layer(x), expected)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("out_dtype", OUT_DTYPES)
def test_layer_out_channel_slice(isa, layout, stride, out_dtype):
    rng = np.random.default_rng(64)
    x, weight, bias, kwargs = simple_problem(rng, layout, 2, 16, 9, 8, 24)
    kwargs.update(stride=stride, out_dtype=out_dtype)
    layer = fastpw.QConv1x1(weight, bias, **kwargs)
    dtype = resolved_out_dtype(np.uint8, out_dtype)
    shape = y_shape(layout, 2, 24, 9, 8, stride)
    out, buf, outside = make_out("channel_slice", shape, layout, dtype, 8, 5)
    assert layer(x, out=out) is out
    assert_untouched(buf, outside)
    assert_exact(out, qconv1x1_reference(x, weight, bias, **kwargs))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("zero", ["N", "H", "W"])
def test_layer_zero_size(isa, layout, zero):
    n, h, w = (0 if zero == "N" else 2), (0 if zero == "H" else 5), (0 if zero == "W" else 6)
    rng = np.random.default_rng(65)
    x, weight, bias, kwargs = simple_problem(rng, layout, 1, 8, 1, 1, 12)
    x = random_x(rng, np.uint8, x_shape(layout, n, 8, h, w))
    y = fastpw.QConv1x1(weight, bias, **kwargs)(x)
    assert y.shape == y_shape(layout, n, 12, h, w) and y.dtype == np.uint8


# --------------------------------------------------------------- QConv1x1.from_float


def quantize_weights(weight, bias, x_scale, per_channel):
    """The contract's symmetric weight quantization, spelled out in numpy."""
    w = np.asarray(weight, np.float32).reshape(weight.shape[0], -1)
    if per_channel:
        peak = np.abs(w).max(axis=1)
    else:
        peak = np.full(w.shape[0], np.abs(w).max())
    if bias is not None:
        # Room in int32 for the bias beside any sum of products (cg * 255 * 127).
        room = 0.999 * float(INT32_MAX - w.shape[1] * 255 * 127)  # 0.1% for rounding
        needed = np.abs(np.asarray(bias, np.float64)) / (float(np.float32(x_scale)) * room)
        peak = np.maximum(peak, 127.0 * (needed if per_channel else needed.max()))
    w_scale = np.maximum(peak.astype(np.float64) / 127, MIN_SCALE).astype(np.float32)
    w_scale[peak == 0] = 1.0
    wq = np.clip(np.rint(w / w_scale.astype(np.float64)[:, None]), -127, 127).astype(np.int8)
    bq = None
    if bias is not None:
        denominator = float(np.float32(x_scale)) * w_scale.astype(np.float64)
        bq = np.rint(np.asarray(bias, np.float64) / denominator)
        bq = np.clip(bq, INT32_MIN, INT32_MAX).astype(np.int32)
    return wq, bq, w_scale


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("per_channel", [True, False], ids=["per_channel", "per_tensor"])
@pytest.mark.parametrize("x_dtype", X_DTYPES)
def test_from_float(isa, layout, per_channel, x_dtype):
    """Symmetric weight quantization (w_scale = max|w| / 127 per output channel or per
    tensor, a zero channel or tensor gets scale 1.0, raised where the bias would not fit
    int32 beside the products), bias quantized to x_scale * w_scale, and the layer's
    output equals the reference built from the quantized weights."""
    rng = np.random.default_rng(70)
    k, cg, groups = 18, 7, 3
    weight = rng.standard_normal((k, cg, 1, 1)) * 10.0 ** rng.uniform(-3, 1, (k, 1, 1, 1))
    weight = weight.astype(np.float32)
    weight[4] = 0.0  # a zero channel
    bias = (rng.standard_normal(k) * 3).astype(np.float32)
    bias[4] = 0.0  # (a bias would set its scale, see test_from_float_dead_unit_keeps_its_bias)
    bias[6] = 1e30  # the weight scale grows until the bias fits
    bias[7] = -1e30
    x_scale = 0.1  # not a float32: the bias uses float64(float32(0.1))
    x_zp = zero_point_in(x_dtype, 140)
    config = dict(layout=layout, groups=groups, activation="relu")
    layer = fastpw.QConv1x1.from_float(
        weight,
        bias,
        x_quant=(x_scale, x_zp),
        y_quant=(0.05, zero_point_in(x_dtype, 10)),
        per_channel=per_channel,
        x_dtype=x_dtype,
        **config,
    )
    wq, bq, w_scale = quantize_weights(weight, bias, x_scale, per_channel)
    assert layer.weight.dtype == np.int8
    np.testing.assert_array_equal(layer.weight.reshape(k, cg), wq)
    assert layer.bias.dtype == np.int32
    np.testing.assert_array_equal(layer.bias, bq)
    room = INT32_MAX - cg * 255 * 127
    assert np.abs(bq.astype(np.int64)).max() <= room
    assert bq[6] > room // 2 and bq[7] < -room // 2
    if per_channel:  # the huge biases swamp only their own channels' weights
        assert (wq[6:8] == 0).all() and np.abs(wq[:6]).max() == 127
    assert (wq[4] == 0).all()
    scale = np.broadcast_to(np.asarray(layer.w_quant.scale, np.float32), (k,))
    np.testing.assert_array_equal(scale, w_scale)
    assert np.all(np.asarray(layer.w_quant.zero_point) == 0)
    if per_channel:
        assert scale[4] == 1.0
    assert layer.groups == groups and layer.in_channels == cg * groups
    x = random_x(rng, x_dtype, x_shape(layout, 2, cg * groups, 5, 6))
    expected = qconv1x1_reference(
        x,
        wq,
        bq,
        x_quant=(x_scale, x_zp),
        w_quant=(w_scale, 0),
        y_quant=(0.05, zero_point_in(x_dtype, 10)),
        **config,
    )
    assert_exact(layer(x), expected, "from_float layer vs reference")


@pytest.mark.parametrize("per_channel", [True, False], ids=["per_channel", "per_tensor"])
def test_from_float_dead_unit_keeps_its_bias(isa, per_channel):
    """A unit with tiny weights and a sizeable negative bias (left by weight decay) must
    stay at 0 after relu: its bias must not clip to int32 and wrap when products add."""
    weight = np.full((2, 64), -1e-6, np.float32)
    weight[1] = 0.02
    bias = np.array([-0.2, 0.0], np.float32)
    x = np.full((1, 64, 1, 1), 255, np.uint8)
    layer = fastpw.QConv1x1.from_float(
        weight,
        bias,
        x_quant=(1 / 255, 0),
        y_quant=(0.01, 0),
        activation="relu",
        per_channel=per_channel,
        out_dtype=np.float32,
    )
    assert abs(int(layer.bias[0])) + 64 * 255 * 127 <= INT32_MAX
    float_result = np.maximum(weight.astype(np.float64).sum(axis=1) + bias, 0.0)
    assert float_result[0] == 0.0
    np.testing.assert_allclose(layer(x).ravel(), float_result, rtol=0.01, atol=0.0)


@pytest.mark.parametrize("per_channel", [True, False], ids=["per_channel", "per_tensor"])
def test_from_float_zero_weight_and_no_bias(isa, per_channel):
    weight = np.zeros((6, 4), np.float32)
    layer = fastpw.QConv1x1.from_float(
        weight, x_quant=(0.5, 0), per_channel=per_channel, out_dtype=np.int32
    )
    assert layer.bias is None
    np.testing.assert_array_equal(layer.weight, np.zeros((6, 4), np.int8))
    scale = np.broadcast_to(np.asarray(layer.w_quant.scale, np.float32), (6,))
    np.testing.assert_array_equal(scale, np.ones(6, np.float32))
    x = np.full((1, 4, 2, 3), 200, np.uint8)
    np.testing.assert_array_equal(layer(x), np.zeros((1, 6, 2, 3), np.int32))


def weight_with_zero_and_tiny_channels(rng, k=9, cg=5):
    """Float32 weights (k, cg) whose channel 2 is all zero, channel 5 holds only
    subnormals (its max / 127 underflows float32) and channel 7 is tiny (1e-10), the
    rest ordinary."""
    weight = (rng.standard_normal((k, cg)) * 0.3).astype(np.float32)
    weight[2] = 0.0
    weight[5] = np.float32(1e-44) * np.sign(rng.standard_normal(cg))
    weight[7] = (rng.standard_normal(cg) * 1e-10).astype(np.float32)
    return weight


@pytest.mark.parametrize("per_channel", [True, False], ids=["per_channel", "per_tensor"])
@pytest.mark.parametrize("zero_tensor", [False, True], ids=["zero_channel", "zero_tensor"])
def test_from_float_weight_scale_is_choose_qparams(isa, per_channel, zero_tensor):
    """One formula for a weight scale (issue 13, item 3): from_float's w_scale is what
    choose_qparams(w, int8, symmetric=True) gives (axis=0 per channel), for an all-zero
    channel or tensor (1.0), a subnormal or tiny channel (MIN_SCALE) and ordinary ones
    alike; and the layer runs bit for bit as the reference with those weights."""
    rng = np.random.default_rng(72)
    weight = weight_with_zero_and_tiny_channels(rng)
    if zero_tensor:
        weight[...] = 0.0
    k, cg = weight.shape
    axis = 0 if per_channel else None
    expected = fastpw.quant.choose_qparams(weight, np.int8, symmetric=True, axis=axis)
    x_quant, y_quant = (0.02, 128), (0.05, 3)
    layer = fastpw.QConv1x1.from_float(
        weight, x_quant=x_quant, y_quant=y_quant, per_channel=per_channel
    )
    scale = np.asarray(layer.w_quant.scale, np.float32)
    np.testing.assert_array_equal(scale, np.asarray(expected.scale, np.float32))
    assert np.all(np.asarray(expected.zero_point) == 0)
    if per_channel or zero_tensor:
        assert np.broadcast_to(scale, (k,))[2] == 1.0, "an all-zero channel gets 1.0"
    if per_channel and not zero_tensor:
        assert scale[5] == scale[7] == MIN_SCALE
        assert (layer.weight[2] == 0).all() and (layer.weight[5] == 0).all()
    x = random_x(rng, np.uint8, (2, cg, 3, 4))
    reference = qconv1x1_reference(
        x, layer.weight, None, x_quant=x_quant, w_quant=(scale, 0), y_quant=y_quant
    )
    assert_exact(layer(x), reference, "from_float layer vs reference")


@pytest.mark.parametrize("per_channel", [True, False], ids=["per_channel", "per_tensor"])
@pytest.mark.parametrize("out_dtype", [np.float32, np.uint8])
def test_from_float_bias_on_an_all_zero_channel(isa, per_channel, out_dtype):
    """A bias on an all-zero weight channel (a unit that only adds a constant): its
    scale follows the bias (it would not fit int32 beside a tiny scale), the bias
    survives quantization, and the layer runs bit for bit as the reference."""
    rng = np.random.default_rng(73)
    weight = weight_with_zero_and_tiny_channels(rng)
    k, cg = weight.shape
    bias = (rng.standard_normal(k) * 0.5).astype(np.float32)
    bias[2] = 0.75  # the all-zero channel's
    x_quant, y_quant = (0.02, 128), (0.01, 0)
    layer = fastpw.QConv1x1.from_float(
        weight,
        bias,
        x_quant=x_quant,
        y_quant=y_quant,
        per_channel=per_channel,
        out_dtype=out_dtype,
    )
    _, bq, w_scale = quantize_weights(weight, bias, x_quant[0], per_channel)
    scale = np.broadcast_to(np.asarray(layer.w_quant.scale, np.float32), (k,))
    np.testing.assert_array_equal(scale, w_scale)
    np.testing.assert_array_equal(layer.bias, bq)
    assert (layer.weight[2] == 0).all()
    step = float(np.float32(x_quant[0])) * float(scale[2])  # the bias's quantization step
    assert abs(float(layer.bias[2]) * step - 0.75) <= 0.5 * step, "the bias survives"
    x = random_x(rng, np.uint8, (2, cg, 3, 4))
    reference = qconv1x1_reference(
        x,
        layer.weight,
        layer.bias,
        x_quant=x_quant,
        w_quant=(np.asarray(layer.w_quant.scale), 0),
        y_quant=y_quant,
        out_dtype=out_dtype,
    )
    y = layer(x)
    assert_exact(y, reference, "from_float layer vs reference")
    if out_dtype == np.float32:  # the channel's output is its bias, everywhere
        np.testing.assert_allclose(y[:, 2], 0.75, rtol=1e-6, atol=0.5 * step)
    else:
        assert (y[:, 2] == 75).all()  # 0.75 / y_scale 0.01


@pytest.mark.parametrize("out_dtype", [None, np.uint8, np.int8, np.float32])
def test_from_float_approximates_the_float_layer(isa, out_dtype):
    """Sanity check of the whole pipeline: dequantized, the quantized layer's output is
    close to the float layer's on the dequantized input."""
    rng = np.random.default_rng(71)
    weight = rng.standard_normal((32, 48)).astype(np.float32) * 0.1
    bias = rng.standard_normal(32).astype(np.float32) * 0.1
    x_scale, x_zp = 4.0 / 255, 128
    xq = random_x(rng, np.uint8, (1, 48, 6, 6))
    xf = ((xq.astype(np.float32) - x_zp) * np.float32(x_scale)).astype(np.float32)
    yf = fastpw.conv1x1(xf, weight, bias)
    y_scale, y_zp = float(np.abs(yf).max()) / 100, 0 if out_dtype is np.int8 else 128
    layer = fastpw.QConv1x1.from_float(
        weight, bias, x_quant=(x_scale, x_zp), y_quant=(y_scale, y_zp), out_dtype=out_dtype
    )
    y = layer(xq)
    if y.dtype == np.float32:
        deq = y
    else:
        deq = (y.astype(np.float64) - y_zp) * y_scale
    assert np.abs(deq - yf).max() <= 0.02 * np.abs(yf).max() + y_scale
