"""What the user passes and gets back: validation, normalization, path choice.

This module knows no ISA. It turns arguments into a `_kernels.F32Plan` (weights, bias,
groups, layout, fused clamp) and hands arrays to the plan's fast path; anything the fast
path declines (a strided or non-contiguous input, an output view it cannot write
directly, a bad argument) comes back here to be copied once or reported clearly. The
checks that fastpw.quant shares (arrays, qparams, thread counts, the weight scale) are
in `fastpw._checks`; the layers' own settings (layout, stride, groups, activation) are
checked here.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from . import _kernels
from ._checks import (
    QUANTIZED_X_DTYPES,
    QParams,
    _check_float32,
    _check_int8_weight,
    _check_int32_bias,
    _check_out,
    _check_zero_point,
    _contiguous_aligned,
    _dtype_range,
    _float_path_x_message,
    _is_int,
    _normalize_bias,
    _normalize_num_threads,
    _normalize_w_quant,
    _normalize_weight,
    _per_tensor_qparams,
    _QParamsLike,
    _quantized_dtype,
    _refuse_masked,
    _symmetric_scale,
)

LAYOUTS = ("NCHW", "NHWC")
NAMED_ACTIVATIONS = {"relu": (0.0, math.inf), "relu6": (0.0, 6.0)}
# The layers' fast path takes plain ndarrays only: a subclass (a masked array, whose mask
# the kernels would not read) goes through the checks of the general path. (A module
# name, not np.ndarray: the attribute lookup would double the check's cost per call.)
_PLAIN_ARRAY = np.ndarray

# What callers may pass for stride and activation (the API's argument types).
_StrideLike = int | tuple[int, int] | list[int]
_ActivationLike = str | tuple[float, float] | list[float] | None
# An activation as a layer holds it: a name or a (lo, hi) clamp.
_Activation = str | tuple[float, float] | None
# The fast path of a plan: (x, out, threads) -> the output, or None when it declines.
_PlanRun = Callable[
    [npt.NDArray[Any], npt.NDArray[Any] | None, int | None],
    npt.NDArray[Any] | None,
]


def _normalize_layout(layout: object) -> str:
    if isinstance(layout, str) and layout.upper() in LAYOUTS:
        return layout.upper()
    raise ValueError(f"layout must be 'NCHW' or 'NHWC' (any case); got {layout!r}")


def _normalize_stride(stride: object) -> tuple[int, int]:
    pair = (stride, stride) if _is_int(stride) else stride
    if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and all(_is_int(s) for s in pair)):
        raise TypeError(f"stride must be an int or a pair of ints (sh, sw); got {stride!r}")
    if pair[0] < 1 or pair[1] < 1:
        raise ValueError(f"stride must be >= 1; got {stride!r}")
    return int(pair[0]), int(pair[1])


def _normalize_activation(activation: object) -> tuple[_Activation, tuple[float, float] | None]:
    """Return (canonical activation, clamp bounds or None)."""
    if activation is None:
        return None, None
    if isinstance(activation, str):
        name = activation.lower()
        if name in NAMED_ACTIVATIONS:
            return name, NAMED_ACTIVATIONS[name]
        raise ValueError(
            f"activation must be None, 'relu', 'relu6' or a (lo, hi) clamp; got {activation!r}"
        )
    if (
        isinstance(activation, (tuple, list))
        and len(activation) == 2
        and all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in activation)
    ):
        try:
            lo, hi = float(activation[0]), float(activation[1])
        except OverflowError:  # an int beyond float64
            raise ValueError("activation clamp bounds must fit a float64") from None
        if math.isnan(lo) or math.isnan(hi) or lo > hi:
            raise ValueError(
                f"activation clamp (lo, hi) needs lo <= hi, no NaN; got {activation!r}"
            )
        return (lo, hi), (lo, hi)
    raise ValueError(
        f"activation must be None, 'relu', 'relu6' or a (lo, hi) clamp; got {activation!r}"
    )


def _normalize_groups(groups: int) -> int:
    if not _is_int(groups):
        raise TypeError(f"groups must be an int >= 1; got {groups!r}")
    if groups < 1:
        raise ValueError(f"groups must be >= 1; got {groups}")
    return int(groups)


def _check_input(
    x: npt.ArrayLike,
    in_channels: int,
    groups: int,
    layout: str,
    check_dtype: Callable[[str, npt.NDArray[Any]], None],
) -> npt.NDArray[Any]:
    _refuse_masked("x", x)
    if not isinstance(x, np.ndarray):
        x = np.asarray(x)
    check_dtype("x", x)
    if x.ndim != 4:
        axes = "(N, C, H, W)" if layout == "NCHW" else "(N, H, W, C)"
        raise ValueError(f"x must be 4-D {axes} for layout {layout!r}; got shape {x.shape}")
    channels = x.shape[1] if layout == "NCHW" else x.shape[3]
    if channels != in_channels:
        raise ValueError(
            f"x has {channels} channels (layout {layout!r}, shape {x.shape}) but the weight "
            f"expects {in_channels} = (C/groups={in_channels // groups}) x (groups={groups})"
        )
    return x


def _output_shape(
    x: npt.NDArray[Any], out_channels: int, stride: tuple[int, int], layout: str
) -> tuple[int, int, int, int]:
    sh, sw = stride
    if layout == "NCHW":
        n, _, h, w = x.shape
        return (n, out_channels, -(-h // sh), -(-w // sw))
    n, h, w, _ = x.shape
    return (n, -(-h // sh), -(-w // sw), out_channels)


def _run_general(
    plan: _kernels.F32Plan | _kernels.Q8Plan,
    layout: str,
    stride: tuple[int, int],
    x: npt.ArrayLike,
    out: npt.NDArray[Any] | None,
    num_threads: int | None,
    *,
    check_dtype: Callable[[str, npt.NDArray[Any]], None],
    out_dtype: Callable[[npt.NDArray[Any]], npt.DTypeLike],
    run: _PlanRun,
) -> npt.NDArray[Any]:
    """Validate everything, copy what the fast path cannot read, then run the plan.

    `check_dtype(name, x)` raises for an x the path does not take; `out_dtype(x)` is the
    output dtype for that x; `run(x, out, threads)` is the plan's fast path, trusted
    here not to need the overlap check (done exactly below).
    """
    x = _check_input(x, plan.in_channels, plan.groups, layout, check_dtype)
    threads = _normalize_num_threads(num_threads)
    shape = _output_shape(x, plan.out_channels, stride, layout)
    dtype = out_dtype(x)
    if out is not None:
        # (The float plan reads the caller's bias in place; the quantized one a copy.)
        reads = {"x": x, "the weight": plan.weight, "the bias": getattr(plan, "bias", None)}
        out = _check_out(out, shape, dtype, reads)
    if math.prod(shape) == 0:
        return np.empty(shape, dtype=dtype) if out is None else out
    sh, sw = stride
    if (sh, sw) != (1, 1):
        x = x[:, :, ::sh, ::sw] if layout == "NCHW" else x[:, ::sh, ::sw, :]
    y = run(x, out, threads)
    if y is None:  # x's strides do not fold into the kernel's view, or it is misaligned
        x = _contiguous_aligned(x)
        y = run(x, out, threads)
    if y is None:  # only out's layout is left: compute aside, then copy into it
        assert out is not None  # (a new output is always one the fast path can write)
        y = run(x, None, threads)
        out[...] = y
        y = out
    return y


def _run_float(
    plan: _kernels.F32Plan,
    layout: str,
    stride: tuple[int, int],
    x: npt.ArrayLike,
    out: npt.NDArray[np.float32] | None,
    num_threads: int | None,
) -> npt.NDArray[np.float32]:
    return _run_general(
        plan,
        layout,
        stride,
        x,
        out,
        num_threads,
        check_dtype=_check_float32,
        out_dtype=lambda x: np.float32,
        run=lambda x, out, threads: plan.run(x, out, threads, False),
    )


def _layer_settings(layer: Conv1x1 | QConv1x1) -> dict[str, Any]:
    """The keyword arguments both layers take besides weights and qparams, as a layer
    holds them (normalized): what a pickle keeps of them."""
    return dict(
        layout=layer.layout, stride=layer.stride, groups=layer.groups, activation=layer.activation
    )


class Conv1x1:
    """A float32 1x1 convolution layer whose weights are packed once.

    ``layer(x, out=None, num_threads=None)`` returns the same bits as
    ``conv1x1(x, weight, bias, ...)`` with the layer's settings, with no per-call weight
    work. The layer packs for the float32 kernel that runs when it is built (``layer.isa``
    names its family: ``fastpw.isa("float32")`` then).

    Attributes: weight (float32 (K, C/groups), read-only copy), bias (float32 (K,) or
    None, read-only copy), in_channels, out_channels, layout, stride, groups, activation.

    Pickling and ``copy`` keep the constructor's arguments, never the packed panels:
    loading builds the layer again, packed for the loading process's kernel family.
    """

    weight: npt.NDArray[np.float32]
    bias: npt.NDArray[np.float32] | None
    in_channels: int
    out_channels: int
    layout: str
    stride: tuple[int, int]
    groups: int
    activation: _Activation

    def __init__(
        self,
        weight: npt.ArrayLike,
        bias: npt.ArrayLike | None = None,
        *,
        layout: str = "NCHW",
        stride: _StrideLike = 1,
        groups: int = 1,
        activation: _ActivationLike = None,
    ) -> None:
        self.layout = _normalize_layout(layout)
        self.stride = _normalize_stride(stride)
        self.groups = _normalize_groups(groups)
        self.activation, clamp = _normalize_activation(activation)
        self.weight = _normalize_weight(weight, self.groups, _check_float32).copy()
        self.weight.flags.writeable = False
        self.bias = _normalize_bias(bias, self.weight.shape[0], _check_float32)
        if self.bias is not None:
            self.bias = self.bias.copy()
            self.bias.flags.writeable = False
        self.out_channels = self.weight.shape[0]
        self.in_channels = self.weight.shape[1] * self.groups
        self._plan = _kernels.F32Plan(
            self.weight, self.bias, self.groups, self.layout == "NHWC", clamp, True
        )
        self._fast = self.stride == (1, 1)

    @property
    def isa(self) -> str:
        """The kernel family whose kernel this layer's weights are packed for."""
        return self._plan.isa

    def __getstate__(self) -> dict[str, Any]:
        return dict(weight=self.weight, bias=self.bias, **_layer_settings(self))

    def __setstate__(self, state: dict[str, Any]) -> None:
        Conv1x1.__init__(self, **state)

    def __call__(
        self,
        x: npt.ArrayLike,
        out: npt.NDArray[np.float32] | None = None,
        num_threads: int | None = None,
    ) -> npt.NDArray[np.float32]:
        if self._fast and type(x) is _PLAIN_ARRAY and (out is None or type(out) is _PLAIN_ARRAY):
            y = self._plan.run(x, out, num_threads)
            if y is not None:
                return y
        return _run_float(self._plan, self.layout, self.stride, x, out, num_threads)

    def __repr__(self) -> str:
        return (
            f"Conv1x1(in_channels={self.in_channels}, out_channels={self.out_channels}, "
            f"layout={self.layout!r}, stride={self.stride}, groups={self.groups}, "
            f"activation={self.activation!r}, bias={self.bias is not None}, isa={self.isa!r})"
        )


