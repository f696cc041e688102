"""float32 1x1 convolution benchmarks: fastpw (prepacked ``Conv1x1``) against its peers.

Each case of ``fastpw.shapes.STANDARD_SHAPES`` x layout x implementation x thread count
x batch size (``--fastpw-batch``, default 1) is one pytest-benchmark row; rows are
grouped by shape and thread count, and ``extra_info["gflops"]`` holds the throughput
from the median round.

The peers (``fastpw._peers``), each on the row's thread count: numpy ``matmul``, the
same GEMM written the natural way for each layout, with its BLAS limited through
threadpoolctl; ONNX Runtime's Conv, PyTorch's conv2d and, in NHWC only (TensorFlow
Lite's layout), XNNPACK through LiteRT (``fastpw._peer_litert``), each with a row only
where it is installed (ONNX Runtime and LiteRT come with the ``bench`` and ``test``
extras; PyTorch does not). fastpw and numpy write into a preallocated output; weight
packing and
transposes happen outside the timing. Before timing fastpw the suite waits
``BLAS_IDLE_SECONDS`` so OpenBLAS threads left polling by earlier numpy work do not
compete with fastpw's OpenMP threads.

Each case first checks its result against the float64 numpy reference
(``fastpw.testing.conv1x1_reference``), so the untimed smoke run (plain ``pytest``) is a
real correctness check.
"""

from __future__ import annotations

import functools
import time

import pytest
import threadpoolctl

import fastpw
from fastpw._peer_litert import litert_version, xnnpack_conv
from fastpw._peers import (
    float32_errors,
    numpy_baseline,
    onnxruntime_conv,
    onnxruntime_version,
    torch_conv2d,
    torch_version,
)
from fastpw._timing import BLAS_IDLE_SECONDS, benchmark_group, benchmark_info
from fastpw.shapes import LAYOUTS, STANDARD_SHAPES, LayerShape, empty_output, make_inputs
from fastpw.testing import RELATIVE_TOLERANCE, conv1x1_reference, max_relative_error

#: fastpw and the peers importable here.
IMPLEMENTATIONS = ("fastpw", "numpy") + tuple(
    name
    for name, version in (
        ("onnxruntime", onnxruntime_version()),
        ("torch", torch_version()),
        ("xnnpack", litert_version()),
    )
    if version is not None
)

#: (layout, implementation) rows of one shape: XNNPACK reads NHWC only.
ROWS = tuple(
    (layout, name)
    for layout in LAYOUTS
    for name in IMPLEMENTATIONS
    if not (name == "xnnpack" and layout == "NCHW")
)

PEERS = {"onnxruntime": onnxruntime_conv, "torch": torch_conv2d}


@functools.lru_cache(maxsize=2)
def _case_data(shape: LayerShape, layout: str):
    """Inputs and float64 references (with and without bias) for one shape and layout."""
    x, weight, bias = make_inputs(shape, layout)
    reference = conv1x1_reference(x, weight, bias, layout=layout)
    return x, weight, bias, reference, conv1x1_reference(x, weight, None, layout=layout)


def _fastpw_call(x, weight, bias, layout, threads):
    layer = fastpw.Conv1x1(weight, bias, layout=layout)  # packs the weights once, untimed
    out = empty_output(x, weight.shape[0], layout)

    def call():
        return layer(x, out=out, num_threads=threads)

    return call, out


@pytest.mark.parametrize(
    ("layout", "implementation"), ROWS, ids=[f"{lay}-{impl}" for lay, impl in ROWS]
)
@pytest.mark.parametrize("shape", STANDARD_SHAPES, ids=lambda shape: shape.slug)
def test_conv1x1_f32(benchmark, shape, layout, implementation, threads, batch):
    shape = shape.with_batch(batch)
    x, weight, bias, reference, reference_without_bias = _case_data(shape, layout)
    limits = None
    if implementation == "fastpw":
        call, out = _fastpw_call(x, weight, bias, layout, threads)
    elif implementation == "numpy":
        call, out = numpy_baseline(x, weight, layout)
        reference = reference_without_bias  # the baseline is the bare matmul
        limits = threadpoolctl.threadpool_limits(limits=threads, user_api="blas")
    else:
        if implementation == "xnnpack":
            call, _ = xnnpack_conv(x, weight, bias, threads)
        else:
            call, _ = PEERS[implementation](x, weight, bias, threads, layout)
        outside, error = float32_errors(call(), x, weight, bias, layout)
        assert outside == 0, f"{implementation} {layout}: {outside} values off ({error:.2e})"

    try:
        if implementation in ("fastpw", "numpy"):
            call()  # correctness, once, outside the timed part
            error = max_relative_error(out, reference)
            assert error <= RELATIVE_TOLERANCE, (
                f"{implementation} {layout}: max relative error {error:.2e}"
            )

        benchmark.group = benchmark_group(shape, threads)
        benchmark.extra_info.update(benchmark_info(shape, layout, threads, implementation))
        if implementation == "fastpw":
            benchmark.extra_info["isa"] = fastpw.isa("float32")
            if benchmark.enabled:
                time.sleep(BLAS_IDLE_SECONDS)  # BLAS threads from earlier cases go idle
        benchmark(call)
    finally:
        if limits is not None:
            limits.restore_original_limits()

    if benchmark.stats is not None:  # None when benchmarking is disabled (smoke run)
        benchmark.extra_info["gflops"] = round(shape.flops / benchmark.stats.stats.median / 1e9, 3)
