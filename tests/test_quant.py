"""``fastpw.quant`` against independent numpy references, bit for bit where the contract
is exact.

- ``quantize`` / ``dequantize`` are exact by contract (ONNX QuantizeLinear /
  DequantizeLinear with float32 arithmetic): every comparison is equality with
  ``quantize_reference`` / ``dequantize_reference`` (``fastpw.testing``), which spell the
  contract out in numpy float32 steps (float64/int64 only where that is exact). Tests
  that compute take the ``isa`` fixture, so they run once per kernel family. "Witness"
  tests build inputs on which plausible near-miss formulas (float64 division, multiplying
  by a reciprocal, an unrounded float64 scale) give a different answer, and check that
  the witnesses really tell the formulas apart, so the equality tests have teeth.
- ``choose_qparams`` / ``Observer``: the documented formulas and their properties
  (0 exactly representable, the range covered within half a step).
- ``fold_batchnorm``: conv(folded) against BatchNorm(conv) in float64, within a rigorous
  float32 bound.
- ``QuantizedSequential``: the calibrated chain against a float64 float chain (SQNR) and,
  layer by layer, against fastpw.testing's int64 quantized reference, bit for bit.
"""

from __future__ import annotations

import io
import math

import kernels
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from layouts import along_axis

import fastpw
from fastpw import quant
from fastpw.quant import (
    Observer,
    QuantizedSequential,
    choose_qparams,
    dequantize,
    fold_batchnorm,
    quantize,
    sqnr,
)
from fastpw.testing import (
    QDTYPE_RANGES,
    conv1x1_reference,
    conv1x1_tolerance,
    dequantize_reference,
    qconv1x1_reference,
    qparams_reference,
    quantize_reference,
)

X_DTYPES = (np.uint8, np.int8)
LAYOUTS = ("NCHW", "NHWC")
MIN_SCALE = float(np.finfo(np.float32).eps)
#: float32's rounding unit and smallest normal number, for error bounds.
EPS32, TINY32 = float(np.finfo(np.float32).eps), float(np.finfo(np.float32).tiny)
#: A fraction of the profile's example count for the heavier property tests (they run
#: once per kernel family), so "dev" still gives many more than "ci".
FEWER_EXAMPLES = max(10, settings.default.max_examples // 4)


# ------------------------------------------------------------------------------- helpers


def assert_exact(got, expected, what=""):
    got = np.asarray(got)
    assert got.dtype == expected.dtype, f"{what}: dtype {got.dtype}, expected {expected.dtype}"
    assert got.shape == expected.shape, f"{what}: shape {got.shape}, expected {expected.shape}"
    if expected.dtype.kind == "f":
        # Bitwise, so -0.0 vs 0.0 and NaN payloads count too.
        differ = np.argwhere(got.view(np.uint32) != expected.view(np.uint32))
    else:
        differ = np.argwhere(got != expected)
    if differ.size:
        i = tuple(differ[0])
        raise AssertionError(
            f"{what}: {len(differ)} of {got.size} entries differ; first at {i}: "
            f"got {got[i]!r}, expected {expected[i]!r}"
        )


def arranged(values, kind, fill=0):
    """The same values in another memory arrangement (mostly a non-contiguous view)."""
    values = np.asarray(values)
    if kind == "contiguous":
        view = np.ascontiguousarray(values)
    elif kind == "transposed":
        view = np.ascontiguousarray(values.T).T
    elif kind == "strided":
        big = np.full(tuple(2 * s + 1 for s in values.shape), fill, dtype=values.dtype)
        index = tuple(slice(1, None, 2) for _ in values.shape)
        big[index] = values
        view = big[index]
    elif kind == "negative":
        flip = tuple(slice(None, None, -1) for _ in values.shape)
        view = np.ascontiguousarray(values[flip])[flip]
    else:
        raise AssertionError(kind)
    assert np.array_equal(view, values, equal_nan=values.dtype.kind == "f")
    return view


MEMORY = ("contiguous", "transposed", "strided", "negative")


def random_qparams(rng, dtype, count=None, scale_kind="any"):
    """(scale, zero point): float64 scales (usually not float32 numbers) and zero points
    in the dtype's range; arrays of ``count`` when given."""
    lo, hi = QDTYPE_RANGES[np.dtype(dtype)]
    shape = () if count is None else (count,)
    if scale_kind == "pow2":
        scale = 2.0 ** rng.integers(-10, 4, shape).astype(np.float64)
    else:
        scale = 10.0 ** rng.uniform(-4, 2, shape)
    zero_point = rng.integers(lo, hi + 1, shape)
    if count is None:
        return float(scale), int(zero_point)
    return scale, zero_point


def spread_data(rng, shape, scale, axis=None):
    """float32 data from about -200 to 200 steps of ``scale``: most values inside the
    range, some saturating either way."""
    s = along_axis(np.asarray(scale, np.float64), len(shape), axis)
    return (rng.uniform(-200, 200, shape) * s).astype(np.float32)


def sprinkle_specials(rng, x, scale, fraction=0.05):
    """Put +-inf, NaN, huge finite values, signed zeros and exact half steps at random
    places of float32 x (in place)."""
    flat = x.reshape(-1)
    count = max(1, int(flat.size * fraction))
    where = rng.choice(flat.size, size=min(count, flat.size), replace=False)
    s = float(np.float32(np.max(np.asarray(scale))))
    specials = np.array(
        [np.inf, -np.inf, np.nan, 3.4e38, -3.4e38, 0.0, -0.0, 2.5 * s, -1.5 * s, 0.5 * s],
        dtype=np.float32,
    )
    flat[where] = rng.choice(specials, size=where.size)
    return x


# ------------------------------------------------------------------- the references, by hand


def test_quantize_reference_by_hand():
    """The reference on values worked out on paper."""
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 0.49, 1e9, -1e9, np.inf, -np.inf, np.nan])
    got = quantize_reference(x, 1.0, 0, np.int8)
    np.testing.assert_array_equal(got, [0, 2, 2, 0, -2, -2, 0, 127, -128, 127, -128, 0])
    got = quantize_reference(x, 0.5, 10, np.uint8)
    np.testing.assert_array_equal(got, [11, 13, 15, 9, 7, 5, 11, 255, 0, 255, 0, 10])
    # per axis: row 0 scale 1 zp 0, row 1 scale 2 zp 100
    x = np.array([[3.0, -3.0], [3.0, -3.0]], np.float32)
    got = quantize_reference(x, [1.0, 2.0], [0, 100], np.uint8, axis=0)
    np.testing.assert_array_equal(got, [[3, 0], [102, 98]])
    got = dequantize_reference(np.array([0, 128, 255], np.uint8), 0.5, 128)
    np.testing.assert_array_equal(got, np.float32([-64.0, 0.0, 63.5]))


# ------------------------------------------------------------------------------ quantize


@st.composite
def quantize_problems(draw):
    ndim = draw(st.integers(1, 4))
    dims = st.one_of(st.integers(1, 6), st.sampled_from([1, 7, 15, 16, 17, 31, 33, 63, 65]))
    shape = tuple(draw(st.lists(dims, min_size=ndim, max_size=ndim)))
    while math.prod(shape) > 20000:  # shrink the largest dimension
        i = shape.index(max(shape))
        shape = shape[:i] + (1,) + shape[i + 1 :]
    return dict(
        shape=shape,
        dtype=draw(st.sampled_from(X_DTYPES)),
        axis=draw(st.one_of(st.none(), st.integers(-ndim, ndim - 1))),
        zp_kind=draw(st.sampled_from(["array", "scalar"])),
        scale_kind=draw(st.sampled_from(["any", "pow2", "scalar"])),
        memory=draw(st.sampled_from(MEMORY)),
        specials=draw(st.booleans()),
        out=draw(st.sampled_from([None, "contiguous", "strided"])),
        num_threads=draw(st.sampled_from([None, 1, 2])),
        x_dtype=draw(st.sampled_from([np.float32, np.float32, np.float64])),
        seed=draw(st.integers(0, 2**32 - 1)),
    )


@settings(max_examples=FEWER_EXAMPLES)
@given(p=quantize_problems())
def test_quantize_matches_reference(isa, p):
    rng = np.random.default_rng(p["seed"])
    dtype, axis, shape = p["dtype"], p["axis"], p["shape"]
    if axis is None:
        scale, zero_point = random_qparams(rng, dtype, scale_kind=p["scale_kind"])
    else:
        count = shape[axis]
        kind = "any" if p["scale_kind"] == "scalar" else p["scale_kind"]
        scale, zero_point = random_qparams(rng, dtype, count, kind)
        if p["scale_kind"] == "scalar":
            scale = float(scale[0])
        if p["zp_kind"] == "scalar":
            zero_point = int(zero_point[0])
    x = spread_data(rng, shape, scale, axis)
    if p["specials"]:
        sprinkle_specials(rng, x, scale)
    x = x.astype(p["x_dtype"])
    expected = quantize_reference(x, scale, zero_point, dtype, axis)
    xv = arranged(x, p["memory"])
    before = xv.copy()
    out = None if p["out"] is None else arranged(np.full(shape, 77, dtype), p["out"], fill=77)
    got = quantize(xv, (scale, zero_point), dtype, axis=axis, out=out, num_threads=p["num_threads"])
    if out is not None:
        assert got is out
    assert_exact(got, expected, "quantize")
    np.testing.assert_array_equal(xv, before, err_msg="x was modified")


