"""``python -m fastpw``: the user's own layers (``--shape``), options in any case, and the
report's rows for every implementation (fastpw.__main__).

The end-to-end runs are in-process, on one thread and one small layer with ``--quick``:
they check what the report says (its JSON), not how fast anything is.
"""

from __future__ import annotations

import json

import pytest

from fastpw import __main__ as cli
from fastpw._peer_litert import litert_version
from fastpw._peers import onnxruntime_version
from fastpw.shapes import LayerShape, parse_layer_shape


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("64,128,28,28", LayerShape("custom", 64, 128, 28, 28)),
        ("64, 128, 28, 27, 2", LayerShape("custom", 64, 128, 28, 27, stride=2)),
        ("64,128,28,28,1,4", LayerShape("custom", 64, 128, 28, 28, stride=1, groups=4)),
    ],
)
def test_parse_layer_shape(text, expected):
    assert parse_layer_shape(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("64,128,28", "4 to 6 integers"),
        ("64,128,28,28,1,1,1", "4 to 6 integers"),
        ("64,128,28,2.5", "integers"),
        ("64,x,28,28", "integers"),
        ("64,128,0,28", ">= 1"),
        ("64,128,28,28,0", ">= 1"),
        ("64,128,28,28,1,3", "divide by groups=3"),
        ("6,8,28,28,1,4", "divide by groups=4"),
    ],
)
def test_parse_layer_shape_refuses(text, message):
    with pytest.raises(ValueError, match=message):
        parse_layer_shape(text)


def test_layer_shape_sizes_by_hand():
    """Output ceil(H/s) x ceil(W/s); each of the K outputs sums C/groups products."""
    layer = LayerShape("custom", 64, 128, 28, 27, stride=2, groups=4)
    assert (layer.out_height, layer.out_width) == (14, 14)
    assert layer.flops == 2 * 16 * 128 * 14 * 14
    assert layer.name == "custom 64->128 28x27 s2 g4"
    assert layer.slug == "custom-64to128-28x27-s2-g4"
    plain = LayerShape("resnet50", 1024, 256, 14, 14)
    assert plain.name == "resnet50 1024->256 14x14" and plain.flops == 2 * 1024 * 256 * 196
    batched = plain.with_batch(8)
    assert batched.name == "resnet50 1024->256 14x14 b8" and batched.flops == 8 * plain.flops
    assert batched.slug == "resnet50-1024to256-14x14-b8" and batched.with_batch(1) == plain
    with pytest.raises(ValueError, match=">= 1"):
        plain.with_batch(0)


@pytest.mark.parametrize(
    "argv",
    [
        ["--shape", "1,2,3"],
        ["--shape", "6,8,5,5,1,4"],
        ["--layout", "NWHC"],
        ["--threads", "0"],
        ["--batch", "0"],
    ],
)
def test_bad_options_exit_with_status_2(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.parse_args(argv)
    assert exit_info.value.code == 2
    assert "error:" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("given", "layout"), [("nhwc", "NHWC"), ("Nchw", "NCHW"), ("Both", "BOTH")]
)
def test_layout_in_any_case(given, layout):
    assert cli.parse_args(["--layout", given]).layout == layout


def test_batch_runs_every_layer_on_that_many_images(tmp_path, capsys):
    """--batch: the layers' names, flops and inputs are the batch's; every check passes."""
    report = tmp_path / "report.json"
    argv = ["--quick", "--threads", "1", "--no-int8", "--shape", "16,24,5,7", "--batch", "3"]
    assert cli.main([*argv, "--json", str(report)]) == 0
    assert "custom 16->24 5x7 b3" in capsys.readouterr().out
    (row,) = json.loads(report.read_text())["benchmark"]
    assert row["flops"] == 3 * 2 * 16 * 24 * 5 * 7
    assert row["rates"]["fastpw_NCHW"] > 0 and row["rates"]["numpy_NHWC"] > 0


def test_shape_is_repeatable_and_replaces_the_standard_layers():
    args = cli.parse_args(["--shape", "8,8,4,4", "--shape", "16,8,5,5,2"])
    assert [shape.name for shape in args.shape] == ["custom 8->8 4x4", "custom 16->8 5x5 s2"]


def test_a_users_layer_end_to_end(tmp_path, capsys):
    """A strided, grouped layer in NHWC (given in lower case): the report passes, and
    its JSON holds the layer, fastpw's rate, each peer's rate or why it did not run, and
    each int8 peer's difference from the formula."""
    report = tmp_path / "report.json"
    argv = ["--quick", "--threads", "1", "--layout", "nhwc", "--shape", "24,40,9,11,2,4"]
    assert cli.main([*argv, "--json", str(report)]) == 0
    printed = capsys.readouterr().out
    assert "custom 24->40 9x11 s2 g4" in printed
    data = json.loads(report.read_text())
    (float_row,) = data["benchmark"]
    assert float_row["layer"] | {"stride": 2, "groups": 4} == float_row["layer"]
    assert float_row["flops"] == 2 * 6 * 40 * 5 * 6
    assert float_row["rates"]["fastpw_NHWC"] > 0
    # numpy's baseline is one GEMM: a grouped layer is reported as not run, with why.
    assert "groups" in float_row["absent"]["numpy_NHWC"]
    (int8_row,) = data["int8_benchmark"]
    assert int8_row["exact"] == "yes" and int8_row["rates"]["fastpw_NHWC"] > 0
    peers = {"onnxruntime": onnxruntime_version(), "xnnpack": litert_version()}
    for name, version in peers.items():
        if version is None:
            continue
        key = f"{name}_NHWC"
        assert float_row["rates"][key] > 0, float_row["absent"]
        assert int8_row["rates"][key] > 0, int8_row["absent"]
        assert set(int8_row["differences"][key]) == {"by_one", "by_more", "largest", "size"}
    if litert_version() is not None:  # XNNPACK requantizes as the formula does
        assert int8_row["differences"]["xnnpack_NHWC"]["by_one"] == 0
        assert int8_row["differences"]["xnnpack_NHWC"]["by_more"] == 0
        assert int8_row["best_exact"].endswith(("XNNPACK NHWC", "qnnpack NHWC"))
