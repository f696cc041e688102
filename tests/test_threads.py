"""Results are bitwise identical for every thread count and every repeated call.

The summation order of each output is fixed by the microkernel contract and never by how
the work is split between threads, so num_threads=1, 2, 3 (and more threads than there
are tiles) must give the same bits, under every ISA and both layouts.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from reference import assert_matches_reference

import fastpw

LAYOUTS = ("NCHW", "NHWC")
THREAD_COUNTS = (1, 2, 3, 8)

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
    for threads, got in zip(THREAD_COUNTS[1:], results[1:]):
        assert_same_bits(got, results[0], f"num_threads={threads} vs 1")


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("threads", [64, 10**6])
def test_more_threads_than_work(isa, layout, threads):
    """A cap far above the core count (and above any internal limit) is only a cap."""
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
    expected = [layer(x, num_threads=1) for layer, (x, _, _) in zip(layers, problems)]

    def work(i):
        x, w, b = problems[i % 4]
        if i % 2:
            return layers[i % 4](x, num_threads=2)
        return fastpw.conv1x1(x, w, b, layout=layout, num_threads=2)

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(work, range(32)))
    for i, got in enumerate(results):
        assert_same_bits(got, expected[i % 4], f"concurrent call {i}")
