"""Benchmark shapes and the small helpers that ``bench/`` and ``python -m fastpw`` share.

This module is the one source of truth for which layers fastpw is measured on: the
pytest-benchmark suite and the command-line report both import ``STANDARD_SHAPES``
from here, so their rows always describe the same work.

Besides the shape list it holds:

- ``make_inputs``: deterministic float32 inputs, weights and bias for a shape and layout;
- ``numpy_baseline``: the numpy GEMM that fastpw is compared with;
- ``reference_conv1x1``: a plain float64 numpy 1x1 convolution (stride, groups,
  activation) that results are compared against, and ``max_relative_error``;
- ``measure``: a small adaptive timer (best and median of repeated runs).

It imports only numpy, never the compiled extension, so it can be used to prepare
data before fastpw is even built.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

LAYOUTS = ("NCHW", "NHWC")

#: After a call, OpenBLAS's worker threads keep polling for new work (a sched_yield loop)
#: for about 0.1 s before they sleep. A multi-threaded OpenMP call made in that window
#: competes with them for the cores: on a machine with few cores it can run 2-100x
#: slower. Timed comparisons therefore time numpy after fastpw, and wait this long after
#: any BLAS work (numpy rows, float64 references) before timing fastpw.
BLAS_IDLE_SECONDS = 0.25

#: Largest accepted ``max_relative_error`` between a float32 result and the float64
#: reference. float32 dot products of length <= 2048 stay near 1e-6; 1e-4 leaves room
#: for any summation order while still catching a wrong tile or a missed edge.
TOLERANCE = 1e-4


@dataclass(frozen=True)
class LayerShape:
    """One 1x1 convolution layer of a real network, batch 1, float32."""

    network: str
    c_in: int
    c_out: int
    height: int
    width: int

    @property
    def flops(self) -> int:
        """Multiply-adds count twice: 2 * C * K * H * W (batch 1, stride 1)."""
        return 2 * self.c_in * self.c_out * self.height * self.width

    @property
    def name(self) -> str:
        """Human-readable label, e.g. ``"resnet50 1024->256 14x14"``."""
        return f"{self.network} {self.c_in}->{self.c_out} {self.height}x{self.width}"

    @property
    def slug(self) -> str:
        """The name without spaces, for pytest ids: ``"resnet50-1024to256-14x14"``."""
        return f"{self.network}-{self.c_in}to{self.c_out}-{self.height}x{self.width}"


def _layers(network: str, *specs: tuple[int, int, int]) -> list[LayerShape]:
    return [LayerShape(network, c, k, hw, hw) for c, k, hw in specs]


#: The benchmark layers, in report order: (C_in, C_out, spatial size), batch 1, float32.
STANDARD_SHAPES: tuple[LayerShape, ...] = tuple(
    _layers(
        "mobilenetv2",
        (16, 96, 112),
        (144, 24, 56),
        (32, 192, 28),
        (384, 64, 14),
        (160, 960, 7),
        (320, 1280, 7),
    )
    + _layers("resnet50", (256, 64, 56), (64, 256, 56), (1024, 256, 14), (512, 2048, 7))
    + _layers("squeezenet", (96, 16, 55), (16, 64, 55), (512, 64, 13))
)


def make_inputs(
    shape: LayerShape, layout: str = "NCHW", *, batch: int = 1, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Deterministic ``(x, weight, bias)`` for ``shape``: float32, standard normal.

    ``x`` is (N, C, H, W) for "NCHW" and (N, H, W, C) for "NHWC"; ``weight`` is (K, C)
    and ``bias`` is (K,). The same seed gives the same numbers on every machine.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    rng = np.random.default_rng(seed)
    x_nchw = rng.standard_normal((batch, shape.c_in, shape.height, shape.width), np.float32)
    weight = rng.standard_normal((shape.c_out, shape.c_in), np.float32)
    bias = rng.standard_normal(shape.c_out, np.float32)
    x = x_nchw if layout == "NCHW" else np.ascontiguousarray(x_nchw.transpose(0, 2, 3, 1))
    return x, weight, bias


def empty_output(x: np.ndarray, c_out: int, layout: str = "NCHW") -> np.ndarray:
    """Uninitialised float32 output for a stride-1 layer with ``c_out`` channels."""
    if layout == "NCHW":
        n, _, h, w = x.shape
        return np.empty((n, c_out, h, w), np.float32)
    n, h, w, _ = x.shape
    return np.empty((n, h, w, c_out), np.float32)


def numpy_baseline(
    x: np.ndarray, weight: np.ndarray, layout: str = "NCHW"
) -> tuple[Callable[[], np.ndarray], np.ndarray]:
    """The numpy GEMM that fastpw is compared with: returns ``(call, out)``.

    NCHW: ``W (K, C) @ X (C, HW)``; NHWC: ``X (HW, C) @ W.T (C, K)``, with ``W.T`` made
    contiguous here, outside any timing. ``call()`` writes the plain matmul into the
    preallocated ``out`` (same layout as fastpw's output) and returns it. It adds no
    bias, although the fastpw layers it is compared with do (fused, at no extra pass):
    the baseline is the bare GEMM, the strictest comparison. Batch 1 only.
    """
    if x.shape[0] != 1:
        raise ValueError("the numpy baseline handles batch 1 only")
    out = empty_output(x, weight.shape[0], layout)
    if layout == "NCHW":
        operands = (weight, x.reshape(x.shape[1], -1))
        out_2d = out.reshape(weight.shape[0], -1)  # (K, HW), a view of out
    else:
        operands = (x.reshape(-1, x.shape[3]), np.ascontiguousarray(weight.T))
        out_2d = out.reshape(-1, weight.shape[0])  # (HW, K), a view of out

    def call() -> np.ndarray:
        np.matmul(*operands, out=out_2d)
        return out

    return call, out


def reference_conv1x1(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None = None,
    *,
    layout: str = "NCHW",
    stride: int | tuple[int, int] = 1,
    groups: int = 1,
    activation: None | str | tuple[float, float] = None,
) -> np.ndarray:
    """Plain float64 numpy 1x1 convolution with PyTorch semantics (no padding).

    Same arguments as ``fastpw.conv1x1``; returns a float64 array in ``layout``.
    Output spatial size is ceil(H / sh) x ceil(W / sw).
    """
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    x64 = np.asarray(x, np.float64)
    if layout == "NHWC":
        x64 = x64.transpose(0, 3, 1, 2)
    x64 = x64[:, :, ::sh, ::sw]
    w64 = np.asarray(weight, np.float64).reshape(weight.shape[0], -1)
    n, c, h, w = x64.shape
    k = w64.shape[0]
    cg, kg = c // groups, k // groups
    y = np.empty((n, k, h, w), np.float64)
    for g in range(groups):
        x_g = x64[:, g * cg : (g + 1) * cg].reshape(n, cg, h * w)
        y[:, g * kg : (g + 1) * kg] = np.matmul(w64[g * kg : (g + 1) * kg], x_g).reshape(
            n, kg, h, w
        )
    if bias is not None:
        y += np.asarray(bias, np.float64)[None, :, None, None]
    if activation is not None:
        lo, hi = {"relu": (0.0, math.inf), "relu6": (0.0, 6.0)}.get(activation, activation)
        np.clip(y, lo, hi, out=y)
    return y if layout == "NCHW" else y.transpose(0, 2, 3, 1)


def max_relative_error(result: np.ndarray, reference: np.ndarray) -> float:
    """max |result - reference| divided by max |reference| (a scale-free error)."""
    reference = np.asarray(reference, np.float64)
    scale = float(np.max(np.abs(reference), initial=0.0)) or 1.0
    return float(np.max(np.abs(np.asarray(result, np.float64) - reference), initial=0.0)) / scale


@dataclass(frozen=True)
class Timing:
    """Seconds per call: the best and the median sample, and how they were taken."""

    best: float
    median: float
    calls_per_sample: int
    samples: int


def measure(fn: Callable[[], object], *, target_seconds: float = 0.15, samples: int = 5) -> Timing:
    """Time ``fn()`` with ``time.perf_counter``: ``samples`` samples, ~``target_seconds`` total.

    A warm-up call and one sizing call are followed by ``samples`` samples of
    ``calls_per_sample`` back-to-back calls each; the count is chosen so the whole row
    takes about ``target_seconds`` whatever the layer size.
    """
    fn()  # warm-up: first-touch page faults, lazy packing, thread-pool start
    start = time.perf_counter()
    fn()
    first = max(time.perf_counter() - start, 1e-7)
    calls = max(1, int(target_seconds / (samples * first)))
    per_call = []
    for _ in range(samples):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        per_call.append((time.perf_counter() - start) / calls)
    return Timing(min(per_call), statistics.median(per_call), calls, samples)


def gflops(flop_count: float, seconds: float) -> float:
    """GFLOP/s for ``flop_count`` floating-point operations done in ``seconds``."""
    return flop_count / seconds / 1e9
