"""The cliff sweep as a benchmark: fastpw's float32 ``Conv1x1`` on every point of
``fastpw._sweep.SWEEP_LINES`` (spatial sizes 7..128 at fixed channels, channel counts
8..2048 at fixed spatial sizes), in both layouts, at each ``--fastpw-threads`` count.

Rows are grouped by line, layout and thread count, so pytest-benchmark's table of a
group reads along the line; ``extra_info`` holds the size that varies and the GFLOP/s
of the median round. ``python -m fastpw --sweep`` times the same points interleaved and
names the cliffs (points below ``CLIFF_RATIO`` times their neighbours' trend); a saved
run here catches a cliff that a change brings back, point by point
(``--benchmark-compare``).

Each case first checks its result against the float64 reference, so the untimed smoke
run (plain ``pytest``) checks every point.
"""

from __future__ import annotations

import functools

import pytest

import fastpw
from fastpw._sweep import SWEEP_LINES, SweepLine
from fastpw._timing import benchmark_info
from fastpw.shapes import LAYOUTS, LayerShape, empty_output, make_inputs
from fastpw.testing import RELATIVE_TOLERANCE, conv1x1_reference, max_relative_error

#: Every point of every line, with its line.
POINTS = tuple((line, shape) for line in SWEEP_LINES for shape in line.shapes)


@functools.lru_cache(maxsize=4)
def _case_data(shape: LayerShape, layout: str):
    x, weight, bias = make_inputs(shape, layout)
    return x, weight, bias, conv1x1_reference(x, weight, bias, layout=layout)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(
    ("line", "shape"), POINTS, ids=[f"{line.varies}-{shape.slug}" for line, shape in POINTS]
)
def test_sweep_f32(benchmark, line: SweepLine, shape: LayerShape, layout: str, threads: int):
    x, weight, bias, reference = _case_data(shape, layout)
    layer = fastpw.Conv1x1(weight, bias, layout=layout)  # packs the weights once, untimed
    out = empty_output(x, shape.c_out, layout)
    layer(x, out=out, num_threads=threads)
    error = max_relative_error(out, reference)
    assert error <= RELATIVE_TOLERANCE, f"{shape.name} {layout}: max relative error {error:.2e}"

    benchmark.group = f"sweep {line.title} | {layout} | {threads} thread{'s' * (threads > 1)}"
    benchmark.extra_info.update(benchmark_info(shape, layout, threads, "fastpw"))
    benchmark.extra_info.update(isa=fastpw.isa("float32"), size=line.size(shape))
    benchmark(layer, x, out=out, num_threads=threads)

    if benchmark.stats is not None:  # None when benchmarking is disabled (smoke run)
        benchmark.extra_info["gflops"] = round(shape.flops / benchmark.stats.stats.median / 1e9, 3)
