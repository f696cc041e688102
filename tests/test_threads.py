"""Results are bitwise identical for every thread count and every repeated call.

The summation order of each output is fixed by the microkernel contract and never by how
the work is split between threads, so num_threads=1, 2, 3 (and more threads than there
are tiles) must give the same bits, under every ISA and both layouts.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import fastpw
from fastpw.testing import (
    QDTYPE_RANGES,
    assert_matches_reference,
    qconv1x1_accumulators,
    qconv1x1_reference,
)

LAYOUTS = ("NCHW", "NHWC")
THREAD_COUNTS = (1, 2, 3, 8)


@pytest.fixture(autouse=True)
def threads_past_the_cores():
    """Calls are capped at the cores this process may use; these tests lift the cap so
    that 3 and 8 threads really run (and split the work their way) on any machine."""
    previous = fastpw._kernels._set_core_limit(max(THREAD_COUNTS))
    try:
        yield
    finally:
        fastpw._kernels._set_core_limit(previous)


# (n, c, k, h, w, groups, stride): small spatial (7x7 = 49 pixels), large (56x56), odd
# channel counts, groups, stride, and a problem with fewer tiles than threads.
SHAPES = [
    (1, 64, 64, 7, 7, 1, 1),
    (1, 33, 17, 7, 7, 1, 1),
    (2, 17, 129, 7, 7, 1, 1),
    (1, 64, 96, 56, 56, 1, 1),
    (1, 3, 35, 56, 56, 1, 1),
    (1, 48, 64, 28, 28, 4, 1),
    (2, 32, 48, 29, 31, 1, 2),
    (1, 5, 7, 1, 3, 1, 1),
]


def make_problem(layout, n, c, k, h, w, groups, seed=0):
    rng = np.random.default_rng(seed)
    shape = (n, c, h, w) if layout == "NCHW" else (n, h, w, c)
    x = rng.standard_normal(shape).astype(np.float32)
    weight = rng.standard_normal((k, c // groups)).astype(np.float32)
    bias = rng.standard_normal(k).astype(np.float32)
    return x, weight, bias


def bits(a):
    assert a.dtype == np.float32
    return np.ascontiguousarray(a).view(np.uint32)


def assert_same_bits(a, b, what):
    assert a.shape == b.shape, what
    differ = np.count_nonzero(bits(a) != bits(b))
    assert differ == 0, f"{what}: {differ} of {a.size} entries differ bitwise"


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "n{}c{}k{}h{}w{}g{}s{}".format(*s))
def test_thread_count_does_not_change_bits(isa, layout, shape):
    n, c, k, h, w, groups, stride = shape
    x, weight, bias = make_problem(layout, n, c, k, h, w, groups)
    kwargs = dict(layout=layout, groups=groups, stride=stride, activation="relu")
    single = fastpw.conv1x1(x, weight, bias, num_threads=1, **kwargs)
    assert_matches_reference(single, x, weight, bias, layout, stride, groups, "relu")
    for threads in THREAD_COUNTS[1:] + (None,):
        got = fastpw.conv1x1(x, weight, bias, num_threads=threads, **kwargs)
        assert_same_bits(got, single, f"num_threads={threads} vs 1")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_thread_count_with_out_slice(isa, layout):
    x, weight, bias = make_problem(layout, 1, 40, 50, 14, 14, 1)
    axis = 1 if layout == "NCHW" else 3
    results = []
    for threads in THREAD_COUNTS:
        shape = (1, 70, 14, 14) if layout == "NCHW" else (1, 14, 14, 70)
        buf = np.full(shape, -7.0, dtype=np.float32)
        out = buf[:, 10:60] if layout == "NCHW" else buf[..., 10:60]
        fastpw.conv1x1(x, weight, bias, layout=layout, out=out, num_threads=threads)
        rest = np.delete(buf, np.s_[10:60], axis=axis)
        assert (rest == -7.0).all(), f"num_threads={threads} wrote outside the out slice"
        results.append(out.copy())
    for threads, got in zip(THREAD_COUNTS[1:], results[1:], strict=False):
        assert_same_bits(got, results[0], f"num_threads={threads} vs 1")


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("threads", [64, 10**6])
def test_more_threads_than_work(isa, layout, threads):
    """A request far above the core count (and above any internal limit) is only a cap."""
    for shape in [(1, 5, 7, 1, 3, 1), (1, 64, 64, 7, 7, 1), (1, 32, 40, 28, 28, 2)]:
        x, weight, bias = make_problem(layout, *shape)
        single = fastpw.conv1x1(x, weight, bias, layout=layout, groups=shape[-1], num_threads=1)
        got = fastpw.conv1x1(x, weight, bias, layout=layout, groups=shape[-1], num_threads=threads)
        assert_same_bits(got, single, f"num_threads={threads} vs 1")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_repeated_calls_are_identical(isa, layout):
    x, weight, bias = make_problem(layout, 1, 37, 45, 23, 23, 1)
    first = fastpw.conv1x1(x, weight, bias, layout=layout, num_threads=2)
    for _ in range(5):
        got = fastpw.conv1x1(x, weight, bias, layout=layout, num_threads=2)
        assert_same_bits(got, first, "repeated call")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_layer_thread_count_does_not_change_bits(isa, layout):
    x, weight, bias = make_problem(layout, 2, 24, 40, 20, 20, 2)
    layer = fastpw.Conv1x1(weight, bias, layout=layout, groups=2, activation="relu6")
    single = layer(x, num_threads=1)
    for threads in THREAD_COUNTS[1:] + (None,):
        assert_same_bits(layer(x, num_threads=threads), single, f"layer num_threads={threads}")
    expected = fastpw.conv1x1(x, weight, bias, layout=layout, groups=2, activation="relu6")
    assert_same_bits(single, expected, "layer vs conv1x1")


@pytest.mark.parametrize("user_api", [None, "openmp"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_threadpoolctl_limit_gives_same_bits(isa, layout, user_api):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    x, weight, bias = make_problem(layout, 1, 64, 80, 28, 28, 1)
    default = fastpw.conv1x1(x, weight, bias, layout=layout)
    with threadpoolctl.threadpool_limits(limits=1, user_api=user_api):
        limited = fastpw.conv1x1(x, weight, bias, layout=layout)
        limited_capped = fastpw.conv1x1(x, weight, bias, layout=layout, num_threads=2)
    assert_same_bits(limited, default, "threadpool_limits(1)")
    assert_same_bits(limited_capped, default, "threadpool_limits(1) + num_threads=2")
    assert_same_bits(fastpw.conv1x1(x, weight, bias, layout=layout), default, "after limits")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_concurrent_calls_from_python_threads(isa, layout):
    """Calls from several Python threads at once (the kernels run without the GIL) give
    the same bits as one call at a time: no shared scratch space between calls."""
    problems = [
        make_problem(layout, 1, 16 + 5 * i, 24 + 3 * i, 15, 17, 1, seed=i) for i in range(4)
    ]
    layers = [fastpw.Conv1x1(w, b, layout=layout) for _, w, b in problems]
    expected = [layer(x, num_threads=1) for layer, (x, _, _) in zip(layers, problems, strict=False)]

    def work(i):
        x, w, b = problems[i % 4]
        if i % 2:
            return layers[i % 4](x, num_threads=2)
        return fastpw.conv1x1(x, w, b, layout=layout, num_threads=2)

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(work, range(32)))
    for i, got in enumerate(results):
        assert_same_bits(got, expected[i % 4], f"concurrent call {i}")


# --------------------------------------------------------------------------- int8 path

Q_OUT_DTYPES = (None, np.int8, np.int32, np.float32)

# (n, c, k, h, w, groups, stride): as above, plus channel counts off the 2- and 4-channel
# reduction steps.
Q_SHAPES = SHAPES + [(1, 3, 13, 17, 19, 1, 1), (2, 30, 45, 9, 11, 15, (2, 1))]


def make_qproblem(layout, n, c, k, h, w, groups, seed=0, x_dtype=np.uint8):
    """Random uint8/int8 x, int8 weight, int32 bias and quantization parameters whose
    8-bit outputs spread over the range."""
    rng = np.random.default_rng(seed)
    lo, hi = QDTYPE_RANGES[np.dtype(x_dtype)]
    shape = (n, c, h, w) if layout == "NCHW" else (n, h, w, c)
    x = rng.integers(lo, hi + 1, shape).astype(x_dtype)
    weight = rng.integers(-128, 128, (k, c // groups)).astype(np.int8)
    bias = rng.integers(-(2**20), 2**20, k).astype(np.int32)
    w_scale = (10.0 ** rng.uniform(-3, -1, k)).astype(np.float32)
    x_quant = (0.02, int(rng.integers(lo, hi + 1)))
    acc = qconv1x1_accumulators(
        x, weight, bias, x_zero_point=x_quant[1], layout=layout, groups=groups
    )
    y_scale = 0.02 * float(w_scale.max()) * max(float(np.percentile(np.abs(acc), 90)), 1) / 100
    quant = dict(x_quant=x_quant, w_quant=(w_scale, 0), y_quant=(y_scale, 5))
    return x, weight, bias, quant


def assert_same_values(a, b, what):
    assert a.dtype == b.dtype and a.shape == b.shape, what
    differ = np.count_nonzero(a != b)
    assert differ == 0, f"{what}: {differ} of {a.size} entries differ"


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", Q_SHAPES, ids=lambda s: "n{}c{}k{}h{}w{}g{}s{}".format(*s))
def test_int8_thread_count_does_not_change_bits(isa, layout, shape):
    n, c, k, h, w, groups, stride = shape
    x_dtype = (np.uint8, np.int8)[(c + k) % 2]
    x, weight, bias, quant = make_qproblem(layout, n, c, k, h, w, groups, x_dtype=x_dtype)
    for out_dtype in Q_OUT_DTYPES:
        activation = None if out_dtype is np.int32 else "relu"
        kwargs = dict(
            layout=layout,
            groups=groups,
            stride=stride,
            activation=activation,
            out_dtype=out_dtype,
            **quant,
        )
        single = fastpw.conv1x1(x, weight, bias, num_threads=1, **kwargs)
        expected = qconv1x1_reference(x, weight, bias, **kwargs)
        assert_same_values(single, expected, f"num_threads=1 vs reference ({out_dtype})")
        for threads in THREAD_COUNTS[1:] + (None,):
            got = fastpw.conv1x1(x, weight, bias, num_threads=threads, **kwargs)
            if got.dtype == np.float32:
                assert_same_bits(got, single, f"num_threads={threads} vs 1 ({out_dtype})")
            assert_same_values(got, single, f"num_threads={threads} vs 1 ({out_dtype})")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_int8_thread_count_with_out_slice(isa, layout):
    x, weight, bias, quant = make_qproblem(layout, 1, 40, 50, 14, 14, 1)
    axis = 1 if layout == "NCHW" else 3
    results = []
    for threads in THREAD_COUNTS:
        shape = (1, 70, 14, 14) if layout == "NCHW" else (1, 14, 14, 70)
        buf = np.full(shape, 77, dtype=np.uint8)
        out = buf[:, 10:60] if layout == "NCHW" else buf[..., 10:60]
        fastpw.conv1x1(x, weight, bias, layout=layout, out=out, num_threads=threads, **quant)
        rest = np.delete(buf, np.s_[10:60], axis=axis)
        assert (rest == 77).all(), f"num_threads={threads} wrote outside the out slice"
        results.append(out.copy())
    for threads, got in zip(THREAD_COUNTS[1:], results[1:], strict=False):
        assert_same_values(got, results[0], f"num_threads={threads} vs 1")


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("x_dtype", [np.uint8, np.int8])
def test_int8_layer_thread_count_does_not_change_bits(isa, layout, x_dtype):
    x, weight, bias, quant = make_qproblem(layout, 2, 24, 40, 20, 20, 2, x_dtype=x_dtype)
    kwargs = dict(layout=layout, groups=2, activation="relu6", **quant)
    layer = fastpw.QConv1x1(weight, bias, **kwargs)
    single = layer(x, num_threads=1)
    for threads in THREAD_COUNTS[1:] + (None, 64):
        assert_same_values(layer(x, num_threads=threads), single, f"layer num_threads={threads}")
    assert_same_values(single, fastpw.conv1x1(x, weight, bias, **kwargs), "layer vs conv1x1")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_int8_concurrent_calls_from_python_threads(isa, layout):
    """Quantized calls from several Python threads at once give the same values as one
    call at a time."""
    problems = [
        make_qproblem(layout, 1, 16 + 5 * i, 24 + 3 * i, 15, 17, 1, seed=i) for i in range(4)
    ]
    layers = [fastpw.QConv1x1(w, b, layout=layout, **q) for _, w, b, q in problems]
    expected = [
        layer(x, num_threads=1) for layer, (x, _, _, _) in zip(layers, problems, strict=False)
    ]

    def work(i):
        x, w, b, q = problems[i % 4]
        if i % 2:
            return layers[i % 4](x, num_threads=2)
        return fastpw.conv1x1(x, w, b, layout=layout, num_threads=2, **q)

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(work, range(32)))
    for i, got in enumerate(results):
        assert_same_values(got, expected[i % 4], f"concurrent call {i}")
