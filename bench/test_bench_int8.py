"""int8 1x1 convolution benchmarks: fastpw (prepacked ``QConv1x1``) against its 8-bit peers.

Each case of ``fastpw.shapes.STANDARD_SHAPES`` x row x thread count x batch size
(``--fastpw-batch``) is one pytest-benchmark row. The rows of a shape are:

- ``NCHW-fastpw`` and ``NHWC-fastpw``: ``fastpw.QConv1x1`` (weights packed once, untimed)
  on uint8 x, int8 per-channel weights and an int32 bias, uint8 output;
- ``NCHW-onnxruntime`` and ``NHWC-onnxruntime``: ONNX Runtime on the same operands in
  the same layout: QLinearConv on NCHW (``fastpw._peers.onnxruntime_qlinearconv``), the
  ``com.microsoft`` QLinearConv with ``channels_last=1`` on NHWC
  (``onnxruntime_qlinearconv_nhwc``); session built once per shape, layout and thread
  count, ``intra_op_num_threads`` = the row's thread count;
- ``NCHW-torch-<engine>`` and ``NHWC-torch-<engine>``: PyTorch's quantized Conv2d on each
  quantized engine of the installed torch (``fastpw._peers.torch_qconv2d``);
- ``NHWC-xnnpack``: XNNPACK through LiteRT, TensorFlow Lite's int8 CONV_2D
  (``fastpw._peer_litert.xnnpack_qconv``), its int8 output shifted back to uint8.

A peer's rows exist only where it is installed (ONNX Runtime and LiteRT come with the
``bench`` and ``test`` extras, PyTorch does not).

Groups are named as in ``test_bench_f32.py`` (shape and thread count), so a run of both
suites puts the int8 rows beside the float32 ones. ``extra_info["gops"]`` holds
2*C*K*H*W / median time in GOP/s, ``extra_info["implementation"]`` the row's
implementation.

Correctness comes first, outside the timing, so the untimed smoke run (plain ``pytest``)
is a real check: fastpw's output must equal the contract's formula
(``fastpw.testing.qconv1x1_reference``) bit for bit (NCHW; the NHWC row equals its
transpose), and so must XNNPACK's. On x86 CPUs without VNNI (AVX512-VNNI or AVX-VNNI),
ONNX Runtime's u8s8 kernels can saturate 16-bit pair sums (onnxruntime issue #16105), so
there its row records how many values differ (``extra_info["differs_from_formula"]``)
and warns, instead of failing on a fault of the peer; with VNNI a difference fails.
PyTorch's engines always record and warn: oneDNN adds the bias after scaling (off by
one at ties) and fbgemm saturates as ONNX Runtime does (tests/test_peers.py).

Idle threads: OpenBLAS (the numpy reference) and ONNX Runtime's intra-op pool keep
spinning for about 0.1 s after a call, and fastpw's OpenMP threads briefly. Before
timing anything, each case waits ``max(BLAS_IDLE_SECONDS, ORT_IDLE_SECONDS)`` so no other
pool competes for the cores.
"""

from __future__ import annotations

import functools
import time
import warnings

import numpy as np
import pytest

import fastpw
from fastpw._peer_litert import litert_version, xnnpack_qconv
from fastpw._peers import (
    onnxruntime_qlinearconv,
    onnxruntime_qlinearconv_nhwc,
    onnxruntime_version,
    torch_qconv2d,
    torch_quantized_engines,
    torch_version,
)
from fastpw._timing import BLAS_IDLE_SECONDS, ORT_IDLE_SECONDS, benchmark_group, benchmark_info
from fastpw.shapes import (
    LAYOUTS,
    STANDARD_SHAPES,
    Int8Inputs,
    LayerShape,
    empty_output,
    make_int8_inputs,
    quantized_layer,
)
from fastpw.testing import qconv1x1_reference

ORT_VERSION = onnxruntime_version()
IDLE_SECONDS = max(BLAS_IDLE_SECONDS, ORT_IDLE_SECONDS)

#: The peers importable here.
PEERS = (
    (("onnxruntime",) if ORT_VERSION is not None else ())
    + tuple(f"torch-{engine}" for engine in torch_quantized_engines())
    + (("xnnpack",) if litert_version() is not None else ())
)

#: (layout, implementation) rows of one shape: XNNPACK reads NHWC only.
ROWS = tuple(
    (layout, name)
    for layout in LAYOUTS
    for name in ("fastpw", *PEERS)
    if not (name == "xnnpack" and layout == "NCHW")
)


@functools.lru_cache(maxsize=2)
def _inputs(shape: LayerShape, layout: str) -> Int8Inputs:
    return make_int8_inputs(shape, layout)


@functools.lru_cache(maxsize=1)
def _qconv1x1_reference_nchw(shape: LayerShape) -> np.ndarray:
    """The contract's uint8 output for the shape's NCHW operands (fastpw.testing)."""
    inputs = _inputs(shape, "NCHW")
    return qconv1x1_reference(inputs.x, inputs.weight, inputs.bias, **inputs.layer_options)


