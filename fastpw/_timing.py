"""How ``python -m fastpw`` and ``bench/`` time a call, and how their rows are labelled.

- ``measure``: a small adaptive timer (best and median of repeated runs), ``Timing``
  its result, and ``gflops`` to turn a time into throughput;
- ``BLAS_IDLE_SECONDS`` and ``ORT_IDLE_SECONDS``: how long the other thread pools in the
  process keep spinning after a call, so that a timing waits them out;
- ``benchmark_group`` and ``benchmark_info``: the group and ``extra_info`` of a
  pytest-benchmark row, the same for the float32 and the int8 suite.

Not API: the command line and the benchmarks are its only users. What is timed (the
layers and their inputs) is ``fastpw.shapes``; the peers fastpw is timed against are
``fastpw._peers``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
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
        layout=layout,
        threads=threads,
        implementation=implementation,
    )