def conv1x1(
    x: npt.ArrayLike,
    weight: npt.ArrayLike,
    bias: npt.ArrayLike | None = None,
    *,
    layout: str = "NCHW",
    stride: _StrideLike = 1,
    groups: int = 1,
    activation: _ActivationLike = None,
    out: npt.NDArray[Any] | None = None,
    num_threads: int | None = None,
    x_quant: _QParamsLike | None = None,
    w_quant: _QParamsLike | None = None,
    y_quant: _QParamsLike | None = None,
    out_dtype: npt.DTypeLike | None = None,
) -> npt.NDArray[Any]:
    """1x1 convolution of ``x`` with ``weight`` (+ ``bias``), activation fused.

    ``y[n, k, h, w] = act(sum_c weight[k, c] * x[n, g*C/groups + c, h*sh, w*sw] + bias[k])``
    for output channel k in group g, in NCHW or NHWC (``layout``, any case). Output
    spatial size is ceil(H/sh) x ceil(W/sw), as PyTorch's conv2d with a 1x1 kernel.

    Parameters
    ----------
    x : (N, C, H, W) for "NCHW" or (N, H, W, C) for "NHWC"; any strides. float32 takes
        the float path; uint8 or int8 takes the quantized path (see ``QConv1x1`` for its
        exact arithmetic), which needs ``x_quant``, ``w_quant`` and, for an 8-bit
        output, ``y_quant``.
    weight : (K, C/groups) or (K, C/groups, 1, 1) (PyTorch's layout): float32, or int8
        on the quantized path.
    bias : (K,) or None: float32, or int32 in scale x_scale * w_scale[k] (ONNX's
        convention) on the quantized path.
    layout : "NCHW" or "NHWC".
    stride : int or (sh, sw), >= 1.
    groups : int >= 1 dividing C and K.
    activation : None, "relu", "relu6" or a (lo, hi) clamp (real units), applied in the
        kernel.
    out : optional array of the output shape and dtype, possibly a channel slice of a
        larger buffer (``buf[:, 64:128]`` in NCHW); written and returned.
    num_threads : None for the OpenMP default (OMP_NUM_THREADS, threadpoolctl), or an int
        >= 1 capping this call.
    x_quant, w_quant, y_quant : (scale, zero_point) pairs or ``QParams`` (quantized path);
        a per-tensor scale or zero point is a number or a one-element array.
    out_dtype : quantized path: None (x's dtype), uint8, int8, int32 or float32.

    For repeated calls with the same weights, ``Conv1x1`` / ``QConv1x1`` pack them once.
    """
    if _is_quantized_input(x):
        if x_quant is None and w_quant is None and _is_float_array(weight):
            # An 8-bit image given to the float path, not a quantized call missing its
            # qparams: say how to get float32 x (or where the quantized path starts).
            raise TypeError(_float_path_x_message(_dtype_of(x)))
        # (QConv1x1 reports x_quant or w_quant left None as missing.)
        layer = QConv1x1(
            weight,
            bias,
            x_quant=x_quant,  # type: ignore[arg-type]
            w_quant=w_quant,  # type: ignore[arg-type]
            y_quant=y_quant,
            out_dtype=out_dtype,
            layout=layout,
            stride=stride,
            groups=groups,
            activation=activation,
        )
        return layer._run(x, out, num_threads)
    given = [
        name
        for name, value in (
            ("x_quant", x_quant),
            ("w_quant", w_quant),
            ("y_quant", y_quant),
            ("out_dtype", out_dtype),
        )
        if value is not None
    ]
    if given:
        raise TypeError(
            f"{', '.join(given)} only apply to uint8/int8 x (the quantized path); x has "
            f"dtype {_dtype_of(x)}"
        )
    layout = _normalize_layout(layout)
    stride = _normalize_stride(stride)
    groups = _normalize_groups(groups)
    _, clamp = _normalize_activation(activation)
    weight = _normalize_weight(weight, groups, _check_float32)
    bias = _normalize_bias(bias, weight.shape[0], _check_float32)
    plan = _kernels.F32Plan(weight, bias, groups, layout == "NHWC", clamp, False)
    return _run_float(plan, layout, stride, x, out, num_threads)


