"""The cliff sweep (fastpw._sweep, ``python -m fastpw --sweep``): the trend a point is
judged against, the lines, and the report end to end on a made-up small line. What the
machine measures is not checked here (bench/test_bench_sweep.py times the points)."""

from __future__ import annotations

import json
import math

import pytest

from fastpw import __main__ as cli
from fastpw import _plot, _sweep
from fastpw.shapes import LayerShape


def test_a_smooth_power_law_has_no_cliff():
    """Rates that grow as a power of the size (tiny layers: twice the channels, nearly
    twice the rate) are on their own trend, at the ends too."""
    sizes = [8, 12, 16, 24, 32]
    rates = [3.0 * size**0.9 for size in sizes]
    assert all(math.isclose(r, 1.0) for r in _sweep.trend_ratios(sizes, rates))


def test_a_dip_is_measured_against_the_line_through_its_neighbours():
    sizes = [31, 32, 33]
    # the neighbours' line (log-log) passes through 80 at 32: a point at 40 is half of it
    ratios = _sweep.trend_ratios(sizes, [80.0, 40.0, 80.0])
    assert math.isclose(ratios[1], 0.5)
    assert ratios[1] < _sweep.CLIFF_RATIO
    # an end point is judged against the two nearest, extrapolated: 10, 20 -> 40 at 4
    ends = _sweep.trend_ratios([1, 2, 4], [10.0, 20.0, 28.0])
    assert math.isclose(ends[2], 0.7)


def test_short_lines():
    assert _sweep.trend_ratios([7], [50.0]) == [1.0]
    assert _sweep.trend_ratios([7, 14], [50.0, 100.0]) == [0.5, 2.0]


def test_the_lines_cover_what_a_cliff_hides_behind():
    """Spatial sizes 7..128 with 32, 64 and 128 (planes that are multiples of 4 KiB) and
    their neighbours; channels 8..2048; every line in increasing order of its size."""
    spatial = [line for line in _sweep.SWEEP_LINES if line.varies == "spatial"]
    channels = [line for line in _sweep.SWEEP_LINES if line.varies == "channels"]
    assert spatial and channels
    for line in spatial:
        sizes = [line.size(shape) for shape in line.shapes]
        assert sizes[0] == 7 and sizes[-1] == 128
        assert {31, 32, 33, 63, 64, 65, 127, 128} <= set(sizes)
    for line in channels:
        sizes = [line.size(shape) for shape in line.shapes]
        assert sizes[0] == 8 and sizes[-1] == 2048
    for line in _sweep.SWEEP_LINES:
        sizes = [line.size(shape) for shape in line.shapes]
        assert sizes == sorted(set(sizes))


def test_sweep_end_to_end(monkeypatch, tmp_path, capsys):
    """--sweep on a made-up line: every point in both layouts, checked and timed, with its
    trend ratio; the JSON holds them, the picture is drawn, and a cliff is named."""
    line = _sweep.SweepLine(
        "8->8, H = W varies",
        "spatial",
        tuple(LayerShape("sweep", 8, 8, s, s) for s in (3, 4, 5)),
    )
    monkeypatch.setattr(cli, "SWEEP_LINES", (line,))
    report = tmp_path / "sweep.json"
    argv = ["--sweep", "--quick", "--threads", "1", "--json", str(report)]
    if _plot.matplotlib_missing() is None:
        argv += ["--plot", str(tmp_path / "sweep.png")]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "8->8, H = W varies" in printed and "Cliffs" in printed
    (saved,) = json.loads(report.read_text())["sweep"]
    assert [(p["size"], p["layout"]) for p in saved["points"]] == [
        (s, layout) for s in (3, 4, 5) for layout in ("NCHW", "NHWC")
    ]
    assert all(p["gflops"] > 0 and p["vs_trend"] > 0 for p in saved["points"])
    if _plot.matplotlib_missing() is None:
        assert (tmp_path / "sweep.png").read_bytes().startswith(b"\x89PNG")


def test_draw_sweep_marks_cliffs_and_refuses_an_empty_report(tmp_path):
    pytest.importorskip("matplotlib")
    points = [
        {"size": s, "layout": layout, "gflops": rate, "vs_trend": ratio}
        for layout in ("NCHW", "NHWC")
        for s, rate, ratio in ((31, 80.0, 1.0), (32, 40.0, 0.5), (33, 80.0, 1.0))
    ]
    report = {"machine": {}, "sweep": [{"title": "t", "varies": "spatial", "points": points}]}
    _plot.draw_sweep(report, tmp_path / "s.png")
    assert (tmp_path / "s.png").read_bytes().startswith(b"\x89PNG")
    with pytest.raises(ValueError, match="no sweep"):
        _plot.draw_sweep({"machine": {}}, tmp_path / "empty.png")