@pytest.mark.parametrize("dtype", X_DTYPES)
@pytest.mark.parametrize(
    "shape", [(1,), (1, 1, 1, 1), (7,), (15,), (16,), (17,), (63,), (65,), (3, 5, 7), (2, 3, 5, 11)]
)
def test_quantize_per_tensor_shapes(isa, shape, dtype):
    rng = np.random.default_rng(sum(shape) * 7 + len(shape))
    scale, zero_point = random_qparams(rng, dtype)
    x = spread_data(rng, shape, scale)
    expected = quantize_reference(x, scale, zero_point, dtype)
    assert_exact(quantize(x, (scale, zero_point), dtype), expected, "per tensor")
    assert_exact(quantize(x, fastpw.QParams(scale, zero_point), dtype), expected, "QParams")


@pytest.mark.parametrize("dtype", X_DTYPES)
@pytest.mark.parametrize("per_element", [False, True], ids=["per_tensor", "per_element"])
def test_quantize_lane_edges(isa, dtype, per_element):
    """Runs of 1, 2, 3 and the running kernel's lanes -1, +0 and +1 (and twice that, from
    the kernel table) elements, per tensor and one scale per element: the vector loops'
    tails, both ways."""
    rng = np.random.default_rng(7)
    for n in sorted({1, 2, 3, *kernels.kernel_sizes(kernels.running_kernel("quantize"))}):
        scale, zero_point = random_qparams(rng, dtype, n if per_element else None)
        axis = 0 if per_element else None
        x = spread_data(rng, (n,), scale, axis)
        sprinkle_specials(rng, x, scale, fraction=0.2)
        q = quantize(x, (scale, zero_point), dtype, axis=axis)
        assert_exact(q, quantize_reference(x, scale, zero_point, dtype, axis), f"n={n}")
        back = dequantize(q, (scale, zero_point), axis=axis)
        assert_exact(back, dequantize_reference(q, scale, zero_point, axis), f"n={n}")


@pytest.mark.parametrize("dtype", X_DTYPES)
@pytest.mark.parametrize("axis", [0, 1, 2, 3, -1, -2, -3, -4])
@pytest.mark.parametrize("params", ["both_arrays", "scalar_zp", "scalar_scale", "both_scalar"])
def test_quantize_per_axis(isa, axis, dtype, params):
    rng = np.random.default_rng(abs(axis) * 10 + len(params))
    shape = (3, 5, 17, 33)
    count = shape[axis]
    scale, zero_point = random_qparams(rng, dtype, count)
    if params in ("scalar_zp", "both_scalar"):
        zero_point = int(zero_point[1 % count])
    if params in ("scalar_scale", "both_scalar"):
        scale = float(scale[0])
    x = spread_data(rng, shape, scale, axis)
    sprinkle_specials(rng, x, scale, fraction=0.01)
    expected = quantize_reference(x, scale, zero_point, dtype, axis)
    got = quantize(x, (scale, zero_point), dtype, axis=axis)
    assert_exact(got, expected, f"axis={axis}")
    # Each slice along the axis is the per-tensor quantization with its own parameters.
    if np.ndim(scale) == 1 and np.ndim(zero_point) == 1:
        for i in range(count):
            index = [slice(None)] * 4
            index[axis] = i
            index = tuple(index)
            expected_slice = quantize_reference(x[index], scale[i], zero_point[i], dtype)
            assert_exact(got[index], expected_slice, f"axis={axis} slice {i}")


@pytest.mark.parametrize("dtype", X_DTYPES)
@pytest.mark.parametrize("memory", ["transposed", "strided", "negative", "sliced"])
@pytest.mark.parametrize("axis", [None, 0, -1])
def test_quantize_non_contiguous(isa, memory, axis, dtype):
    rng = np.random.default_rng(3)
    if memory == "sliced":
        base = rng.normal(0, 3, (40, 51)).astype(np.float32)
        x = base[3:37:3, 50:1:-2]
    else:
        x = arranged(rng.normal(0, 3, (13, 29)).astype(np.float32), memory)
    assert not x.flags.c_contiguous
    count = None if axis is None else x.shape[axis]
    scale, zero_point = random_qparams(rng, dtype, count)
    expected = quantize_reference(x, scale, zero_point, dtype, axis)
    assert_exact(quantize(x, (scale, zero_point), dtype, axis=axis), expected, memory)


#: (shape, axis): above 65536 elements, so 2 threads run; rows of 16384-element chunks
#: (per tensor, axis 0 and a middle axis), and the per-element path (last axis), short
#: and longer than one chunk.
LARGE_CASES = [
    ((196_625,), None),
    ((3, 70_001), 0),
    ((4, 3, 20_011), 1),
    ((40_003, 5), -1),
    ((3, 70_001), -1),
]


@pytest.mark.parametrize("dtype", X_DTYPES)
@pytest.mark.parametrize("shape, axis", LARGE_CASES)
def test_quantize_large_and_threads(isa, shape, axis, dtype):
    rng = np.random.default_rng(math.prod(shape))
    count = None if axis is None else shape[axis]
    scale, zero_point = random_qparams(rng, dtype, count)
    x = spread_data(rng, shape, scale, axis)
    sprinkle_specials(rng, x, scale, fraction=0.001)
    expected = quantize_reference(x, scale, zero_point, dtype, axis)
    one = quantize(x, (scale, zero_point), dtype, axis=axis, num_threads=1)
    two = quantize(x, (scale, zero_point), dtype, axis=axis, num_threads=2)
    default = quantize(x, (scale, zero_point), dtype, axis=axis)
    assert_exact(one, expected, "1 thread")
    assert_exact(two, one, "2 threads vs 1")
    assert_exact(default, one, "default threads vs 1")


@pytest.mark.parametrize("dtype", X_DTYPES)
@pytest.mark.parametrize("shape, axis", LARGE_CASES[:3])
def test_dequantize_large_and_threads(isa, shape, axis, dtype):
    rng = np.random.default_rng(math.prod(shape) + 1)
    lo, hi = QDTYPE_RANGES[np.dtype(dtype)]
    count = None if axis is None else shape[axis]
    scale, zero_point = random_qparams(rng, dtype, count)
    xq = rng.integers(lo, hi + 1, shape).astype(dtype)
    expected = dequantize_reference(xq, scale, zero_point, axis)
    one = dequantize(xq, (scale, zero_point), axis=axis, num_threads=1)
    two = dequantize(xq, (scale, zero_point), axis=axis, num_threads=2)
    assert_exact(one, expected, "1 thread")
    assert_exact(two, one, "2 threads vs 1")


@pytest.mark.parametrize("dtype", X_DTYPES)
def test_quantize_float64_and_float16_input(isa, dtype):
    """Any float input is converted to float32 first, then divided in float32."""
    rng = np.random.default_rng(5)
    scale, zero_point = 1.0, (0 if np.dtype(dtype) == np.int8 else 128)
    # 2.5 + 1e-10 is 2.5 in float32 (ties to even: 2), but 3 if quantized in float64.
    x64 = np.array([2.5 + 1e-10, 3.5 - 1e-10, -2.5 - 1e-10, 0.5 + 1e-12, 1e300, -1e300, 1e-300])
    expected = quantize_reference(x64, scale, zero_point, dtype)
    np.testing.assert_array_equal(expected[:4].astype(int) - zero_point, [2, 4, -2, 0])
    with np.errstate(over="ignore"):  # 1e300 -> float32 inf, on purpose
        got = quantize(x64, (scale, zero_point), dtype)
    assert_exact(got, expected, "float64 witnesses")
    x64 = rng.normal(0, 50, (17, 19)) * 0.037
    scale, zero_point = random_qparams(rng, dtype)
    for x in (x64, x64.T, x64.astype(np.float16), x64.astype(">f4"), x64.astype(">f8")):
        expected = quantize_reference(x, scale, zero_point, dtype)
        assert_exact(quantize(x, (scale, zero_point), dtype), expected, str(x.dtype))


@pytest.mark.parametrize("dtype", X_DTYPES)
@pytest.mark.parametrize("axis", [None, 1])
@pytest.mark.parametrize("out_kind", ["contiguous", "transposed", "strided", "negative"])
def test_quantize_into_out(isa, out_kind, axis, dtype):
    rng = np.random.default_rng(11)
    shape = (9, 37)
    count = None if axis is None else shape[axis]
    scale, zero_point = random_qparams(rng, dtype, count)
    x = spread_data(rng, shape, scale, axis)
    sentinel = 99
    if out_kind == "strided":
        buf = np.full((2 * shape[0] + 1, 2 * shape[1] + 1), sentinel, dtype)
        out = buf[1::2, 1::2]
    else:
        out = arranged(np.full(shape, sentinel, dtype), out_kind)
        buf = None
    got = quantize(x, (scale, zero_point), dtype, axis=axis, out=out)
    assert got is out
    assert_exact(out, quantize_reference(x, scale, zero_point, dtype, axis), out_kind)
    if buf is not None:
        outside = np.ones(buf.shape, bool)
        outside[1::2, 1::2] = False
        assert np.all(buf[outside] == sentinel), "out: entries outside the view were written"
    # dequantize into out as well
    out32 = arranged(np.full(shape, 12345.0, np.float32), out_kind)
    got = dequantize(out, (scale, zero_point), axis=axis, out=out32)
    assert got is out32
    assert_exact(out32, dequantize_reference(out, scale, zero_point, axis), out_kind)