# ---------------------------------------------------------------------------------------
# The quantized path

OUT_DTYPES = {
    np.dtype(np.uint8): _kernels.OUT_UINT8,
    np.dtype(np.int8): _kernels.OUT_INT8,
    np.dtype(np.int32): _kernels.OUT_INT32,
    np.dtype(np.float32): _kernels.OUT_FLOAT32,
}


def _dtype_of(value: object) -> np.dtype[Any]:
    return value.dtype if isinstance(value, np.ndarray) else np.asarray(value).dtype


def _is_quantized_input(x: object) -> bool:
    return _dtype_of(x) in QUANTIZED_X_DTYPES


def _is_float_array(value: object) -> bool:
    return _dtype_of(value).kind == "f"


def _normalize_out_dtype(out_dtype: npt.DTypeLike | None) -> np.dtype[Any] | None:
    if out_dtype is None:
        return None
    try:
        dtype = np.dtype(out_dtype)
    except TypeError:
        dtype = None
    if dtype not in OUT_DTYPES:
        raise ValueError(
            f"out_dtype must be None, uint8, int8, int32 or float32; got {out_dtype!r}"
        )
    return dtype


def _quantized_bounds(
    activation: _Activation, y_scale32: np.float32, y_zero_point: int, dtype: npt.DTypeLike
) -> tuple[int, int]:
    """[lo, hi] of an 8-bit output: the dtype's range narrowed by the activation, whose
    bounds are real numbers quantized as y_zp + rint(bound / y_scale) (float64 division
    of the float32 scale, round half to even) and then kept inside the dtype's range, so
    a clamp that lies wholly outside it pins the output to the nearer end."""
    q_min, q_max = _dtype_range(dtype)
    lo, hi = q_min, q_max
    if activation is None:
        return lo, hi
    # (A layer's activation is a name NAMED_ACTIVATIONS holds, or its (lo, hi) bounds.)
    real_lo, real_hi = NAMED_ACTIVATIONS.get(activation, activation)  # type: ignore[arg-type]
    scale = float(y_scale32)

    def quantized(bound: float) -> int:
        # Clamp in float first: bound / scale may overflow to inf for a huge bound and a
        # tiny scale, and int() of an inf is an error where the documented result is the
        # nearer end of the range.
        steps = min(max(float(np.rint(bound / scale)), q_min - y_zero_point), q_max - y_zero_point)
        return y_zero_point + int(steps)

    if math.isfinite(real_lo):
        lo = quantized(real_lo)
    if math.isfinite(real_hi):
        hi = quantized(real_hi)
    return lo, hi


