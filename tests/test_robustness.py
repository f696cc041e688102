"""Robustness: concurrent calls on shared layers, the GIL, tensors past 2**31, memory and
aliasing.

- Concurrency: one shared ``Conv1x1`` and one shared ``QConv1x1`` called from 8 Python
  threads at once (50 calls each, every call itself on 2 OpenMP threads) give the bits of
  the same calls made one at a time; the kernels release the GIL while they compute.
- Large tensors (``slow``): inputs and outputs of more than 2**31 elements (int8) or
  bytes (float32), checked at every output pixel.
- Memory: 100k small calls grow neither RSS nor Python's traced memory; calls with
  ``out=`` allocate nothing the size of a tensor; deleted layers give their packed
  weights back.
- Aliasing: ``out`` sharing memory with what the kernel reads is refused (or computed
  correctly, where the layer reads a private copy); read-only inputs are fine.

tests/test_threads.py covers thread counts and a few concurrent calls on separate
layers; tests/test_api_errors.py covers out overlapping x (functional float and
quantized, the float layer) and a read-only out on the float path. This file adds what
those leave out.
"""

from __future__ import annotations

import gc
import os
import threading
import time
import tracemalloc
import weakref

import numpy as np
import pytest
from layouts import x_shape, y_shape

import fastpw
from fastpw.testing import assert_matches_reference, qconv1x1_reference

LAYOUTS = ("NCHW", "NHWC")
MiB = 1 << 20


def bits(a):
    """The raw bytes of an array as unsigned integers (bitwise comparison, NaN included)."""
    a = np.ascontiguousarray(a)
    return a.view({1: np.uint8, 4: np.uint32}[a.dtype.itemsize])


def channel_slice(layout, start, stop):
    return (slice(None), slice(start, stop)) if layout == "NCHW" else (..., slice(start, stop))


def qparams(k, seed=0):
    rng = np.random.default_rng(seed)
    w_scale = rng.uniform(0.005, 0.02, k).astype(np.float32)
    return dict(x_quant=(0.02, 3), w_quant=(w_scale, 0), y_quant=(0.25, 128))


# ================================================================== 3. concurrency

N_THREADS = 8
CALLS_PER_THREAD = 50
INPUTS_PER_THREAD = 4
# 48 -> 40 channels on 13 x 17 pixels: about 0.85 MFLOP, enough for the kernels to use
# both OpenMP threads a call asks for (they stay on one below 0.4 MFLOP).
CC_C, CC_K, CC_H, CC_W = 48, 40, 13, 17


def run_in_threads(n, body, timeout=300):
    """Run body(t, barrier) on n threads started together; re-raise the first error."""
    barrier = threading.Barrier(n)
    errors = []

    def target(t):
        try:
            body(t, barrier)
        except BaseException as exc:  # noqa: B036 - reported to the main thread below
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=target, args=(t,), daemon=True) for t in range(n)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    assert not any(thread.is_alive() for thread in threads), "threads did not finish"
    real = [e for e in errors if not isinstance(e, threading.BrokenBarrierError)]
    if real or errors:
        raise (real or errors)[0]


class InFlight:
    """Counts calls in progress; `most` > 1 proves that calls overlapped."""

    def __init__(self):
        self.lock = threading.Lock()
        self.now = 0
        self.most = 0

    def __enter__(self):
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)

    def __exit__(self, *exc):
        with self.lock:
            self.now -= 1


def shared_layers(layout):
    rng = np.random.default_rng(10)
    f_layer = fastpw.Conv1x1(
        rng.standard_normal((CC_K, CC_C)).astype(np.float32),
        rng.standard_normal(CC_K).astype(np.float32),
        layout=layout,
        activation="relu6",
    )
    q_layer = fastpw.QConv1x1(
        rng.integers(-127, 128, (CC_K, CC_C)).astype(np.int8),
        rng.integers(-(2**16), 2**16, CC_K).astype(np.int32),
        layout=layout,
        **qparams(CC_K),
    )
    shape = x_shape(layout, 1, CC_C, CC_H, CC_W)
    xf = [
        [rng.standard_normal(shape).astype(np.float32) for _ in range(INPUTS_PER_THREAD)]
        for _ in range(N_THREADS)
    ]
    xq = [
        [rng.integers(0, 256, shape).astype(np.uint8) for _ in range(INPUTS_PER_THREAD)]
        for _ in range(N_THREADS)
    ]
    return f_layer, q_layer, xf, xq


# (kernel family, with_out): every family with new outputs, the default one with out=.
FAMILY_CASES = [(name, False) for name in fastpw.available_isas()] + [(fastpw.isa(), True)]