@functools.lru_cache(maxsize=2)
def _peer(shape: LayerShape, threads: int, layout: str, implementation: str):
    """``(call, result)``: the peer built once for this shape, thread count and layout,
    and a copy of its output."""
    inputs = _inputs(shape, layout)
    if implementation == "onnxruntime":
        peer = onnxruntime_qlinearconv if layout == "NCHW" else onnxruntime_qlinearconv_nhwc
        call, _ = peer(inputs, threads)
    elif implementation == "xnnpack":
        call, _ = xnnpack_qconv(inputs, threads)
    else:
        call, _ = torch_qconv2d(inputs, threads, implementation.removeprefix("torch-"))
    return call, call().copy()


def _fastpw_call(inputs: Int8Inputs, threads: int):
    layer = quantized_layer(inputs)  # packs the weights once, untimed
    out = empty_output(inputs.x, inputs.weight.shape[0], inputs.layout, np.uint8)

    def call():
        return layer(inputs.x, out=out, num_threads=threads)

    return call, out


def _difference(result: np.ndarray, expected: np.ndarray) -> str:
    """Where and by how much two uint8 results differ, for an assertion message."""
    if result.shape != expected.shape:
        return f"shape {result.shape}, expected {expected.shape}"
    diff = np.abs(result.astype(np.int16) - expected.astype(np.int16))
    first = tuple(int(i) for i in np.argwhere(diff)[0])
    return (
        f"{np.count_nonzero(diff)} of {diff.size} values differ (max by {diff.max()}); "
        f"first at {first}: {result[first]} instead of {expected[first]}"
    )


#: ONNX Runtime's u8s8 kernels are exact only with a VNNI dot product (see above).
ORT_EXACT_HERE = fastpw.cpu_features()["avx512_vnni"] or fastpw.cpu_features()["avx_vnni"]


def _check_fastpw(shape, layout, out):
    """fastpw's output must equal the contract's formula bit for bit."""
    to_layout = (lambda y: y) if layout == "NCHW" else (lambda y: y.transpose(0, 2, 3, 1))
    expected = to_layout(_qconv1x1_reference_nchw(shape))
    assert np.array_equal(out, expected), (
        f"fastpw {layout} differs from the int8 formula (qconv1x1_reference): "
        + _difference(out, expected)
    )


def _check_peer(implementation, result, formula, extra_info):
    """A peer's output must equal the formula where its kernels are exact (XNNPACK;
    ONNX Runtime with VNNI); elsewhere how far it is off goes into the row and a
    warning."""
    if np.array_equal(result, formula):
        extra_info["differs_from_formula"] = 0
        return
    message = (
        f"{implementation} differs from the int8 formula (qconv1x1_reference): "
        f"{_difference(result, formula)}. On x86 without VNNI, ONNX Runtime's and "
        "PyTorch's u8s8 kernels can saturate 16-bit pair sums (onnxruntime#16105); "
        "oneDNN adds the bias after scaling."
    )
    exact_here = implementation == "xnnpack" or (implementation == "onnxruntime" and ORT_EXACT_HERE)
    assert not exact_here, message
    extra_info["differs_from_formula"] = int(np.count_nonzero(result != formula))
    warnings.warn(message, stacklevel=2)


@pytest.mark.parametrize(
    ("layout", "implementation"), ROWS, ids=[f"{lay}-{impl}" for lay, impl in ROWS]
)
@pytest.mark.parametrize("shape", STANDARD_SHAPES, ids=lambda shape: shape.slug)
def test_qconv1x1_int8(benchmark, shape, layout, implementation, threads, batch):
    shape = shape.with_batch(batch)
    if implementation == "fastpw":
        call, out = _fastpw_call(_inputs(shape, layout), threads)
        call()  # correctness, once, outside the timed part
        _check_fastpw(shape, layout, out)
    else:
        call, result = _peer(shape, threads, layout, implementation)
        formula = _qconv1x1_reference_nchw(shape)
        if layout == "NHWC":
            formula = formula.transpose(0, 2, 3, 1)
        _check_peer(implementation, result, formula, benchmark.extra_info)

    # Same group names as test_bench_f32.py: int8 rows sit beside the float32 ones.
    benchmark.group = benchmark_group(shape, threads)
    benchmark.extra_info.update(
        benchmark_info(shape, layout, threads, implementation), dtype="int8"
    )
    if implementation == "fastpw":
        benchmark.extra_info["isa"] = fastpw.isa("int8")
    elif implementation == "onnxruntime":
        benchmark.extra_info["onnxruntime"] = ORT_VERSION
    elif implementation == "xnnpack":
        benchmark.extra_info["ai_edge_litert"] = litert_version()
    else:
        benchmark.extra_info["torch"] = torch_version()
    if benchmark.enabled:
        time.sleep(IDLE_SECONDS)  # BLAS, ONNX Runtime and OpenMP threads go idle
    benchmark(call)

    if benchmark.stats is not None:  # None when benchmarking is disabled (smoke run)
        benchmark.extra_info["gops"] = round(shape.flops / benchmark.stats.stats.median / 1e9, 3)
