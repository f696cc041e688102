"""The cliff sweep: fastpw's float32 rate along lines of layers that differ in one size
only, and the points that fall below their neighbours' trend.

A kernel that is fast on the standard layers can still have a cliff between them: a
plane whose size is a multiple of 4 KiB puts every channel row in one L1 set, a pixel
count one past a tile wastes a tile, a block size stops fitting a cache. The sweep walks
spatial sizes 7..128 (with 31/32/33, 63/64/65 and 127/128 side by side) at fixed
channels, and channel counts 8..2048 at fixed spatial sizes, in both layouts; a point
whose rate is below ``CLIFF_RATIO`` times its neighbours' trend is a cliff.

- ``SWEEP_LINES``: the lines, each a tuple of ``LayerShape`` in the order of the size
  that varies (``bench/test_bench_sweep.py`` times every point; ``python -m fastpw
  --sweep`` prints the lines and their cliffs, and draws them with ``--plot``);
- ``trend_ratios(sizes, rates)``: each point's rate over its neighbours' trend.

Not API: the benchmarks and the command line are its only users.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from .shapes import LayerShape

#: Spatial sizes (H = W) of the spatial lines: every standard size, and the sizes next
#: to the powers of two whose planes are multiples of 4 KiB (32x32 floats is 4 KiB).
SPATIAL_SIZES = (7, 8, 12, 14, 16, 24, 28, 31, 32, 33, 48, 55, 56, 63, 64, 65, 96, 112, 127, 128)

#: Channel counts (C = K) of the channel lines.
CHANNEL_COUNTS = (8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048)

#: A point below this fraction of its neighbours' trend is a cliff.
CLIFF_RATIO = 0.8


@dataclass(frozen=True)
class SweepLine:
    """Layers that differ in one size, in increasing order of it."""

    title: str  # "64->64, spatial size varies"
    varies: str  # "spatial" or "channels"
    shapes: tuple[LayerShape, ...]

    def size(self, shape: LayerShape) -> int:
        """The size that varies along the line, for a point's label and the plot."""
        return shape.height if self.varies == "spatial" else shape.c_in


def _spatial_line(channels: int) -> SweepLine:
    shapes = tuple(LayerShape("sweep", channels, channels, s, s) for s in SPATIAL_SIZES)
    return SweepLine(f"{channels}->{channels}, H = W varies", "spatial", shapes)


def _channel_line(size: int) -> SweepLine:
    shapes = tuple(LayerShape("sweep", c, c, size, size) for c in CHANNEL_COUNTS)
    return SweepLine(f"{size}x{size}, C = K varies", "channels", shapes)


#: The lines: two channel widths across spatial sizes, the two smallest standard
#: spatial sizes across channel counts. Sized so that the whole sweep, float64
#: references included, runs once in the test suite's smoke run in about 10 s: the
#: largest points (2048->2048 14x14, 128->128 128x128) are 1.6 and 0.5 GFLOP.
SWEEP_LINES: tuple[SweepLine, ...] = (
    _spatial_line(32),
    _spatial_line(128),
    _channel_line(7),
    _channel_line(14),
)


def trend_ratios(sizes: Sequence[float], rates: Sequence[float]) -> list[float]:
    """Each rate over its neighbours' trend: 1.0 on a smooth line, below ``CLIFF_RATIO``
    at a cliff. The trend is the straight line through the two neighbours on log-log
    axes, read at the point's size: between them inside the line, beyond the nearest
    two at either end (a power law, as rates that rise with size are: doubling the
    channels of a tiny layer nearly doubles its rate, and that is no cliff). A line of
    one point has no trend (1.0); a line of two compares each with the other."""
    logs = [math.log(size) for size in sizes]
    log_rates = [math.log(rate) for rate in rates]
    count = len(rates)
    ratios = []
    for index in range(count):
        if count == 1:
            ratios.append(1.0)
            continue
        if count == 2:
            ratios.append(rates[index] / rates[1 - index])
            continue
        if index == 0:
            first, second = 1, 2
        elif index == count - 1:
            first, second = count - 3, count - 2
        else:
            first, second = index - 1, index + 1
        slope = (log_rates[second] - log_rates[first]) / (logs[second] - logs[first])
        trend = log_rates[first] + slope * (logs[index] - logs[first])
        ratios.append(math.exp(log_rates[index] - trend))
    return ratios