@pytest.mark.parametrize("dtype", X_DTYPES)
@pytest.mark.parametrize("zero_point_at", ["min", "mid", "max"])
def test_quantize_extreme_values(isa, dtype, zero_point_at):
    lo, hi = QDTYPE_RANGES[np.dtype(dtype)]
    zero_point = {"min": lo, "mid": (lo + hi) // 2, "max": hi}[zero_point_at]
    scale = 0.25
    f32 = np.finfo(np.float32)
    x = np.array(
        [np.inf, -np.inf, np.nan, -np.nan, f32.max, -f32.max, 1e30, -1e30, 0.0, -0.0, f32.tiny],
        dtype=np.float32,
    )
    # Pad to odd lengths around a vector width so vector bodies and tails both see them.
    for n in (11, 16, 17, 64, 67):
        xs = np.resize(x, n)
        got = quantize(xs, (scale, zero_point), dtype)
        assert_exact(got, quantize_reference(xs, scale, zero_point, dtype), f"n={n}")
    got = quantize(x, (scale, zero_point), dtype)
    assert got[0] == hi and got[1] == lo, "+-inf saturate"
    assert got[2] == zero_point and got[3] == zero_point, "NaN gives the zero point"
    assert got[4] == hi and got[5] == lo and got[6] == hi and got[7] == lo, "huge values saturate"
    assert got[8] == got[9] == got[10] == zero_point
    # a tiny scale makes x / scale overflow to inf: it still saturates
    got = quantize(np.float32([1e30, -1e30, 1.0, -1.0]), (1e-30, zero_point), dtype)
    np.testing.assert_array_equal(got, [hi, lo, hi, lo])


@pytest.mark.parametrize("dtype", X_DTYPES)
@pytest.mark.parametrize("scale", [1.0, 0.5, 2.0**-7, 4.0, 3.0, 0.375])
def test_quantize_ties_round_half_to_even(isa, dtype, scale):
    """x = (k + 1/2) * scale, exact in float32, and x / scale exactly k + 1/2."""
    lo, hi = QDTYPE_RANGES[np.dtype(dtype)]
    zero_point = 0 if lo < 0 else 128
    k = np.arange(-140, 140)
    x = ((k + 0.5) * scale).astype(np.float32)
    assert np.all(x.astype(np.float64) == (k + 0.5) * scale), "ties not exact in float32"
    assert np.all(np.divide(x, np.float32(scale), dtype=np.float32) == k + 0.5)
    even = np.where(k % 2 == 0, k, k + 1)  # the even one of k and k + 1
    expected = np.clip(even + zero_point, lo, hi).astype(dtype)
    assert_exact(quantize_reference(x, scale, zero_point, dtype), expected, "reference")
    assert_exact(quantize(x, (scale, zero_point), dtype), expected, "quantize")


def near_miss_quotients(x32, scale64):
    """rint of x / scale under the contract and under formulas an implementation might
    use instead."""
    s32 = scale64.astype(np.float32)
    x64 = x32.astype(np.float64)
    with np.errstate(all="ignore"):
        candidates = {
            "contract": np.divide(x32, s32, dtype=np.float32),
            "float64 division": x64 / s32.astype(np.float64),
            "float64 scale, not rounded to float32": x64 / scale64,
            "times float32(1 / scale)": x32 * (np.float32(1) / s32),
            "times float64 reciprocal": x64 * (1.0 / s32.astype(np.float64)),
        }
    return {name: np.rint(v.astype(np.float64)) for name, v in candidates.items()}


def quantize_witnesses(count=6, seed=0):
    """(x32, scale64): values next to half steps where every near-miss formula's rint
    differs from the contract's on at least ``count`` entries (|q| < 100)."""
    rng = np.random.default_rng(seed)
    xs, scales, found = [], [], {}
    for _ in range(200):
        scale64 = 10.0 ** rng.uniform(-3, 1)
        s32 = np.float32(scale64)
        centers = (np.arange(-99, 99) + 0.5) * float(s32)
        base = centers.astype(np.float32)
        x32 = np.concatenate([base, np.nextafter(base, np.float32(np.inf))])
        x32 = np.concatenate([x32, np.nextafter(base, np.float32(-np.inf))])
        scale_arr = np.full(x32.shape, scale64)
        q = near_miss_quotients(x32, scale_arr)
        for name, alt in q.items():
            if name == "contract":
                continue
            for i in np.flatnonzero(alt != q["contract"])[:2]:
                found[name] = found.get(name, 0) + 1
                xs.append(x32[i])
                scales.append(scale64)
        if len(found) == len(q) - 1 and min(found.values()) >= count:
            break
    return np.array(xs, np.float32), np.array(scales), found


@pytest.mark.parametrize("dtype", X_DTYPES)
def test_quantize_divides_in_float32(isa, dtype):
    """On inputs where float64 division, a reciprocal multiply or an unrounded scale would
    round the other way, quantize follows the contract."""
    x32, scales, found = quantize_witnesses()
    q = near_miss_quotients(x32, scales)
    for name, alt in q.items():
        if name != "contract":
            assert np.count_nonzero(alt != q["contract"]) >= 6, f"no witness for {name}"
    zero_point = 0 if np.dtype(dtype) == np.int8 else 128
    expected = quantize_reference(x32, scales, zero_point, dtype, axis=0)
    np.testing.assert_array_equal(expected.astype(np.int64) - zero_point, q["contract"])
    # per element (one scale per entry) ...
    assert_exact(quantize(x32, (scales, zero_point), dtype, axis=0), expected, "per element")
    # ... per channel with a run of entries per scale, and per tensor, one scale at a time
    x2 = np.stack([x32, x32[::-1]], axis=1)  # (n, 2): axis 0, inner 2
    expected2 = quantize_reference(x2, scales, zero_point, dtype, axis=0)
    assert_exact(quantize(x2, (scales, zero_point), dtype, axis=0), expected2, "per channel")
    for s in np.unique(scales)[:10]:
        sel = x32[scales == s]
        sel = np.resize(sel, 37)  # long enough for a vector body
        expected = quantize_reference(sel, s, zero_point, dtype)
        assert_exact(quantize(sel, (s, zero_point), dtype), expected, f"scale {s}")


def test_quantize_empty_arrays(isa):
    for shape, axis, scale in (((0,), None, 0.1), ((0, 3), 1, np.ones(3)), ((0, 3), 0, [])):
        got = quantize(np.zeros(shape, np.float32), (scale, 3), np.uint8, axis=axis)
        assert got.shape == shape and got.dtype == np.uint8
        back = dequantize(got, (scale, 3), axis=axis)
        assert back.shape == shape and back.dtype == np.float32


@pytest.mark.parametrize("dtype", X_DTYPES)
def test_zero_dimensional_arrays_keep_their_shape(dtype):
    """Elementwise functions return an array of the input's shape, 0-d included."""
    zero_point = 3
    x = np.array(2.0, np.float32)
    got = quantize(x, (0.5, zero_point), dtype)
    assert got.shape == (), f"quantize of a 0-d array returned shape {got.shape}"
    assert got[()] == 7
    got = dequantize(np.array(7, dtype), (0.5, zero_point))
    assert got.shape == (), f"dequantize of a 0-d array returned shape {got.shape}"
    assert got[()] == 2.0
    out = np.empty((), dtype)
    assert quantize(x, (0.5, zero_point), dtype, out=out) is out
    assert out[()] == 7


def test_zero_dimensional_arrays_have_no_axis():
    """A 0-d array has no axis 0: per-axis parameters cannot apply to it."""
    with pytest.raises(ValueError, match="out of range"):
        quantize(np.array(2.0, np.float32), (0.5, 3), axis=0)
    with pytest.raises(ValueError, match="out of range"):
        dequantize(np.array(7, np.uint8), (0.5, 3), axis=0)


# ---------------------------------------------------------------------------- dequantize


@pytest.mark.parametrize("dtype", X_DTYPES)
@pytest.mark.parametrize("scale", [0.1, 2.0**-7, 3.3e-5, 0.0123456789, 7.77, 1e30])
def test_dequantize_all_values_per_tensor(isa, dtype, scale):
    lo, hi = QDTYPE_RANGES[np.dtype(dtype)]
    xq = np.arange(lo, hi + 1).astype(dtype)
    for zero_point in (lo, lo + 1, 0, 17, (lo + hi) // 2, hi):
        expected = dequantize_reference(xq, scale, zero_point)
        got = dequantize(xq, (scale, zero_point))
        assert_exact(got, expected, f"zp={zero_point}")
        assert got[xq.astype(np.int64) == zero_point][0] == 0.0, "q = zp is real 0"


def test_dequantize_reference_is_float32_arithmetic():
    """float32(q - zp) * float32(scale) differs, on some of the 256 values, from the
    same product with the unrounded float64 scale, and from q * s - zp * s: the tests
    above would catch either."""
    xq = np.arange(256).astype(np.uint8)
    zero_point = 37
    diff = xq.astype(np.int64) - zero_point
    ref = dequantize_reference(xq, 0.1, zero_point)
    assert ref.dtype == np.float32
    assert np.array_equal(ref, diff.astype(np.float32) * np.float32(0.1))
    float64_scale = (diff * 0.1).astype(np.float32)
    distributed = xq.astype(np.float32) * np.float32(0.1) - np.float32(zero_point * np.float32(0.1))
    assert np.count_nonzero(ref != float64_scale) > 0
    assert np.count_nonzero(ref != distributed) > 0
    got = dequantize(xq, (0.1, zero_point))
    assert_exact(got, ref, "dequantize")


@pytest.mark.parametrize("dtype", X_DTYPES)
@pytest.mark.parametrize("axis", [0, 1, -1, -2])
@pytest.mark.parametrize("zp_kind", ["array", "scalar"])
def test_dequantize_all_values_per_axis(isa, dtype, axis, zp_kind):
    """Every one of the 256 values in every channel, with its own scale and zero point."""
    lo, hi = QDTYPE_RANGES[np.dtype(dtype)]
    rng = np.random.default_rng(abs(axis) + 2 * (zp_kind == "array"))
    channels = 5
    values = np.arange(lo, hi + 1)
    table = np.stack([np.roll(values, 31 * c) for c in range(channels)])  # (5, 256)
    xq = table.astype(dtype)
    if axis in (1, -1):
        xq = np.ascontiguousarray(xq.T)  # (256, 5): the channel axis is the last one
    scale, zero_point = random_qparams(rng, dtype, channels)
    if zp_kind == "scalar":
        zero_point = int(zero_point[0])
    channel_axis = 0 if axis in (0, -2) else 1
    expected = dequantize_reference(xq, scale, zero_point, channel_axis)
    got = dequantize(xq, (scale, zero_point), axis=axis)
    assert_exact(got, expected, f"axis={axis}")
    got = dequantize(arranged(xq, "transposed"), (scale, zero_point), axis=axis)
    assert_exact(got, expected, f"axis={axis}, transposed input")


@pytest.mark.parametrize("dtype", X_DTYPES)
def test_round_trip_is_identity_on_the_grid(isa, dtype):
    """quantize(dequantize(q)) == q for every q when scale is a power of two."""
    lo, hi = QDTYPE_RANGES[np.dtype(dtype)]
    xq = np.arange(lo, hi + 1).astype(dtype)
    for scale, zero_point in ((0.5, 3), (2.0**-10, lo), (8.0, hi)):
        back = quantize(dequantize(xq, (scale, zero_point)), (scale, zero_point), dtype)
        assert_exact(back, xq, f"scale {scale}")


# ---------------------------------------------------------------------- choose_qparams


@st.composite
def float_data(draw, max_size=300):
    """(float32 array, kind): all-positive, all-negative, mixed, all-zero, constant;
    magnitudes from 1e-30 to 1e30."""
    kind = draw(st.sampled_from(["positive", "negative", "mixed", "mixed", "zero", "constant"]))
    exponent = draw(st.floats(-30, 30))
    size = draw(st.integers(1, max_size))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    magnitude = 10.0**exponent
    if kind == "positive":
        x = rng.uniform(0, magnitude, size) + magnitude * draw(st.sampled_from([0, 0.5]))
    elif kind == "negative":
        x = -rng.uniform(0, magnitude, size) - magnitude * draw(st.sampled_from([0, 0.5]))
    elif kind == "mixed":
        x = rng.normal(draw(st.floats(-2, 2)) * magnitude, magnitude, size)
    elif kind == "zero":
        x = np.zeros(size)
    else:
        x = np.full(size, draw(st.sampled_from([-1, 1])) * magnitude)
    return x.astype(np.float32), kind


def check_valid_qparams(qp, dtype):
    lo, hi = QDTYPE_RANGES[np.dtype(dtype)]
    assert isinstance(qp, fastpw.QParams)
    scale, zero_point = qp
    assert isinstance(scale, float) and not isinstance(zero_point, bool)
    assert isinstance(zero_point, int)
    assert math.isfinite(scale) and scale >= MIN_SCALE
    assert float(np.float32(scale)) == scale, "scale is not a float32 number"
    assert lo <= zero_point <= hi
    # 0 is exactly representable
    zero = quantize(np.zeros(3, np.float32), qp, dtype)
    assert np.all(zero == zero_point)
    assert np.all(dequantize(zero, qp) == 0.0)


def check_covers(x, qp, dtype):
    """Every value of x, quantized and dequantized, within half a step (and float32
    rounding slack) of itself."""
    back = dequantize(quantize(x, qp, dtype), qp).astype(np.float64)
    x64 = x.astype(np.float64)
    tol = 0.5 * qp.scale * (1 + 1e-5) + 4 * EPS32 * np.abs(x64) + TINY32
    err = np.abs(back - x64)
    assert np.all(err <= tol), (
        f"max error {err.max():.6g} > scale/2 = {qp.scale / 2:.6g} (qparams {tuple(qp)})"
    )


@given(data=float_data(), dtype=st.sampled_from(X_DTYPES), symmetric=st.booleans())
def test_choose_qparams_minmax_properties(data, dtype, symmetric):
    x, kind = data
    qp = choose_qparams(x, dtype, symmetric=symmetric)
    check_valid_qparams(qp, dtype)
    expected = qparams_reference(x.min(), x.max(), dtype, symmetric)
    assert tuple(qp) == expected
    if symmetric:
        assert qp.zero_point == (0 if np.dtype(dtype) == np.int8 else 128)
    if kind == "zero":
        assert qp.scale == 1.0
    check_covers(x, qp, dtype)
    # Data wider than MIN_SCALE's range uses (nearly) every level: the scale is not
    # larger than needed.
    lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    levels = 127.0 if symmetric else 255.0
    width = max(-lo, hi) if symmetric else hi - lo
    if width / levels > MIN_SCALE:
        assert qp.scale == pytest.approx(width / levels, rel=1e-6)


@given(data=float_data(), dtype=st.sampled_from(X_DTYPES), symmetric=st.booleans())
def test_choose_qparams_float64_and_int_input(data, dtype, symmetric):
    x, _ = data
    x64 = x.astype(np.float64)
    assert tuple(choose_qparams(x64, dtype, symmetric=symmetric)) == qparams_reference(
        x64.min(), x64.max(), dtype, symmetric
    )
    xi = np.rint(x64 / max(np.abs(x64).max(), 1e-300) * 1000).astype(np.int32)
    assert tuple(choose_qparams(xi, dtype, symmetric=symmetric)) == qparams_reference(
        xi.min(), xi.max(), dtype, symmetric
    )


@pytest.mark.parametrize("dtype", X_DTYPES)
@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("axis", [0, 1, 2, -1, -3])
def test_choose_qparams_per_axis(dtype, symmetric, axis):
    rng = np.random.default_rng(abs(axis) + 5 * symmetric)
    shape = (4, 6, 9)
    x = rng.normal(0, 1, shape) * 10.0 ** rng.uniform(-3, 3, shape[axis]).reshape(
        [-1 if d == axis % 3 else 1 for d in range(3)]
    )
    # one channel all positive, one all negative, one all zero
    index = [slice(None)] * 3
    for channel, op in ((0, np.abs), (1, lambda v: -np.abs(v)), (2, np.zeros_like)):
        index[axis] = channel
        x[tuple(index)] = op(x[tuple(index)])
    x = x.astype(np.float32)
    qp = choose_qparams(x, dtype, symmetric=symmetric, axis=axis)
    count = shape[axis]
    scale, zero_point = np.asarray(qp.scale), np.asarray(qp.zero_point)
    assert scale.shape == (count,) and zero_point.shape == (count,)
    assert scale.dtype == np.float32 and zero_point.dtype.kind == "i"
    for i in range(count):
        index[axis] = i
        channel = x[tuple(index)]
        expected = qparams_reference(channel.min(), channel.max(), dtype, symmetric)
        assert (float(scale[i]), int(zero_point[i])) == expected, f"channel {i}"
    # the per-axis qparams cover every channel and represent 0 exactly
    back = dequantize(quantize(x, qp, dtype, axis=axis), qp, axis=axis).astype(np.float64)
    s = along_axis(scale.astype(np.float64), 3, axis % 3)
    assert np.all(np.abs(back - x) <= 0.5 * s * (1 + 1e-5) + 4 * EPS32 * np.abs(x))
    zq = quantize(np.zeros(shape, np.float32), qp, dtype, axis=axis)
    assert np.all(zq == along_axis(zero_point, 3, axis % 3))
    assert np.all(dequantize(zq, qp, axis=axis) == 0.0)


def outlier_data(seed=0, n=100_000, outliers=3):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, n)
    x[rng.choice(n, outliers, replace=False)] = [1e4, -5e3, 8e3][:outliers]
    return x.astype(np.float32)


@pytest.mark.parametrize("dtype", X_DTYPES)
@pytest.mark.parametrize("symmetric", [False, True])
def test_choose_qparams_percentile_ignores_outliers(dtype, symmetric):
    x = outlier_data()
    minmax = choose_qparams(x, dtype, symmetric=symmetric)
    pct = choose_qparams(x, dtype, symmetric=symmetric, method="percentile", percentile=99.99)
    check_valid_qparams(pct, dtype)
    assert pct.scale < minmax.scale / 50, (pct, minmax)
    # and the bulk of the data is still covered: 99.9% of it within half a step
    back = dequantize(quantize(x, pct, dtype), pct)
    inside = np.abs(back - x) <= 0.5 * pct.scale * (1 + 1e-5)
    assert np.mean(inside) > 0.999
    if symmetric:
        assert pct.zero_point == (0 if np.dtype(dtype) == np.int8 else 128)


@pytest.mark.parametrize("dtype", X_DTYPES)
@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("kind", ["outliers", "uniform", "positive", "negative"])
def test_choose_qparams_percentile_100_is_minmax(dtype, symmetric, kind):
    rng = np.random.default_rng(1)
    x = {
        "outliers": outlier_data(n=5000),
        "uniform": rng.uniform(-3, 5, 5000).astype(np.float32),
        "positive": rng.uniform(1, 5, 5000).astype(np.float32),
        "negative": rng.uniform(-5, -1, 5000).astype(np.float32),
    }[kind]
    minmax = choose_qparams(x, dtype, symmetric=symmetric)
    pct = choose_qparams(x, dtype, symmetric=symmetric, method="percentile", percentile=100)
    check_valid_qparams(pct, dtype)
    assert pct.scale == pytest.approx(minmax.scale, rel=2e-3)
    assert abs(pct.zero_point - minmax.zero_point) <= 1


@pytest.mark.parametrize("dtype", X_DTYPES)
def test_choose_qparams_percentile_all_zero(dtype):
    qp = choose_qparams(np.zeros(100, np.float32), dtype, method="percentile")
    check_valid_qparams(qp, dtype)
    assert qp.scale == 1.0


def test_choose_qparams_beyond_float32_range():
    """float64 data whose range does not fit float32 scales: either a ValueError or
    valid qparams, never an infinite scale (which quantize would then reject)."""
    for x, kwargs in (
        (np.array([0.0, 1e300]), {}),
        (np.array([-1e300, 1e300]), {"symmetric": True}),
        (np.array([[0.0, 1e300], [1.0, 2.0]]), {"axis": 0}),
    ):
        try:
            with np.errstate(over="ignore"):
                qp = choose_qparams(x, **kwargs)
        except ValueError:
            continue
        scale = np.asarray(qp.scale, np.float64)
        assert np.all(np.isfinite(scale)), f"choose_qparams({x.tolist()}) gave scale {qp.scale}"


# ------------------------------------------------------------------------------ Observer


@pytest.mark.parametrize("dtype", X_DTYPES)
@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("axis", [None, 1, -1])
def test_observer_minmax_equals_one_shot(dtype, symmetric, axis):
    rng = np.random.default_rng(7)
    batches = [
        rng.normal(mean, std, (n, 6, 5)).astype(np.float32)
        for n, mean, std in ((2, 0, 1), (3, 2, 0.5), (1, -4, 3), (4, 0, 0.1))
    ]
    observer = Observer(dtype, symmetric=symmetric, axis=axis)
    for batch in batches:
        observer.update(batch)
    assert observer.batches == len(batches)
    got = observer.qparams()
    expected = choose_qparams(np.concatenate(batches), dtype, symmetric=symmetric, axis=axis)
    np.testing.assert_array_equal(got.scale, expected.scale)
    np.testing.assert_array_equal(got.zero_point, expected.zero_point)
    # and independently of choose_qparams
    data = np.concatenate(batches)
    if axis is None:
        assert tuple(got) == qparams_reference(data.min(), data.max(), dtype, symmetric)
    else:
        moved = np.moveaxis(data, axis, 0).reshape(data.shape[axis], -1)
        for i, row in enumerate(moved):
            expected_i = qparams_reference(row.min(), row.max(), dtype, symmetric)
            assert (float(got.scale[i]), int(got.zero_point[i])) == expected_i
    # qparams() does not consume anything: asking twice gives the same answer
    again = observer.qparams()
    np.testing.assert_array_equal(again.scale, got.scale)
    assert "batches=4" in repr(observer)


@pytest.mark.parametrize("dtype", X_DTYPES)
@pytest.mark.parametrize("symmetric", [False, True])
def test_observer_percentile_growing_range(dtype, symmetric):
    """Batches whose range grows (the histogram is re-binned on each) end close to the
    one-shot percentile of their concatenation."""
    rng = np.random.default_rng(8)
    batches = [rng.normal(0.3 * std, std, 20_000).astype(np.float32) for std in (1, 2, 4, 8)]
    batches[2][:2] = [200.0, -150.0]  # outliers that the percentile should ignore
    observer = Observer(dtype, symmetric=symmetric, method="percentile", percentile=99.9)
    for batch in batches:
        observer.update(batch)
    got = observer.qparams()
    check_valid_qparams(got, dtype)
    data = np.concatenate(batches)
    one_shot = choose_qparams(
        data, dtype, symmetric=symmetric, method="percentile", percentile=99.9
    )
    assert got.scale == pytest.approx(one_shot.scale, rel=0.05)
    assert abs(got.zero_point - one_shot.zero_point) <= 3
    # and both close to the exact percentiles (of |x| when symmetric)
    if symmetric:
        amax = np.percentile(np.abs(data.astype(np.float64)), 99.9)
        exact = amax / 127
    else:
        lo, hi = np.percentile(data.astype(np.float64), [0.1, 99.9])
        exact = (hi - lo) / 255
    assert got.scale == pytest.approx(exact, rel=0.05)


@pytest.mark.parametrize("method", ["minmax", "percentile"])
@pytest.mark.parametrize("symmetric", [False, True])
def test_observer_integer_input(method, symmetric):
    """Integer batches are observed as their values: the same qparams as the same data
    in float32. int8 data holding -128 is the trap: np.abs(int8(-128)) is -128."""
    for dtype in (np.int8, np.int16, np.int32, np.uint8):
        lo = max(int(np.iinfo(dtype).min), -128)
        # half the data at the bottom of the range, the rest in 0..5
        x = np.concatenate([np.full(1000, lo), np.arange(1000) % 6]).astype(dtype)
        kwargs = dict(symmetric=symmetric, method=method, percentile=99.9)
        got = choose_qparams(x, np.int8, **kwargs)
        expected = choose_qparams(x.astype(np.float32), np.int8, **kwargs)
        assert got.scale == pytest.approx(expected.scale, rel=1e-6), (dtype, got, expected)
        assert got.zero_point == expected.zero_point, (dtype, got, expected)


def test_observer_errors():
    with pytest.raises(ValueError, match="no data"):
        Observer().qparams()
    with pytest.raises(ValueError, match="no data"):
        Observer(method="percentile").qparams()
    with pytest.raises(ValueError, match="no data"):
        Observer(axis=0).qparams()
    for bad in (np.nan, np.inf, -np.inf):
        for method in ("minmax", "percentile"):
            observer = Observer(method=method)
            observer.update(np.ones(4, np.float32))
            x = np.float32([1.0, 2.0, bad, 3.0])
            with pytest.raises(ValueError, match="NaN or Inf"):
                observer.update(x)
            assert observer.batches == 1, "a rejected batch must not count"
        with pytest.raises(ValueError, match="NaN or Inf"):
            choose_qparams(np.float32([0.0, bad]))
        with pytest.raises(ValueError, match="NaN or Inf"):
            Observer(axis=0).update(np.float32([[0.0, bad]]))
    with pytest.raises(ValueError, match="method"):
        Observer(method="kl")
    with pytest.raises(ValueError, match="method"):
        choose_qparams(np.ones(3), method="mse")
    for p in (50, 49.9, 0, -1, 100.01, 101, np.nan, np.inf):
        with pytest.raises(ValueError, match="percentile"):
            Observer(method="percentile", percentile=p)
    with pytest.raises(TypeError, match="percentile"):
        Observer(method="percentile", percentile="high")
    Observer(method="percentile", percentile=50.001)
    Observer(method="percentile", percentile=100)
    with pytest.raises(ValueError, match="per tensor"):
        Observer(method="percentile", axis=0)
    with pytest.raises(ValueError, match="per tensor"):
        choose_qparams(np.ones((2, 2)), method="percentile", axis=1)
    with pytest.raises(TypeError, match="axis"):
        Observer(axis=1.0)
    with pytest.raises(TypeError, match="axis"):
        Observer(axis="0")
    with pytest.raises(ValueError, match="out of range"):
        Observer(axis=2).update(np.ones((2, 2)))
    with pytest.raises(ValueError, match="out of range"):
        choose_qparams(np.ones((2, 2)), axis=-3)
    with pytest.raises(ValueError, match="uint8 or int8"):
        Observer(np.int16)
    with pytest.raises(ValueError, match="uint8 or int8"):
        choose_qparams(np.ones(3), np.float32)
    with pytest.raises(ValueError, match="empty"):
        Observer().update(np.zeros((0, 3), np.float32))
    with pytest.raises(TypeError):
        Observer().update(np.array([True, False]))
    with pytest.raises(TypeError):
        Observer().update(np.array([1 + 2j]))
    observer = Observer(axis=1)
    observer.update(np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match="length"):
        observer.update(np.ones((2, 4), np.float32))


# ------------------------------------------------------------------------ fold_batchnorm


def batchnorm_reference(y, gamma, beta, mean, var, eps, layout):
    """float64 BatchNorm over the channel axis of a conv output."""
    shape = (1, -1, 1, 1) if layout == "NCHW" else (1, 1, 1, -1)

    def c(v):
        return np.asarray(v, np.float64).reshape(shape)

    return (y - c(mean)) / np.sqrt(c(var) + eps) * c(gamma) + c(beta)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("weight_ndim", [2, 4])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("eps", [1e-5, 1e-3, 0.0])
def test_fold_batchnorm(isa, layout, weight_ndim, with_bias, eps):
    rng = np.random.default_rng(weight_ndim + 10 * with_bias + int(eps * 1e5))
    k, c = 13, 21
    weight = rng.normal(0, 1, (k, c)).astype(np.float32)
    if weight_ndim == 4:
        weight = weight.reshape(k, c, 1, 1)
    bias = rng.normal(0, 1, k).astype(np.float32) if with_bias else None
    gamma = rng.normal(1, 0.5, k)
    gamma[0] = -0.7  # a negative gamma flips the channel
    beta = rng.normal(0, 1, k)
    mean = rng.normal(0, 2, k)
    var = rng.uniform(0.01, 4, k)
    folded_weight, folded_bias = fold_batchnorm(weight, bias, gamma, beta, mean, var, eps=eps)
    assert folded_weight.dtype == np.float32 and folded_weight.shape == weight.shape
    assert folded_bias.dtype == np.float32 and folded_bias.shape == (k,)
    # the documented formula, in float64
    factor = gamma / np.sqrt(var + eps)
    w64 = weight.reshape(k, c).astype(np.float64)
    b64 = np.zeros(k) if bias is None else bias.astype(np.float64)
    np.testing.assert_allclose(folded_weight.reshape(k, c), w64 * factor[:, None], rtol=1e-7)
    np.testing.assert_allclose(folded_bias, beta + (b64 - mean) * factor, rtol=1e-6, atol=1e-7)
    # conv(folded) == BatchNorm(conv(original)), within float32 error
    shape = (2, c, 5, 7) if layout == "NCHW" else (2, 5, 7, c)
    x = rng.normal(0, 1, shape).astype(np.float32)
    got = fastpw.conv1x1(x, folded_weight, folded_bias, layout=layout)
    expected = batchnorm_reference(
        conv1x1_reference(x, weight, bias, layout=layout), gamma, beta, mean, var, eps, layout
    )
    # kernel error on the folded weights, plus the float32 rounding of the folded weights
    # and bias (half an ulp each, relative)
    magnitude = conv1x1_reference(
        np.abs(x), np.abs(folded_weight), np.abs(folded_bias), layout=layout
    )
    tol = conv1x1_tolerance(x, folded_weight, folded_bias, layout=layout) + EPS32 * magnitude
    err = np.abs(got.astype(np.float64) - expected)
    assert np.all(err <= tol), (
        f"max error {err.max():.3g}, tolerance there {tol.flat[err.argmax()]:.3g}"
    )
    # and a Conv1x1 layer built from them agrees bit for bit with the function
    layer = fastpw.Conv1x1(folded_weight, folded_bias, layout=layout)
    np.testing.assert_array_equal(layer(x), got)


def test_fold_batchnorm_errors():
    k, c = 4, 3
    w = np.ones((k, c), np.float32)
    ones, zeros = np.ones(k), np.zeros(k)
    ok = dict(gamma=ones, beta=zeros, mean=zeros, var=ones)
    fold_batchnorm(w, None, **ok)
    fold_batchnorm(w.astype(np.float64), None, **ok)
    for bad_weight in (
        np.ones((k, c, 3, 3)),
        np.ones((k, c, 1)),
        np.ones(k),
        np.ones((k, c, 1, 2)),
    ):
        with pytest.raises(ValueError, match="weight"):
            fold_batchnorm(bad_weight.astype(np.float32), None, **ok)
    with pytest.raises(TypeError, match="weight"):
        fold_batchnorm(np.ones((k, c), np.int32), None, **ok)
    for name in ("gamma", "beta", "mean", "var"):
        for bad in (np.ones(k + 1), np.ones((k, 1)), 1.0):
            with pytest.raises(ValueError, match=name):
                fold_batchnorm(w, None, **{**ok, name: bad})
    for bad_bias in (np.ones(k + 1), np.ones((1, k)), 1.0):
        with pytest.raises(ValueError, match="bias"):
            fold_batchnorm(w, bad_bias, **ok)
    with pytest.raises(ValueError, match="var"):
        fold_batchnorm(w, None, **{**ok, "var": -ones})
    with pytest.raises(ValueError, match="var"):
        fold_batchnorm(w, None, **{**ok, "var": zeros}, eps=0.0)
    with pytest.raises(ValueError, match="eps"):
        fold_batchnorm(w, None, **ok, eps=-1e-5)


# ---------------------------------------------------------------------------------- sqnr


def test_sqnr_known_values():
    rng = np.random.default_rng(0)
    ref = rng.normal(0, 1, (7, 9))
    assert sqnr(ref, ref * (1 + 0.01)) == pytest.approx(40.0, abs=1e-9)
    assert sqnr(ref, ref * (1 - 0.1)) == pytest.approx(20.0, abs=1e-9)
    assert sqnr(np.ones(100), np.full(100, 1.1)) == pytest.approx(20.0, abs=1e-9)
    assert sqnr(ref, np.zeros_like(ref)) == pytest.approx(0.0, abs=1e-12)
    assert sqnr(ref, ref) == math.inf
    assert sqnr(np.zeros(3), np.zeros(3)) == math.inf
    assert sqnr(np.zeros(3), np.ones(3)) == -math.inf
    # float32 input is computed in float64: tiny noise is not lost
    ref32 = np.ones(1000, np.float32)
    approx32 = ref32.copy()
    approx32[0] = np.nextafter(np.float32(1), np.float32(2))
    expected = 10 * math.log10(1000 / float(approx32[0] - 1) ** 2)
    assert sqnr(ref32, approx32) == pytest.approx(expected, rel=1e-12)
    assert isinstance(sqnr(ref, ref * 1.01), float)
    # signal 25, noise 0.25: 20 dB
    assert sqnr([3.0, 4.0], [3.0, 4.5]) == pytest.approx(10 * math.log10(25 / 0.25))


def test_sqnr_shape_mismatch():
    with pytest.raises(ValueError, match="shape"):
        sqnr(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="shape"):
        sqnr(np.ones((2, 3)), np.ones((3, 2)))
    with pytest.raises(ValueError, match="shape"):
        sqnr(np.ones((1, 3)), np.ones(3))


# ------------------------------------------------------------------- QuantizedSequential


def make_chain(rng, layout, channels=(8, 32, 16, 4), activations=("relu", "relu6", None)):
    layers = []
    for (c, k), activation in zip(
        zip(channels, channels[1:], strict=False), activations, strict=False
    ):
        weight = (rng.normal(0, 1, (k, c)) / math.sqrt(c)).astype(np.float32)
        bias = rng.normal(0, 0.3, k).astype(np.float32)
        layers.append(fastpw.Conv1x1(weight, bias, layout=layout, activation=activation))
    return layers


def random_input(rng, layout, n=2, c=8, h=6, w=7):
    shape = (n, c, h, w) if layout == "NCHW" else (n, h, w, c)
    return rng.normal(0.5, 1.5, shape).astype(np.float32)


def float_chain_reference(layers, x):
    """Every boundary of the float chain in float64: [x, y0, y1, ...]."""
    values = [np.asarray(x, np.float64)]
    for layer in layers:
        values.append(
            conv1x1_reference(
                values[-1],
                layer.weight,
                layer.bias,
                layout=layer.layout,
                stride=layer.stride,
                groups=layer.groups,
                activation=layer.activation,
            )
        )
    return values


def check_layer_by_layer(net, xq, layout):
    """Each layer of the chain, fed the previous layer's 8-bit output, equals the int64
    reference on that output; returns the last output."""
    q = xq
    for i, layer in enumerate(net.layers):
        expected = qconv1x1_reference(
            q,
            layer.weight,
            layer.bias,
            x_quant=layer.x_quant,
            w_quant=layer.w_quant,
            y_quant=layer.y_quant,
            layout=layout,
            stride=layer.stride,
            groups=layer.groups,
            activation=layer.activation,
        )
        q = layer(q)
        assert_exact(q, expected, f"layer {i}")
    return q


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("x_dtype", X_DTYPES)
@pytest.mark.parametrize("per_channel", [True, False], ids=["per_channel", "per_tensor"])
def test_calibrate_chain(isa, layout, x_dtype, per_channel):
    # A fixed seed: a fresh x can stray past the calibration range of a 4-channel output
    # (and saturate there) for unlucky seeds; this one keeps the margin above 30 dB wide.
    rng = np.random.default_rng(5)
    layers = make_chain(rng, layout)
    calibration = [random_input(rng, layout) for _ in range(4)]
    net = QuantizedSequential.calibrate(
        layers, calibration, x_dtype=x_dtype, per_channel=per_channel
    )
    x_dtype = np.dtype(x_dtype)
    assert net.x_dtype == x_dtype
    assert len(net.layers) == len(layers)
    assert len(net.boundary_qparams) == len(layers) + 1
    assert net.input_qparams == net.boundary_qparams[0]
    assert net.output_qparams == net.boundary_qparams[-1]
    assert net.float_layers == layers
    for qp in net.boundary_qparams:
        check_valid_qparams(qp, x_dtype)

    # the qparams chain: each layer's output qparams are the next layer's input qparams
    assert net.layers[0].x_quant == net.boundary_qparams[0]
    for i in range(len(layers) - 1):
        assert net.layers[i].y_quant == net.layers[i + 1].x_quant, f"layer {i}"
    for i, layer in enumerate(net.layers):
        assert layer.x_quant == net.boundary_qparams[i]
        assert layer.y_quant == net.boundary_qparams[i + 1]
        assert isinstance(layer, fastpw.QConv1x1)
        assert layer.layout == layout and layer.activation == layers[i].activation
        assert layer.isa == fastpw.isa("int8")
        assert np.ndim(layer.w_quant.scale) == (1 if per_channel else 0)
        assert np.all(np.asarray(layer.w_quant.zero_point) == 0)

    # each boundary's qparams: minmax of the calibration data there (float64 chain; the
    # float32 chain differs in the last bits, hence approx)
    boundaries = [float_chain_reference(layers, x) for x in calibration]
    for i, qp in enumerate(net.boundary_qparams):
        values = np.concatenate([b[i].ravel() for b in boundaries])
        scale, zero_point = qparams_reference(values.min(), values.max(), x_dtype)
        assert qp.scale == pytest.approx(scale, rel=1e-5), f"boundary {i}"
        assert abs(qp.zero_point - zero_point) <= 1, f"boundary {i}"

    # net(x) close to the float chain on data like the calibration data
    x = random_input(rng, layout)
    y_float = float_chain_reference(layers, x)[-1]
    y = net(x)
    assert y.dtype == np.float32 and y.shape == y_float.shape
    assert sqnr(y_float, y) > 30.0
    # and on a calibration batch itself (nothing saturates there)
    assert sqnr(float_chain_reference(layers, calibration[1])[-1], net(calibration[1])) > 30.0

    # net(x) == dequantize(run_quantized(quantize_input(x))), bit for bit
    xq = net.quantize_input(x)
    assert_exact(xq, quantize_reference(x, *net.input_qparams, x_dtype), "quantize_input")
    yq = net.run_quantized(xq)
    assert yq.dtype == x_dtype
    assert_exact(y, dequantize_reference(yq, *net.output_qparams), "net(x)")
    assert_exact(net(x, num_threads=1), y, "net(x, num_threads=1)")

    # layer by layer, the int64 reference on the previous layer's 8-bit output
    assert_exact(yq, check_layer_by_layer(net, xq, layout), "run_quantized vs layer by layer")

    # the chain of references alone (no fastpw output fed back in) ends at the same bits
    q = quantize_reference(x, *net.input_qparams, x_dtype)
    for layer in net.layers:
        q = qconv1x1_reference(
            q,
            layer.weight,
            layer.bias,
            x_quant=layer.x_quant,
            w_quant=layer.w_quant,
            y_quant=layer.y_quant,
            layout=layout,
            activation=layer.activation,
        )
    assert_exact(yq, q, "reference chain")


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("x_dtype", X_DTYPES)
def test_report(layout, x_dtype, capsys):
    rng = np.random.default_rng(21)
    layers = make_chain(rng, layout)
    net = QuantizedSequential.calibrate(
        layers, [random_input(rng, layout) for _ in range(3)], x_dtype=x_dtype
    )
    x = random_input(rng, layout)
    rows = net.report(x)
    printed = capsys.readouterr().out
    assert len(rows) == len(layers)
    boundaries = float_chain_reference(layers, x)
    q = net.quantize_input(x)
    for i, (row, layer) in enumerate(zip(rows, net.layers, strict=False)):
        assert row["layer"] == i
        assert (row["in_channels"], row["out_channels"]) == (layer.in_channels, layer.out_channels)
        assert row["activation"] == layer.activation
        assert math.isfinite(row["sqnr_db"]) and row["sqnr_db"] > 25.0
        q = layer(q)
        expected = sqnr(boundaries[i + 1], dequantize_reference(q, *net.boundary_qparams[i + 1]))
        assert row["sqnr_db"] == pytest.approx(expected, abs=0.05)
    lines = [line for line in printed.splitlines() if line.strip()]
    assert len(lines) == len(layers) + 1
    assert "SQNR" in lines[0] and "layer" in lines[0]
    for line, row, channels in zip(lines[1:], rows, ("8->32", "32->16", "16->4"), strict=False):
        assert channels in line
        assert f"{row['sqnr_db']:.2f}" in line
    # to a file instead of stdout
    buffer = io.StringIO()
    rows_again = net.report(x, file=buffer)
    assert capsys.readouterr().out == ""
    assert buffer.getvalue() == printed
    assert [r["sqnr_db"] for r in rows_again] == [r["sqnr_db"] for r in rows]
    assert "8->32 -> 32->16 -> 16->4" in repr(net)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("x_dtype", X_DTYPES)
def test_calibrate_keeps_stride_and_groups(isa, layout, x_dtype):
    """Each quantized layer keeps its float layer's stride, groups and activation."""
    rng = np.random.default_rng(31)
    w0 = (rng.normal(0, 1, (12, 6)) / 2).astype(np.float32)
    w1 = (rng.normal(0, 1, (6, 4)) / 2).astype(np.float32)  # 12 channels in 3 groups of 4
    layers = [
        fastpw.Conv1x1(w0, None, layout=layout, stride=2, activation=(-1.0, 3.0)),
        fastpw.Conv1x1(w1, rng.normal(0, 0.1, 6).astype(np.float32), layout=layout, groups=3),
    ]
    shape = (2, 6, 9, 8) if layout == "NCHW" else (2, 9, 8, 6)
    calibration = [rng.normal(0, 1, shape).astype(np.float32) for _ in range(3)]
    net = QuantizedSequential.calibrate(layers, calibration, x_dtype=x_dtype)
    for float_layer, layer in zip(layers, net.layers, strict=False):
        assert layer.stride == float_layer.stride and layer.groups == float_layer.groups
        assert layer.activation == float_layer.activation
    x = calibration[0]
    check_layer_by_layer(net, net.quantize_input(x), layout)
    y = net(x)
    assert y.shape == ((2, 6, 5, 4) if layout == "NCHW" else (2, 5, 4, 6))
    assert sqnr(float_chain_reference(layers, x)[-1], y) > 25.0


def test_calibrate_inputs_forms():
    """One array, a generator, and the percentile method."""
    rng = np.random.default_rng(22)
    layers = make_chain(rng, "NCHW")
    x = random_input(rng, "NCHW")
    single = QuantizedSequential.calibrate(layers, x)
    listed = QuantizedSequential.calibrate(layers, [x])
    generated = QuantizedSequential.calibrate(layers, (b for b in [x]))
    assert single.boundary_qparams == listed.boundary_qparams == generated.boundary_qparams
    as64 = QuantizedSequential.calibrate(layers, [x.astype(np.float64)])
    assert as64.boundary_qparams == listed.boundary_qparams
    pct = QuantizedSequential.calibrate(
        layers, [random_input(rng, "NCHW") for _ in range(3)], method="percentile"
    )
    assert len(pct.boundary_qparams) == 4
    for i in range(len(layers) - 1):
        assert pct.layers[i].y_quant == pct.layers[i + 1].x_quant
    assert sqnr(float_chain_reference(layers, x)[-1], pct(x)) > 20.0


# ------------------------------------------------------------------------------- errors


def test_calibrate_errors():
    rng = np.random.default_rng(23)
    layers = make_chain(rng, "NCHW")
    x = random_input(rng, "NCHW")
    with pytest.raises(ValueError, match="empty"):
        QuantizedSequential.calibrate(layers, [])
    with pytest.raises(ValueError, match="empty"):
        QuantizedSequential.calibrate(layers, iter([]))
    with pytest.raises(ValueError, match="empty"):
        QuantizedSequential.calibrate([], [x])
    with pytest.raises(TypeError, match="iterable"):
        QuantizedSequential.calibrate(layers, 5)
    with pytest.raises(TypeError, match="float"):
        QuantizedSequential.calibrate(layers, [x.astype(np.int32)])
    with pytest.raises(ValueError, match="uint8 or int8"):
        QuantizedSequential.calibrate(layers, [x], x_dtype=np.int16)
    # NaN / Inf in the calibration input: named as the input of layer 0, in any batch
    for bad in (np.nan, np.inf, -np.inf):
        xb = x.copy()
        xb[1, 3, 2, 4] = bad
        with pytest.raises(ValueError, match="input of layer 0"):
            QuantizedSequential.calibrate(layers, [x, xb])
    # layers that do not chain
    with pytest.raises(ValueError, match="chain"):
        QuantizedSequential.calibrate([layers[0], layers[2]], [x])
    nhwc = fastpw.Conv1x1(layers[1].weight, layers[1].bias, layout="NHWC")
    with pytest.raises(ValueError, match="chain"):
        QuantizedSequential.calibrate([layers[0], nhwc], [x])
    # not a Conv1x1
    qlayer = fastpw.QConv1x1(
        np.ones((4, 8), np.int8), x_quant=(1.0, 0), w_quant=(1.0, 0), y_quant=(1.0, 0)
    )
    for bad in (qlayer, lambda v: v, "conv"):
        with pytest.raises(TypeError, match="Conv1x1"):
            QuantizedSequential.calibrate([layers[0], bad], [x])
    with pytest.raises(TypeError):
        QuantizedSequential.calibrate(5, [x])


def test_calibrate_nan_inside_the_chain():
    """Non-finite values produced by a layer are reported at that layer's output."""
    layout = "NCHW"
    x = np.full((1, 2, 3, 3), 1e10, np.float32)
    big = fastpw.Conv1x1(np.full((2, 2), 1e30, np.float32), layout=layout)  # 2e40: inf
    tame = fastpw.Conv1x1(np.eye(2, dtype=np.float32), layout=layout)
    assert not np.all(np.isfinite(big(x)))
    with pytest.raises(ValueError, match="output of layer 0"):
        QuantizedSequential.calibrate([big, tame], [x])
    # layer 0 is finite (1e20), layer 1 overflows both ways: inf - inf = NaN
    grow = fastpw.Conv1x1(np.full((2, 2), 5e9, np.float32), layout=layout)
    cancel = fastpw.Conv1x1(np.array([[1e30, -1e30], [1.0, 1.0]], np.float32), layout=layout)
    mid = grow(x)
    assert np.all(np.isfinite(mid)) and not np.all(np.isfinite(cancel(mid)))
    with pytest.raises(ValueError, match="output of layer 1"):
        QuantizedSequential.calibrate([tame, grow, cancel][1:], [x])
    with pytest.raises(ValueError, match="output of layer 2"):
        QuantizedSequential.calibrate([tame, grow, cancel], [np.ones_like(x), x])


def test_quantize_dequantize_errors():
    x = np.ones((2, 3, 4, 5), np.float32)
    xq = np.ones((2, 3, 4, 5), np.uint8)
    qp = (0.1, 3)
    # dtype
    for bad in (np.int16, np.uint16, np.float32, np.int32, "int4", None, 8):
        with pytest.raises(ValueError, match="uint8 or int8"):
            quantize(x, qp, bad)
    quantize(x, qp, "int8")
    quantize(x, qp, np.dtype(np.uint8))
    # input dtype
    for bad in (np.ones(3, np.int32), np.ones(3, np.uint8), np.array([True]), np.ones(3, complex)):
        with pytest.raises(TypeError, match="float"):
            quantize(bad, qp)
    with pytest.raises(TypeError, match="uint8 or int8"):
        dequantize(x, qp)
    for bad_dtype in (np.int16, np.int32, np.float64, bool):
        with pytest.raises(TypeError, match="uint8 or int8"):
            dequantize(np.ones(3, bad_dtype), qp)
    # zero point outside the dtype range
    for dtype, zp in (
        (np.int8, 200),
        (np.int8, -129),
        (np.int8, 128),
        (np.uint8, -1),
        (np.uint8, 256),
    ):
        with pytest.raises(ValueError, match="zero point"):
            quantize(x, (0.1, zp), dtype)
        with pytest.raises(ValueError, match="zero point"):
            dequantize(np.ones(3, dtype), (0.1, zp))
    with pytest.raises(ValueError, match="zero point"):
        quantize(x, (0.1, np.array([0, 1, 300])), np.uint8, axis=1)
    with pytest.raises(TypeError, match="zero point"):
        quantize(x, (0.1, 1.5))
    with pytest.raises(TypeError, match="zero point"):
        quantize(x, (0.1, "3"))
    # A whole float is no int either (as for the layers' zero points: one check for both).
    for bad in (3.0, np.float32(3), np.array([3.0, 1.0, 2.0])):
        with pytest.raises(TypeError, match="zero point"):
            quantize(x, (0.1, bad), axis=None if np.ndim(bad) == 0 else 1)
    # scale
    for bad in (0.0, -0.1, np.nan, np.inf, -np.inf, 1e-50, 1e39):
        with pytest.raises(ValueError, match="scale"), np.errstate(over="ignore"):
            quantize(x, (bad, 0))
        with pytest.raises(ValueError, match="scale"), np.errstate(over="ignore"):
            dequantize(xq, (bad, 0))
    with pytest.raises(ValueError, match="scale"):
        quantize(x, (np.array([0.1, 0.0, 0.2]), 0), axis=1)
    with pytest.raises(TypeError, match="scale"):
        quantize(x, ("big", 0))
    with pytest.raises(ValueError):
        quantize(x, (np.ones((3, 1)), 0), axis=1)
    # qparams not a pair
    for bad in (0.1, (0.1,), (0.1, 0, 0), None):
        with pytest.raises(TypeError, match="qparams"):
            quantize(x, bad)
    # per-axis arrays without axis
    with pytest.raises(ValueError, match="axis"):
        quantize(x, (np.full(3, 0.1), 0))
    with pytest.raises(ValueError, match="axis"):
        quantize(x, (0.1, np.zeros(3, int)))
    with pytest.raises(ValueError, match="axis"):
        dequantize(xq, (np.full(3, 0.1), 0))
    # arrays of the wrong length
    for axis in (0, 1, 3, -1):
        wrong = x.shape[axis] + 1
        with pytest.raises(ValueError, match="entries"):
            quantize(x, (np.full(wrong, 0.1), 0), axis=axis)
        with pytest.raises(ValueError, match="entries"):
            quantize(x, (0.1, np.zeros(wrong, int)), axis=axis)
        with pytest.raises(ValueError, match="entries"):
            dequantize(xq, (np.full(wrong, 0.1), 0), axis=axis)
    # axis out of range / not an int
    for axis in (4, -5, 100):
        with pytest.raises(ValueError, match="out of range"):
            quantize(x, qp, axis=axis)
        with pytest.raises(ValueError, match="out of range"):
            dequantize(xq, qp, axis=axis)
    for axis in (1.0, "1", True, [1]):
        with pytest.raises(TypeError, match="axis"):
            quantize(x, qp, axis=axis)
        with pytest.raises(TypeError, match="axis"):
            dequantize(xq, qp, axis=axis)
    quantize(x, qp, axis=np.int64(-4))
    # out: a wrong shape is a ValueError, a wrong dtype a TypeError (as for the layers)
    with pytest.raises(ValueError, match="out"):
        quantize(x, qp, np.uint8, out=np.empty((2, 3, 4), np.uint8))
    with pytest.raises(ValueError, match="out"):
        dequantize(xq, qp, out=np.empty((2, 3, 4, 6), np.float32))
    for bad_out in (np.empty(x.shape, np.int8), np.empty(x.shape)):
        with pytest.raises(TypeError, match="out"):
            quantize(x, qp, np.uint8, out=bad_out)
    with pytest.raises(TypeError, match="out"):
        dequantize(xq, qp, out=np.empty(x.shape, np.float64))
    read_only = np.empty(x.shape, np.uint8)
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        quantize(x, qp, out=read_only)
    read_only32 = np.empty(x.shape, np.float32)
    read_only32.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        dequantize(xq, qp, out=read_only32)
    with pytest.raises(TypeError, match="out"):
        quantize(x, qp, out=[0] * 120)
    # out overlapping the input
    buf = np.zeros(64, np.uint8)
    with pytest.raises(ValueError, match="overlap"):
        dequantize(buf[:16], qp, out=buf.view(np.float32))
    # num_threads
    with pytest.raises(ValueError, match="num_threads"):
        quantize(x, qp, num_threads=0)
    with pytest.raises(TypeError, match="num_threads"):
        dequantize(xq, qp, num_threads=1.5)


def test_public_names():
    assert set(quant.__all__) == {
        "Observer",
        "QuantizedSequential",
        "choose_qparams",
        "dequantize",
        "fold_batchnorm",
        "quantize",
        "sqnr",
    }
    assert fastpw.quant is quant
