"""``python -m fastpw --plot``: the roofline and ratio picture (fastpw._plot), the memory
bandwidth it draws (fastpw._timing.memory_bandwidth_gbs), and the error without
matplotlib. The reports here are made up: the picture is checked to be drawn from what
a report holds, not for what a machine measures."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest

from fastpw import __main__ as cli
from fastpw import _plot
from fastpw._timing import memory_bandwidth_gbs

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _row(dtype, shape, layer, rates, steady="yes"):
    return {"shape": shape, "dtype": dtype, "layer": layer, "rates": rates, "steady": steady}


def _report(*, int8=True, int8_ceiling=True):
    layer = {"network": "made-up", "c_in": 64, "c_out": 128, "height": 28, "width": 28}
    strided = layer | {"height": 27, "stride": 2, "groups": 4}
    machine = {
        "fastpw_version": "test",
        "cpu_model": "a made-up CPU",
        "threads": 2,
        "openmp": True,
        "fma_peak_gflops_1thread": 100.0,
        "int8_peak_gops_1thread": 160.0 if int8_ceiling else None,
        "memory_bandwidth_gbs": 20.0,
        "kernel_per_operation": {"float32": "avx2", "int8": "avx2", "quantize": "avx2"},
    }
    rates = {"fastpw_NCHW": 150.0, "numpy_NCHW": 120.0, "fastpw_NHWC": 140.0}
    float_rows = [
        _row("float32", "a", layer, rates | {"xnnpack_NHWC": 160.0}),
        # an unsteady row, and a peer this module has never heard of
        _row("float32", "b s2 g4", strided, rates | {"newpeer_NHWC": 90.0}, steady="NO"),
    ]
    int8_rows = [
        _row("int8", "a", layer, {"fastpw_NHWC": 300.0, "torch-fbgemm_NHWC": 250.0}),
    ]
    report = {"machine": machine, "benchmark": float_rows}
    if int8:
        report["int8_benchmark"] = int8_rows
    return report


def _check_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    import matplotlib.image

    picture = matplotlib.image.imread(path)
    assert picture.ndim == 3 and picture.shape[0] > 400 and picture.shape[1] > 400
    assert np.ptp(picture[..., :3]) > 0  # not a blank page


@pytest.mark.parametrize(
    "options",
    [{}, {"int8": False}, {"int8_ceiling": False}],
    ids=["both dtypes", "float32 only", "no int8 ceiling"],
)
def test_draw_report_writes_a_png(tmp_path, options):
    pytest.importorskip("matplotlib")
    path = tmp_path / "picture.png"
    _plot.draw_report(_report(**options), path)
    _check_png(path)


def test_draw_report_without_rows_refuses(tmp_path):
    pytest.importorskip("matplotlib")
    with pytest.raises(ValueError, match="no benchmark rows"):
        _plot.draw_report({"machine": {}, "benchmark": []}, tmp_path / "empty.png")


def test_arithmetic_intensity_by_hand():
    layer = {"c_in": 64, "c_out": 128, "height": 28, "width": 28}
    # float32: x 64*784 + w 128*64 + bias 128 + y 128*784 floats, 4 bytes each
    float_bytes = 4 * (64 * 784 + 128 * 64 + 128 + 128 * 784)
    float_row = {"dtype": "float32", "layer": layer}
    assert math.isclose(_plot.arithmetic_intensity(float_row), 2 * 64 * 128 * 784 / float_bytes)
    # int8, stride 2, groups 4: x 64*28*27 bytes, w 128*16, bias 4*128, y 128*14*14
    strided = layer | {"height": 27, "stride": 2, "groups": 4}
    int8_bytes = 64 * 28 * 27 + 128 * 16 + 4 * 128 + 128 * 14 * 14
    int8_row = {"dtype": "int8", "layer": strided}
    assert math.isclose(_plot.arithmetic_intensity(int8_row), 2 * 16 * 128 * 196 / int8_bytes)
    # batch 3: x and y three times over, the weights and bias once
    batched = layer | {"batch": 3}
    batch_bytes = 4 * (3 * 64 * 784 + 128 * 64 + 128 + 3 * 128 * 784)
    batch_row = {"dtype": "float32", "layer": batched}
    assert math.isclose(_plot.arithmetic_intensity(batch_row), 3 * 2 * 64 * 128 * 784 / batch_bytes)


@pytest.mark.parametrize("threads", [1, 2])
def test_memory_bandwidth_is_a_rate(threads):
    bandwidth = memory_bandwidth_gbs(threads, repeats=2)
    assert math.isfinite(bandwidth) and bandwidth > 0


def test_plot_without_matplotlib_exits_2_before_benchmarking(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib fails
    assert cli.main(["--plot", str(tmp_path / "p.png")]) == 2
    printed = capsys.readouterr()
    assert _plot.PLOT_INSTALL in printed.err
    assert "Benchmark" not in printed.out and not (tmp_path / "p.png").exists()
