"""The checks of what callers pass: one home for each, used by the layers and by quant.

Arrays (weight, bias, ``out``, masked arrays), quantization parameters (scale, zero
point, the (scale, zero_point) pair), thread counts, and the one formula that turns a
range into a scale. ``fastpw._api`` (the layers and ``conv1x1``) and ``fastpw.quant``
both import from here and from nowhere else for these, so a fault is reported in the
same words wherever it is made, and a range gets the same scale wherever it is chosen
(scikit-learn's ``utils/validation.py`` plays this part there).

Nothing here knows a layer, a plan or an ISA: each function checks one argument (or
one pair) and returns it normalized, or raises TypeError (a wrong kind of value) or
ValueError (a right kind, a wrong value) with a message that names the argument.
"""

from __future__ import annotations

import math
import numbers
from collections import namedtuple
from collections.abc import Callable, Mapping
from typing import Any, cast

import numpy as np
import numpy.typing as npt

MAX_THREADS = 65536  # the kernels cap any larger request to this
QUANTIZED_X_DTYPES = (np.dtype(np.uint8), np.dtype(np.int8))
#: Smallest scale a nonzero range gets (float32 epsilon, as PyTorch's observers): a
#: narrower one would make requantization multipliers overflow.
MIN_SCALE = float(np.finfo(np.float32).eps)
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_EIGHT_BIT_RANGES = {np.dtype(np.uint8): (0, 255), np.dtype(np.int8): (-128, 127)}

# (module="fastpw": pickles and reprs name the public fastpw.QParams, not this module.)
QParams = namedtuple("QParams", ["scale", "zero_point"], module="fastpw")
QParams.__doc__ = """Quantization parameters: real = scale * (q - zero_point)."""
# What callers may pass as qparams: QParams or a (scale, zero_point) pair, each a number
# or an array (per channel, or one element).
_QParamsLike = QParams | tuple[npt.ArrayLike, npt.ArrayLike]
# A check of an array's dtype: (name for the message, array) -> None, or raises.
_DtypeCheck = Callable[[str, npt.NDArray[Any]], None]


# ---------------------------------------------------------------------------------------
# Values of any kind


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _refuse_masked(name: str, value: object) -> None:
    """Every entry point's check for numpy masked arrays: the kernels read the data and
    never the mask, so a masked array would be computed as if nothing were masked."""
    if isinstance(value, np.ma.MaskedArray):
        raise TypeError(
            f"{name} is a numpy masked array, and fastpw does not read masks: pass "
            f"{name}.filled(value) to give the masked entries a value, or np.asarray({name}) "
            f"if the mask is meant to be ignored"
        )


def _dtype_range(dtype: npt.DTypeLike) -> tuple[int, int]:
    """[min, max] of an integer dtype."""
    if isinstance(dtype, np.dtype) and dtype in _EIGHT_BIT_RANGES:
        return _EIGHT_BIT_RANGES[dtype]  # (np.iinfo costs microseconds, per call of quantize)
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)


def _quantized_dtype(name: str, dtype: npt.DTypeLike) -> np.dtype[Any]:
    """`dtype` as np.dtype, if it is uint8 or int8."""
    try:
        result = np.dtype(dtype)
    except TypeError:
        result = None
    if result not in QUANTIZED_X_DTYPES:
        raise ValueError(f"{name} must be uint8 or int8; got {dtype!r}")
    return result


def _normalize_num_threads(num_threads: int | None) -> int | None:
    if num_threads is None:
        return None
    if not _is_int(num_threads):
        raise TypeError(f"num_threads must be None or an int >= 1; got {num_threads!r}")
    if num_threads < 1:
        raise ValueError(f"num_threads must be None or >= 1; got {num_threads}")
    return min(int(num_threads), MAX_THREADS)


# ---------------------------------------------------------------------------------------
# Array dtypes


def _float_path_x_message(dtype: npt.DTypeLike) -> str:
    """What to tell a caller who gives integer x (an 8-bit image, say) to the float path."""
    message = (
        f"x has dtype {np.dtype(dtype)} but the float layer takes float32 x: convert it with "
        f"x.astype(np.float32), scaled as you intend (e.g. / 255 for an 8-bit image)"
    )
    if np.dtype(dtype) in QUANTIZED_X_DTYPES:
        message += (
            ", or use the quantized path: fastpw.QConv1x1 (or QConv1x1.from_float for float "
            "weights) with x_quant, on x from fastpw.quant.quantize or already quantized"
        )
    return message


