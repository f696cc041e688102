"""The one reference for fastpw's float32 1x1 convolution: plain numpy, float64.

It is written to be obviously right, not fast: one ``np.einsum`` per group on the
strided input, then bias, then the activation. It never imports fastpw, so a bug in the
package cannot leak into the expected values.

The tolerance is a rigorous bound, not a guess. For a dot product of n float32 terms
summed in any order (with or without fused multiply-add), the rounding error is at most
gamma_n * sum_i |w_i x_i| with gamma_n = n u / (1 - n u) and u = 2**-24. Adding the bias,
storing the float32 result and clamping (min/max are 1-Lipschitz) stay inside
``4 * eps32 * (n + 2) * (|W| @ |X| + |b|)``, which is what ``conv1x1_tolerance`` returns,
elementwise and computed in float64. A wrong tile, a missed edge or a dropped channel
is off by about one term, far above this bound for the well-scaled data the tests use.
"""

from __future__ import annotations

import numpy as np

EPS32 = float(np.finfo(np.float32).eps)
TINY32 = float(np.finfo(np.float32).tiny)


def stride_pair(stride):
    """An int or (sh, sw) stride as a pair of ints."""
    if isinstance(stride, (int, np.integer)):
        return int(stride), int(stride)
    sh, sw = stride
    return int(sh), int(sw)


def channel_axis(layout):
    return 1 if layout.upper() == "NCHW" else 3


def x_shape(layout, n, c, h, w):
    """The shape of an (n, c, h, w) tensor in ``layout``."""
    return (n, c, h, w) if layout.upper() == "NCHW" else (n, h, w, c)