@pytest.mark.parametrize(
    "family,with_out",
    FAMILY_CASES,
    ids=[f"{name}-{'out-per-thread' if out else 'new-output'}" for name, out in FAMILY_CASES],
)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_shared_layers_called_from_many_threads(layout, family, with_out):
    """8 threads x 50 calls on ONE Conv1x1 and ONE QConv1x1 (num_threads=2 each), a
    barrier before every call: the results are bitwise those of serial calls. With
    with_out, each thread writes into a channel slice of its own buffer, and nothing
    outside the slice changes."""
    previous = fastpw._set_isa(family)
    try:
        f_layer, q_layer, xf, xq = shared_layers(layout)  # packed for `family`
        chosen = (fastpw.isa("float32"), fastpw.isa("int8"))
    finally:
        fastpw._set_isa(previous)
    assert (f_layer.isa, q_layer.isa) == chosen
    f_expected = [[bits(f_layer(x, num_threads=2)) for x in row] for row in xf]
    q_expected = [[bits(q_layer(x, num_threads=2)) for x in row] for row in xq]
    in_flight = InFlight()
    mismatches = []
    big_shape = y_shape(layout, 1, CC_K + 9, CC_H, CC_W)
    part = channel_slice(layout, 4, 4 + CC_K)

    def body(t, barrier):
        f_buf = np.full(big_shape, -3.5, np.float32)
        q_buf = np.full(big_shape, 77, np.uint8)
        f_out = f_buf[part] if with_out else None
        q_out = q_buf[part] if with_out else None
        for j in range(CALLS_PER_THREAD):
            i = (j + t) % INPUTS_PER_THREAD
            barrier.wait(timeout=60)
            with in_flight:
                yf = f_layer(xf[t][i], out=f_out, num_threads=2)
                yq = q_layer(xq[t][i], out=q_out, num_threads=2)
            if with_out:
                assert yf is f_out and yq is q_out
            if not np.array_equal(bits(yf), f_expected[t][i]):
                mismatches.append(("Conv1x1", t, j))
            if not np.array_equal(bits(yq), q_expected[t][i]):
                mismatches.append(("QConv1x1", t, j))
        if with_out:
            f_buf[part] = -3.5
            q_buf[part] = 77
            if not ((f_buf == -3.5).all() and (q_buf == 77).all()):
                mismatches.append(("written outside the out slice", t, None))

    run_in_threads(N_THREADS, body)
    print(f"\n[threads] up to {in_flight.most} of {N_THREADS} call pairs in flight at once")
    assert not mismatches, f"{len(mismatches)} calls differ from serial, first: {mismatches[:5]}"
    assert in_flight.most >= 2, "no two calls overlapped"


@pytest.mark.parametrize("layout", LAYOUTS)
def test_shared_functional_and_layers_mixed(layout):
    """Functional calls (a plan per call) interleaved with calls on the shared layers,
    from 8 threads: still the serial bits."""
    f_layer, q_layer, xf, xq = shared_layers(layout)
    weight, bias = f_layer.weight, f_layer.bias
    q_kwargs = dict(
        x_quant=q_layer.x_quant, w_quant=q_layer.w_quant, y_quant=q_layer.y_quant, layout=layout
    )
    f_expected = [[bits(f_layer(x, num_threads=1)) for x in row] for row in xf]
    q_expected = [[bits(q_layer(x, num_threads=1)) for x in row] for row in xq]
    mismatches = []

    def body(t, barrier):
        for j in range(20):
            i = j % INPUTS_PER_THREAD
            barrier.wait(timeout=60)
            if (j + t) % 2:
                yf = fastpw.conv1x1(
                    xf[t][i], weight, bias, layout=layout, activation="relu6", num_threads=2
                )
                yq = fastpw.conv1x1(
                    xq[t][i], q_layer.weight, q_layer.bias, num_threads=2, **q_kwargs
                )
            else:
                yf = f_layer(xf[t][i], num_threads=2)
                yq = q_layer(xq[t][i], num_threads=2)
            if not np.array_equal(bits(yf), f_expected[t][i]):
                mismatches.append(("float32", t, j))
            if not np.array_equal(bits(yq), q_expected[t][i]):
                mismatches.append(("int8", t, j))

    run_in_threads(N_THREADS, body)
    assert not mismatches, mismatches[:5]


def gil_problem(kind):
    """A layer and an input whose single-thread call takes tens of milliseconds."""
    rng = np.random.default_rng(3)
    if kind == "float32":
        c = k = 512  # 8.6 GFLOP on 128 x 128 pixels
        layer = fastpw.Conv1x1(rng.standard_normal((k, c)).astype(np.float32))
        x = np.full((1, c, 128, 128), 0.5, np.float32)  # the values do not matter here
    else:
        c = k = 1024  # 34 GOP
        layer = fastpw.QConv1x1(rng.integers(-127, 128, (k, c)).astype(np.int8), None, **qparams(k))
        x = np.full((1, c, 128, 128), 200, np.uint8)
    return layer, x


@pytest.mark.parametrize("kind", ["float32", "int8"])
def test_gil_is_released_during_compute(kind):
    """While one thread is inside long calls (one OpenMP thread each), the main thread
    keeps running Python: it counts loop iterations in 1 ms buckets, and the buckets in
    the middle half of each call (at least 20 ms in from either end) must hold many.

    Had a call kept the GIL while computing, those buckets would be empty: Python code
    runs only with the GIL, and the counting thread takes each timestamp while holding
    it. The main thread can get the GIL only at the edges of a call (at most one 5 ms
    switch interval at each of the few points where the caller's bytecode checks for a
    switch request, about 10-15 ms at each end: a big-int multiplication, which holds
    the GIL, shows exactly that pattern), and the margins leave those out. The bound
    (1000 iterations over at least 100 ms, where a free core counts about 3000 per ms)
    leaves room for a loaded 2-core machine."""
    layer, x = gil_problem(kind)
    out = layer(x, num_threads=1)
    start = time.perf_counter()
    layer(x, out=out, num_threads=1)
    one_call = time.perf_counter() - start
    calls = max(2, min(20, int(0.5 / max(one_call, 1e-3)) + 1))

    windows = []
    done = threading.Event()

    def worker():
        try:
            for _ in range(calls):
                t0 = time.perf_counter()
                layer(x, out=out, num_threads=1)
                windows.append((t0, time.perf_counter()))
        finally:
            done.set()

    buckets = [0] * 120_000  # 1 ms each: two minutes
    last = len(buckets) - 1
    thread = threading.Thread(target=worker, daemon=True)
    base = time.perf_counter()
    thread.start()
    perf_counter = time.perf_counter
    is_done = done.is_set
    while not is_done():
        buckets[min(int((perf_counter() - base) * 1000.0), last)] += 1
    thread.join(60)
    assert len(windows) == calls

    inside = 0
    inside_ms = 0
    for t0, t1 in windows:
        margin = max(0.020, 0.25 * (t1 - t0))
        first = int((t0 + margin - base) * 1000.0) + 1  # whole buckets inside the middle
        stop = int((t1 - margin - base) * 1000.0)
        if stop > first:
            inside += sum(buckets[first:stop])
            inside_ms += stop - first
    print(f"\n[gil] {kind}: {inside} iterations in {inside_ms} ms inside {calls} calls")
    assert inside_ms >= 100, f"calls too short to tell ({calls} calls of {one_call:.3f} s)"
    assert inside >= 1000, (
        f"the main thread ran {inside} loop iterations during {inside_ms} ms in the "
        f"middle of {kind} calls: the GIL is held while computing"
    )


