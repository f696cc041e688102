"""Quantized-inference helper benchmarks (``fastpw.quant``).

Two families of pytest-benchmark rows, each per thread count (``--fastpw-threads``):

- ``quantize`` / ``dequantize`` of a float32 1x64x56x56 feature map (per tensor, uint8):
  ``fastpw.quant.quantize`` against the numpy expression
  ``np.clip(np.rint(x / s) + zp, 0, 255).astype(np.uint8)``, and
  ``fastpw.quant.dequantize`` against ``(xq.astype(np.int32) - zp).astype(np.float32) * s``.
  numpy's elementwise code is single-threaded: its row is the same work in every thread
  group, there to compare with. Both sides allocate their output, as the expressions do.
  ``extra_info`` holds ``elements``, ``gb_per_s`` (bytes read + written per second) and
  ``elements_per_s``.
- a channel MLP on a 64x56x56 feature map, expand x4 -> relu -> project (64->256 relu,
  256->64): the ConvNeXt / MLP-Mixer block, in NCHW and NHWC. Rows: ``float32`` (two
  ``fastpw.Conv1x1`` calls), ``int8`` (``QuantizedSequential.run_quantized`` on a
  pre-quantized uint8 input) and ``int8+qdq`` (``net(x)``: quantize, the int8 chain,
  dequantize). The weights are random but fixed and scaled like a trained network's (He
  initialisation), the input standard normal (as after a LayerNorm); the int8 chain is
  calibrated (min/max, per-channel weights) on a few more inputs of that distribution.
  ``extra_info["sqnr_db"]`` is the SQNR of the int8 output against the float32 one,
  ``extra_info["gops"]`` the multiply-adds (counted twice) per second.

Correctness comes first, outside the timing, so the untimed smoke run (plain
``pytest``) is a real check: quantize and dequantize equal their numpy expressions bit
for bit at every thread count; the float32 chain matches a float64 numpy reference; the
int8 chain's SQNR is at least ``MIN_SQNR_DB``, and its NHWC output is the transpose of
its NCHW output, bit for bit.
"""

from __future__ import annotations

import functools
import time

import numpy as np
import pytest

import fastpw
from fastpw._timing import BLAS_IDLE_SECONDS
from fastpw.quant import QuantizedSequential, choose_qparams, dequantize, quantize, sqnr
from fastpw.shapes import LAYOUTS
from fastpw.testing import RELATIVE_TOLERANCE, conv1x1_reference, max_relative_error

#: The feature map of both families: N, C, H, W.
N, C, H, W = 1, 64, 56, 56
#: The channel MLP's expansion factor (ConvNeXt, MLP-Mixer: 4).
EXPANSION = 4
#: Inputs the int8 chain is calibrated on.
CALIBRATION_INPUTS = 4
#: The int8 chain's output must be at least this close to the float32 chain's.
MIN_SQNR_DB = 25.0

QDQ_IMPLEMENTATIONS = ("fastpw", "numpy")
MLP_ROWS = ("float32", "int8", "int8+qdq")


def _plural(threads: int) -> str:
    return f"{threads} thread{'s' if threads > 1 else ''}"


# ---------------------------------------------------------------------------------------
# quantize / dequantize


