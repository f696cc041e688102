"""What tests/test_contexts.py runs in child processes: fastpw in the calling contexts of
real programs (fork, an outer OpenMP team, thread caps and limits, Ctrl-C).

Each scenario is a function that returns normally when all is well and raises
otherwise; ``python -c "import scenarios; scenarios.NAME(ARGS)"`` runs one. A scenario
that hangs or crashes the interpreter fails the test through its exit status or the
test's timeout, never the test session.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import pickle
import resource
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

import fastpw
from fastpw import quant
from fastpw.testing import assert_matches_reference, qconv1x1_reference, quantize_reference

# Enough work that a call with num_threads=2 really runs an OpenMP team of two.
TEAM_SHAPE = dict(channels=64, out_channels=48, size=56)

X_QUANT, W_SCALE, Y_QUANT = (0.02, 128), 0.01, (0.5, 100)
QUANTIZE_QPARAMS = (0.05, 128)


def layer_and_input(
    kind, layout="NCHW", channels=64, out_channels=48, size=56, seed=0, out_dtype=None
):
    """A seeded layer of `kind` ("float32" or "int8") and an input for it."""
    rng = np.random.default_rng(seed)
    layer = seeded_layer(kind, layout, channels, out_channels, rng, out_dtype)
    return layer, seeded_input(kind, layout, channels, size, rng)


def seeded_layer(kind, layout, channels, out_channels, rng, out_dtype=None):
    if kind == "float32":
        weight = rng.standard_normal((out_channels, channels)).astype(np.float32)
        bias = rng.standard_normal(out_channels).astype(np.float32)
        return fastpw.Conv1x1(weight, bias, layout=layout, activation="relu")
    weight = rng.integers(-128, 128, (out_channels, channels), dtype=np.int8)
    bias = rng.integers(-5000, 5000, out_channels, dtype=np.int32)
    return fastpw.QConv1x1(
        weight,
        bias,
        x_quant=X_QUANT,
        w_quant=(W_SCALE, 0),
        y_quant=Y_QUANT,
        layout=layout,
        out_dtype=out_dtype,
    )


def seeded_input(kind, layout, channels, size, rng):
    shape = (1, channels, size, size) if layout == "NCHW" else (1, size, size, channels)
    if kind == "float32":
        return rng.standard_normal(shape).astype(np.float32)
    return rng.integers(0, 256, shape, dtype=np.uint8)


def long_call(kind, layout, channels, out_channels, seconds, out_dtype=None, largest=96):
    """A layer and an input on which one single-thread call takes about `seconds` on this
    machine (spatial size 8 to `largest`). The size comes from a timed call on 4x4
    pixels, so that an emulated CPU (.ci/arm64, 10-50x slower) gets a smaller input that
    is as long to compute, instead of one that takes longer to make than to interrupt."""
    rng = np.random.default_rng(0)
    layer = seeded_layer(kind, layout, channels, out_channels, rng, out_dtype)
    probe_size = 4
    probe = seeded_input(kind, layout, channels, probe_size, rng)
    layer(probe, num_threads=1)  # warm: scratch allocated, pages touched
    started = time.perf_counter()
    layer(probe, num_threads=1)
    seconds_per_pixel = (time.perf_counter() - started) / probe_size**2
    size = int(min(largest, max(8, np.ceil(np.sqrt(seconds / seconds_per_pixel)))))
    return layer, seeded_input(kind, layout, channels, size, rng)


def check_against_reference(kind, layer, x, y, layout="NCHW"):
    """y is what the independent float64/int64 reference says."""
    if kind == "float32":
        assert_matches_reference(y, x, layer.weight, layer.bias, layout, 1, 1, "relu")
    else:
        expected = qconv1x1_reference(
            x,
            layer.weight,
            layer.bias,
            x_quant=X_QUANT,
            w_quant=(W_SCALE, 0),
            y_quant=Y_QUANT,
            layout=layout,
        )
        assert np.array_equal(y, expected), "int8 result differs from the reference"


def quantize_input():
    return np.random.default_rng(1).standard_normal((8, 64, 56, 56)).astype(np.float32)


def compute(kind, num_threads=None):
    """The work a process does: a seeded layer call, or fastpw.quant.quantize.
    Returns (result, threads a call of this process may use)."""
    if kind == "quantize":
        y = quant.quantize(quantize_input(), QUANTIZE_QPARAMS, np.uint8, num_threads=num_threads)
    else:
        layer, x = layer_and_input(kind, **TEAM_SHAPE)
        y = layer(x, num_threads=num_threads)
    return y, fastpw.max_threads()


def check_computed(kind, y):
    if kind == "quantize":
        expected = quantize_reference(quantize_input(), *QUANTIZE_QPARAMS, np.uint8)
        assert np.array_equal(y, expected), "quantize differs from the reference"
    else:
        layer, x = layer_and_input(kind, **TEAM_SHAPE)
        check_against_reference(kind, layer, x, y)


# ---------------------------------------------------------------------------------------
# fork


def _in_forked_child(kind, depth):
    """Fork `depth` levels deep; the last child computes. Returns what it computed."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            os.close(read_end)
            result = _in_forked_child(kind, depth - 1) if depth > 1 else compute(kind)
            with os.fdopen(write_end, "wb") as pipe:
                pickle.dump(result, pipe)
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the forked child failed"
    return pickle.loads(data)