def _check_float32(name: str, array: npt.NDArray[Any]) -> None:
    dtype = array.dtype
    if dtype == np.float32:
        return
    if dtype.kind == "f":
        raise TypeError(
            f"{name} has dtype {dtype}; fastpw's float path computes in float32: "
            f"cast with {name}.astype(np.float32)"
        )
    if name == "x" and dtype.kind in "iu":
        raise TypeError(_float_path_x_message(dtype))
    if dtype.kind in "iu":
        raise TypeError(
            f"{name} has integer dtype {dtype} but this is the float32 path: int8 weights "
            f"need uint8/int8 x with x_quant/w_quant/y_quant (the quantized path), or "
            f"pass float32"
        )
    raise TypeError(f"{name} must be a float32 array; got dtype {dtype}")


def _check_int8_weight(name: str, weight: npt.NDArray[Any]) -> None:
    if weight.dtype != np.int8:
        hint = " or build the layer with QConv1x1.from_float" if weight.dtype.kind == "f" else ""
        raise TypeError(f"{name} must be int8 on the quantized path; got {weight.dtype}{hint}")


def _check_int32_bias(name: str, bias: npt.NDArray[Any]) -> None:
    if bias.dtype != np.int32:
        hint = (
            ": quantize it to int32 in scale x_scale * w_scale[k], or build the layer "
            "with QConv1x1.from_float"
            if bias.dtype.kind == "f"
            else ""
        )
        raise TypeError(f"{name} must be int32 on the quantized path; got {bias.dtype}{hint}")


# ---------------------------------------------------------------------------------------
# Weight, bias, out


