"""Benchmark shapes and the small helpers that ``bench/`` and ``python -m fastpw`` share.

This module is the one source of truth for which layers fastpw is measured on: the
pytest-benchmark suite and the command-line report both import ``STANDARD_SHAPES``
from here, so their rows always describe the same work.

Besides the shape list it holds:

- ``make_inputs``: deterministic float32 inputs, weights and bias for a shape and layout;
- ``numpy_baseline``: the numpy GEMM that fastpw is compared with;
- ``measure``: a small adaptive timer (best and median of repeated runs);
- ``make_int8_inputs``: deterministic quantized operands (uint8 x, int8 weight, int32
  bias, per-channel weight scales) for the int8 path, and ``onnxruntime_qlinearconv``:
  ONNX Runtime's QLinearConv on the same operands, the int8 baseline.

The reference results are checked against is ``fastpw.testing``.

It imports only numpy, never the compiled extension, so it can be used to prepare
data before fastpw is even built. onnxruntime and onnx are optional: they are imported
inside ``onnxruntime_qlinearconv`` (and ``onnxruntime_version``) only.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ._api import QConv1x1

LAYOUTS = ("NCHW", "NHWC")

#: After a call, OpenBLAS's worker threads keep polling for new work (a sched_yield loop)
#: for about 0.1 s before they sleep. A multi-threaded OpenMP call made in that window
#: competes with them for the cores: on a machine with few cores it can run 2-100x
#: slower. Timed comparisons therefore time numpy after fastpw, and wait this long after
#: any BLAS work (numpy rows, float64 references) before timing fastpw.
BLAS_IDLE_SECONDS = 0.25

#: ONNX Runtime's intra-op worker threads (``intra_op_num_threads`` > 1) spin the same
#: way after a run: measured at about 0.08 s of busy CPU on 2 cores with ORT 1.31.
#: Timed int8 comparisons wait this long after any ONNX Runtime call before timing
#: fastpw (and before timing ONNX Runtime, so fastpw's OpenMP threads are asleep too).
ORT_IDLE_SECONDS = 0.25


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


def empty_output(
    x: np.ndarray, c_out: int, layout: str = "NCHW", dtype: np.dtype = np.float32
) -> np.ndarray:
    """Uninitialised output (float32 unless ``dtype``) for a stride-1 layer with ``c_out``
    channels."""
    if layout == "NCHW":
        n, _, h, w = x.shape
        return np.empty((n, c_out, h, w), dtype)
    n, h, w, _ = x.shape
    return np.empty((n, h, w, c_out), dtype)


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


# ------------------------------------------------------------------------------- int8

#: (scale, zero point) of every int8 benchmark input x. The scale is a float32 value, so
#: fastpw (which rounds scales to float32) and ONNX (which stores float32) see one number.
#: The zero point is off centre (the uint8 data has mean 127.5): a kernel that dropped
#: the zero-point correction, or applied it with the wrong sign, fails the exact check.
INT8_X_QUANT = (float(np.float32(0.025)), 121)

#: Output zero point. Weights have zero mean, so outputs are centred: use the middle.
INT8_Y_ZERO_POINT = 128

#: The output scale maps this many standard deviations of the real output onto each half
#: of the uint8 range: the outputs spread over all of 0..255 and only a few percent
#: saturate (more in the channels whose weight scale is above the average).
INT8_Y_SIGMAS = 3.0


@dataclass(frozen=True, eq=False)
class Int8Inputs:
    """Quantized operands of one layer, in ONNX QLinearConv's conventions.

    real x = x_scale * (x - x_zero_point); real weight[k, c] = w_scale[k] * weight[k, c];
    ``bias`` is int32 in units of x_scale * w_scale[k]; output q = y / y_scale +
    y_zero_point. ``x_quant``, ``w_quant`` and ``y_quant`` are (scale, zero_point) pairs
    as ``fastpw.QConv1x1`` takes them; ``w_quant``'s scale is a float32 array (K,), its
    zero point 0 (symmetric weights).
    """

    x: np.ndarray  # uint8, (N, C, H, W) for "NCHW", (N, H, W, C) for "NHWC"
    weight: np.ndarray  # int8 (K, C), values in -127..127
    bias: np.ndarray  # int32 (K,)
    x_quant: tuple[float, int]
    w_quant: tuple[np.ndarray, int]
    y_quant: tuple[float, int]
    layout: str

    @property
    def layer_options(self) -> dict[str, Any]:
        """The keyword arguments of ``fastpw.QConv1x1`` for these operands (quantization,
        uint8 output, layout); ``fastpw.testing.qconv1x1_reference`` takes the same."""
        return dict(
            x_quant=self.x_quant,
            w_quant=self.w_quant,
            y_quant=self.y_quant,
            out_dtype=np.uint8,
            layout=self.layout,
        )

    @property
    def x_nchw(self) -> np.ndarray:
        """``x`` as a contiguous NCHW array (a copy for "NHWC" inputs)."""
        if self.layout == "NCHW":
            return self.x
        return np.ascontiguousarray(self.x.transpose(0, 3, 1, 2))


def make_int8_inputs(
    shape: LayerShape, layout: str = "NCHW", *, batch: int = 1, seed: int = 0
) -> Int8Inputs:
    """Deterministic quantized operands for ``shape``: uint8 x, int8 weight, int32 bias.

    x is uniform over 0..255 with zero point ``INT8_X_QUANT[1]``; the weight is uniform
    over -127..127 (the symmetric range ``QConv1x1.from_float`` produces) with
    per-channel scales spread over a factor 4, so a kernel that applies one channel's
    scale to another fails the exact check; the bias is about half the size of the
    dot products. The output scale is chosen from the operands' second moments (no
    GEMM is needed) so the uint8 outputs use the whole range without mostly saturating:
    see ``INT8_Y_SIGMAS``. Both layouts hold the same numbers; the same seed gives the
    same operands on every machine.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    rng = np.random.default_rng(seed)
    c, k = shape.c_in, shape.c_out
    x_nchw = rng.integers(0, 256, (batch, c, shape.height, shape.width), dtype=np.uint8)
    weight = rng.integers(-127, 128, (k, c), dtype=np.int8)
    x_scale, x_zero_point = INT8_X_QUANT
    w_scale = (rng.uniform(0.5, 2.0, k) / (127 * math.sqrt(c))).astype(np.float32)
    # x and the weight are independent, so the integer dot products have second moment
    # C * E[(x - zp)^2] * E[w^2].
    x_moment = float(np.mean(np.square(x_nchw.astype(np.float64) - x_zero_point)))
    w_moment = float(np.mean(np.square(weight.astype(np.float64))))
    acc_rms = math.sqrt(c * x_moment * w_moment)
    bias = np.rint(rng.standard_normal(k) * 0.5 * acc_rms).astype(np.int32)
    w_rms = math.sqrt(float(np.mean(np.square(w_scale.astype(np.float64)))))
    out_rms = x_scale * w_rms * math.sqrt(acc_rms**2 + float(np.mean(np.square(bias, dtype=float))))
    y_scale = float(np.float32(INT8_Y_SIGMAS * out_rms / 127.5))
    x = x_nchw if layout == "NCHW" else np.ascontiguousarray(x_nchw.transpose(0, 2, 3, 1))
    return Int8Inputs(
        x=x,
        weight=weight,
        bias=bias,
        x_quant=(x_scale, x_zero_point),
        w_quant=(w_scale, 0),
        y_quant=(y_scale, INT8_Y_ZERO_POINT),
        layout=layout,
    )


