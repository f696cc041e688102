"""The reference for fastpw's results: plain numpy, in float64 and int64.

Like ``numpy.testing`` and scikit-learn's ``utils._testing``, it ships in the package, so
that fastpw's tests, its benchmarks (``bench/``), ``python -m fastpw`` and a user's own
tests all check results against the same oracle:

- float32 path: ``conv1x1_reference`` (float64), ``conv1x1_tolerance`` (a rigorous bound
  on a float32 result's error) and ``assert_matches_reference``, which checks a result
  against both; ``max_relative_error`` sums up a difference in one scale-free number;
- int8 path: ``qconv1x1_reference``, fastpw's int8 contract computed exactly, from
  ``qconv1x1_accumulators`` (int64), ``wrap_to_int32`` and ``qactivation_bounds``;
- ``fastpw.quant``: ``quantize_reference``, ``dequantize_reference`` and
  ``qparams_reference`` (the range-to-qparams choice of ``choose_qparams``).

It is written to be obviously right, not fast: one ``np.einsum`` per group on the
strided input, then bias, then the activation. It imports only numpy: none of fastpw's
code runs in it, so a bug in the package cannot leak into the expected values.

The tolerance is a rigorous bound, not a guess. For a dot product of n float32 terms
summed in any order (with or without fused multiply-add), the rounding error is at most
gamma_n * sum_i |w_i x_i| with gamma_n = n u / (1 - n u) and u = 2**-24. Adding the bias,
storing the float32 result and clamping (min/max are 1-Lipschitz) stay inside
``4 * eps32 * (n + 2) * (|W| @ |X| + |b|)``, which is what ``conv1x1_tolerance`` returns,
elementwise and computed in float64. A wrong tile, a missed edge or a dropped channel
is off by about one term, far above this bound for the well-scaled data the tests use.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import numpy as np
import numpy.typing as npt

__all__ = [
    "INT32_MAX",
    "INT32_MIN",
    "QDTYPE_RANGES",
    "RELATIVE_TOLERANCE",
    "assert_matches_reference",
    "conv1x1_reference",
    "conv1x1_tolerance",
    "dequantize_reference",
    "max_relative_error",
    "qactivation_bounds",
    "qconv1x1_accumulators",
    "qconv1x1_reference",
    "qparams_reference",
    "quantize_reference",
    "wrap_to_int32",
]

#: An activation as fastpw's layers take it: None, "relu", "relu6" or a (lo, hi) clamp.
_ActivationLike = str | tuple[float, float] | list[float] | None
#: A (scale, zero_point) pair, as fastpw's ``*_quant`` arguments (``QParams`` is one).
_QuantPair = tuple[npt.ArrayLike, npt.ArrayLike]

_EPS32: Final = float(np.finfo(np.float32).eps)
_TINY32: Final = float(np.finfo(np.float32).tiny)

#: Largest ``max_relative_error`` that ``python -m fastpw`` and ``bench/`` accept between
#: a float32 result and the float64 reference. float32 dot products of length <= 2048
#: stay near 1e-6; 1e-4 leaves room for any summation order while still catching a wrong
#: tile or a missed edge. (``conv1x1_tolerance`` is the rigorous, elementwise bound.)
RELATIVE_TOLERANCE: Final = 1e-4


# ------------------------------------------------------------------------------ layouts


def _stride_pair(stride: int | tuple[int, int]) -> tuple[int, int]:
    """An int or (sh, sw) stride as a pair of ints."""
    if isinstance(stride, (int, np.integer)):
        return int(stride), int(stride)
    sh, sw = stride
    return int(sh), int(sw)


def _to_nchw(x: npt.NDArray[Any], layout: str) -> npt.NDArray[Any]:
    layout = layout.upper()
    if layout == "NCHW":
        return x
    assert layout == "NHWC", layout
    return x.transpose(0, 3, 1, 2)


def _from_nchw(y: npt.NDArray[Any], layout: str) -> npt.NDArray[Any]:
    return y if layout.upper() == "NCHW" else y.transpose(0, 2, 3, 1)


def _along_axis(param: npt.ArrayLike, ndim: int, axis: int | None) -> npt.NDArray[Any]:
    """A scalar as is; a 1-D per-axis array reshaped to broadcast along ``axis``."""
    param = np.asarray(param)
    if axis is None or param.ndim == 0:
        return param
    shape = [1] * ndim
    shape[axis] = -1
    return param.reshape(shape)


def _weight_2d(weight: npt.ArrayLike) -> npt.NDArray[Any]:
    """A (K, C/groups) or (K, C/groups, 1, 1) weight as (K, C/groups), in its dtype."""
    w = np.asarray(weight)
    if w.ndim == 4:
        assert w.shape[2:] == (1, 1), w.shape
        w = w[:, :, 0, 0]
    assert w.ndim == 2, w.shape
    return w


def _grouped_1x1(xs: npt.NDArray[Any], w: npt.NDArray[Any], groups: int) -> npt.NDArray[Any]:
    """``y[n,k,h,w] = sum_c w[k,c] * xs[n, g*Cg + c, h, w]`` for k in group g, NCHW, in
    the dtype of ``xs`` and ``w`` (both float64, or both int64: exact)."""
    n, c, ho, wo = xs.shape
    k, cg = w.shape
    assert c == cg * groups and k % groups == 0, (xs.shape, w.shape, groups)
    kg = k // groups
    y = np.empty((n, k, ho, wo), dtype=np.result_type(xs, w))
    for g in range(groups):
        y[:, g * kg : (g + 1) * kg] = np.einsum(
            "kc,nchw->nkhw", w[g * kg : (g + 1) * kg], xs[:, g * cg : (g + 1) * cg]
        )
    return y


# ========================================================================== float32 path


def _apply_activation(y: npt.NDArray[np.float64], activation: _ActivationLike) -> Any:
    """relu = max(y, 0), relu6 = min(max(y, 0), 6), (lo, hi) = min(max(y, lo), hi); NaN stays."""
    if activation is None:
        return y
    if isinstance(activation, str):
        hi = {"relu": np.inf, "relu6": 6.0}[activation.lower()]
        return np.minimum(np.maximum(y, 0.0), hi)
    lo, hi = activation
    return np.minimum(np.maximum(y, float(lo)), float(hi))


def conv1x1_reference(
    x: npt.ArrayLike,
    weight: npt.ArrayLike,
    bias: npt.ArrayLike | None = None,
    layout: str = "NCHW",
    stride: int | tuple[int, int] = 1,
    groups: int = 1,
    activation: _ActivationLike = None,
) -> npt.NDArray[np.float64]:
    """float64 ``y[n,k,h,w] = act(sum_c W[k,c] * x[n, g*Cg + c, h*sh, w*sw] + b[k])``.

    ``x`` is (N, C, H, W) for "NCHW" or (N, H, W, C) for "NHWC"; the result has the same
    layout, with spatial size ceil(H/sh) x ceil(W/sw) (PyTorch conv2d, 1x1 kernel, no
    padding). ``weight`` is (K, C/groups) or (K, C/groups, 1, 1). The arguments are
    those of ``fastpw.conv1x1``.
    """
    sh, sw = _stride_pair(stride)
    xs = _to_nchw(np.asarray(x, dtype=np.float64), layout)[:, :, ::sh, ::sw]
    y = _grouped_1x1(xs, _weight_2d(weight).astype(np.float64), groups)
    if bias is not None:
        y += np.asarray(bias, dtype=np.float64)[None, :, None, None]
    result: npt.NDArray[np.float64] = _from_nchw(_apply_activation(y, activation), layout)
    return result


def conv1x1_tolerance(
    x: npt.ArrayLike,
    weight: npt.ArrayLike,
    bias: npt.ArrayLike | None = None,
    layout: str = "NCHW",
    stride: int | tuple[int, int] = 1,
    groups: int = 1,
    activation: _ActivationLike = None,
) -> npt.NDArray[np.float64]:
    """Elementwise float64 bound on |float32 result - reference| (see the module docstring)."""
    w = _weight_2d(weight).astype(np.float64)
    cg = w.shape[1]
    magnitude = conv1x1_reference(
        np.abs(np.asarray(x, dtype=np.float64)),
        np.abs(w),
        None if bias is None else np.abs(np.asarray(bias, dtype=np.float64)),
        layout=layout,
        stride=stride,
        groups=groups,
    )
    tol: npt.NDArray[np.float64] = 4.0 * _EPS32 * (cg + 2) * magnitude
    # Slack for flushed float32 subnormals, and for clamp bounds that float32 rounds.
    tol += (cg + 2) * _TINY32
    if activation is not None and not isinstance(activation, str):
        tol += _EPS32 * max([abs(float(v)) for v in activation if np.isfinite(v)] + [0.0])
    return tol


def assert_matches_reference(
    got: npt.ArrayLike,
    x: npt.ArrayLike,
    weight: npt.ArrayLike,
    bias: npt.ArrayLike | None = None,
    layout: str = "NCHW",
    stride: int | tuple[int, int] = 1,
    groups: int = 1,
    activation: _ActivationLike = None,
) -> None:
    """Check a float32 result against the reference: same shape, the same NaN and +-Inf
    entries, and every finite entry within ``conv1x1_tolerance``. The other arguments
    are those the result was computed with; raises AssertionError naming the first
    entry that differs."""
    kwargs: dict[str, Any] = dict(
        layout=layout, stride=stride, groups=groups, activation=activation
    )
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


def max_relative_error(result: npt.ArrayLike, reference: npt.ArrayLike) -> float:
    """max |result - reference| divided by max |reference| (a scale-free error); compare
    it with ``RELATIVE_TOLERANCE``."""
    expected = np.asarray(reference, np.float64)
    scale = float(np.max(np.abs(expected), initial=0.0)) or 1.0
    return float(np.max(np.abs(np.asarray(result, np.float64) - expected), initial=0.0)) / scale


# ============================================================================= int8 path
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

#: The int32 accumulator's range: sums outside it wrap (``wrap_to_int32``).
INT32_MIN: Final = -(2**31)
INT32_MAX: Final = 2**31 - 1

#: The 8-bit dtypes of quantized tensors, and the range each saturates to.
QDTYPE_RANGES: Final[Mapping[np.dtype[Any], tuple[int, int]]] = {
    np.dtype(np.uint8): (0, 255),
    np.dtype(np.int8): (-128, 127),
}


def _qpair(quant: _QuantPair) -> tuple[npt.NDArray[np.float32], npt.NDArray[Any]]:
    """(float32 scale, zero point) arrays from any (scale, zero_point) pair."""
    scale, zero_point = quant
    return np.asarray(scale, dtype=np.float32), np.asarray(zero_point)


def qactivation_bounds(
    activation: _ActivationLike,
    out_dtype: npt.DTypeLike,
    y_scale: float,
    y_zero_point: int,
) -> tuple[int, int]:
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


def qconv1x1_accumulators(
    x: npt.ArrayLike,
    weight: npt.ArrayLike,
    bias: npt.ArrayLike | None = None,
    *,
    x_zero_point: int,
    layout: str = "NCHW",
    stride: int | tuple[int, int] = 1,
    groups: int = 1,
) -> npt.NDArray[np.int64]:
    """int64 ``acc[n,k,h,w] = sum_c (x[n, g*Cg+c, h*sh, w*sw] - x_zp) * W[k,c] + b[k]`` in
    NCHW, whatever ``layout`` is; exact, not yet wrapped to int32."""
    sh, sw = _stride_pair(stride)
    xs = _to_nchw(np.asarray(x), layout)[:, :, ::sh, ::sw].astype(np.int64)
    xs -= int(x_zero_point)
    acc: npt.NDArray[np.int64] = _grouped_1x1(xs, _weight_2d(weight).astype(np.int64), groups)
    if bias is not None:
        acc += np.asarray(bias).astype(np.int64)[None, :, None, None]
    return acc


def wrap_to_int32(values: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """int64 values taken modulo 2**32 into [INT32_MIN, INT32_MAX], as two's complement
    int32 arithmetic leaves a sum that does not fit."""
    wrapped: npt.NDArray[np.int64] = (np.asarray(values, np.int64) - INT32_MIN) % 2**32 + INT32_MIN
    return wrapped


def qconv1x1_reference(
    x: npt.ArrayLike,
    weight: npt.ArrayLike,
    bias: npt.ArrayLike | None = None,
    *,
    x_quant: _QuantPair,
    w_quant: _QuantPair,
    y_quant: _QuantPair | None = None,
    out_dtype: npt.DTypeLike | None = None,
    layout: str = "NCHW",
    stride: int | tuple[int, int] = 1,
    groups: int = 1,
    activation: _ActivationLike = None,
) -> npt.NDArray[Any]:
    """fastpw's quantized 1x1 convolution, exactly (see the formula above).

    ``x`` is uint8 or int8, (N, C, H, W) for "NCHW" or (N, H, W, C) for "NHWC"; the
    result has the same layout and dtype ``out_dtype`` (default: x's dtype). ``weight``
    is int8 (K, C/groups) or (K, C/groups, 1, 1); ``bias`` int32 (K,) or None. The
    ``*_quant`` arguments are (scale, zero_point) pairs; ``w_quant``'s scale is a scalar
    or one per output channel and its zero point must be 0. The arguments are those of
    ``fastpw.QConv1x1`` and its call.
    """
    x = np.asarray(x)
    assert x.dtype in (np.uint8, np.int8), x.dtype
    out_dtype = np.dtype(x.dtype if out_dtype is None else out_dtype)
    xs, x_zp = _qpair(x_quant)
    ws, w_zp = _qpair(w_quant)
    assert xs.ndim == 0 and ws.ndim in (0, 1), (xs.shape, ws.shape)
    assert np.all(np.asarray(w_zp) == 0), w_zp
    acc = qconv1x1_accumulators(
        x, weight, bias, x_zero_point=int(x_zp), layout=layout, stride=stride, groups=groups
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
    assert y_quant is not None, "an 8-bit output needs y_quant"
    ys, y_zp = _qpair(y_quant)
    assert ys.ndim == 0, ys.shape
    multiplier = dequant / ys  # float32 / float32 -> float32
    v = acc32 * multiplier  # float32 * float32 -> float32
    assert multiplier.dtype == v.dtype == np.float32
    lo, hi = qactivation_bounds(activation, out_dtype, float(ys), int(y_zp))
    q = np.rint(v.astype(np.float64)) + int(y_zp)
    q = np.minimum(np.maximum(q, lo), hi)
    return _from_nchw(q.astype(out_dtype), layout)


# ================================================================= quantize / dequantize


def quantize_reference(
    x: npt.ArrayLike,
    scale: npt.ArrayLike,
    zero_point: npt.ArrayLike,
    dtype: npt.DTypeLike,
    axis: int | None = None,
) -> npt.NDArray[Any]:
    """ONNX QuantizeLinear, literally: x -> float32, scale -> float32, v = x / scale in
    float32, rint (half to even), NaN -> 0, then + zero point and saturate in float64 (exact:
    rint(v) is a float32 integer or +-inf). The arguments are those of
    ``fastpw.quant.quantize`` with the qparams spelled out."""
    dtype = np.dtype(dtype)
    lo, hi = QDTYPE_RANGES[dtype]
    with np.errstate(over="ignore"):
        x32 = np.asarray(x).astype(np.float32)
    ndim = x32.ndim
    s32 = _along_axis(np.asarray(scale, dtype=np.float64).astype(np.float32), ndim, axis)
    zp = _along_axis(np.asarray(zero_point).astype(np.int64), ndim, axis)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore", under="ignore"):
        v = np.divide(x32, s32, dtype=np.float32)
    assert v.dtype == np.float32
    r = np.rint(v).astype(np.float64)
    r = np.where(np.isnan(r), 0.0, r)
    q: npt.NDArray[Any] = np.clip(r + zp, lo, hi).astype(dtype)
    return q


def dequantize_reference(
    xq: npt.ArrayLike,
    scale: npt.ArrayLike,
    zero_point: npt.ArrayLike,
    axis: int | None = None,
) -> npt.NDArray[np.float32]:
    """ONNX DequantizeLinear: float32(q - zp) * float32(scale), one float32 multiply
    (q - zp is an integer of at most 510 in magnitude, exact in float32)."""
    xq = np.asarray(xq)
    ndim = xq.ndim
    diff = xq.astype(np.int64) - _along_axis(np.asarray(zero_point).astype(np.int64), ndim, axis)
    d32 = diff.astype(np.float32)
    s32 = _along_axis(np.asarray(scale, dtype=np.float64).astype(np.float32), ndim, axis)
    y: npt.NDArray[np.float32] = d32 * s32
    assert d32.dtype == s32.dtype == y.dtype == np.float32
    return y


def qparams_reference(
    lo: npt.ArrayLike, hi: npt.ArrayLike, dtype: npt.DTypeLike, symmetric: bool = False
) -> tuple[float, int] | tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]] | None:
    """The (scale, zero_point) ``fastpw.quant.choose_qparams`` documents for the range
    [lo, hi], widened to contain 0, or None where the scale overflows float32 (the range
    is too wide).

    Asymmetric: scale = float32(max((hi - lo) / (qmax - qmin), eps32)) and zero point =
    clip(qmin - rint(lo / scale), qmin, qmax). Symmetric: scale = float32(max(max(-lo,
    hi) / 127, eps32)) and zero point 0 for int8, 128 for uint8. A range of width 0
    (all zeros) gets scale 1.0. Scalar ``lo`` and ``hi`` give (float, int), as
    ``choose_qparams`` per tensor; arrays (one range per channel) give (float32 array,
    int64 array).
    """
    qmin, qmax = QDTYPE_RANGES[np.dtype(dtype)]
    lo64 = np.minimum(np.asarray(lo, np.float64), 0.0)
    hi64 = np.maximum(np.asarray(hi, np.float64), 0.0)
    if symmetric:
        width, steps = np.maximum(-lo64, hi64), 127.0
    else:
        width, steps = hi64 - lo64, float(qmax - qmin)
    with np.errstate(all="ignore"):
        scale = np.maximum(width / steps, _EPS32).astype(np.float32)
        scale = np.where(width > 0, scale, np.float32(1.0)).astype(np.float32)
        if symmetric:
            zero_point = np.full(scale.shape, 0 if qmin < 0 else 128, np.int64)
        else:
            rounded = np.rint(lo64 / scale.astype(np.float64))
            zero_point = np.clip(qmin - rounded, qmin, qmax).astype(np.int64)
    if not np.all(np.isfinite(scale)):
        return None
    if scale.ndim == 0:
        return float(scale), int(zero_point)
    return scale, zero_point