def fork_after_threads(variant, kind):
    """The parent runs a call on a team of threads, then forks; a child must compute the
    same result (on one thread) and return."""
    expected, parent_threads = compute(kind, num_threads=2)
    check_computed(kind, expected)
    if variant == "os.fork":
        got, child_threads = _in_forked_child(kind, 1)
    elif variant == "fork-of-fork":
        got, child_threads = _in_forked_child(kind, 2)
    elif variant == "pool":
        with multiprocessing.get_context("fork").Pool(2) as pool:
            (got, child_threads), _ = pool.map(compute, [kind, kind])
    elif variant == "executor":
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(2, mp_context=context) as executor:
            got, child_threads = executor.submit(compute, kind).result()
    else:
        raise ValueError(variant)
    assert np.array_equal(got, expected), "the child computed another result"
    assert child_threads == 1, f"a child of a threaded parent may use {child_threads} threads"
    # The parent itself keeps its threads.
    assert fastpw.max_threads() == parent_threads
    again, _ = compute(kind, num_threads=2)
    assert np.array_equal(again, expected)


def fork_before_threads():
    """A child forked before the parent ran any team keeps its threads."""
    cores = fastpw.max_threads()
    got, child_threads = _in_forked_child("int8", 1)
    assert child_threads == cores, (child_threads, cores)
    check_computed("int8", got)


# ---------------------------------------------------------------------------------------
# an outer OpenMP team