def onnxruntime_version() -> str | None:
    """onnxruntime's version when both it and onnx import (the int8 baseline needs
    both), else None."""
    try:
        import onnx  # noqa: F401
        import onnxruntime
    except ImportError:
        return None
    return str(onnxruntime.__version__)


def onnxruntime_qlinearconv(
    inputs: Int8Inputs, threads: int
) -> tuple[Callable[[], np.ndarray], np.ndarray]:
    """ONNX Runtime's QLinearConv on ``inputs``, the int8 baseline: returns ``(call, out)``.

    Builds a one-node ONNX model (opset 13, the operands as initializers, 1x1 kernel)
    and its session once: CPU execution provider, ``intra_op_num_threads = threads``,
    ``inter_op_num_threads = 1``, sequential execution, all graph optimizations on
    (``ORT_ENABLE_ALL``, ONNX Runtime's default). The input is always NCHW, QLinearConv's
    layout: NHWC ``inputs`` are transposed once, here, untimed. ``call()`` runs the
    session through an I/O binding that reads ``x`` in place and writes the
    preallocated uint8 NCHW ``out``, and returns ``out``.

    onnxruntime and onnx are imported here, not at module import (ImportError when
    either is missing; ``onnxruntime_version()`` tells first). ONNX Runtime's worker
    threads spin after a run: see ``ORT_IDLE_SECONDS``.
    """
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    x = inputs.x_nchw
    n, c, h, w = x.shape
    k = inputs.weight.shape[0]
    x_scale, x_zero_point = inputs.x_quant
    w_scale, _ = inputs.w_quant
    y_scale, y_zero_point = inputs.y_quant
    initializers = [
        numpy_helper.from_array(np.array(x_scale, np.float32), "x_scale"),
        numpy_helper.from_array(np.array(x_zero_point, np.uint8), "x_zero_point"),
        numpy_helper.from_array(inputs.weight.reshape(k, c, 1, 1), "w"),
        numpy_helper.from_array(np.asarray(w_scale, np.float32), "w_scale"),
        numpy_helper.from_array(np.zeros(k, np.int8), "w_zero_point"),
        numpy_helper.from_array(np.array(y_scale, np.float32), "y_scale"),
        numpy_helper.from_array(np.array(y_zero_point, np.uint8), "y_zero_point"),
        numpy_helper.from_array(inputs.bias, "bias"),
    ]
    node = helper.make_node(
        "QLinearConv",
        ["x", "x_scale", "x_zero_point", "w", "w_scale", "w_zero_point"]
        + ["y_scale", "y_zero_point", "bias"],
        ["y"],
        kernel_shape=[1, 1],
    )
    graph = helper.make_graph(
        [node],
        "qlinearconv1x1",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, [n, c, h, w])],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, [n, k, h, w])],
        initializers,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="fastpw.shapes"
    )
    model.ir_version = 8  # opset 13's IR version: read by every onnxruntime since 1.8

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    out = np.empty((n, k, h, w), np.uint8)
    x_value = ort.OrtValue.ortvalue_from_numpy(x)  # shares x's memory
    out_value = ort.OrtValue.ortvalue_from_numpy(out)  # shares out's memory
    binding = session.io_binding()
    binding.bind_ortvalue_input("x", x_value)
    binding.bind_ortvalue_output("y", out_value)

    def call() -> np.ndarray:
        session.run_with_iobinding(binding)
        return out

    # The OrtValues borrow x's and out's memory: keep them (and x) alive with the call.
    call.keepalive = (x, x_value, out_value)
    return call, out


def quantized_layer(inputs: Int8Inputs) -> QConv1x1:
    """The prepacked fastpw layer for ``inputs`` (uint8 output), as bench/ and the CLI
    time it."""
    import fastpw  # here, so this module stays importable before the extension is built

    return fastpw.QConv1x1(inputs.weight, inputs.bias, **inputs.layer_options)


def benchmark_group(shape: LayerShape, threads: int) -> str:
    """pytest-benchmark group of a row: float32 and int8 rows of a layer sit together."""
    return f"{shape.name} | {threads} thread{'s' if threads > 1 else ''}"


def benchmark_info(shape: LayerShape, layout: str, threads: int, implementation: str) -> dict:
    """The ``extra_info`` fields every benchmark row carries."""
    return dict(
        network=shape.network,
        c_in=shape.c_in,
        c_out=shape.c_out,
        height=shape.height,
        width=shape.width,
        layout=layout,
        threads=threads,
        implementation=implementation,
    )