class QConv1x1:
    """An int8 1x1 convolution layer: weights packed once, requantization fused.

    ``layer(xq, out=None, num_threads=None)`` takes uint8 or int8 ``xq`` in either
    layout. The arithmetic, per output element (channel k, every float float32):

        acc = sum_c (x - x_zp) * w[k, c] + bias[k]             int32, wrapping
        M[k] = float32(float32(x_scale * w_scale[k]) / y_scale)
        8-bit out:  y = clamp(round_half_to_even(float32(acc) * M[k]) + y_zp, lo, hi)
        float32 out: y = act(float32(acc) * float32(x_scale * w_scale[k]))
        int32 out:  y = acc

    acc is exact when the sum fits int32 and wraps modulo 2**32 when it does not (as
    ONNX Runtime's accumulators). [lo, hi] is the output dtype's range narrowed by the
    activation: relu raises lo to y_zp; relu6 also lowers hi to y_zp + rint(6 / y_scale);
    a (lo, hi) clamp in real units is quantized the same way; bounds beyond the dtype's
    range are brought back to it (a clamp wholly outside the range pins every output to
    the nearer end). With no activation this is ONNX QLinearConv as ONNX Runtime
    computes it, bit for bit.

    Parameters: ``weight`` int8 (K, C/groups[, 1, 1]); ``bias`` int32 (K,) in scale
    x_scale * w_scale[k], or None; ``x_quant``, ``w_quant`` (scale a float or K floats,
    zero point 0), ``y_quant`` (needed for 8-bit output): (scale, zero_point) pairs or
    ``QParams``, a per-tensor scale or zero point a number or a one-element array;
    ``out_dtype`` None (x's dtype), uint8, int8, int32 or float32; layout, stride, groups
    and activation as for ``Conv1x1``.

    At build time the layer packs the weights for the int8 kernel that runs then
    (``layer.isa`` names its family: ``fastpw.isa("int8")``), folds the
    input zero point (x_zp * sum_c w[k, c]) and any sign-shift compensation into the
    bias, and computes the requantization multipliers, so a call does only the GEMM and
    its epilogue. Pickling and ``copy`` keep the constructor's arguments (int8 weights,
    int32 bias, qparams, settings), never the packed panels: loading builds the layer
    again for the loading process's kernel family.
    """

    weight: npt.NDArray[np.int8]
    bias: npt.NDArray[np.int32] | None
    x_quant: QParams
    w_quant: QParams
    y_quant: QParams | None
    out_dtype: np.dtype[Any] | None
    in_channels: int
    out_channels: int
    layout: str
    stride: tuple[int, int]
    groups: int
    activation: _Activation

    def __init__(
        self,
        weight: npt.ArrayLike,
        bias: npt.ArrayLike | None = None,
        *,
        x_quant: _QParamsLike,
        w_quant: _QParamsLike,
        y_quant: _QParamsLike | None = None,
        out_dtype: npt.DTypeLike | None = None,
        layout: str = "NCHW",
        stride: _StrideLike = 1,
        groups: int = 1,
        activation: _ActivationLike = None,
    ) -> None:
        self.layout = _normalize_layout(layout)
        self.stride = _normalize_stride(stride)
        self.groups = _normalize_groups(groups)
        self.activation, clamp = _normalize_activation(activation)
        self.out_dtype = _normalize_out_dtype(out_dtype)

        self.weight = _normalize_weight(weight, self.groups, _check_int8_weight).copy()
        self.weight.flags.writeable = False
        self.out_channels, channels_per_group = self.weight.shape
        self.in_channels = channels_per_group * self.groups
        self.bias = _normalize_bias(bias, self.out_channels, _check_int32_bias)
        if self.bias is not None:
            self.bias = self.bias.copy()
            self.bias.flags.writeable = False

        x_scale32, x_zero_point = _per_tensor_qparams("x_quant", x_quant, "per-tensor activations")
        self.x_quant = QParams(float(x_scale32), x_zero_point)
        w_scales, w_per_tensor = _normalize_w_quant(w_quant, self.out_channels)
        if w_per_tensor:
            self.w_quant = QParams(float(w_scales[0]), 0)
        else:
            self.w_quant = QParams(w_scales.copy(), 0)
            self.w_quant.scale.flags.writeable = False  # the packed layer does not follow it

        eight_bit = self.out_dtype is None or self.out_dtype.itemsize == 1
        if y_quant is None:
            self.y_quant = None
            if eight_bit:
                raise TypeError(
                    "y_quant is required for an 8-bit output (out_dtype None means x's "
                    "dtype); pass y_quant=(scale, zero_point) or out_dtype=np.int32/np.float32"
                )
        else:
            range_dtype = self.out_dtype if eight_bit else None  # None: uint8 or int8 range
            y_scale32, y_zero_point = _per_tensor_qparams(
                "y_quant", y_quant, "per-tensor outputs", range_dtype
            )
            self.y_quant = QParams(float(y_scale32), y_zero_point)
        if self.activation is not None and self.out_dtype == np.int32:
            raise ValueError(
                "activation needs an 8-bit or float32 output; int32 output is the raw accumulator"
            )
        epilogues = self._epilogues(x_scale32, w_scales, clamp)
        self._out_type = None if self.out_dtype is None else OUT_DTYPES[self.out_dtype]
        self._plan = _kernels.Q8Plan(
            self.weight,
            self.bias,
            self.groups,
            self.layout == "NHWC",
            self.x_quant.zero_point,
            epilogues,
        )
        self._fast = self.stride == (1, 1)

    def _epilogues(
        self,
        x_scale32: npt.NDArray[np.float32],
        w_scales32: npt.NDArray[np.float32],
        clamp: tuple[float, float] | None,
    ) -> dict[int, _kernels._Epilogue]:
        """Per output type: (scale, lo, hi, zero_point, clamp) for the kernels' epilogue."""
        dequant = (np.float32(x_scale32) * w_scales32).astype(np.float32)  # float32 product
        real_lo, real_hi = clamp if clamp is not None else (-math.inf, math.inf)
        epilogues = {
            _kernels.OUT_INT32: (None, 0.0, 0.0, 0, 0),
            _kernels.OUT_FLOAT32: (dequant, real_lo, real_hi, 0, int(clamp is not None)),
        }
        if self.y_quant is not None:
            y_scale32 = np.float32(self.y_quant.scale)
            requant = (dequant / y_scale32).astype(np.float32)  # float32 division
            y_zero_point = self.y_quant.zero_point
            for dtype in (np.dtype(np.uint8), np.dtype(np.int8)):
                lo, hi = _dtype_range(dtype)
                if not lo <= y_zero_point <= hi:
                    continue  # reported when x of that dtype asks for this output
                lo, hi = _quantized_bounds(self.activation, y_scale32, y_zero_point, dtype)
                epilogues[OUT_DTYPES[dtype]] = (
                    requant,
                    float(lo - y_zero_point),
                    float(hi - y_zero_point),
                    y_zero_point,
                    1,
                )
        return epilogues

    @property
    def isa(self) -> str:
        """The kernel family whose kernel this layer's weights are packed for."""
        return self._plan.isa

    def _resolved_out_dtype(self, x: npt.NDArray[Any]) -> np.dtype[Any]:
        return self.out_dtype if self.out_dtype is not None else x.dtype

    def _check_x(self, name: str, x: npt.NDArray[Any]) -> None:
        if x.dtype not in QUANTIZED_X_DTYPES:
            hint = (
                ": quantize it first (x_scale, x_zero_point), or use the float layer Conv1x1"
                if x.dtype.kind == "f"
                else ""
            )
            raise TypeError(
                f"{name} must be uint8 or int8 for a quantized layer; got {x.dtype}{hint}"
            )
        _check_zero_point("x_quant", self.x_quant.zero_point, x.dtype)
        out_dtype = self._resolved_out_dtype(x)
        if out_dtype.itemsize == 1:
            assert self.y_quant is not None  # (__init__ requires it for 8-bit outputs)
            _check_zero_point("y_quant", self.y_quant.zero_point, out_dtype)

    def __getstate__(self) -> dict[str, Any]:
        return dict(
            weight=self.weight,
            bias=self.bias,
            x_quant=self.x_quant,
            w_quant=self.w_quant,
            y_quant=self.y_quant,
            out_dtype=self.out_dtype,
            **_layer_settings(self),
        )

    def __setstate__(self, state: dict[str, Any]) -> None:
        QConv1x1.__init__(self, **state)

    def __call__(
        self,
        x: npt.ArrayLike,
        out: npt.NDArray[Any] | None = None,
        num_threads: int | None = None,
    ) -> npt.NDArray[Any]:
        if self._fast and type(x) is _PLAIN_ARRAY and (out is None or type(out) is _PLAIN_ARRAY):
            y = self._plan.run(x, out, self._out_type, num_threads)
            if y is not None:
                return y
        return self._run(x, out, num_threads)

    def _run(
        self, x: npt.ArrayLike, out: npt.NDArray[Any] | None, num_threads: int | None
    ) -> npt.NDArray[Any]:
        return _run_general(
            self._plan,
            self.layout,
            self.stride,
            x,
            out,
            num_threads,
            check_dtype=self._check_x,
            out_dtype=self._resolved_out_dtype,
            run=lambda x, out, threads: self._plan.run(x, out, self._out_type, threads, False),
        )

    @classmethod
    def from_float(
        cls,
        weight: npt.ArrayLike,
        bias: npt.ArrayLike | None = None,
        *,
        x_quant: _QParamsLike,
        y_quant: _QParamsLike | None = None,
        per_channel: bool = True,
        x_dtype: npt.DTypeLike = np.uint8,
        out_dtype: npt.DTypeLike | None = None,
        layout: str = "NCHW",
        stride: _StrideLike = 1,
        groups: int = 1,
        activation: _ActivationLike = None,
    ) -> QConv1x1:
        """Quantize float32 weights symmetrically and build the layer.

        w_scale[k] = float32(peak[k] / 127), at least ``fastpw.quant.MIN_SCALE``, where
        peak[k] = max_c |w[k, c]| per output channel (per_channel=True) or max |w| for
        the tensor; an all-zero channel or tensor (peak 0) gets 1.0, as any scale
        represents 0 exactly. These are the scales of ``fastpw.quant.choose_qparams(w,
        np.int8, symmetric=True)`` (``axis=0`` per channel): one formula for both. Where
        a bias would not fit the int32 accumulator with room for any sum of products
        (|bias_q| > 2**31 - 1 - Cg * 255 * 127), the peak is raised until it does; so an
        all-zero channel with a nonzero bias gets the smallest scale at which its bias
        fits (at least MIN_SCALE), which keeps the bias precise. w_q = clip(rint(w /
        w_scale), -127, 127) as int8; bias_q[k] = rint(bias[k] / (x_scale *
        w_scale[k])) as int32 (clipped to int32), in float64 from the float32 scales.
        ``x_dtype`` is the dtype of the inputs the layer will see: it sets the default
        output dtype and the valid range of x's zero point.
        """
        weight = _normalize_weight(weight, _normalize_groups(groups), _check_float32)
        x_dtype = _quantized_dtype("x_dtype", x_dtype)
        x_scale32, x_zero_point = _per_tensor_qparams(
            "x_quant", x_quant, "per-tensor activations", x_dtype
        )
        w64 = weight.astype(np.float64)
        bias = _normalize_bias(bias, w64.shape[0], _check_float32)
        if bias is not None and not np.all(np.isfinite(bias)):
            raise ValueError("bias has NaN or Inf entries: from_float needs finite values")
        if per_channel:
            peak = np.abs(w64).max(axis=1)
        else:
            peak = np.full(w64.shape[0], np.abs(w64).max())
        own_peak = peak
        # The int32 accumulator must hold bias_q plus any sum of products: leave room for
        # the largest, Cg * 255 * 127. A channel with tiny weights and a sizeable bias
        # (a "dead" unit) would otherwise clip its bias and wrap; raising its weight
        # scale until the bias fits costs it weight resolution it does not use.
        # (0.1% less, for the rounding of the scale to float32.)
        bias_room = 0.999 * float(2**31 - 1 - w64.shape[1] * 255 * 127)
        if bias is not None and bias_room > 0:
            needed = np.abs(bias.astype(np.float64)) / (float(x_scale32) * bias_room)
            peak = np.maximum(peak, 127.0 * (needed if per_channel else needed.max()))
        w_scale = _symmetric_scale(peak)  # (inf where it overflows: checked just below)
        if bias is not None and not np.all(np.isfinite(w_scale[np.isfinite(own_peak)])):
            raise ValueError(_bias_beyond_int32_message(bias, own_peak, x_scale32, bias_room))
        w_q = np.clip(np.rint(w64 / w_scale.astype(np.float64)[:, None]), -127, 127).astype(np.int8)
        bias_q = None
        if bias is not None:
            bias_scale = float(x_scale32) * w_scale.astype(np.float64)
            bias_q = np.clip(
                np.rint(bias.astype(np.float64) / bias_scale), -(2**31), 2**31 - 1
            ).astype(np.int32)
        if out_dtype is None:
            out_dtype = x_dtype
        return cls(
            w_q,
            bias_q,
            x_quant=(float(x_scale32), x_zero_point),
            w_quant=(w_scale if per_channel else float(w_scale[0]), 0),
            y_quant=y_quant,
            out_dtype=out_dtype,
            layout=layout,
            stride=stride,
            groups=groups,
            activation=activation,
        )

    def __repr__(self) -> str:
        out = "x's dtype" if self.out_dtype is None else str(self.out_dtype)
        per_channel = np.ndim(self.w_quant.scale) == 1
        return (
            f"QConv1x1(in_channels={self.in_channels}, out_channels={self.out_channels}, "
            f"layout={self.layout!r}, stride={self.stride}, groups={self.groups}, "
            f"activation={self.activation!r}, bias={self.bias is not None}, "
            f"x_quant={tuple(self.x_quant)}, "
            f"w_scale={'per-channel' if per_channel else 'per-tensor'}, "
            f"y_quant={None if self.y_quant is None else tuple(self.y_quant)}, out_dtype={out}, "
            f"isa={self.isa!r})"
        )


