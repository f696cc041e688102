"""What the user passes and gets back: validation, normalization, path choice.

This module knows no ISA. It turns arguments into a `_kernels.F32Plan` (weights, bias,
groups, layout, fused clamp) and hands arrays to the plan's fast path; anything the fast
path declines (a strided or non-contiguous input, an output view it cannot write
directly, a bad argument) comes back here to be copied once or reported clearly.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from . import _kernels

LAYOUTS = ("NCHW", "NHWC")
NAMED_ACTIVATIONS = {"relu": (0.0, math.inf), "relu6": (0.0, 6.0)}
MAX_THREADS = 65536  # the kernels cap any larger request to this


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _normalize_layout(layout) -> str:
    if isinstance(layout, str) and layout.upper() in LAYOUTS:
        return layout.upper()
    raise ValueError(f"layout must be 'NCHW' or 'NHWC' (any case); got {layout!r}")


def _normalize_stride(stride) -> tuple[int, int]:
    pair = (stride, stride) if _is_int(stride) else stride
    if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and all(_is_int(s) for s in pair)):
        raise TypeError(f"stride must be an int or a pair of ints (sh, sw); got {stride!r}")
    if pair[0] < 1 or pair[1] < 1:
        raise ValueError(f"stride must be >= 1; got {stride!r}")
    return int(pair[0]), int(pair[1])


def _normalize_activation(activation):
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
        lo, hi = float(activation[0]), float(activation[1])
        if math.isnan(lo) or math.isnan(hi) or lo > hi:
            raise ValueError(
                f"activation clamp (lo, hi) needs lo <= hi, no NaN; got {activation!r}"
            )
        return (lo, hi), (lo, hi)
    raise ValueError(
        f"activation must be None, 'relu', 'relu6' or a (lo, hi) clamp; got {activation!r}"
    )


def _check_float32(name: str, array: np.ndarray) -> None:
    dtype = array.dtype
    if dtype == np.float32:
        return
    if dtype.kind == "f":
        raise TypeError(
            f"{name} has dtype {dtype}; fastpw's float path computes in float32: "
            f"cast with {name}.astype(np.float32)"
        )
    if dtype.kind in "iu":
        raise TypeError(
            f"{name} has integer dtype {dtype}; the quantized (int8) path is not available "
            f"yet: pass float32"
        )
    raise TypeError(f"{name} must be a float32 array; got dtype {dtype}")


def _normalize_groups(groups) -> int:
    if not _is_int(groups):
        raise TypeError(f"groups must be an int >= 1; got {groups!r}")
    if groups < 1:
        raise ValueError(f"groups must be >= 1; got {groups}")
    return int(groups)


def _normalize_weight(weight, groups: int) -> np.ndarray:
    """(K, C/groups) float32, C-contiguous (a view of the caller's array when possible)."""
    weight = np.asarray(weight)
    _check_float32("weight", weight)
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
    return np.ascontiguousarray(weight)


def _normalize_bias(bias, out_channels: int):
    if bias is None:
        return None
    bias = np.asarray(bias)
    _check_float32("bias", bias)
    if bias.shape != (out_channels,):
        raise ValueError(
            f"bias must have shape ({out_channels},) (one per output channel); got {bias.shape}"
        )
    return np.ascontiguousarray(bias)


def _normalize_num_threads(num_threads):
    if num_threads is None:
        return None
    if not _is_int(num_threads):
        raise TypeError(f"num_threads must be None or an int >= 1; got {num_threads!r}")
    if num_threads < 1:
        raise ValueError(f"num_threads must be None or >= 1; got {num_threads}")
    return min(int(num_threads), MAX_THREADS)


def _check_input(x, in_channels: int, groups: int, layout: str) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        x = np.asarray(x)
    _check_float32("x", x)
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


def _output_shape(x: np.ndarray, out_channels: int, stride, layout: str) -> tuple:
    sh, sw = stride
    if layout == "NCHW":
        n, _, h, w = x.shape
        return (n, out_channels, -(-h // sh), -(-w // sw))
    n, h, w, _ = x.shape
    return (n, -(-h // sh), -(-w // sw), out_channels)


def _check_out(out, shape: tuple, x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    if not isinstance(out, np.ndarray):
        raise TypeError(
            f"out must be a numpy float32 array of shape {shape}; got {type(out).__name__}"
        )
    if out.dtype != np.float32:
        raise TypeError(f"out must have dtype float32; got {out.dtype}")
    if out.shape != shape:
        raise ValueError(f"out must have shape {shape}; got {out.shape}")
    if not out.flags.writeable:
        raise ValueError("out is read-only; pass a writeable array")
    if np.shares_memory(out, x):
        raise ValueError(
            "out overlaps x; fastpw does not compute in place: pass a separate out array"
        )
    if np.shares_memory(out, weight):
        raise ValueError("out overlaps the weight; pass a separate out array")
    return out


def _run_general(plan, layout, stride, x, out, num_threads):
    """Validate everything, copy what the fast path cannot read, then run the plan."""
    x = _check_input(x, plan.in_channels, plan.groups, layout)
    threads = _normalize_num_threads(num_threads)
    shape = _output_shape(x, plan.out_channels, stride, layout)
    if out is not None:
        out = _check_out(out, shape, x, plan.weight)
    if math.prod(shape) == 0:
        return np.empty(shape, dtype=np.float32) if out is None else out
    sh, sw = stride
    if (sh, sw) != (1, 1):
        x = x[:, :, ::sh, ::sw] if layout == "NCHW" else x[:, ::sh, ::sw, :]
    y = plan.run(x, out, threads, False)
    if y is None:  # x's strides do not fold into the kernel's view: copy it once
        x = np.ascontiguousarray(x)
        y = plan.run(x, out, threads, False)
    if y is None:  # only out's layout is left: compute aside, then copy into it
        y = plan.run(x, None, threads, False)
        out[...] = y
        y = out
    return y


class Conv1x1:
    """A float32 1x1 convolution layer whose weights are packed once.

    ``layer(x, out=None, num_threads=None)`` returns the same bits as
    ``conv1x1(x, weight, bias, ...)`` with the layer's settings, with no per-call weight
    work. The layer packs for the kernel family active when it is built (``layer.isa``).

    Attributes: weight (float32 (K, C/groups), read-only copy), bias (float32 (K,) or
    None, read-only copy), in_channels, out_channels, layout, stride, groups, activation.
    """

    def __init__(self, weight, bias=None, *, layout="NCHW", stride=1, groups=1, activation=None):
        self.layout = _normalize_layout(layout)
        self.stride = _normalize_stride(stride)
        self.groups = _normalize_groups(groups)
        self.activation, clamp = _normalize_activation(activation)
        self.weight = _normalize_weight(weight, self.groups).copy()
        self.weight.flags.writeable = False
        self.bias = _normalize_bias(bias, self.weight.shape[0])
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
        """The kernel family this layer's weights are packed for."""
        return self._plan.isa

    def __call__(self, x, out=None, num_threads=None):
        if self._fast:
            y = self._plan.run(x, out, num_threads)
            if y is not None:
                return y
        return _run_general(self._plan, self.layout, self.stride, x, out, num_threads)

    def __repr__(self) -> str:
        return (
            f"Conv1x1(in_channels={self.in_channels}, out_channels={self.out_channels}, "
            f"layout={self.layout!r}, stride={self.stride}, groups={self.groups}, "
            f"activation={self.activation!r}, bias={self.bias is not None}, isa={self.isa!r})"
        )


def conv1x1(
    x,
    weight,
    bias=None,
    *,
    layout="NCHW",
    stride=1,
    groups=1,
    activation=None,
    out=None,
    num_threads=None,
):
    """1x1 convolution of float32 ``x`` with ``weight`` (+ ``bias``), activation fused.

    ``y[n, k, h, w] = act(sum_c weight[k, c] * x[n, g*C/groups + c, h*sh, w*sw] + bias[k])``
    for output channel k in group g, in NCHW or NHWC (``layout``, any case). Output
    spatial size is ceil(H/sh) x ceil(W/sw), as PyTorch's conv2d with a 1x1 kernel.

    Parameters
    ----------
    x : float32 array, (N, C, H, W) for "NCHW" or (N, H, W, C) for "NHWC"; any strides.
    weight : float32 (K, C/groups) or (K, C/groups, 1, 1) (PyTorch's layout).
    bias : float32 (K,) or None.
    layout : "NCHW" or "NHWC".
    stride : int or (sh, sw), >= 1.
    groups : int >= 1 dividing C and K.
    activation : None, "relu", "relu6" or a (lo, hi) clamp, applied in the kernel.
    out : optional float32 array of the output shape, possibly a channel slice of a
        larger buffer (``buf[:, 64:128]`` in NCHW); written and returned.
    num_threads : None for the OpenMP default (OMP_NUM_THREADS, threadpoolctl), or an int
        >= 1 capping this call.

    For repeated calls with the same weights, ``Conv1x1`` packs them once.
    """
    layout = _normalize_layout(layout)
    stride = _normalize_stride(stride)
    groups = _normalize_groups(groups)
    _, clamp = _normalize_activation(activation)
    weight = _normalize_weight(weight, groups)
    bias = _normalize_bias(bias, weight.shape[0])
    plan = _kernels.F32Plan(weight, bias, groups, layout == "NHWC", clamp, False)
    return _run_general(plan, layout, stride, x, out, num_threads)