# ================================================================ 4. large tensors
#
# A 6000 x 6000 image has P = 36e6 pixels; 64 uint8 channels make 2.3e9 > 2**31
# elements. The input is np.zeros (calloc: pages the test never writes stay unmapped,
# and reading them maps the shared zero page, so they cost no memory; each filled range
# maps whole, possibly 2 MiB, pages: about 0.8 GB in all for the NCHW 64-channel input)
# with random values written only in a few pixel ranges: the first pixels, the last two
# rows, a row boundary in the middle, and
# those around the pixels where a flat element or byte offset crosses 2**31 in either
# layout. Every other pixel is all zeros, so its output is a per-channel constant: the
# test checks every output element, the filled ranges against fastpw.testing and
# the rest against that constant.
#
# float32 with more than 2**31 elements would need 8.6 GB for the input alone (or for
# the output): more than CI machines can be assumed to have, so the float32 path is
# checked past 2**31 bytes (2**29 elements) instead.

BIG = 6000
BIG_PIXELS = BIG * BIG


def boundary_pixels(channels):
    """Pixels whose elements sit at a flat element or byte offset of 2**31, for NCHW
    (offset = c * P + p) and NHWC (offset = p * C + c), 1- and 4-byte elements."""
    pixels = set()
    for offset in (2**31, 2**31 // 4):
        if offset < channels * BIG_PIXELS:
            pixels.add(offset % BIG_PIXELS)  # NCHW
            pixels.add(offset // channels)  # NHWC
    return sorted(pixels)


def filled_ranges(channels_in, channels_out):
    """Disjoint, sorted [begin, end) pixel ranges to fill with random values."""
    ranges = [(0, 257), (BIG_PIXELS // 2 - 5 * BIG - 33, BIG_PIXELS // 2 - 5 * BIG + 95)]
    for p in boundary_pixels(channels_in) + boundary_pixels(channels_out):
        ranges.append((max(0, p - 300), min(BIG_PIXELS, p + 300)))
    ranges.append((BIG_PIXELS - 2 * BIG - 129, BIG_PIXELS))
    merged = []
    for begin, end in sorted(ranges):
        if merged and begin <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((begin, end))
    return merged


def pixels_view(a, layout):
    """A (1, C, P) or (1, P, C) view of a batch-1 tensor, and a function taking pixels
    [b, e) of it back to a 4-D (1, C, 1, e - b) or (1, 1, e - b, C) tensor."""
    if layout == "NCHW":
        flat = a.reshape(1, a.shape[1], -1)
        return flat, lambda b, e: flat[:, :, b:e][:, :, None, :]
    flat = a.reshape(1, -1, a.shape[3])
    return flat, lambda b, e: flat[:, b:e][:, None]


def fill_ranges(x, layout, ranges, rng):
    flat, _ = pixels_view(x, layout)
    for b, e in ranges:
        index = (slice(None), slice(None), slice(b, e)) if layout == "NCHW" else (0, slice(b, e))
        target = flat[index]
        if x.dtype == np.float32:
            target[...] = rng.standard_normal(target.shape, dtype=np.float32)
        else:
            target[...] = rng.integers(0, 256, target.shape, dtype=np.uint8)


def pixels_off_constant(y, layout, constant, chunk=1 << 22):
    """A boolean mask over the flat pixels: True where some channel k of y differs
    (bitwise) from constant[k]. Chunked: the temporaries stay near `chunk` bytes."""
    flat, _ = pixels_view(y, layout)
    pixels = flat.shape[2] if layout == "NCHW" else flat.shape[1]
    mask = np.zeros(pixels, bool)
    if layout == "NCHW":
        for k in range(flat.shape[1]):
            for b in range(0, pixels, chunk):
                mask[b : b + chunk] |= bits(flat[0, k, b : b + chunk]) != bits(constant[k])
    else:
        chunk = max(1, chunk // flat.shape[2])  # pixels of C channels: chunk elements
        for b in range(0, pixels, chunk):
            block = bits(flat[0, b : b + chunk]) != bits(constant)[None, :]
            mask[b : b + chunk] = block.any(axis=1)
    return mask


def assert_only_in_ranges(off, ranges, what):
    """off (from pixels_off_constant) is False outside the filled ranges, and True for
    most pixels inside them (random input there gives other outputs)."""
    inside = sum(int(np.count_nonzero(off[b:e])) for b, e in ranges)
    for b, e in ranges:
        off[b:e] = False
    stray = np.count_nonzero(off)
    assert stray == 0, (
        f"{what}: {stray} all-zero input pixels give another output than the all-zero "
        f"pixel does, first at flat pixels {np.flatnonzero(off)[:8].tolist()}"
    )
    assert inside > 0.9 * sum(e - b for b, e in ranges), (inside, ranges)


def peak_rss_reset():
    """Reset the kernel's peak-RSS mark of this process (Linux); False if impossible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mib():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


@pytest.fixture
def peak_memory(record_property):
    """Reports (as a test property, and printed with -s) the run time and peak RSS."""
    reset = peak_rss_reset()
    start = time.perf_counter()
    yield
    peak = peak_rss_mib() if reset else float("nan")
    seconds = time.perf_counter() - start
    record_property("peak_rss_mib", round(peak))
    record_property("seconds", round(seconds, 1))
    print(f"\n[large tensor] {seconds:.1f} s, peak RSS {peak:.0f} MiB")


@pytest.mark.slow
@pytest.mark.parametrize(
    "channels_in,channels_out", [(64, 2), (2, 64)], ids=["input-2.3e9", "output-2.3e9"]
)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_int8_past_2_31_elements(layout, channels_in, channels_out, peak_memory):
    """uint8 input (1, 64, 6000, 6000) into 2 channels, or (1, 2, 6000, 6000) into 64:
    2.3e9 elements on one side, every output checked."""
    rng = np.random.default_rng(4)
    x = np.zeros(x_shape(layout, 1, channels_in, BIG, BIG), np.uint8)
    assert max(x.size, channels_out * BIG_PIXELS) > 2**31
    ranges = filled_ranges(channels_in, channels_out)
    fill_ranges(x, layout, ranges, rng)
    weight = rng.integers(-127, 128, (channels_out, channels_in)).astype(np.int8)
    bias = rng.integers(-(2**12), 2**12, channels_out).astype(np.int32)
    quant = qparams(channels_out)
    if channels_in < 8:
        quant["y_quant"] = (0.06, 128)  # fewer terms per output: a finer output scale
    layer = fastpw.QConv1x1(weight, bias, layout=layout, **quant)

    y = layer(x)

    assert y.shape == y_shape(layout, 1, channels_out, BIG, BIG) and y.dtype == np.uint8
    reference = dict(layout=layout, **quant)
    zero_pixel = np.zeros(x_shape(layout, 1, channels_in, 1, 1), np.uint8)
    constant = qconv1x1_reference(zero_pixel, weight, bias, **reference).reshape(channels_out)
    _, x_pixels = pixels_view(x, layout)
    _, y_pixels = pixels_view(y, layout)
    for b, e in ranges:
        expected = qconv1x1_reference(x_pixels(b, e), weight, bias, **reference)
        got = y_pixels(b, e)
        differ = np.argwhere(got != expected)
        assert differ.size == 0, (
            f"pixels [{b}, {e}): {len(differ)} outputs differ from the reference, first "
            f"at {differ[0].tolist()}"
        )
    off = pixels_off_constant(y, layout, constant)
    assert_only_in_ranges(off, ranges, f"int8 {layout} {channels_in}->{channels_out}")


@pytest.mark.slow
@pytest.mark.parametrize(
    "channels_in,channels_out", [(16, 2), (2, 16)], ids=["input-2.3GB", "output-2.3GB"]
)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_float32_past_2_31_bytes(layout, channels_in, channels_out, peak_memory):
    """float32 (1, 16, 6000, 6000) into 2 channels, or (1, 2, 6000, 6000) into 16:
    2.3 GB (5.8e8 elements) on one side, every output checked."""
    rng = np.random.default_rng(5)
    x = np.zeros(x_shape(layout, 1, channels_in, BIG, BIG), np.float32)
    assert max(x.nbytes, 4 * channels_out * BIG_PIXELS) > 2**31
    ranges = filled_ranges(channels_in, channels_out)
    fill_ranges(x, layout, ranges, rng)
    weight = rng.standard_normal((channels_out, channels_in)).astype(np.float32)
    bias = rng.standard_normal(channels_out).astype(np.float32)
    layer = fastpw.Conv1x1(weight, bias, layout=layout)

    y = layer(x)

    assert y.shape == y_shape(layout, 1, channels_out, BIG, BIG) and y.dtype == np.float32
    _, x_pixels = pixels_view(x, layout)
    _, y_pixels = pixels_view(y, layout)
    for b, e in ranges:
        assert_matches_reference(y_pixels(b, e), x_pixels(b, e), weight, bias, layout=layout)
    off = pixels_off_constant(y, layout, bias)  # an all-zero pixel gives exactly the bias
    assert_only_in_ranges(off, ranges, f"float32 {layout} {channels_in}->{channels_out}")


# ========================================================================= 5. memory


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


needs_proc = pytest.mark.skipif(
    not os.path.exists("/proc/self/statm"), reason="RSS is read from /proc/self/statm (Linux)"
)


def small_call(kind, layout, with_out, shape=(1, 8, 4, 4), out_slice=False):
    """A zero-argument function making one call on a small problem, and its output."""
    rng = np.random.default_rng(6)
    n, c, h, w = shape
    k = c
    xs = x_shape(layout, n, c, h, w)
    out = None
    if with_out:
        dtype = np.float32 if kind.startswith("f32") else np.uint8
        if out_slice:  # a channel slice of a larger buffer (zero-copy concatenation)
            out = np.zeros(y_shape(layout, n, 2 * k + 3, h, w), dtype)[
                channel_slice(layout, k, 2 * k)
            ]
        else:
            out = np.zeros(y_shape(layout, n, k, h, w), dtype)
    weight = rng.standard_normal((k, c)).astype(np.float32)
    bias = rng.standard_normal(k).astype(np.float32)
    qweight = rng.integers(-127, 128, (k, c)).astype(np.int8)
    qbias = rng.integers(-1000, 1000, k).astype(np.int32)
    quant = qparams(k)
    x = rng.standard_normal(xs).astype(np.float32)
    xq = rng.integers(0, 256, xs).astype(np.uint8)
    if kind == "f32-layer":
        layer = fastpw.Conv1x1(weight, bias, layout=layout, activation="relu")
        return lambda: layer(x, out=out, num_threads=1), out
    if kind == "q8-layer":
        layer = fastpw.QConv1x1(qweight, qbias, layout=layout, **quant)
        return lambda: layer(xq, out=out, num_threads=1), out
    if kind == "f32-function":
        return lambda: fastpw.conv1x1(x, weight, bias, layout=layout, out=out, num_threads=1), out
    if kind == "q8-function":
        return lambda: fastpw.conv1x1(
            xq, qweight, qbias, layout=layout, out=out, num_threads=1, **quant
        ), out
    raise AssertionError(kind)


# Calls per check: the layers take about 1 us a call, the functional forms pack the
# weights every call (float32 ~15 us, int8 ~200 us: it builds a QConv1x1).
SMALL_CALLS = {"f32-layer": 100_000, "q8-layer": 100_000, "f32-function": 10_000}
SMALL_CALLS["q8-function"] = 1_000
# (kind, layout, with_out): the layers with and without out=, the functional forms with.
SMALL_CASES = [
    (kind, layout, with_out)
    for kind in SMALL_CALLS
    for layout in LAYOUTS
    for with_out in ((True, False) if kind.endswith("layer") else (True,))
]
SMALL_IDS = [f"{k}-{lay}-{'out' if o else 'new-output'}" for k, lay, o in SMALL_CASES]
WARM_UP = 3_000


@needs_proc
@pytest.mark.parametrize("kind,layout,with_out", SMALL_CASES, ids=SMALL_IDS)
def test_many_small_calls_do_not_grow_rss(kind, layout, with_out):
    """100k calls on (1, 8, 4, 4) (fewer for the functional forms): RSS grows by less
    than 1 MiB after a warm-up. A C allocation leaked per call (a malloc chunk is at
    least 32 bytes) would grow it by 3 MiB or more; a leaked output array by 50 MiB."""
    call, _ = small_call(kind, layout, with_out)
    calls = SMALL_CALLS[kind]
    for _ in range(min(WARM_UP, calls)):
        call()
    gc.collect()
    before = rss_bytes()
    for _ in range(calls):
        call()
    gc.collect()
    grown = rss_bytes() - before
    assert grown < 1 * MiB, f"RSS grew by {grown / MiB:.2f} MiB over {calls} {kind} calls"


@pytest.fixture
def tracing():
    """tracemalloc on for the test (it sees numpy's data buffers as well as Python
    objects; C mallocs such as the kernels' per-call scratch are not traced)."""
    tracemalloc.start()
    try:
        yield
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("kind,layout,with_out", SMALL_CASES, ids=SMALL_IDS)
def test_many_small_calls_do_not_grow_traced_memory(tracing, kind, layout, with_out):
    """Python-level memory after 100k layer calls (fewer for the functional forms, which
    run slower traced) is within 4 KiB of where it was after the warm-up."""
    call, _ = small_call(kind, layout, with_out)
    calls = SMALL_CALLS[kind] // (1 if kind.endswith("layer") else 4)  # tracing is slower
    # The warm-up also fills numpy's small-buffer cache, which the quantized conv1x1
    # (a few dozen small arrays per call) takes a few hundred calls to saturate.
    for _ in range(min(WARM_UP, 2 * calls)):
        call()
    gc.collect()
    before, _ = tracemalloc.get_traced_memory()
    for _ in range(calls):
        call()
    gc.collect()
    after, _ = tracemalloc.get_traced_memory()
    assert after - before < 4096, f"traced memory grew by {after - before} B over {calls} calls"


@pytest.mark.parametrize("out_slice", [False, True], ids=["out", "out-channel-slice"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("kind", ["f32-layer", "q8-layer"])
def test_calls_with_out_allocate_no_tensor(tracing, kind, layout, out_slice):
    """With out=, a layer call allocates nothing the size of a tensor: the traced peak
    over 2000 calls stays within 2 KiB of the memory in use before them, while x and the
    output are 8-32 KiB. (Only Python-level allocations are traced: the kernels' C
    scratch, constant per call and freed before it returns, is invisible here.)"""
    shape = (1, 64, 8, 16)
    call, out = small_call(kind, layout, True, shape=shape, out_slice=out_slice)
    call()
    gc.collect()
    before, _ = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    for _ in range(2000):
        assert call() is out
    after, peak = tracemalloc.get_traced_memory()
    assert out.nbytes >= 8192
    assert peak - before < 2048, f"peak {peak - before} B above the start (out: {out.nbytes} B)"
    assert after - before < 1024


BIG_LAYER = 2048  # 2048 x 2048 float32: 16 MiB per copy of the weights


def big_layer(kind, layout, rng):
    if kind == "Conv1x1":
        weight = rng.standard_normal((BIG_LAYER, BIG_LAYER), dtype=np.float32)
        return lambda: fastpw.Conv1x1(weight, weight[0], layout=layout)
    weight = rng.integers(-127, 128, (BIG_LAYER, BIG_LAYER), dtype=np.int8)
    quant = qparams(BIG_LAYER)
    return lambda: fastpw.QConv1x1(weight, None, layout=layout, **quant)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("kind", ["Conv1x1", "QConv1x1"])
def test_deleted_layer_is_freed_by_refcount(kind, layout):
    """A deleted layer (called once, so any per-call state exists) dies at once, without
    the cyclic collector: nothing in it refers back to it."""
    rng = np.random.default_rng(7)
    layer = big_layer(kind, layout, rng)()
    x = np.zeros(x_shape(layout, 1, BIG_LAYER, 2, 3), np.float32 if kind == "Conv1x1" else np.uint8)
    layer(x)
    finalized = weakref.finalize(layer, lambda: None)
    weight = weakref.ref(layer.weight)
    enabled = gc.isenabled()
    gc.disable()
    try:
        del layer
        assert not finalized.alive, "the layer outlived its last reference (a cycle?)"
        assert weight() is None
    finally:
        if enabled:
            gc.enable()
    gc.collect()


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("kind", ["Conv1x1", "QConv1x1"])
def test_deleted_layer_releases_packed_buffers(tracing, kind, layout):
    """Building a 2048 x 2048 layer takes its weight copy and packed panels (tens of
    MiB, traced as numpy buffers); deleting it gives all of them back."""
    rng = np.random.default_rng(8)
    make = big_layer(kind, layout, rng)
    gc.collect()
    before, _ = tracemalloc.get_traced_memory()
    layer = make()
    held, _ = tracemalloc.get_traced_memory()
    weight_bytes = BIG_LAYER * BIG_LAYER * (4 if kind == "Conv1x1" else 1)
    assert held - before >= 2 * weight_bytes, "expected a weight copy and packed panels"
    del layer
    gc.collect()
    after, _ = tracemalloc.get_traced_memory()
    assert after - before < 64 * 1024, f"{after - before} B still traced after del"


@needs_proc
@pytest.mark.parametrize("kind", ["Conv1x1", "QConv1x1"])
def test_creating_and_deleting_big_layers_keeps_rss_flat(kind):
    """50 layers of 2048 x 2048 (Conv1x1: 48 MiB of weights and panels each), built,
    called and deleted one after another: RSS ends within 16 MiB of where it was after
    the first one (had they leaked, it would have grown by GiBs)."""
    rng = np.random.default_rng(9)
    make = big_layer(kind, "NCHW", rng)
    x = np.ones((1, BIG_LAYER, 2, 2), np.float32 if kind == "Conv1x1" else np.uint8)
    layer = make()
    layer(x, num_threads=1)
    del layer
    gc.collect()
    baseline = rss_bytes()
    peak = baseline
    for _ in range(50):
        layer = make()
        layer(x, num_threads=1)
        peak = max(peak, rss_bytes())
        del layer
    gc.collect()
    grown = rss_bytes() - baseline
    assert peak - baseline < 200 * MiB
    assert grown < 16 * MiB, f"RSS grew by {grown / MiB:.1f} MiB over 50 layers"


# ======================================================================== 6. aliasing
#
# The kernels read x and the weights while they write out; an out sharing memory with
# either would feed partial results back in. Refusing it is the contract (ValueError,
# out untouched). A layer reads private copies of its weights and bias, so an out over
# the caller's weight array is harmless there: it must then simply be right.

N, C, H, W, K = 2, 12, 5, 7, 12  # C == K: x and out can be the same shape


def float_problem(layout, rng):
    x = rng.standard_normal(x_shape(layout, N, C, H, W)).astype(np.float32)
    weight = rng.standard_normal((K, C)).astype(np.float32)
    bias = rng.standard_normal(K).astype(np.float32)
    return x, weight, bias


def quant_problem(layout, rng):
    x = rng.integers(0, 256, x_shape(layout, N, C, H, W)).astype(np.uint8)
    weight = rng.integers(-127, 128, (K, C)).astype(np.int8)
    bias = rng.integers(-5000, 5000, K).astype(np.int32)
    return x, weight, bias


def call_float(form, x, weight, bias, layout, out):
    if form == "function":
        return fastpw.conv1x1(x, weight, bias, layout=layout, out=out)
    return fastpw.Conv1x1(weight, bias, layout=layout)(x, out=out)


def call_quant(form, x, weight, bias, layout, out, out_dtype=None):
    quant = dict(qparams(K), out_dtype=out_dtype, layout=layout)
    if out_dtype is not None and np.dtype(out_dtype).itemsize != 1:
        quant["y_quant"] = None
    if form == "function":
        return fastpw.conv1x1(x, weight, bias, out=out, **quant)
    return fastpw.QConv1x1(weight, bias, **quant)(x, out=out)


def quant_expected(x, weight, bias, layout, out_dtype=None):
    quant = dict(qparams(K), out_dtype=out_dtype, layout=layout)
    if out_dtype is not None and np.dtype(out_dtype).itemsize != 1:
        quant["y_quant"] = None
    return qconv1x1_reference(x, weight, bias, **quant)


def assert_refused(run, out, what):
    """run() raises ValueError naming out, and out's memory is unchanged."""
    before = bits(out).copy()
    with pytest.raises(ValueError, match=r"(?i)\bout\b"):
        run()
    assert np.array_equal(bits(out), before), f"{what}: a refused call wrote into out"


@pytest.mark.parametrize("form", ["function", "layer"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_quantized_out_overlapping_x_raises(layout, form):
    """uint8 x and uint8 out in one buffer: the same memory, half of it, or out as
    a view of x read as another dtype (int32 / float32 output over x's bytes)."""
    rng = np.random.default_rng(11)
    buf = rng.integers(0, 256, x_shape(layout, N, 2 * C, H, W)).astype(np.uint8)
    x = buf[channel_slice(layout, 0, C)]
    _, weight, bias = quant_problem(layout, rng)
    for out in (x, buf[channel_slice(layout, C // 2, C // 2 + K)]):
        assert_refused(lambda o=out: call_quant(form, x, weight, bias, layout, o), out, "uint8")
    # 4-byte outputs over x's bytes: one byte buffer holds x at its start and out over
    # all of it (x's elements are out's first ones, read as int32 / float32).
    raw = np.zeros(4 * N * K * H * W, np.uint8)
    x_bytes = raw[: x.size].reshape(x.shape)
    x_bytes[...] = x
    for dtype in (np.int32, np.float32):
        out = raw.view(dtype).reshape(y_shape(layout, N, K, H, W))
        assert np.shares_memory(out, x_bytes)
        assert_refused(
            lambda o=out, d=dtype: call_quant(form, x_bytes, weight, bias, layout, o, d),
            out,
            np.dtype(dtype).name,
        )


@pytest.mark.parametrize("layout", LAYOUTS)
def test_float_out_over_x_bytes_of_another_shape_raises(layout):
    """out is x's memory seen with another shape (a reshape of the same buffer)."""
    rng = np.random.default_rng(12)
    x = rng.standard_normal(x_shape(layout, N, C, H, W)).astype(np.float32)
    weight = rng.standard_normal((K // 2, C)).astype(np.float32)
    out = x.reshape(-1)[: N * (K // 2) * H * W].reshape(y_shape(layout, N, K // 2, H, W))
    for form in ("function", "layer"):
        assert_refused(lambda f=form: call_float(f, x, weight, None, layout, out), out, form)


@pytest.mark.parametrize("part", ["whole", "partial"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_function_out_overlapping_weight_raises(layout, part):
    """conv1x1 reads the caller's float32 weight in place: an out over it is refused."""
    rng = np.random.default_rng(13)
    x, weight, bias = float_problem(layout, rng)
    size = N * K * H * W
    buf = rng.standard_normal(size + K * C).astype(np.float32)
    start = 0 if part == "whole" else size - K * C // 2
    w_view = buf[start : start + K * C].reshape(K, C)
    w_view[...] = weight
    out = buf[:size].reshape(y_shape(layout, N, K, H, W))
    assert_refused(lambda: fastpw.conv1x1(x, w_view, bias, layout=layout, out=out), out, part)
    w4 = w_view.reshape(K, C, 1, 1)  # PyTorch's layout of the same memory
    assert_refused(lambda: fastpw.conv1x1(x, w4, bias, layout=layout, out=out), out, "4-d")


@pytest.mark.parametrize("where", ["first", "last"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_function_out_overlapping_bias_is_refused_or_right(layout, where):
    """conv1x1 reads the caller's float32 bias during the call: an out over it must be
    refused or still give the result for the bias as it was. The kernels add the bias
    tile by tile, so an out whose first elements are the bias feeds computed outputs
    back in as the bias of later tiles."""
    rng = np.random.default_rng(14)
    x, weight, bias = float_problem(layout, rng)
    size = N * K * H * W
    buf = np.zeros(size, np.float32)
    start = 0 if where == "first" else size - K
    b_view = buf[start : start + K]
    b_view[...] = bias
    out = buf.reshape(y_shape(layout, N, K, H, W))
    before = buf.copy()
    try:
        y = fastpw.conv1x1(x, weight, b_view, layout=layout, out=out)
    except ValueError:
        assert np.array_equal(buf, before), "a refused call wrote into out"
        return
    assert y is out
    assert_matches_reference(y, x, weight, bias, layout=layout)


@pytest.mark.parametrize("target", ["weight", "bias"])
@pytest.mark.parametrize("form", ["function", "layer"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_quantized_out_over_caller_weight_or_bias_is_refused_or_right(layout, form, target):
    """The quantized path (layer, and conv1x1 through one) reads copies of the int8
    weight and the int32 bias: an out over the caller's arrays is harmless, so it must
    be refused or right."""
    rng = np.random.default_rng(15)
    x, weight, bias = quant_problem(layout, rng)
    out_dtype = np.int8 if target == "weight" else np.int32
    shape = y_shape(layout, N, K, H, W)
    out = np.zeros(shape, out_dtype)
    flat = out.reshape(-1)
    if target == "weight":
        w_arg, b_arg = flat[5 : 5 + K * C].reshape(K, C), bias
        w_arg[...] = weight
    else:
        w_arg, b_arg = weight, flat[3 : 3 + K]
        b_arg[...] = bias
    expected = quant_expected(x, weight, bias, layout, out_dtype)
    before = out.copy()
    try:
        if form == "layer":
            quant = dict(qparams(K), out_dtype=out_dtype, layout=layout)
            if out_dtype == np.int32:
                quant["y_quant"] = None
            y = fastpw.QConv1x1(w_arg, b_arg, **quant)(x, out=out)
        else:
            y = call_quant(form, x, w_arg, b_arg, layout, out, out_dtype)
    except ValueError:
        assert np.array_equal(out, before), "a refused call wrote into out"
        return
    assert y is out
    np.testing.assert_array_equal(y, expected)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_float_layer_out_over_caller_weight_is_right(layout):
    """Conv1x1 copies its weight and bias when built: later writes into the caller's
    arrays (here: the call's own out) change nothing."""
    rng = np.random.default_rng(16)
    x, weight, bias = float_problem(layout, rng)
    size = N * K * H * W
    buf = np.zeros(size, np.float32)
    w_view = buf[: K * C].reshape(K, C)
    b_view = buf[K * C : K * C + K]
    w_view[...] = weight
    b_view[...] = bias
    layer = fastpw.Conv1x1(w_view, b_view, layout=layout)
    out = buf.reshape(y_shape(layout, N, K, H, W))
    assert layer(x, out=out) is out
    assert_matches_reference(out, x, weight, bias, layout=layout)


def interleaved(layout, batch, dtype, rng):
    """x and out in one buffer, disjoint but interleaved: (a) every other image of a
    batch, (b) every other channel. Their memory spans overlap, their elements do not."""
    if batch:
        buf_shape = x_shape(layout, 2 * N, C, H, W)
        x_index, out_index = np.s_[0::2], np.s_[1::2]
    else:
        buf_shape = x_shape(layout, N, 2 * C, H, W)
        x_index = (slice(None), slice(0, None, 2)) if layout == "NCHW" else (..., slice(0, None, 2))
        out_index = (
            (slice(None), slice(1, None, 2)) if layout == "NCHW" else (..., slice(1, None, 2))
        )
    if dtype == np.float32:
        buf = rng.standard_normal(buf_shape).astype(np.float32)
    else:
        buf = rng.integers(0, 256, buf_shape).astype(np.uint8)
    x, out = buf[x_index], buf[out_index]
    assert not np.shares_memory(x, out)
    return buf, x, out


@pytest.mark.parametrize("form", ["function", "layer"])
@pytest.mark.parametrize("batch", [True, False], ids=["every-other-image", "every-other-channel"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_interleaved_x_and_out_are_accepted_and_right(isa, layout, batch, form):
    """Interleaved, disjoint x and out (spans overlap, elements do not) are no overlap:
    the result is right and x (the other half of the buffer) is unchanged."""
    rng = np.random.default_rng(17)
    buf, x, out = interleaved(layout, batch, np.float32, rng)
    _, weight, bias = float_problem(layout, rng)
    x_before = x.copy()
    assert call_float(form, x, weight, bias, layout, out) is out
    np.testing.assert_array_equal(x, x_before)
    assert_matches_reference(out, x_before, weight, bias, layout=layout)

    buf, x, out = interleaved(layout, batch, np.uint8, rng)
    _, weight, bias = quant_problem(layout, rng)
    x_before = x.copy()
    assert call_quant(form, x, weight, bias, layout, out) is out
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(out, quant_expected(x_before, weight, bias, layout))


@pytest.mark.parametrize("form", ["function", "layer"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_quantized_read_only_out_raises(layout, form):
    rng = np.random.default_rng(18)
    x, weight, bias = quant_problem(layout, rng)
    for dtype in (None, np.int32, np.float32):
        out = np.zeros(y_shape(layout, N, K, H, W), dtype or np.uint8)
        out.flags.writeable = False
        assert_refused(
            lambda o=out, d=dtype: call_quant(form, x, weight, bias, layout, o, d), out, "ro"
        )


@pytest.mark.parametrize("layout", LAYOUTS)
def test_float_read_only_out_channel_slice_raises(layout):
    """A read-only channel slice (a view: the fast path declines it, the general path
    must still refuse it rather than copy into it)."""
    rng = np.random.default_rng(19)
    x, weight, bias = float_problem(layout, rng)
    buf = np.zeros(y_shape(layout, N, K + 4, H, W), np.float32)
    buf.flags.writeable = False
    out = buf[channel_slice(layout, 2, 2 + K)]
    for form in ("function", "layer"):
        assert_refused(lambda f=form: call_float(f, x, weight, bias, layout, out), out, form)


def read_only(*arrays):
    copies = []
    for a in arrays:
        a = a.copy()
        a.flags.writeable = False
        copies.append(a)
    return copies


@pytest.mark.parametrize("with_out", [False, True], ids=["new-output", "out"])
@pytest.mark.parametrize("form", ["function", "layer"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_read_only_inputs_are_accepted(isa, layout, form, with_out):
    """x, weight and bias all read-only (flags.writeable = False), 2-D and (K, C, 1, 1)
    weights, stride 1 and 2: the reference result, and the inputs unchanged."""
    rng = np.random.default_rng(20)
    x, weight, bias = float_problem(layout, rng)
    x_ro, w_ro, b_ro = read_only(x, weight, bias)
    for w_arg in (w_ro, w_ro.reshape(K, C, 1, 1)):
        for stride in (1, 2):
            out = np.zeros(y_shape(layout, N, K, H, W, stride), np.float32) if with_out else None
            if form == "function":
                y = fastpw.conv1x1(x_ro, w_arg, b_ro, layout=layout, stride=stride, out=out)
            else:
                y = fastpw.Conv1x1(w_arg, b_ro, layout=layout, stride=stride)(x_ro, out=out)
            assert out is None or y is out
            assert_matches_reference(y, x, weight, bias, layout=layout, stride=stride)
    np.testing.assert_array_equal(x_ro, x)

    xq, qweight, qbias = quant_problem(layout, rng)
    xq_ro, qw_ro, qb_ro = read_only(xq, qweight, qbias)
    for w_arg in (qw_ro, qw_ro.reshape(K, C, 1, 1)):
        for stride in (1, 2):
            quant = dict(qparams(K), layout=layout, stride=stride)
            out = np.zeros(y_shape(layout, N, K, H, W, stride), np.uint8) if with_out else None
            if form == "function":
                y = fastpw.conv1x1(xq_ro, w_arg, qb_ro, out=out, **quant)
            else:
                y = fastpw.QConv1x1(w_arg, qb_ro, **quant)(xq_ro, out=out)
            assert out is None or y is out
            np.testing.assert_array_equal(y, qconv1x1_reference(xq, qweight, qbias, **quant))
    np.testing.assert_array_equal(xq_ro, xq)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_read_only_broadcast_scale_arrays_are_accepted(layout):
    """Read-only per-channel weight scales (a broadcast view, which numpy makes
    read-only) build a working layer."""
    rng = np.random.default_rng(21)
    xq, qweight, qbias = quant_problem(layout, rng)
    quant = qparams(K)
    scale = np.broadcast_to(np.float32(0.01), (K,))
    assert not scale.flags.writeable
    quant["w_quant"] = (scale, 0)
    y = fastpw.QConv1x1(qweight, qbias, layout=layout, **quant)(xq)
    expected = qconv1x1_reference(xq, qweight, qbias, layout=layout, **quant)
    np.testing.assert_array_equal(y, expected)
