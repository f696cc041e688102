"""Quantized inference helper: from float pointwise layers to an int8 chain.

The pieces, smallest first:

- ``quantize(x, qparams, dtype=np.uint8, *, axis=None)`` and ``dequantize(xq, qparams,
  *, axis=None)``: float32 <-> uint8/int8 with ONNX QuantizeLinear / DequantizeLinear
  semantics, per tensor or per axis, in the compiled layer with OpenMP::

      q = saturate(rint(x / scale) + zero_point)     float32 division, half to even
      x = float32(q - zero_point) * scale

  NaN quantizes to the zero point (real 0); +-inf saturate.
- ``choose_qparams(x, ...)`` and ``Observer``: the scale and zero point for a tensor
  (or a stream of batches), from its min/max or from a percentile of a histogram; the
  range always contains 0, so real 0 is exactly representable.
- ``fold_batchnorm``: conv -> BatchNorm as one conv.
- ``sqnr(reference, approx)``: signal-to-quantization-noise ratio in dB.
- ``QuantizedSequential.calibrate(layers, calibration_inputs)``: observes every boundary
  of a chain of float ``fastpw.Conv1x1`` layers and builds the chain of ``QConv1x1``
  layers in which each layer's output qparams are the next layer's input qparams.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, TextIO, overload

import numpy as np
import numpy.typing as npt

from . import _kernels
from ._api import Conv1x1, QConv1x1
from ._checks import MIN_SCALE as MIN_SCALE  # (public here: choose_qparams's floor)
from ._checks import (
    QUANTIZED_X_DTYPES,
    QParams,
    _check_out,
    _check_scale,
    _check_zero_point,
    _check_zero_points,
    _dtype_range,
    _is_int,
    _normalize_num_threads,
    _QParamsLike,
    _quantized_dtype,
    _range_scale,
    _refuse_masked,
    _split_qparams,
    _symmetric_scale,
)

__all__ = [
    "Observer",
    "QuantizedSequential",
    "choose_qparams",
    "dequantize",
    "fold_batchnorm",
    "quantize",
    "sqnr",
]

METHODS = ("minmax", "percentile")
#: Bins of the "percentile" histogram (as PyTorch's HistogramObserver).
HISTOGRAM_BINS = 2048
#: Narrowest range the "percentile" histogram spans: its bins are then no narrower than
#: the smallest normal float64.
SMALLEST_HISTOGRAM_SPAN = HISTOGRAM_BINS * float(np.finfo(np.float64).tiny)


# ---------------------------------------------------------------------------------------
# Argument checks


@overload
def _normalize_axis(axis: None, ndim: int) -> None: ...
@overload
def _normalize_axis(axis: int, ndim: int) -> int: ...
def _normalize_axis(axis: int | None, ndim: int) -> int | None:
    if axis is None:
        return None
    if not _is_int(axis):
        raise TypeError(f"axis must be None or an int; got {axis!r}")
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis {axis} is out of range for an array of {ndim} dimensions")
    return int(axis) % ndim


def _real_float64(name: str, value: object) -> npt.NDArray[np.float64]:
    """value as a float64 array, if it holds real numbers (bool, int or float): complex
    would lose its imaginary part, and None, datetimes, objects or ints past float64
    would become NaN, garbage or an OverflowError inside the arithmetic."""
    _refuse_masked(name, value)
    array = np.asarray(value)
    if array.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers; got {array.dtype} {value!r:.80}")
    return array.astype(np.float64)


def _qparams_arrays(
    qparams: _QParamsLike, dtype: np.dtype[Any], axis: int | None, shape: tuple[int, ...]
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int32], int]:
    """(scale float32 (A,), zero point int32 (A,), inner) for an array of `shape`: A is 1
    per tensor, shape[axis] per axis; inner is the number of elements after the axis."""
    scale, zero_point = _split_qparams("qparams", qparams)
    if axis is None and isinstance(scale, (float, np.floating)) and _is_int(zero_point):
        # Per tensor with plain numbers, the common case: the same checks, without the
        # array machinery below (it costs as much as quantizing 50k elements).
        scales = _check_scale("qparams", scale).reshape(1)
        zeros = np.array([_check_zero_point("qparams", zero_point, dtype)], dtype=np.int32)
        return scales, zeros, max(math.prod(shape), 1)
    scale32 = _check_scale("qparams", scale)
    zero_array = _check_zero_points("qparams", zero_point, dtype)
    ndim = len(shape)
    if axis is None:
        if scale32.size != 1 or zero_array.size != 1:
            raise ValueError(
                "per-axis qparams (arrays of scales or zero points) need axis=; "
                f"got {scale32.size} scales and {zero_array.size} zero points"
            )
        count, inner = 1, math.prod(shape)
    else:
        axis = _normalize_axis(axis, ndim)
        count = shape[axis]
        inner = math.prod(shape[axis + 1 :])
        for name, array in (("scale", scale32), ("zero point", zero_array)):
            if array.ndim == 1 and array.size != count:
                raise ValueError(f"{name} has {array.size} entries; axis {axis} has length {count}")
        if scale32.ndim == 0 and zero_array.ndim == 0:
            # Both shared along the axis: that is per tensor, and an axis of any length
            # (even 2**40 in an empty array) then costs no per-entry arrays.
            count, inner = 1, math.prod(shape)
    scales = np.ascontiguousarray(np.broadcast_to(scale32.reshape(-1), (count,)))
    zeros = np.ascontiguousarray(np.broadcast_to(zero_array.reshape(-1), (count,)))
    return scales, zeros, max(inner, 1)


def _run_elementwise(
    src: npt.NDArray[Any],
    dst: npt.NDArray[Any],
    scales: npt.NDArray[np.float32],
    zeros: npt.NDArray[np.int32],
    inner: int,
    quantizing: bool,
    num_threads: int | None,
) -> npt.NDArray[Any]:
    """Run the kernel into dst (any layout): through a C-contiguous buffer if needed."""
    direct = dst.flags.c_contiguous and dst.flags.aligned
    target = dst if direct else np.empty(dst.shape, dst.dtype)
    _kernels.quantize_elementwise(
        src, target, scales, zeros, inner, quantizing, _normalize_num_threads(num_threads)
    )
    if target is not dst:
        dst[...] = target
    return dst


# ---------------------------------------------------------------------------------------
# quantize / dequantize


def quantize(
    x: npt.ArrayLike,
    qparams: _QParamsLike,
    dtype: npt.DTypeLike = np.uint8,
    *,
    axis: int | None = None,
    out: npt.NDArray[Any] | None = None,
    num_threads: int | None = None,
) -> npt.NDArray[Any]:
    """float32 -> uint8/int8: ``saturate(rint(x / scale) + zero_point)``.

    ``qparams``: ``fastpw.QParams`` or a (scale, zero_point) pair; per axis, scale and
    zero point may be arrays of length ``x.shape[axis]`` (a scalar is shared). The
    division is in float32 and rounds half to even, as ONNX QuantizeLinear; NaN becomes
    the zero point, +-inf saturate. Any float input is converted to float32 first.
    """
    dtype = _quantized_dtype("dtype", dtype)
    _refuse_masked("x", x)
    x = np.asarray(x)
    if x.dtype.kind != "f":
        raise TypeError(f"quantize wants a float array; got {x.dtype}")
    # Aligned too: the kernel reads floats through typed pointers.
    x = np.require(np.asarray(x, dtype=np.float32), requirements=("C_CONTIGUOUS", "ALIGNED"))
    scales, zeros, inner = _qparams_arrays(qparams, dtype, axis, x.shape)
    out = np.empty(x.shape, dtype) if out is None else _check_out(out, x.shape, dtype, {"x": x})
    return _run_elementwise(x, out, scales, zeros, inner, True, num_threads)


def dequantize(
    xq: npt.ArrayLike,
    qparams: _QParamsLike,
    *,
    axis: int | None = None,
    out: npt.NDArray[np.float32] | None = None,
    num_threads: int | None = None,
) -> npt.NDArray[np.float32]:
    """uint8/int8 -> float32: ``float32(xq - zero_point) * scale`` (ONNX
    DequantizeLinear). ``qparams`` as for ``quantize``; the zero point must lie in xq's
    dtype range."""
    _refuse_masked("xq", xq)
    xq = np.asarray(xq)
    if xq.dtype not in QUANTIZED_X_DTYPES:
        raise TypeError(f"dequantize wants a uint8 or int8 array; got {xq.dtype}")
    xq = np.require(xq, requirements=("C_CONTIGUOUS",))
    scales, zeros, inner = _qparams_arrays(qparams, xq.dtype, axis, xq.shape)
    if out is None:
        out = np.empty(xq.shape, np.float32)
    else:
        out = _check_out(out, xq.shape, np.float32, {"xq": xq})
    return _run_elementwise(xq, out, scales, zeros, inner, False, num_threads)


# ---------------------------------------------------------------------------------------
# Choosing qparams


def _qparams_from_range(
    lo: npt.ArrayLike, hi: npt.ArrayLike, dtype: np.dtype[Any], symmetric: bool
) -> QParams:
    """QParams covering [lo, hi] (arrays or scalars, float64), widened to contain 0."""
    lo = np.minimum(np.asarray(lo, dtype=np.float64), 0.0)
    hi = np.maximum(np.asarray(hi, dtype=np.float64), 0.0)
    q_min, q_max = _dtype_range(dtype)
    if symmetric:
        # [-amax, amax] on 255 levels around the zero point: 0 for int8, 128 for uint8.
        scale = _symmetric_scale(np.maximum(-lo, hi))
        zero_point = np.full(scale.shape, 0 if q_min < 0 else 128, dtype=np.int64)
    else:
        scale = _range_scale(hi - lo, float(q_max - q_min))
        lo_steps = np.rint(lo / scale.astype(np.float64))  # (<= 0)
        zero_point = np.clip(q_min - lo_steps, q_min, q_max).astype(np.int64)
    if not np.all(np.isfinite(scale)):
        raise ValueError(f"the range [{lo.min()}, {hi.max()}] is too wide for a float32 scale")
    if scale.ndim == 0:
        return QParams(float(scale), int(zero_point))
    return QParams(scale, zero_point.astype(np.int32))


def choose_qparams(
    x: npt.ArrayLike,
    dtype: npt.DTypeLike = np.uint8,
    symmetric: bool = False,
    axis: int | None = None,
    method: str = "minmax",
    percentile: float = 99.99,
) -> QParams:
    """QParams for quantizing ``x`` to ``dtype``.

    minmax: the range [min(x), max(x)]; percentile: the (100 - p)-th and p-th
    percentiles (of |x| when symmetric), read from a histogram of HISTOGRAM_BINS bins
    (so the same as an ``Observer`` that saw x). The range is widened to contain 0, so 0
    is exactly representable. Asymmetric: scale = (hi - lo) / (qmax - qmin), zero point
    = qmin - rint(lo / scale). Symmetric: scale = max(|lo|, hi) / 127, zero point 0 for
    int8 and 128 for uint8 (with int8, per output channel, the weight scales
    ``QConv1x1.from_float`` uses). Scales are float32, at least MIN_SCALE; a range of
    width 0 (x all zero, or a channel all zero per axis) gets scale 1.0, as in ONNX
    Runtime's quantization tools (PyTorch's observers give MIN_SCALE): any scale
    represents 0 exactly, and a bias quantized beside an all-zero weight channel,
    bias / (x_scale * w_scale), stays in int32 with 1.0, where MIN_SCALE would overflow
    it for any |bias| above about 256 * x_scale. Per axis (``axis=``): arrays of scales
    and zero points (minmax only).
    """
    observer = Observer(dtype, symmetric=symmetric, axis=axis, method=method, percentile=percentile)
    observer.update(x)
    return observer.qparams()


class Observer:
    """Collects the range of a stream of float tensors, then gives their QParams.

    ``update(x)`` batch after batch (running min/max, per axis when ``axis`` is given;
    or, for method="percentile", a histogram of HISTOGRAM_BINS bins that is re-binned
    when a batch widens its range), then ``qparams()`` (see ``choose_qparams``). NaN or
    Inf in a batch raises ValueError.
    """

    dtype: np.dtype[Any]
    symmetric: bool
    axis: int | None
    method: str
    percentile: float
    # None before the first batch; then float64 (per tensor) or float64 (A,) (per axis).
    min: Any
    max: Any
    histogram: npt.NDArray[np.float64] | None
    batches: int

    def __init__(
        self,
        dtype: npt.DTypeLike = np.uint8,
        symmetric: bool = False,
        axis: int | None = None,
        method: str = "minmax",
        percentile: float = 99.99,
    ) -> None:
        self.dtype = _quantized_dtype("dtype", dtype)
        self.symmetric = bool(symmetric)
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}; got {method!r}")
        self.method = method
        if axis is not None and not _is_int(axis):
            raise TypeError(f"axis must be None or an int; got {axis!r}")
        if axis is not None and method == "percentile":
            raise ValueError("method='percentile' is per tensor only (axis=None)")
        self.axis = axis
        try:
            percentile = float(percentile)
        except (TypeError, ValueError):
            raise TypeError(f"percentile must be a number; got {percentile!r}") from None
        except OverflowError:  # an int past float64: certainly not in (50, 100]
            raise ValueError(f"percentile must be in (50, 100]; got {percentile}") from None
        if not 50.0 < percentile <= 100.0:
            raise ValueError(f"percentile must be in (50, 100]; got {percentile}")
        self.percentile = percentile
        self.min = None  # running min / max (arrays per axis)
        self.max = None
        self.histogram = None  # counts over [self.min, self.max] (of |x| when symmetric)
        self.batches = 0

    def update(self, x: npt.ArrayLike) -> None:
        _refuse_masked("x", x)
        x = np.asarray(x)
        if x.dtype.kind not in "fiu" or x.dtype.kind == "b":
            raise TypeError(f"Observer.update wants a real-valued array; got {x.dtype}")
        if x.size == 0:
            raise ValueError("Observer.update got an empty array")
        if x.dtype.kind == "f" and not np.all(np.isfinite(x)):
            raise ValueError("Observer.update got NaN or Inf")
        x = x.astype(np.float64, copy=False)  # (so abs(int8 -128) is 128)
        if self.axis is not None:
            axis = _normalize_axis(self.axis, x.ndim)
            reduce = tuple(d for d in range(x.ndim) if d != axis)
            lo, hi = x.min(axis=reduce), x.max(axis=reduce)
            if self.min is not None and self.min.shape != lo.shape:
                raise ValueError(
                    f"axis {axis} has length {lo.shape[0]}; earlier batches had {self.min.shape[0]}"
                )
        else:
            lo, hi = x.min(), x.max()
        lo = np.asarray(lo, dtype=np.float64)
        hi = np.asarray(hi, dtype=np.float64)
        if self.method == "percentile":
            self._add_to_histogram(x, lo, hi)
        else:
            self.min = lo if self.min is None else np.minimum(self.min, lo)
            self.max = hi if self.max is None else np.maximum(self.max, hi)
        self.batches += 1

    def _add_to_histogram(self, x: npt.NDArray[np.float64], lo: Any, hi: Any) -> None:
        values = np.abs(x) if self.symmetric else x
        if self.symmetric:
            lo, hi = np.float64(0.0), np.maximum(-lo, hi)
        lo, hi = np.minimum(lo, 0.0), np.maximum(hi, 0.0)
        if 0 < hi - lo < SMALLEST_HISTOGRAM_SPAN:
            # Bins narrower than the smallest normal float64 cannot be told apart. Any
            # nonzero range this narrow gives scale MIN_SCALE, and the same zero point,
            # anyway.
            hi = lo + SMALLEST_HISTOGRAM_SPAN
        if self.histogram is None:
            self.min, self.max = lo, hi
            self.histogram = np.zeros(HISTOGRAM_BINS, np.float64)
        elif lo < self.min or hi > self.max:
            # Move each old bin's count to the new bin holding its center.
            new_lo, new_hi = min(lo, self.min), max(hi, self.max)
            width = (self.max - self.min) / HISTOGRAM_BINS
            centers = self.min + (np.arange(HISTOGRAM_BINS) + 0.5) * width
            self.histogram = np.histogram(
                centers, bins=HISTOGRAM_BINS, range=(new_lo, new_hi), weights=self.histogram
            )[0]
            self.min, self.max = new_lo, new_hi
        if self.max > self.min:
            counts = np.histogram(values, bins=HISTOGRAM_BINS, range=(self.min, self.max))[0]
            self.histogram += counts
        else:  # every value so far is 0
            self.histogram[0] += values.size

    def _percentile_range(self) -> tuple[float, float]:
        """The percentile bounds read from the histogram (linear within a bin)."""
        assert self.histogram is not None  # (qparams() calls this after an update)
        total = self.histogram.sum()
        edges = np.linspace(self.min, self.max, HISTOGRAM_BINS + 1)
        cumulative = np.concatenate(([0.0], np.cumsum(self.histogram))) / total
        upper = float(np.interp(self.percentile / 100.0, cumulative, edges))
        if self.symmetric:
            return 0.0, upper
        lower = float(np.interp(1.0 - self.percentile / 100.0, cumulative, edges))
        return lower, upper

    def qparams(self) -> QParams:
        if self.batches == 0:
            raise ValueError("Observer has seen no data: call update(x) first")
        if self.method == "percentile":
            lo, hi = self._percentile_range()
        else:
            lo, hi = self.min, self.max
        return _qparams_from_range(lo, hi, self.dtype, self.symmetric)

    def __repr__(self) -> str:
        return (
            f"Observer(dtype={self.dtype}, symmetric={self.symmetric}, axis={self.axis}, "
            f"method={self.method!r}, batches={self.batches})"
        )


# ---------------------------------------------------------------------------------------
# Layer algebra and error measures


def fold_batchnorm(
    weight: npt.ArrayLike,
    bias: npt.ArrayLike | None,
    gamma: npt.ArrayLike,
    beta: npt.ArrayLike,
    mean: npt.ArrayLike,
    var: npt.ArrayLike,
    eps: npt.ArrayLike = 1e-5,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """(weight', bias') such that conv(weight', bias') == BatchNorm(conv(weight, bias)).

    ``weight`` (K, C) or (K, C, 1, 1) float; ``bias`` (K,) or None (the bias=False +
    BatchNorm pattern); gamma, beta, mean, var (K,). With s = gamma / sqrt(var + eps):
    weight' = weight * s[k], bias' = beta + (bias - mean) * s. Computed in float64,
    returned as float32 in the weight's shape. Everything but weight may be bool, int or
    float; complex, object (None among numbers) and datetime values are a TypeError.
    """
    _refuse_masked("weight", weight)
    weight = np.asarray(weight)
    if weight.dtype.kind != "f":
        raise TypeError(f"weight must be a float array; got {weight.dtype}")
    if weight.ndim not in (2, 4) or (weight.ndim == 4 and weight.shape[2:] != (1, 1)):
        raise ValueError(f"weight must be (K, C) or (K, C, 1, 1); got shape {weight.shape}")
    channels = weight.shape[0]
    params = {}
    for name, value in (("gamma", gamma), ("beta", beta), ("mean", mean), ("var", var)):
        array = _real_float64(name, value)
        if array.shape != (channels,):
            raise ValueError(f"{name} must have shape ({channels},); got {array.shape}")
        params[name] = array
    bias = np.zeros(channels) if bias is None else _real_float64("bias", bias)
    if bias.shape != (channels,):
        raise ValueError(f"bias must have shape ({channels},); got {bias.shape}")
    eps = _real_float64("eps", eps)
    if eps.ndim != 0:
        raise ValueError(f"eps must be a number; got shape {eps.shape}")
    if not eps >= 0 or not np.all(params["var"] + eps > 0):  # (NaN fails both)
        raise ValueError("var + eps must be positive")
    factor = params["gamma"] / np.sqrt(params["var"] + eps)
    shape = (channels,) + (1,) * (weight.ndim - 1)
    folded_weight = (weight.astype(np.float64) * factor.reshape(shape)).astype(np.float32)
    folded_bias = (params["beta"] + (bias - params["mean"]) * factor).astype(np.float32)
    return folded_weight, folded_bias


def sqnr(reference: npt.ArrayLike, approx: npt.ArrayLike) -> float:
    """Signal-to-quantization-noise ratio in dB: 10 log10(sum(ref^2) / sum((ref -
    approx)^2)), in float64; inf when they are equal. Arrays of bool, int or float
    (complex, object and datetime arrays are a TypeError)."""
    reference = _real_float64("reference", reference)
    approx = _real_float64("approx", approx)
    if reference.shape != approx.shape:
        raise ValueError(f"shapes differ: {reference.shape} and {approx.shape}")
    noise = np.sum((reference - approx) ** 2)
    signal = np.sum(reference**2)
    if noise == 0:
        return math.inf
    if signal == 0:
        return -math.inf
    return float(10.0 * np.log10(signal / noise))


# ---------------------------------------------------------------------------------------
# A chain of pointwise layers, quantized


class QuantizedSequential:
    """A chain of ``QConv1x1`` layers built from float ``Conv1x1`` layers by calibration.

    Build it with ``QuantizedSequential.calibrate(layers, calibration_inputs, ...)``.
    ``net(x)`` quantizes the float input once, runs every layer in int8 (each layer's
    output qparams are the next one's input qparams) and dequantizes once at the end;
    ``net.run_quantized(xq)`` takes and returns the 8-bit tensors; ``net.report(x)``
    prints the SQNR of every layer's output against the float chain.

    Attributes: ``float_layers``, ``layers`` (the QConv1x1 chain), ``boundary_qparams``
    (one QParams per boundary: the input, then each layer's output), ``input_qparams``,
    ``output_qparams``, ``x_dtype``.
    """

    float_layers: list[Conv1x1]
    layers: list[QConv1x1]
    boundary_qparams: list[QParams]
    x_dtype: np.dtype[Any]

    def __init__(
        self,
        float_layers: Iterable[Conv1x1],
        layers: Iterable[QConv1x1],
        boundary_qparams: Iterable[QParams],
        x_dtype: npt.DTypeLike,
    ) -> None:
        self.float_layers = list(float_layers)
        self.layers = list(layers)
        self.boundary_qparams = list(boundary_qparams)
        self.x_dtype = np.dtype(x_dtype)

    @property
    def input_qparams(self) -> QParams:
        return self.boundary_qparams[0]

    @property
    def output_qparams(self) -> QParams:
        return self.boundary_qparams[-1]

    @classmethod
    def calibrate(
        cls,
        layers: Iterable[Conv1x1],
        calibration_inputs: npt.NDArray[Any] | Iterable[npt.ArrayLike],
        *,
        x_dtype: npt.DTypeLike = np.uint8,
        per_channel: bool = True,
        method: str = "minmax",
    ) -> QuantizedSequential:
        """Run the float chain on every calibration input, observe each boundary, and
        build the quantized chain (weights symmetric int8, per output channel unless
        ``per_channel=False``; activations asymmetric in ``x_dtype``)."""
        layers = _check_chain(layers)
        x_dtype = _quantized_dtype("x_dtype", x_dtype)
        if isinstance(calibration_inputs, np.ndarray):
            calibration_inputs = [calibration_inputs]
        if not isinstance(calibration_inputs, Iterable):
            raise TypeError("calibration_inputs must be an iterable of float arrays")
        observers = [Observer(x_dtype, method=method) for _ in range(len(layers) + 1)]
        for batch, x in enumerate(calibration_inputs):
            _refuse_masked(f"calibration_inputs[{batch}]", x)
            x = np.asarray(x)
            if x.dtype.kind != "f":
                raise TypeError(f"calibration inputs must be float arrays; got {x.dtype}")
            activations = [np.asarray(x, dtype=np.float32)]
            for layer in layers:
                activations.append(layer(activations[-1]))
            for index, (observer, value) in enumerate(zip(observers, activations, strict=False)):
                if not np.all(np.isfinite(value)):
                    raise ValueError(f"calibration data has NaN or Inf at {_boundary_name(index)}")
                observer.update(value)
        if observers[0].batches == 0:
            raise ValueError("calibration_inputs is empty: calibration needs at least one input")
        boundary_qparams = [observer.qparams() for observer in observers]
        quantized = [
            QConv1x1.from_float(
                layer.weight,
                layer.bias,
                x_quant=boundary_qparams[index],
                y_quant=boundary_qparams[index + 1],
                per_channel=per_channel,
                x_dtype=x_dtype,
                out_dtype=x_dtype,
                layout=layer.layout,
                stride=layer.stride,
                groups=layer.groups,
                activation=layer.activation,
            )
            for index, layer in enumerate(layers)
        ]
        return cls(layers, quantized, boundary_qparams, x_dtype)

    def quantize_input(self, x: npt.ArrayLike, num_threads: int | None = None) -> npt.NDArray[Any]:
        return quantize(x, self.input_qparams, self.x_dtype, num_threads=num_threads)

    def run_quantized(
        self, xq: npt.NDArray[Any], num_threads: int | None = None
    ) -> npt.NDArray[Any]:
        """The 8-bit input through every layer; returns the last layer's 8-bit output."""
        for layer in self.layers:
            xq = layer(xq, num_threads=num_threads)
        return xq

    def __call__(self, x: npt.ArrayLike, num_threads: int | None = None) -> npt.NDArray[np.float32]:
        xq = self.quantize_input(x, num_threads)
        return dequantize(
            self.run_quantized(xq, num_threads), self.output_qparams, num_threads=num_threads
        )

    def report(self, x: npt.ArrayLike, file: TextIO | None = None) -> list[dict[str, Any]]:
        """Print (to ``file``, default stdout) and return, per layer, the SQNR in dB of
        the int8 chain's dequantized output against the float chain's, both fed ``x``."""
        _refuse_masked("x", x)
        x = np.asarray(x, dtype=np.float32)
        rows: list[dict[str, Any]] = []
        reference = x
        xq = self.quantize_input(x)
        for index, (float_layer, layer) in enumerate(
            zip(self.float_layers, self.layers, strict=False)
        ):
            reference = float_layer(reference)
            xq = layer(xq)
            approx = dequantize(xq, self.boundary_qparams[index + 1])
            rows.append(
                {
                    "layer": index,
                    "in_channels": layer.in_channels,
                    "out_channels": layer.out_channels,
                    "activation": layer.activation,
                    "sqnr_db": sqnr(reference, approx),
                }
            )
        print(f"{'layer':>5}  {'channels':>12}  {'activation':>10}  {'SQNR dB':>8}", file=file)
        for row in rows:
            channels = f"{row['in_channels']}->{row['out_channels']}"
            print(
                f"{row['layer']:>5}  {channels:>12}  {str(row['activation']):>10}  "
                f"{row['sqnr_db']:8.2f}",
                file=file,
            )
        return rows

    def __repr__(self) -> str:
        chain = " -> ".join(f"{layer.in_channels}->{layer.out_channels}" for layer in self.layers)
        return f"QuantizedSequential({chain}, x_dtype={self.x_dtype}, isa={self.layers[0].isa!r})"


def _boundary_name(index: int) -> str:
    if index == 0:
        return "the input of layer 0"
    return f"the output of layer {index - 1}"


def _check_chain(layers: Iterable[Any]) -> list[Conv1x1]:
    try:
        layers = list(layers)
    except TypeError:
        raise TypeError("layers must be a list of fastpw.Conv1x1 layers") from None
    if not layers:
        raise ValueError("layers is empty: a chain needs at least one Conv1x1")
    for index, layer in enumerate(layers):
        if not isinstance(layer, Conv1x1):
            raise TypeError(f"layer {index} is {type(layer).__name__}, not fastpw.Conv1x1")
    for index, (first, second) in enumerate(zip(layers, layers[1:], strict=False)):
        if first.out_channels != second.in_channels:
            raise ValueError(
                f"layers do not chain: layer {index} gives {first.out_channels} channels, "
                f"layer {index + 1} takes {second.in_channels}"
            )
        if first.layout != second.layout:
            raise ValueError(
                f"layers do not chain: layer {index} is {first.layout}, "
                f"layer {index + 1} is {second.layout}"
            )
    return layers