def _contiguous_aligned(array: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """`array` itself if C-contiguous and aligned, else an aligned C-contiguous copy (the
    kernels read elements through typed pointers; misaligned ones are undefined in C)."""
    return np.require(array, requirements=("C_CONTIGUOUS", "ALIGNED"))


def _normalize_weight(
    weight: npt.ArrayLike, groups: int, check_dtype: _DtypeCheck
) -> npt.NDArray[Any]:
    """(K, C/groups), C-contiguous and aligned (a view of the caller's array when
    possible), from (K, C/groups) or PyTorch's (K, C/groups, 1, 1). `check_dtype`: the
    path's dtype (_check_float32, _check_int8_weight); `groups` must divide K."""
    _refuse_masked("weight", weight)
    weight = np.asarray(weight)
    check_dtype("weight", weight)
    if weight.ndim == 4 and weight.shape[2:] == (1, 1):
        weight = weight.reshape(weight.shape[:2])
    if weight.ndim != 2:
        raise ValueError(
            "weight must be (K, C/groups) or (K, C/groups, 1, 1) for a 1x1 convolution; "
            f"got shape {weight.shape}"
        )
    out_channels, channels_per_group = weight.shape
    if out_channels == 0 or channels_per_group == 0:
        raise ValueError(
            f"weight must have at least one input and output channel; got {weight.shape}"
        )
    if out_channels % groups != 0:
        raise ValueError(
            f"groups={groups} must divide the output channels K={out_channels} "
            f"(weight shape {weight.shape})"
        )
    return _contiguous_aligned(weight)


def _normalize_bias(
    bias: npt.ArrayLike | None, out_channels: int, check_dtype: _DtypeCheck
) -> npt.NDArray[Any] | None:
    """None, or (K,) C-contiguous and aligned (a view of the caller's array when
    possible). `check_dtype`: the path's dtype (_check_float32, _check_int32_bias)."""
    if bias is None:
        return None
    _refuse_masked("bias", bias)
    bias = np.asarray(bias)
    check_dtype("bias", bias)
    if bias.shape != (out_channels,):
        raise ValueError(
            f"bias must have shape ({out_channels},) (one per output channel); got {bias.shape}"
        )
    return _contiguous_aligned(bias)


def _check_out(
    out: object,
    shape: tuple[int, ...],
    dtype: npt.DTypeLike,
    reads: Mapping[str, npt.NDArray[Any] | None],
) -> npt.NDArray[Any]:
    """`out` itself, if it is a writeable numpy array of `shape` and `dtype` that shares
    no memory with the arrays the call reads: `reads` maps each to the words that name
    it in a message ("x", "the weight"; None for an array the call does not have)."""
    dtype = np.dtype(dtype)
    _refuse_masked("out", out)
    if not isinstance(out, np.ndarray):
        raise TypeError(
            f"out must be a numpy {dtype} array of shape {shape}; got {type(out).__name__}"
        )
    if out.dtype != dtype:
        raise TypeError(f"out must have dtype {dtype}; got {out.dtype}")
    if out.shape != shape:
        raise ValueError(f"out must have shape {shape}; got {out.shape}")
    if not out.flags.writeable:
        raise ValueError("out is read-only; pass a writeable array")
    for what, array in reads.items():
        # (may_share_memory first: the exact test can cost more than the call.)
        if array is not None and np.may_share_memory(out, array) and np.shares_memory(out, array):
            raise ValueError(
                f"out overlaps {what}; fastpw does not compute in place: pass a separate out array"
            )
    return out


# ---------------------------------------------------------------------------------------
# Quantization parameters


def _split_qparams(name: str, qparams: Any) -> tuple[Any, Any]:
    if qparams is None:
        raise TypeError(f"{name} is required: pass a (scale, zero_point) pair or fastpw.QParams")
    try:
        scale, zero_point = qparams
    except (TypeError, ValueError):
        raise TypeError(
            f"{name} must be a (scale, zero_point) pair or fastpw.QParams; got {qparams!r}"
        ) from None
    return scale, zero_point


def _check_scale(name: str, scale: object) -> npt.NDArray[np.float32]:
    """Positive finite scales, as float32: a 0-d array for a number, else 1-D (of any
    length; callers check it against what they need)."""
    if isinstance(scale, (float, np.floating)):
        # A plain number, the common case: the checks below without array machinery
        # (per call of quantize it would cost as much as quantizing 50k elements).
        value = float(scale)
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} scale must be positive and finite; got {scale!r}")
        if value <= _FLOAT32_MAX:
            scale32 = np.array(value, dtype=np.float32)
        else:  # (it may still round down to the largest float32)
            with np.errstate(over="ignore"):
                scale32 = np.array(value, dtype=np.float32)
        if not (math.isfinite(scale32) and scale32 > 0):
            raise ValueError(f"{name} scale {scale!r} is not a positive finite float32")
        return scale32
    try:
        array = np.asarray(scale, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(
            f"{name} scale must be a float or a 1-D array of floats; got {scale!r}"
        ) from None
    if array.ndim > 1:
        raise ValueError(f"{name} scale must be a float or a 1-D array; got shape {array.shape}")
    if not np.all(np.isfinite(array)) or not np.all(array > 0):
        raise ValueError(f"{name} scale must be positive and finite; got {scale!r}")
    with np.errstate(over="ignore"):
        scale32 = array.astype(np.float32)
    if not np.all(scale32 > 0) or not np.all(np.isfinite(scale32)):
        raise ValueError(f"{name} scale {scale!r} is not a positive finite float32")
    return scale32


def _zero_point_range(
    name: str, zero_point: object, low: Any, high: Any, dtype: npt.DTypeLike | None
) -> None:
    """Raise unless low and high (the smallest and largest zero point given) lie in
    `dtype`'s range (None: uint8's or int8's, [-128, 255])."""
    lo, hi = _dtype_range(dtype) if dtype is not None else (-128, 255)
    if not (lo <= low and high <= hi):
        where = f"{np.dtype(dtype)}" if dtype is not None else "uint8 or int8"
        raise ValueError(
            f"{name} zero point {zero_point!r} is outside the {where} range [{lo}, {hi}]"
        )


def _check_zero_point(name: str, zero_point: object, dtype: npt.DTypeLike | None = None) -> int:
    """One zero point: an int (not a bool), or an array holding one (ONNX initializers
    hold per-tensor values as shape (1,)), in `dtype`'s range (None: uint8's or int8's)."""
    if isinstance(zero_point, np.ndarray) and zero_point.shape in ((), (1,)):
        zero_point = zero_point.reshape(())[()]
    if not _is_int(zero_point):
        raise TypeError(f"{name} zero point must be an int; got {zero_point!r}")
    value = int(cast(numbers.Integral, zero_point))  # (checked just above)
    _zero_point_range(name, value, value, value, dtype)
    return value


def _check_zero_points(
    name: str, zero_point: object, dtype: npt.DTypeLike
) -> npt.NDArray[np.int32]:
    """An int or a 1-D array of ints (per axis), each in `dtype`'s range, as int32: a
    0-d array for an int. Integer dtypes only: a float that happens to be whole is a
    TypeError here as for the layers' zero points."""
    if _is_int(zero_point):
        return np.array(_check_zero_point(name, zero_point, dtype), dtype=np.int32)
    values = np.asarray(zero_point)
    if values.size == 0 and values.dtype.kind == "f":  # ([]: no zero points, for an empty axis)
        values = values.astype(np.int32)
    if values.dtype.kind not in "iu":
        raise TypeError(f"{name} zero point must be an int or an array of ints; got {zero_point!r}")
    if values.ndim > 1:
        raise ValueError(
            f"{name} zero point must be an int or a 1-D array; got shape {values.shape}"
        )
    if values.size:
        _zero_point_range(name, zero_point, values.min(), values.max(), dtype)
    return values.astype(np.int32)


def _per_tensor_qparams(
    name: str, qparams: Any, what: str, dtype: npt.DTypeLike | None = None
) -> tuple[npt.NDArray[np.float32], int]:
    """(float32 scale, zero point) of a per-tensor (scale, zero_point) pair; either may
    be a number or an array holding one (ONNX initializers are often shape (1,)). The
    zero point must lie in `dtype`'s range (None: uint8's or int8's)."""
    scale, zero_point = _split_qparams(name, qparams)
    scale32 = _check_scale(name, scale)
    if scale32.size != 1:
        raise ValueError(f"{name} scale must be one float ({what}); got {scale32.size} scales")
    return scale32.reshape(()), _check_zero_point(name, zero_point, dtype)


def _normalize_w_quant(w_quant: Any, out_channels: int) -> tuple[npt.NDArray[np.float32], bool]:
    """w_quant -> (float32 scales of length K, per tensor?): a per-tensor scale (a number,
    or one scale in an array when K > 1) is repeated K times."""
    scale, zero_point = _split_qparams("w_quant", w_quant)
    scale32 = _check_scale("w_quant", scale)
    per_tensor = scale32.ndim == 0 or (scale32.shape[0] == 1 and out_channels > 1)
    if not per_tensor and scale32.shape[0] != out_channels:
        raise ValueError(
            f"w_quant per-channel scale must have length K={out_channels} (or be one scale, "
            f"per tensor); got {scale32.shape[0]}"
        )
    zeros = np.asarray(zero_point)
    if zeros.dtype.kind not in "iub" or zeros.ndim > 1 or np.any(zeros != 0):
        raise ValueError(
            f"w_quant zero point must be 0 (symmetric weights, as TFLite, XNNPACK and ONNX "
            f"Runtime's fast path require); got {zero_point!r}"
        )
    return np.broadcast_to(scale32, (out_channels,)).astype(np.float32), per_tensor


# ---------------------------------------------------------------------------------------
# From a range to a scale: the one formula


def _range_scale(width: npt.ArrayLike, steps: float) -> npt.NDArray[np.float32]:
    """The float32 scale that spreads a range `width` wide (float64 >= 0, a number or an
    array) over `steps` quantization steps: width / steps in float64, at least
    MIN_SCALE, rounded to float32; inf where that overflows float32 (the callers
    report it). A range of width 0 (all-zero data, an all-zero weight channel) gets 1.0,
    as in ONNX Runtime's quantization tools: any scale represents 0 exactly, and a bias
    quantized beside such a channel, bias / (x_scale * w_scale), stays in int32, where
    MIN_SCALE would overflow it for any |bias| above about 256 * x_scale."""
    width = np.asarray(width, dtype=np.float64)
    with np.errstate(over="ignore"):  # (inf: see above)
        return np.where(width > 0, np.maximum(width / steps, MIN_SCALE), 1.0).astype(np.float32)


def _symmetric_scale(amax: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """The scale of symmetric 8-bit quantization of [-amax, amax]: 127 steps each side
    of the zero point (int8 weights use [-127, 127]). Per channel, amax is each
    channel's max |w|; per tensor, the tensor's."""
    return _range_scale(amax, 127.0)