def _libgomp():
    """The libgomp this process has loaded for fastpw (the one its teams use)."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            path = line.split()[-1]
            if "libgomp" in os.path.basename(path):
                return ctypes.CDLL(path)
    raise AssertionError("fastpw is not linked against libgomp")


NESTED_CASES = {
    # (kind, layout, channels): the paths whose scratch buffers are per thread.
    "int8-NCHW": ("int8", "NCHW", 64),
    "int8-NHWC": ("int8", "NHWC", 64),
    "float32-NHWC-restrided": ("float32", "NHWC", 1024),  # rows 4 KiB apart
    "float32-NCHW": ("float32", "NCHW", 64),
}


def inside_openmp_team(isa, outer_threads=4):
    """GOMP_parallel runs a callback on `outer_threads` threads, and each calls fastpw: every
    result must equal a plain call's, bit for bit."""
    fastpw._set_isa(isa)
    gomp = _libgomp()
    callback_type = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
    gomp.GOMP_parallel.argtypes = [callback_type, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
    for name, (kind, layout, channels) in NESTED_CASES.items():
        layer, x = layer_and_input(kind, layout, channels=channels, out_channels=40, size=16)
        expected = layer(x)
        check_against_reference(kind, layer, x, expected, layout)
        results, errors = [], []

        def body(_, layer=layer, x=x, results=results, errors=errors):
            try:
                # Serial calls (the per-thread scratch indexed by the team's thread number
                # went past the one buffer a serial call has), then a default one.
                results.append(layer(x, num_threads=1))
                results.append(layer(x))
            except BaseException as error:  # a callback cannot raise through C
                errors.append(error)

        callback = callback_type(body)
        gomp.GOMP_parallel(callback, None, outer_threads, 0)
        if errors:
            raise errors[0]
        assert len(results) == 2 * outer_threads, (name, len(results))
        for y in results:
            assert np.array_equal(y, expected), f"{name} on {isa}: differs inside a team"
        print(f"{name} on {isa}: {len(results)} calls in a team of {outer_threads}, all equal")


# ---------------------------------------------------------------------------------------
# thread counts and limits


def _threads_alive():
    return len(os.listdir("/proc/self/task"))


def _threads_of_user(uid):
    count = 0
    for task in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{task}/status") as status:
            for line in status:
                if line.startswith("Uid:"):
                    count += int(line.split()[1]) == uid  # the real uid
    return count


def huge_thread_request(num_threads):
    """A request for far more threads than cores gets no more threads than cores."""
    cores = len(os.sched_getaffinity(0))
    assert fastpw.max_threads() <= cores
    for kind in ("float32", "int8"):
        layer, x = layer_and_input(kind, **TEAM_SHAPE)
        before = _threads_alive()
        y = layer(x, num_threads=num_threads)
        created = _threads_alive() - before
        assert created <= cores - 1, f"{kind}: {created} threads for {cores} cores"
        check_against_reference(kind, layer, x, y)
        print(f"{kind}: num_threads={num_threads} made {created} new threads on {cores} cores")


def pinned_to_one_core():
    """Affinity (taskset) is a limit: pinned to one CPU, a call uses one thread."""
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    assert fastpw.max_threads() == 1
    layer, x = layer_and_input("int8", **TEAM_SHAPE)
    before = _threads_alive()
    y = layer(x, num_threads=4)
    assert _threads_alive() == before
    check_against_reference("int8", layer, x, y)


def thread_creation_refused(uid=54321):
    """Under a process limit that allows no new thread, a call asking for threads runs on
    the one it has; libgomp would end the process ("Thread creation failed")."""
    layers = [layer_and_input(kind, **TEAM_SHAPE) for kind in ("float32", "int8")]
    big = quantize_input()
    # RLIMIT_NPROC does not bind root: become a user with no other process first. The
    # limit counts that user's threads: all of this process's natively, the emulated
    # program's only under qemu-user (whose own threads stay root).
    os.setgid(uid)
    os.setuid(uid)
    alive = _threads_of_user(uid)
    resource.setrlimit(resource.RLIMIT_NPROC, (alive, alive))
    try:
        threading.Thread(target=lambda: None).start()
    except RuntimeError:
        pass
    else:
        raise AssertionError("set-up: this process can still create threads")
    for (layer, x), kind in zip(layers, ("float32", "int8"), strict=False):
        check_against_reference(kind, layer, x, layer(x, num_threads=2))
    y = quant.quantize(big, QUANTIZE_QPARAMS, np.uint8, num_threads=2)
    assert np.array_equal(y, quantize_reference(big, *QUANTIZE_QPARAMS, np.uint8))
    print("calls asking for 2 threads ran on 1 under RLIMIT_NPROC")


# ---------------------------------------------------------------------------------------
# Ctrl-C

# Calls long enough (1 s on one thread by the probe's measure, which counts a small
# call's overheads, so in practice 0.3 s or more) that a signal sent 20 ms after they
# start lands inside them.
LONG_CALLS = {
    "float32": dict(channels=2048, out_channels=2048, seconds=1.0),
    "int8": dict(channels=4096, out_channels=4096, seconds=1.0),
}


def _kill_after(seconds):
    timer = threading.Timer(seconds, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    return timer


def ctrl_c_stops_a_long_call(kind, layout, num_threads, delay=0.02):
    """SIGINT during a long call raises KeyboardInterrupt before the call is done."""
    out_dtype = np.float32 if kind == "int8" else None  # NaN marks what was not written
    layer, x = long_call(kind, layout, out_dtype=out_dtype, **LONG_CALLS[kind])
    k, size = LONG_CALLS[kind]["out_channels"], x.shape[2]  # square maps: H == W
    shape = (1, k, size, size) if layout == "NCHW" else (1, size, size, k)
    out = np.full(shape, np.nan, dtype=np.float32)
    started = time.monotonic()
    timer = _kill_after(delay)
    try:
        layer(x, out=out, num_threads=num_threads)
    except KeyboardInterrupt:
        stopped = time.monotonic()
    else:
        raise AssertionError("the call ran to its end: Ctrl-C was not seen during it")
    finally:
        timer.join()
    unwritten = np.count_nonzero(np.isnan(out))
    assert unwritten > 0, "every output was written: the interrupt came after the call"
    print(
        f"{kind} {layout} {num_threads}T {size}x{size}: KeyboardInterrupt "
        f"{stopped - started - delay:.3f} s after SIGINT; "
        f"{unwritten / out.size:.0%} of the outputs left unwritten"
    )


def _heap_bytes():
    """Bytes glibc's malloc holds for the program (arenas and mmapped blocks)."""

    class Mallinfo2(ctypes.Structure):
        _fields_ = [
            (name, ctypes.c_size_t)
            for name in (
                "arena",
                "ordblks",
                "smblks",
                "hblks",
                "hblkhd",
                "usmblks",
                "fsmblks",
                "uordblks",
                "fordblks",
                "keepcost",
            )
        ]

    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = Mallinfo2
    info = libc.mallinfo2()
    return info.uordblks + info.hblkhd


def ctrl_c_storm(kind, rounds=16, seed=0):
    """Many interrupts at random moments of long calls writing into a channel slice of
    `out`: nothing outside the slice is touched, no scratch leaks, and the layer computes
    the same bits afterwards."""
    rng = np.random.default_rng(seed)
    channels = 1024 if kind == "float32" else 4096
    # calls of 0.1 s or more on 2 cores
    layer, x = long_call(kind, "NCHW", channels=channels, out_channels=512, seconds=0.4)
    size = x.shape[2]
    small = np.ascontiguousarray(x[:, :, :8, :8])  # checked in full, before and after
    before = layer(small, num_threads=2)
    check_against_reference(kind, layer, small, before)
    sentinel = 77
    buffer = np.full((1, 532, size, size), sentinel, dtype=before.dtype)
    out = buffer[:, 10:522]
    interrupted, heap = 0, []
    for _ in range(rounds):
        out[...] = sentinel
        timer = threading.Timer(rng.uniform(0.0, 0.02), os.kill, (os.getpid(), signal.SIGINT))
        try:
            try:
                timer.start()
                layer(x, out=out, num_threads=2)
            finally:
                timer.join()  # the signal is sent: its exception surfaces inside this try
                time.sleep(0.001)
        except KeyboardInterrupt:
            # Stopped inside the call, not after it: much of the slice is left as it was
            # (a finished uint8 output holds the sentinel's value in well under 5 %).
            interrupted += np.count_nonzero(out == sentinel) > 0.05 * out.size
        assert (buffer[:, :10] == sentinel).all() and (buffer[:, 522:] == sentinel).all()
        heap.append(_heap_bytes())
    assert interrupted >= rounds // 2, f"only {interrupted} of {rounds} calls stopped early"
    growth = heap[-1] - heap[4]
    assert growth < 1 << 20, f"the heap grew by {growth} bytes over {rounds - 5} interrupted calls"
    assert np.array_equal(layer(small, num_threads=2), before), "a call after the storm differs"
    print(
        f"{kind} {size}x{size}: {interrupted} of {rounds} calls stopped early; "
        f"heap growth {growth} bytes"
    )