def y_shape(layout, n, k, h, w, stride=1):
    """The output shape of a 1x1 convolution: ceil(h / sh) x ceil(w / sw) pixels."""
    sh, sw = stride_pair(stride)
    return x_shape(layout, n, k, -(-h // sh), -(-w // sw))


def _weight_2d(weight):
    w = np.asarray(weight, dtype=np.float64)
    if w.ndim == 4:
        assert w.shape[2:] == (1, 1), w.shape
        w = w[:, :, 0, 0]
    assert w.ndim == 2, w.shape
    return w


def _to_nchw(x, layout):
    layout = layout.upper()
    if layout == "NCHW":
        return x
    assert layout == "NHWC", layout
    return x.transpose(0, 3, 1, 2)


def _from_nchw(y, layout):
    return y if layout.upper() == "NCHW" else y.transpose(0, 2, 3, 1)


def apply_activation(y, activation):
    """relu = max(y, 0), relu6 = min(max(y, 0), 6), (lo, hi) = min(max(y, lo), hi); NaN stays."""
    if activation is None:
        return y
    if isinstance(activation, str):
        hi = {"relu": np.inf, "relu6": 6.0}[activation.lower()]
        return np.minimum(np.maximum(y, 0.0), hi)
    lo, hi = activation
    return np.minimum(np.maximum(y, float(lo)), float(hi))


def conv1x1_reference(x, weight, bias=None, layout="NCHW", stride=1, groups=1, activation=None):
    """float64 ``y[n,k,h,w] = act(sum_c W[k,c] * x[n, g*Cg + c, h*sh, w*sw] + b[k])``.

    ``x`` is (N, C, H, W) for "NCHW" or (N, H, W, C) for "NHWC"; the result has the same
    layout, with spatial size ceil(H/sh) x ceil(W/sw) (PyTorch conv2d, 1x1 kernel, no
    padding). ``weight`` is (K, C/groups) or (K, C/groups, 1, 1).
    """
    sh, sw = stride_pair(stride)
    xs = _to_nchw(np.asarray(x, dtype=np.float64), layout)[:, :, ::sh, ::sw]
    w = _weight_2d(weight)
    n, c, ho, wo = xs.shape
    k, cg = w.shape
    assert c == cg * groups and k % groups == 0, (xs.shape, w.shape, groups)
    kg = k // groups
    y = np.empty((n, k, ho, wo), dtype=np.float64)
    for g in range(groups):
        y[:, g * kg : (g + 1) * kg] = np.einsum(
            "kc,nchw->nkhw", w[g * kg : (g + 1) * kg], xs[:, g * cg : (g + 1) * cg]
        )
    if bias is not None:
        y += np.asarray(bias, dtype=np.float64)[None, :, None, None]
    return _from_nchw(apply_activation(y, activation), layout)


def conv1x1_tolerance(x, weight, bias=None, layout="NCHW", stride=1, groups=1, activation=None):
    """Elementwise float64 bound on |float32 result - reference| (see the module docstring)."""
    w = _weight_2d(weight)
    cg = w.shape[1]
    magnitude = conv1x1_reference(
        np.abs(np.asarray(x, dtype=np.float64)),
        np.abs(w),
        None if bias is None else np.abs(np.asarray(bias, dtype=np.float64)),
        layout=layout,
        stride=stride,
        groups=groups,
    )
    tol = 4.0 * EPS32 * (cg + 2) * magnitude
    # Slack for flushed float32 subnormals, and for clamp bounds that float32 rounds.
    tol += (cg + 2) * TINY32
    if activation is not None and not isinstance(activation, str):
        tol += EPS32 * max([abs(float(v)) for v in activation if np.isfinite(v)] + [0.0])
    return tol


def assert_matches_reference(
    got, x, weight, bias=None, layout="NCHW", stride=1, groups=1, activation=None
):
    """Check a float32 result against the reference: same shape, the same NaN and +-Inf
    entries, and every finite entry within ``conv1x1_tolerance``."""
    kwargs = dict(layout=layout, stride=stride, groups=groups, activation=activation)
    expected = conv1x1_reference(x, weight, bias, **kwargs)
    got = np.asarray(got)
    assert got.dtype == np.float32, f"result dtype is {got.dtype}, expected float32"
    assert got.shape == expected.shape, f"result shape {got.shape}, expected {expected.shape}"
    if got.size == 0:
        return
    g = got.astype(np.float64)
    tol = conv1x1_tolerance(x, weight, bias, **kwargs)
    finite = np.isfinite(expected)
    with np.errstate(invalid="ignore"):
        ok = np.where(
            finite,
            np.isfinite(g) & (np.abs(g - expected) <= tol),
            (np.isnan(expected) & np.isnan(g)) | (expected == g),
        )
    if not ok.all():
        bad = np.argwhere(~ok)
        i = tuple(bad[0])
        raise AssertionError(
            f"{len(bad)} of {got.size} entries differ from the reference "
            f"(layout={layout}, stride={stride}, groups={groups}, activation={activation}); "
            f"first at {i}: got {got[i]!r}, expected {expected[i]!r} +- {tol[i]:.3g}"
        )


# ============================================================================ int8 path
#
# The quantized reference below follows fastpw's int8 contract literally (the formula
# is the same one ONNX Runtime's QLinearConv computes on CPU):
#
#     acc  = sum_c (x[c, p] - x_zp) * w[k, c] + bias[k]      exact in int64, then wrapped
#            to int32 (two's complement, modulo 2**32) where it does not fit
#     xs, ws[k], ys = float32(x_scale), float32(w_scale[k]), float32(y_scale)
#     8-bit out:   M[k] = float32(float32(xs * ws[k]) / ys)
#                  v    = float32(acc) * M[k]                           one float32 multiply
#                  q    = min(max(rint(v) + y_zp, lo), hi)              rint: half to even
#                  [lo, hi] = the dtype's range narrowed by the activation (see
#                  ``qactivation_bounds``)
#     float32 out: y = float32(acc) * float32(xs * ws[k]), then the activation in real
#                  units
#     int32 out:   y = acc (no activation)
#
# Every float32 step is a numpy float32 operation on float32 operands, so numpy rounds
# exactly where the contract does. The only float64 steps are the ones the contract
# names (the clamp bounds rint(b / ys)) and the final rint + clamp, which are exact in
# float64 for every finite float32 v (a float32 is exactly a float64, and rint of a
# float64 holding a float32 rounds the same value the same way).

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
QDTYPE_RANGES = {
    np.dtype(np.uint8): (0, 255),
    np.dtype(np.int8): (-128, 127),
}


def _qpair(quant):
    """(float32 scale array or scalar, zero point) from any (scale, zero_point) pair."""
    scale, zero_point = quant
    return np.asarray(scale, dtype=np.float32), zero_point


def qactivation_bounds(activation, out_dtype, y_scale, y_zero_point):
    """[lo, hi] of the quantized output: the dtype range narrowed by the activation, as
    integers (bounds in real units become y_zp + rint(bound / ys), rint half to even and
    the division in float64 of ys = float32(y_scale)), each kept inside the dtype range
    (a clamp wholly outside it pins the output to the nearer end)."""
    lo, hi = q_min, q_max = QDTYPE_RANGES[np.dtype(out_dtype)]
    ys = float(np.float32(y_scale))
    zp = int(y_zero_point)
    if activation is None:
        return lo, hi
    if isinstance(activation, str):
        name = activation.lower()
        if name == "relu":
            return max(lo, zp), hi
        assert name == "relu6", activation
        return max(lo, zp), min(hi, zp + int(np.rint(6.0 / ys)))
    lo_r, hi_r = (float(v) for v in activation)
    with np.errstate(over="ignore"):  # a huge bound over a tiny scale: +-inf, pinned below
        if np.isfinite(lo_r):
            lo = int(min(max(q_min, zp + np.rint(lo_r / ys)), q_max))
        if np.isfinite(hi_r):
            hi = int(min(max(q_min, zp + np.rint(hi_r / ys)), q_max))
    return lo, hi


def qconv1x1_accumulators(x, weight, bias=None, *, x_zero_point, layout="NCHW", stride=1, groups=1):
    """int64 ``acc[n,k,h,w] = sum_c (x[n, g*Cg+c, h*sh, w*sw] - x_zp) * W[k,c] + b[k]`` in
    NCHW, whatever ``layout`` is."""
    sh, sw = stride_pair(stride)
    xs = _to_nchw(np.asarray(x), layout)[:, :, ::sh, ::sw].astype(np.int64)
    xs -= int(x_zero_point)
    w = np.asarray(weight)
    if w.ndim == 4:
        assert w.shape[2:] == (1, 1), w.shape
        w = w[:, :, 0, 0]
    w = w.astype(np.int64)
    n, c, ho, wo = xs.shape
    k, cg = w.shape
    assert c == cg * groups and k % groups == 0, (xs.shape, w.shape, groups)
    kg = k // groups
    acc = np.empty((n, k, ho, wo), dtype=np.int64)
    for g in range(groups):
        acc[:, g * kg : (g + 1) * kg] = np.einsum(
            "kc,nchw->nkhw", w[g * kg : (g + 1) * kg], xs[:, g * cg : (g + 1) * cg]
        )
    if bias is not None:
        acc += np.asarray(bias).astype(np.int64)[None, :, None, None]
    return acc


def wrap_to_int32(values):
    """int64 values taken modulo 2**32 into [INT32_MIN, INT32_MAX], as two's complement
    int32 arithmetic leaves a sum that does not fit."""
    return (np.asarray(values, np.int64) - INT32_MIN) % 2**32 + INT32_MIN


def qconv1x1_reference(
    x,
    weight,
    bias=None,
    *,
    x_quant,
    w_quant,
    y_quant=None,
    out_dtype=None,
    layout="NCHW",
    stride=1,
    groups=1,
    activation=None,
):
    """fastpw's quantized 1x1 convolution, exactly (see the formula above).

    ``x`` is uint8 or int8, (N, C, H, W) for "NCHW" or (N, H, W, C) for "NHWC"; the
    result has the same layout and dtype ``out_dtype`` (default: x's dtype). ``weight``
    is int8 (K, C/groups) or (K, C/groups, 1, 1); ``bias`` int32 (K,) or None. The
    ``*_quant`` arguments are (scale, zero_point) pairs; ``w_quant``'s scale is a scalar
    or one per output channel and its zero point must be 0.
    """
    x = np.asarray(x)
    assert x.dtype in (np.uint8, np.int8), x.dtype
    out_dtype = np.dtype(x.dtype if out_dtype is None else out_dtype)
    xs, x_zp = _qpair(x_quant)
    ws, w_zp = _qpair(w_quant)
    assert xs.ndim == 0 and ws.ndim in (0, 1), (xs.shape, ws.shape)
    assert np.all(np.asarray(w_zp) == 0), w_zp
    acc = qconv1x1_accumulators(
        x, weight, bias, x_zero_point=x_zp, layout=layout, stride=stride, groups=groups
    )
    acc = wrap_to_int32(acc)
    k = acc.shape[1]
    ws = np.broadcast_to(ws, (k,))[None, :, None, None]  # float32, per output channel
    if out_dtype == np.int32:
        assert activation is None, "an activation with int32 output is an error"
        return _from_nchw(acc.astype(np.int32), layout)
    acc32 = acc.astype(np.float32)  # int -> float32 rounds to nearest even
    dequant = xs * ws  # float32 * float32 -> float32
    assert dequant.dtype == np.float32
    if out_dtype == np.float32:
        y = acc32 * dequant
        if activation is not None:
            if isinstance(activation, str):
                lo_r, hi_r = {"relu": (0.0, np.inf), "relu6": (0.0, 6.0)}[activation.lower()]
            else:
                lo_r, hi_r = activation
            y = np.minimum(np.maximum(y, np.float32(lo_r)), np.float32(hi_r))
        assert y.dtype == np.float32
        return _from_nchw(y, layout)
    assert out_dtype in QDTYPE_RANGES, out_dtype
    ys, y_zp = _qpair(y_quant)
    assert ys.ndim == 0, ys.shape
    multiplier = dequant / ys  # float32 / float32 -> float32
    v = acc32 * multiplier  # float32 * float32 -> float32
    assert multiplier.dtype == v.dtype == np.float32
    lo, hi = qactivation_bounds(activation, out_dtype, ys, y_zp)
    q = np.rint(v.astype(np.float64)) + int(y_zp)
    q = np.minimum(np.maximum(q, lo), hi)
    return _from_nchw(q.astype(out_dtype), layout)


# ------------------------------------------------------- telling near-miss formulas apart
#
# Random data rarely tells the contract's float32 order apart from a formula that is
# off by one float32 rounding of the multiplier: v moves by about 1e-7 * |v|, which only
# changes rint(v) when v sits that close to a half-integer. ``requantization_witnesses``
# searches for such accumulators on purpose.


def near_miss_requantizations(acc, x_scale, w_scale, y_scale):
    """v = acc * M under the contract ("contract") and under formulas an implementation
    might use instead (float64 arithmetic, another order, a reciprocal)."""
    xs, ws, ys = np.float32(x_scale), np.float32(w_scale), np.float32(y_scale)
    acc = np.asarray(acc, dtype=np.int64)
    acc32 = acc.astype(np.float32)
    f64 = np.float64
    exact = f64(xs) * f64(ws) / f64(ys)
    return {
        "contract": acc32 * ((xs * ws) / ys),
        "xs * (ws / ys)": acc32 * (xs * (ws / ys)),
        "(xs / ys) * ws": acc32 * ((xs / ys) * ws),
        "float32(float64 multiplier)": acc32 * np.float32(exact),
        "float64 throughout": acc.astype(f64) * exact,
        "float32(acc) times float64 multiplier": acc32.astype(f64) * exact,
        "dequantize, then divide by ys": (acc32 * (xs * ws)) / ys,
        "times float32(1 / ys)": acc32 * ((xs * ws) * (np.float32(1) / ys)),
    }


def requantization_witnesses(x_scale=0.03, y_scale=3.7, per_formula=4, seed=0, tries=400):
    """(w_scales, accs): float32 weight scales and accumulators for which rint(v) under
    the contract differs from rint(v) under each near-miss formula (up to per_formula
    witnesses each), with |v| < 121 so an 8-bit output with a mid-range zero point never
    saturates. With the defaults M = x_scale * w_scale / y_scale lies in [8e-7, 8e-4]
    and |acc| < 1.6e8, inside int32."""
    rng = np.random.default_rng(seed)
    centers = np.arange(-120, 120) + 0.5
    found = {}
    w_scales, accs = [], []
    for _ in range(tries):
        ws = np.float32(10 ** rng.uniform(-4, -1))
        multiplier = np.float32(np.float32(x_scale) * ws) / np.float32(y_scale)
        near = np.rint(centers / float(multiplier)).astype(np.int64)
        acc = (near[:, None] + np.arange(-2, 3)).ravel()
        v = near_miss_requantizations(acc, x_scale, ws, y_scale)
        q = {name: np.rint(values.astype(np.float64)) for name, values in v.items()}
        for name, q_alt in q.items():
            if name == "contract" or found.get(name, 0) >= per_formula:
                continue
            for i in np.flatnonzero(q_alt != q["contract"])[: per_formula - found.get(name, 0)]:
                found[name] = found.get(name, 0) + 1
                w_scales.append(ws)
                accs.append(int(acc[i]))
        if len(found) == len(q) - 1 and min(found.values()) >= per_formula:
            break
    return np.array(w_scales, dtype=np.float32), np.array(accs, dtype=np.int64)


# ================================================================= quantize / dequantize


def along_axis(param, ndim, axis):
    """A scalar as is; a 1-D per-axis array reshaped to broadcast along ``axis``."""
    param = np.asarray(param)
    if axis is None or param.ndim == 0:
        return param
    shape = [1] * ndim
    shape[axis] = -1
    return param.reshape(shape)


def quantize_reference(x, scale, zero_point, dtype, axis=None):
    """ONNX QuantizeLinear, literally: x -> float32, scale -> float32, v = x / scale in
    float32, rint (half to even), NaN -> 0, then + zero point and saturate in float64 (exact:
    rint(v) is a float32 integer or +-inf)."""
    dtype = np.dtype(dtype)
    lo, hi = QDTYPE_RANGES[dtype]
    with np.errstate(over="ignore"):
        x32 = np.asarray(x).astype(np.float32)
    ndim = x32.ndim
    s32 = along_axis(np.asarray(scale, dtype=np.float64).astype(np.float32), ndim, axis)
    zp = along_axis(np.asarray(zero_point).astype(np.int64), ndim, axis)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore", under="ignore"):
        v = np.divide(x32, s32, dtype=np.float32)
    assert v.dtype == np.float32
    r = np.rint(v).astype(np.float64)
    r = np.where(np.isnan(r), 0.0, r)
    q = np.clip(r + zp, lo, hi)
    return q.astype(dtype)


def dequantize_reference(xq, scale, zero_point, axis=None):
    """ONNX DequantizeLinear: float32(q - zp) * float32(scale), one float32 multiply
    (q - zp is an integer of at most 510 in magnitude, exact in float32)."""
    xq = np.asarray(xq)
    ndim = xq.ndim
    diff = xq.astype(np.int64) - along_axis(np.asarray(zero_point).astype(np.int64), ndim, axis)
    d32 = diff.astype(np.float32)
    s32 = along_axis(np.asarray(scale, dtype=np.float64).astype(np.float32), ndim, axis)
    y = d32 * s32
    assert d32.dtype == s32.dtype == y.dtype == np.float32
    return y