@functools.lru_cache(maxsize=1)
def _qdq_data():
    """(x float32, scale float32, zero point, xq uint8): a standard normal feature map and
    per-tensor uint8 qparams from its 99.9th percentiles, so a few values saturate."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, C, H, W), np.float32)
    scale, zero_point = choose_qparams(x, np.uint8, method="percentile", percentile=99.9)
    scale = np.float32(scale)
    return x, scale, int(zero_point), _numpy_quantize(x, scale, zero_point)


def _numpy_quantize(x, scale, zero_point):
    return np.clip(np.rint(x / scale) + zero_point, 0, 255).astype(np.uint8)


def _numpy_dequantize(xq, scale, zero_point):
    return (xq.astype(np.int32) - zero_point).astype(np.float32) * scale


def _qdq_call(operation: str, implementation: str, threads: int):
    x, scale, zero_point, xq = _qdq_data()
    if operation == "quantize":
        if implementation == "fastpw":
            return lambda: quantize(x, (scale, zero_point), np.uint8, num_threads=threads)
        return lambda: _numpy_quantize(x, scale, zero_point)
    if implementation == "fastpw":
        return lambda: dequantize(xq, (scale, zero_point), num_threads=threads)
    return lambda: _numpy_dequantize(xq, scale, zero_point)


def _expected(operation: str) -> np.ndarray:
    x, scale, zero_point, xq = _qdq_data()
    if operation == "quantize":
        return xq
    return _numpy_dequantize(xq, scale, zero_point)


@pytest.mark.parametrize("implementation", QDQ_IMPLEMENTATIONS)
@pytest.mark.parametrize("operation", ("quantize", "dequantize"))
def test_quantize_dequantize(benchmark, operation, implementation, threads):
    call = _qdq_call(operation, implementation, threads)
    result = call()  # correctness, once, outside the timed part
    expected = _expected(operation)
    assert result.dtype == expected.dtype and result.shape == expected.shape
    if implementation == "fastpw":
        mismatches = np.count_nonzero(result.view(np.uint8) != expected.view(np.uint8))
        assert mismatches == 0, (
            f"fastpw {operation} differs from the numpy expression in {mismatches} bytes "
            f"({threads} threads)"
        )
    if operation == "quantize":
        saturated = np.count_nonzero((expected == 0) | (expected == 255))
        assert 0 < saturated < expected.size // 100  # the check covers saturation

    elements = N * C * H * W
    bytes_moved = elements * (4 + 1)  # float32 one way, uint8 the other
    benchmark.group = f"{operation} {N}x{C}x{H}x{W} | {_plural(threads)}"
    benchmark.extra_info.update(
        operation=operation,
        implementation=implementation,
        threads=threads,
        elements=elements,
        dtype="uint8",
    )
    if implementation == "fastpw":
        benchmark.extra_info["isa"] = fastpw.isa("quantize")
    benchmark(call)

    if benchmark.stats is not None:  # None when benchmarking is disabled (smoke run)
        median = benchmark.stats.stats.median
        benchmark.extra_info["gb_per_s"] = round(bytes_moved / median / 1e9, 3)
        benchmark.extra_info["elements_per_s"] = round(elements / median)


# ---------------------------------------------------------------------------------------
# channel MLP


def _to_layout(x_nchw: np.ndarray, layout: str) -> np.ndarray:
    return x_nchw if layout == "NCHW" else np.ascontiguousarray(x_nchw.transpose(0, 2, 3, 1))


def _mlp_weights():
    """He-initialised (w1 (4C, C), b1, w2 (C, 4C), b2), float32, fixed seed."""
    rng = np.random.default_rng(1)
    hidden = EXPANSION * C
    w1 = rng.standard_normal((hidden, C)) * np.sqrt(2.0 / C)
    b1 = rng.standard_normal(hidden) * 0.1
    w2 = rng.standard_normal((C, hidden)) * np.sqrt(2.0 / hidden)
    b2 = rng.standard_normal(C) * 0.1
    return [array.astype(np.float32) for array in (w1, b1, w2, b2)]


def _mlp_input(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((N, C, H, W), np.float32)


def _mlp_reference(x_nchw: np.ndarray) -> np.ndarray:
    """The channel MLP in float64 (fastpw.testing's reference, layer after layer), NCHW."""
    w1, b1, w2, b2 = _mlp_weights()
    return conv1x1_reference(conv1x1_reference(x_nchw, w1, b1, activation="relu"), w2, b2)


@functools.lru_cache(maxsize=2)
def _mlp_case(layout: str):
    """(float layers, calibrated net, x, xq, float output, int8 output) for a layout."""
    w1, b1, w2, b2 = _mlp_weights()
    layers = [
        fastpw.Conv1x1(w1, b1, layout=layout, activation="relu"),
        fastpw.Conv1x1(w2, b2, layout=layout),
    ]
    calibration = [_to_layout(_mlp_input(100 + i), layout) for i in range(CALIBRATION_INPUTS)]
    net = QuantizedSequential.calibrate(layers, calibration, per_channel=True, method="minmax")
    x = _to_layout(_mlp_input(0), layout)
    xq = net.quantize_input(x)
    float_out = layers[1](layers[0](x))
    int8_out = net(x)
    return layers, net, x, xq, float_out, int8_out


@functools.lru_cache(maxsize=1)
def _mlp_checked():
    """The untimed checks of the channel MLP, once per session; returns the SQNRs."""
    sqnrs = {}
    for layout in LAYOUTS:
        _, _, _, _, float_out, int8_out = _mlp_case(layout)
        float_nchw = float_out if layout == "NCHW" else float_out.transpose(0, 3, 1, 2)
        error = max_relative_error(float_nchw, _mlp_reference(_mlp_input(0)))
        assert error <= RELATIVE_TOLERANCE, (
            f"float32 channel MLP {layout}: max relative error {error}"
        )
        sqnrs[layout] = sqnr(float_out, int8_out)
        assert sqnrs[layout] >= MIN_SQNR_DB, (
            f"int8 channel MLP {layout}: SQNR {sqnrs[layout]:.1f} dB < {MIN_SQNR_DB} dB"
        )
    nchw_q = _mlp_case("NCHW")[1].run_quantized(_mlp_case("NCHW")[3])
    nhwc_q = _mlp_case("NHWC")[1].run_quantized(_mlp_case("NHWC")[3])
    assert np.array_equal(nhwc_q, nchw_q.transpose(0, 2, 3, 1)), "int8 NHWC != NCHW transposed"
    return sqnrs


def _mlp_call(layout: str, row: str, threads: int):
    layers, net, x, xq, _, _ = _mlp_case(layout)
    first, second = layers
    if row == "float32":
        return lambda: second(first(x, num_threads=threads), num_threads=threads)
    if row == "int8":
        return lambda: net.run_quantized(xq, num_threads=threads)
    return lambda: net(x, num_threads=threads)


@pytest.mark.parametrize("row", MLP_ROWS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_channel_mlp(benchmark, layout, row, threads):
    sqnrs = _mlp_checked()  # correctness, outside the timed part
    call = _mlp_call(layout, row, threads)
    result = call()
    _, _, _, _, float_out, int8_out = _mlp_case(layout)
    expected = float_out if row == "float32" else int8_out
    if row == "int8":
        result = dequantize(result, _mlp_case(layout)[1].output_qparams)
    assert np.array_equal(result, expected), f"{row} {layout}: {threads} threads changed bits"

    flops = 2 * 2 * C * EXPANSION * C * H * W * N  # two layers, multiply-adds twice
    benchmark.group = f"channel-MLP {C}x{H}x{W} x{EXPANSION} {layout} | {_plural(threads)}"
    benchmark.extra_info.update(
        implementation=row,
        layout=layout,
        threads=threads,
        sqnr_db=round(sqnrs[layout], 2),
        isa=fastpw.isa("int8"),
    )
    if benchmark.enabled:
        time.sleep(BLAS_IDLE_SECONDS)  # BLAS threads of the float64 reference go idle
    benchmark(call)

    if benchmark.stats is not None:  # None when benchmarking is disabled (smoke run)
        benchmark.extra_info["gops"] = round(flops / benchmark.stats.stats.median / 1e9, 3)