def _bias_beyond_int32_message(
    bias: npt.NDArray[Any],
    weight_peak: npt.NDArray[np.float64],
    x_scale32: npt.NDArray[np.float32],
    bias_room: float,
) -> str:
    """from_float's error for a bias that no float32 weight scale brings into the int32
    accumulator: it names the bias and the x_quant scale (the user's arguments; the
    weight scale is derived) and the values that would fit."""
    own_scale = _symmetric_scale(weight_peak).astype(np.float64)  # the weights' own scale
    x_scale = float(x_scale32)
    magnitude = np.abs(bias.astype(np.float64))
    # The x_quant scale at which each bias fits beside its weights at their own scale.
    x_needed = magnitude / (own_scale * bias_room)
    k = int(np.argmax(x_needed))
    return (
        f"bias[{k}] = {float(bias[k]):.6g} is too large for x_quant scale {x_scale:.6g}: "
        f"from_float quantizes the bias to int32 in steps of x_scale * weight scale, and no "
        f"float32 weight scale brings it into the int32 accumulator. Quantize x with a "
        f"larger scale (an x_quant scale >= {float(x_needed[k]):.3g} fits this bias beside "
        f"the weights' own scale; the scale is x's real range / 255), or keep |bias| <= "
        f"{x_scale * float(own_scale[k]) * bias_room:.3g} at this x_quant scale"
    )
