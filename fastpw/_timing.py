"""How ``python -m fastpw`` and ``bench/`` time a call, and how their rows are labelled.

- ``measure``: a small adaptive timer (best and median of repeated runs), ``Timing``
  its result, and ``gflops`` to turn a time into throughput;
- ``measure_interleaved``: several implementations timed round by round, ``Spread``
  their samples (min, quartiles, median, max) and whether they agree;
- ``machine_load``: the load average against the cores, to say a machine is busy, and
  ``cpu_model`` the CPU's name;
- ``memory_bandwidth_gbs``: a copy through memory, the slope of the roofline plot;
- ``BLAS_IDLE_SECONDS`` and ``ORT_IDLE_SECONDS``: how long the other thread pools in the
  process keep spinning after a call, so that a timing waits them out;
- ``benchmark_group`` and ``benchmark_info``: the group and ``extra_info`` of a
  pytest-benchmark row, the same for the float32 and the int8 suite.

Not API: the command line and the benchmarks are its only users. What is timed (the
layers and their inputs) is ``fastpw.shapes``; the peers fastpw is timed against are
``fastpw._peers``.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from .shapes import LayerShape

#: After a call, OpenBLAS's worker threads keep polling for new work (a sched_yield loop)
#: for about 0.1 s before they sleep. A multi-threaded OpenMP call made in that window
#: competes with them for the cores: on a machine with few cores it can run 2-100x
#: slower. Timed comparisons therefore time numpy after fastpw, and wait this long after
#: any BLAS work (numpy rows, float64 references) before timing fastpw.
BLAS_IDLE_SECONDS: Final = 0.25

#: ONNX Runtime's intra-op worker threads (``intra_op_num_threads`` > 1) spin the same
#: way after a run: measured at about 0.08 s of busy CPU on 2 cores with ORT 1.31.
#: Timed int8 comparisons wait this long after any ONNX Runtime call before timing
#: fastpw (and before timing ONNX Runtime, so fastpw's OpenMP threads are asleep too).
ORT_IDLE_SECONDS: Final = 0.25


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


#: How long measure_interleaved keeps an implementation busy, untimed, after an idle
#: wait: on the 2-vCPU development virtual machine, samples of a few milliseconds taken
#: right after 0.25 s of idle cores ran 2-100x slow until about 20-50 ms of work had
#: passed.
WAKE_SECONDS: Final = 0.05

#: A row whose samples spread wider than this (interquartile range over the median) is
#: not steady: something else took the cores during some rounds, and a ratio taken from
#: it would say more about the machine than about the code.
SPREAD_LIMIT: Final = 0.10


@dataclass(frozen=True)
class Spread:
    """Seconds per call of one implementation, one sample per round of
    ``measure_interleaved``, each the mean of ``calls_per_sample`` back-to-back calls."""

    samples: tuple[float, ...]
    calls_per_sample: int

    @property
    def min(self) -> float:
        return min(self.samples)

    @property
    def max(self) -> float:
        return max(self.samples)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def quartiles(self) -> tuple[float, float]:
        """First and third quartile (the median of each half: exact for few samples)."""
        ordered = sorted(self.samples)
        half = len(ordered) // 2
        lower, upper = ordered[: max(half, 1)], ordered[len(ordered) - max(half, 1) :]
        return statistics.median(lower), statistics.median(upper)

    @property
    def relative_spread(self) -> float:
        """Interquartile range over the median."""
        q1, q3 = self.quartiles
        return (q3 - q1) / self.median

    @property
    def steady(self) -> bool:
        return self.relative_spread <= SPREAD_LIMIT


def measure_interleaved(
    calls: Mapping[str, Callable[[], object]],
    *,
    rounds: int = 7,
    target_seconds: float = 0.3,
    idle_after: Mapping[str, float] | None = None,
    clock: Callable[[], float] = time.perf_counter,
    sleep: Callable[[float], object] = time.sleep,
) -> dict[str, Spread]:
    """Time every implementation in ``calls`` round by round: each round takes one sample
    of each, in an order that rotates from round to round, so a busy spell of the machine
    falls on all of them alike rather than on whichever ran then.

    Each implementation is warmed up and sized first: its samples hold as many calls as
    fill ``target_seconds / (rounds * len(calls))``. ``idle_after``: seconds to wait
    after a sample of that implementation before another one's (the thread pools of
    BLAS and ONNX Runtime keep spinning after their call: see BLAS_IDLE_SECONDS), so a
    sample never competes with the previous one's threads; after such a wait the
    implementation runs untimed for at least a sample and ``WAKE_SECONDS``, as the idle
    cores wake up and clock up slowly. ``clock`` and ``sleep`` are
    for tests.
    """
    names = list(calls)
    per_sample = target_seconds / (rounds * max(len(names), 1))
    counts = {}
    for name in names:
        calls[name]()  # warm-up: page faults, lazy packing, thread-pool start
        start = clock()
        calls[name]()
        first = max(clock() - start, 1e-9)
        counts[name] = max(1, int(per_sample / first))
    samples: dict[str, list[float]] = {name: [] for name in names}
    previous = names[-1] if names else None  # the last one sized
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            wait = (idle_after or {}).get(previous, 0.0) if previous is not None else 0.0
            fn, count = calls[name], counts[name]
            if wait and previous != name:
                sleep(wait)
                # After the wait the cores were idle: on a virtual machine or a laptop
                # they wake up slowly and clock up over milliseconds. Untimed calls
                # for WAKE_SECONDS (and at least one sample's worth) bring them back,
                # so the timed sample measures the code.
                woken = clock() + WAKE_SECONDS
                for _ in range(count):
                    fn()
                while clock() < woken:
                    fn()
            start = clock()
            for _ in range(count):
                fn()
            samples[name].append((clock() - start) / count)
            previous = name
    return {name: Spread(tuple(samples[name]), counts[name]) for name in names}


#: Bytes each of the two arrays of ``memory_bandwidth_gbs`` holds: far past any CPU's
#: last-level cache, so the copy streams from and to memory.
BANDWIDTH_BYTES: Final = 128 * 2**20


def memory_bandwidth_gbs(threads: int, repeats: int = 5) -> float:
    """Memory bandwidth in GB/s: the best of ``repeats`` copies of a ``BANDWIDTH_BYTES``
    array into another, split into ``threads`` slices copied on as many Python threads
    (numpy's copy releases the GIL). Counted as read + write bytes (2 per byte copied),
    as STREAM's "copy" counts them: the write-allocate read that most CPUs add is not
    counted, so this is a lower bound of what the memory delivers."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    source = np.ones(BANDWIDTH_BYTES, np.uint8)
    target = np.zeros_like(source)
    bounds = np.linspace(0, source.size, threads + 1).astype(int)
    slices = [slice(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]

    def copy(part: slice) -> None:
        np.copyto(target[part], source[part])

    best = float("inf")
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for _ in range(repeats):
            start = time.perf_counter()
            list(pool.map(copy, slices))
            best = min(best, time.perf_counter() - start)
    return 2 * source.nbytes / best / 1e9


def cpu_model() -> str:
    """The CPU's model name from Linux's /proc/cpuinfo, with its family and model
    numbers where the name alone is vague (a cloud "AMD EPYC"), or what ``platform``
    knows elsewhere."""
    import platform

    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if not key.strip():
                    break  # the first processor's block is enough
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    name = fields.get("model name") or fields.get("Model")
    if not name:
        return platform.processor() or platform.machine()
    if "cpu family" in fields and "model" in fields:
        name += f" (family {fields['cpu family']}, model {fields['model']})"
    return name


def machine_load() -> tuple[float | None, int]:
    """(1-minute load average or None where the OS has none, CPUs this process may run
    on). A load above about half the CPUs means other work shares the cores."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return load, cpus or 1


def gflops(flop_count: float, seconds: float) -> float:
    """GFLOP/s for ``flop_count`` floating-point operations done in ``seconds``."""
    return flop_count / seconds / 1e9


def benchmark_group(shape: LayerShape, threads: int) -> str:
    """pytest-benchmark group of a row: float32 and int8 rows of a layer sit together."""
    return f"{shape.name} | {threads} thread{'s' if threads > 1 else ''}"


def benchmark_info(
    shape: LayerShape, layout: str, threads: int, implementation: str
) -> dict[str, Any]:
    """The ``extra_info`` fields every benchmark row carries."""
    return dict(
        network=shape.network,
        c_in=shape.c_in,
        c_out=shape.c_out,
        height=shape.height,
        width=shape.width,
        batch=shape.batch,
        layout=layout,
        threads=threads,
        implementation=implementation,
    )
