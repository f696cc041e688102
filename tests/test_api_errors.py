"""Bad input raises TypeError/ValueError naming the argument; ISA selection and discovery.

Message checks stay loose on purpose (a case-insensitive regex on the argument's name,
plus the given and expected values where they are distinctive numbers or names) so the
wording can evolve without breaking the tests.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys

import numpy as np
import pytest
from reference import assert_matches_reference

import fastpw

# A valid problem: x (2, 13, 5, 6) NCHW, weight (12, 13), bias (12,).
N, C, H, W, K = 2, 13, 5, 6, 12
KNOWN_F32_FAMILIES = ("avx512", "avx2", "scalar")  # best first


def valid(layout="NCHW"):
    rng = np.random.default_rng(0)
    shape = (N, C, H, W) if layout == "NCHW" else (N, H, W, C)
    return dict(
        x=rng.standard_normal(shape).astype(np.float32),
        weight=rng.standard_normal((K, C)).astype(np.float32),
        bias=rng.standard_normal(K).astype(np.float32),
        layout=layout,
    )


def call(args):
    args = dict(args)
    return fastpw.conv1x1(args.pop("x"), args.pop("weight"), args.pop("bias"), **args)


def with_(base_layout="NCHW", **changes):
    """The valid problem with some arguments replaced; a value may be a function of the
    valid arguments. Returns a builder, so every test gets fresh arrays."""

    def build():
        args = valid(base_layout)
        for name, value in changes.items():
            args[name] = value(args) if callable(value) else value
        return args

    return build


def f32(*shape):
    return np.zeros(shape, dtype=np.float32)


EITHER = (TypeError, ValueError)

# (id, problem, exception, regex on the message, substrings the message must contain)
BAD_CALLS = [
    ("x-3d", with_(x=f32(C, H, W)), ValueError, r"\bx\b", ["3"]),
    ("x-5d", with_(x=f32(1, N, C, H, W)), ValueError, r"\bx\b", ["5"]),
    ("weight-1d", with_(weight=f32(K)), ValueError, r"weight", []),
    ("weight-3d", with_(weight=f32(K, C, 1)), ValueError, r"weight", []),
    ("weight-3x3-kernel", with_(weight=f32(K, C, 3, 3)), ValueError, r"weight", ["3"]),
    ("weight-1x3-kernel", with_(weight=f32(K, C, 1, 3)), ValueError, r"weight", []),
    ("channel-mismatch", with_(weight=f32(K, 17)), ValueError, r"weight|channel", ["13", "17"]),
    (
        "channel-mismatch-nhwc",
        with_(base_layout="NHWC", weight=f32(K, 17)),
        ValueError,
        r"weight|channel",
        ["13", "17"],
    ),
    (
        "layout-mismatch",  # an NHWC array passed as NCHW: its "C" is 6, not 13
        with_(x=f32(N, H, W, C)),
        ValueError,
        r"weight|channel",
        [],
    ),
    ("bias-length", with_(bias=f32(K + 7)), ValueError, r"bias", ["12", "19"]),
    ("bias-2d", with_(bias=f32(K, 1)), ValueError, r"bias", []),
    ("bias-scalar", with_(bias=np.float32(1.0)), EITHER, r"bias", []),
    ("x-float64", with_(x=lambda a: a["x"].astype(np.float64)), TypeError, r"float32", []),
    ("x-float16", with_(x=lambda a: a["x"].astype(np.float16)), TypeError, r"float32", []),
    ("x-int32", with_(x=lambda a: a["x"].astype(np.int32)), TypeError, r"\bx\b|float32|int", []),
    ("x-int8", with_(x=lambda a: a["x"].astype(np.int8)), TypeError, r"\bx\b|float32|int", []),
    ("x-uint8", with_(x=lambda a: a["x"].astype(np.uint8)), TypeError, r"\bx\b|float32|int", []),
    ("layout-unknown", with_(layout="NCWH"), ValueError, r"layout", ["NCWH"]),
    ("layout-not-str", with_(layout=4), EITHER, r"layout", []),
    ("activation-unknown", with_(activation="gelu"), ValueError, r"activation", ["gelu"]),
    ("activation-1-tuple", with_(activation=(1.0,)), EITHER, r"activation", []),
    ("activation-3-tuple", with_(activation=(0.0, 1.0, 2.0)), EITHER, r"activation", []),
    ("activation-number", with_(activation=6), EITHER, r"activation", []),
    ("groups-zero", with_(groups=0), ValueError, r"groups", ["0"]),
    ("groups-negative", with_(groups=-2), ValueError, r"groups", []),
    ("groups-not-dividing-C", with_(groups=2, weight=f32(K, 6)), ValueError, r"groups", ["13"]),
    (
        "groups-not-dividing-K",
        with_(x=f32(N, 12, H, W), groups=4, weight=f32(10, 3), bias=f32(10)),
        ValueError,
        r"groups",
        ["10"],
    ),
    (
        "groups-weight-mismatch",  # weight for groups=1 while groups=3
        with_(x=f32(N, 12, H, W), groups=3, weight=f32(K, 12)),
        ValueError,
        r"weight|channel|groups",
        [],
    ),
    ("stride-zero", with_(stride=0), ValueError, r"stride", ["0"]),
    ("stride-negative", with_(stride=-1), ValueError, r"stride", []),
    ("stride-pair-zero", with_(stride=(1, 0)), ValueError, r"stride", []),
    ("stride-triple", with_(stride=(1, 2, 3)), EITHER, r"stride", []),
    ("stride-float", with_(stride=1.5), EITHER, r"stride", []),
    ("num_threads-zero", with_(num_threads=0), ValueError, r"num_threads", ["0"]),
    ("num_threads-negative", with_(num_threads=-3), ValueError, r"num_threads", ["-3"]),
    ("num_threads-float", with_(num_threads=1.5), EITHER, r"num_threads", []),
    ("out-shape", with_(out=f32(N, K, H, W + 1)), ValueError, r"\bout\b", []),
    ("out-ndim", with_(out=f32(N, K, H * W)), ValueError, r"\bout\b", []),
    ("out-nhwc-shape-for-nchw", with_(out=f32(N, H, W, K)), ValueError, r"\bout\b", []),
    ("out-ignores-stride", with_(stride=2, out=f32(N, K, H, W)), ValueError, r"\bout\b", []),
    ("out-float64", with_(out=np.zeros((N, K, H, W))), EITHER, r"\bout\b", []),
    ("out-int32", with_(out=np.zeros((N, K, H, W), np.int32)), EITHER, r"\bout\b", []),
]


@pytest.mark.parametrize(
    "build,exc,pattern,contains", [c[1:] for c in BAD_CALLS], ids=[c[0] for c in BAD_CALLS]
)
def test_bad_call_raises(build, exc, pattern, contains):
    args = build()
    with pytest.raises(exc, match="(?i)" + pattern) as info:
        call(args)
    message = str(info.value)
    for text in contains:
        assert text in message, f"{text!r} (given or expected value) missing from: {message}"


@pytest.mark.parametrize("dtype", [np.float64, np.float16])
def test_float_dtype_message_says_to_cast(dtype):
    args = valid()
    args["x"] = args["x"].astype(dtype)
    with pytest.raises(TypeError, match="(?i)float32") as info:
        call(args)
    message = str(info.value).lower()
    assert np.dtype(dtype).name in message, message
    assert "cast" in message or "astype" in message, message


def test_out_overlapping_x_raises():
    x = np.random.default_rng(1).standard_normal((1, 12, 4, 4)).astype(np.float32)
    weight = np.eye(12, dtype=np.float32)
    with pytest.raises(ValueError, match=r"(?i)\bout\b"):
        fastpw.conv1x1(x, weight, out=x)
    buf = np.zeros((1, 24, 4, 4), dtype=np.float32)
    with pytest.raises(ValueError, match=r"(?i)\bout\b"):
        fastpw.conv1x1(buf[:, :12], weight, out=buf[:, 6:18])
    nhwc = np.zeros((1, 4, 4, 24), dtype=np.float32)
    with pytest.raises(ValueError, match=r"(?i)\bout\b"):
        fastpw.conv1x1(nhwc[..., 12:], weight, layout="NHWC", out=nhwc[..., 4:16])


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_layer_out_overlapping_x_raises(layout):
    weight = np.eye(12, dtype=np.float32)
    layer = fastpw.Conv1x1(weight, layout=layout)
    shape = (1, 24, 4, 4) if layout == "NCHW" else (1, 4, 4, 24)
    buf = np.zeros(shape, dtype=np.float32)
    x = buf[:, :12] if layout == "NCHW" else buf[..., :12]
    partly = buf[:, 6:18] if layout == "NCHW" else buf[..., 6:18]
    for out in (x, partly):
        with pytest.raises(ValueError, match=r"(?i)\bout\b"):
            layer(x, out=out)


def test_read_only_out_raises():
    """Writing into a read-only array would corrupt memory its owner thinks is frozen."""
    args = valid()
    out = np.zeros((N, K, H, W), dtype=np.float32)
    out.flags.writeable = False
    with pytest.raises(ValueError, match=r"(?i)\bout\b"):
        call(dict(args, out=out))
    layer = fastpw.Conv1x1(args["weight"], args["bias"])
    with pytest.raises(ValueError, match=r"(?i)\bout\b"):
        layer(args["x"], out=out)
    assert (out == 0).all()


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_out_beside_x_in_one_buffer_is_fine(isa, layout):
    """Disjoint channel slices of one buffer do not overlap: x from one, out into the other."""
    rng = np.random.default_rng(2)
    weight = rng.standard_normal((12, 12)).astype(np.float32)
    shape = (1, 24, 4, 5) if layout == "NCHW" else (1, 4, 5, 24)
    buf = rng.standard_normal(shape).astype(np.float32)
    x = buf[:, :12] if layout == "NCHW" else buf[..., :12]
    out = buf[:, 12:] if layout == "NCHW" else buf[..., 12:]
    x_before = x.copy()
    assert fastpw.conv1x1(x, weight, layout=layout, out=out) is out
    np.testing.assert_array_equal(x, x_before)
    assert_matches_reference(out, x_before, weight, layout=layout)


def test_failed_call_leaves_out_alone():
    args = valid()
    out = np.full((N, K, H, W), 3.0, dtype=np.float32)
    with pytest.raises(ValueError):
        fastpw.conv1x1(args["x"], args["weight"], f32(K + 1), out=out)
    assert (out == 3.0).all()


# ------------------------------------------------------------------------ Conv1x1 layer

BAD_LAYERS = [
    ("weight-1d", dict(weight=f32(K)), ValueError, r"weight"),
    ("weight-3d", dict(weight=f32(K, C, 1)), ValueError, r"weight"),
    ("weight-3x3-kernel", dict(weight=f32(K, C, 3, 3)), ValueError, r"weight"),
    ("bias-length", dict(bias=f32(K - 1)), ValueError, r"bias"),
    ("layout", dict(layout="NWHC"), ValueError, r"layout"),
    ("activation", dict(activation="tanh"), ValueError, r"activation"),
    ("groups-zero", dict(groups=0), ValueError, r"groups"),
    ("groups-not-dividing-K", dict(groups=5), ValueError, r"groups"),
    ("stride-zero", dict(stride=0), ValueError, r"stride"),
    ("stride-pair-negative", dict(stride=(-1, 1)), ValueError, r"stride"),
]


@pytest.mark.parametrize(
    "changes,exc,pattern", [c[1:] for c in BAD_LAYERS], ids=[c[0] for c in BAD_LAYERS]
)
def test_bad_layer_raises(changes, exc, pattern):
    args = valid()
    del args["x"]
    args.update(changes)
    with pytest.raises(exc, match="(?i)" + pattern):
        fastpw.Conv1x1(args.pop("weight"), args.pop("bias"), **args)


BAD_LAYER_CALLS = [
    ("x-channels", dict(x=f32(N, C + 1, H, W)), ValueError, r"\bx\b|weight|channel"),
    ("x-3d", dict(x=f32(C, H, W)), ValueError, r"\bx\b"),
    ("x-float64", dict(x=np.zeros((N, C, H, W))), TypeError, r"float32"),
    ("num_threads-zero", dict(num_threads=0), ValueError, r"num_threads"),
    ("num_threads-negative", dict(num_threads=-1), ValueError, r"num_threads"),
    ("num_threads-float", dict(num_threads=2.0), EITHER, r"num_threads"),
    ("out-shape", dict(out=f32(N, K + 1, H, W)), ValueError, r"\bout\b"),
    ("out-float64", dict(out=np.zeros((N, K, H, W))), EITHER, r"\bout\b"),
]


@pytest.mark.parametrize(
    "changes,exc,pattern", [c[1:] for c in BAD_LAYER_CALLS], ids=[c[0] for c in BAD_LAYER_CALLS]
)
def test_bad_layer_call_raises(changes, exc, pattern):
    args = valid()
    layer = fastpw.Conv1x1(args["weight"], args["bias"])
    call_args = dict(x=args["x"])
    call_args.update(changes)
    with pytest.raises(exc, match="(?i)" + pattern):
        layer(call_args.pop("x"), **call_args)


# --------------------------------------------------------------------- ISA and version


def test_available_isas():
    names = fastpw.available_isas()
    assert isinstance(names, list) and names, names
    assert all(isinstance(name, str) for name in names), names
    assert len(set(names)) == len(names), names
    assert names[-1] == "scalar", names
    known = [name for name in KNOWN_F32_FAMILIES if name in names]
    assert [name for name in names if name in KNOWN_F32_FAMILIES] == known, "not best first"
    assert fastpw.isa() in names


def test_cpu_features():
    features = fastpw.cpu_features()
    assert isinstance(features, dict) and features
    assert all(isinstance(key, str) for key in features), features
    assert all(isinstance(value, bool) for value in features.values()), features
    names = fastpw.available_isas()
    if "avx2" in names:
        assert features.get("avx2") and features.get("fma"), features
    if "avx512" in names:
        assert features.get("avx512f"), features
    if features.get("avx2") and features.get("fma"):
        assert "avx2" in names, (features, names)


@pytest.mark.skipif(
    not (sys.platform.startswith("linux") and platform.machine() in ("x86_64", "AMD64")),
    reason="/proc/cpuinfo flags are an x86-64 Linux cross-check",
)
def test_cpu_features_agree_with_proc_cpuinfo():
    with open("/proc/cpuinfo") as f:
        flags = next(line for line in f if line.startswith("flags")).split(":", 1)[1].split()
    features = fastpw.cpu_features()
    for key in ("avx2", "fma", "avx512f"):
        if key in features:
            assert features[key] == (key in flags), (key, features[key])
    assert {"avx2", "fma", "avx512f"} <= set(features), sorted(features)


def test_set_isa_round_trip():
    start = fastpw.isa()
    try:
        current = start
        for name in fastpw.available_isas() + [start]:
            assert fastpw._set_isa(name) == current
            assert fastpw.isa() == name
            current = name
    finally:
        fastpw._set_isa(start)
    assert fastpw.isa() == start


@pytest.mark.parametrize("name", ["sse9", "", "neon-ish", "AVX1024"])
def test_set_isa_unknown_name_raises(name):
    before = fastpw.isa()
    with pytest.raises(ValueError) as info:
        fastpw._set_isa(name)
    message = str(info.value)
    for available in fastpw.available_isas():
        assert available in message, f"{available!r} not listed in: {message}"
    assert fastpw.isa() == before


# Another architecture's families are never runnable here; this architecture's only on
# CPUs that have them. The list is never empty, so the test always runs.
OTHER_ARCHITECTURE_FAMILIES = (
    ("neon", "neondot") if platform.machine() in ("x86_64", "AMD64") else ("avx2", "avx512")
)
FAMILIES_THIS_CPU_LACKS = list(OTHER_ARCHITECTURE_FAMILIES) + [
    name for name in KNOWN_F32_FAMILIES if name not in fastpw.available_isas()
]


@pytest.mark.parametrize("name", FAMILIES_THIS_CPU_LACKS)
def test_set_isa_family_this_cpu_lacks_raises(name):
    before = fastpw.isa()
    with pytest.raises(ValueError) as info:
        fastpw._set_isa(name)
    for available in fastpw.available_isas():
        assert available in str(info.value)
    assert fastpw.isa() == before


def run_python(code, tmp_path, fastpw_isa=None):
    env = {k: v for k, v in os.environ.items() if k != "FASTPW_ISA"}
    if fastpw_isa is not None:
        env["FASTPW_ISA"] = fastpw_isa
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,  # not the repository root: import the installed package
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_default_isa_is_the_best_available(tmp_path):
    result = run_python("import fastpw; print(fastpw.isa(), fastpw.available_isas()[0])", tmp_path)
    assert result.returncode == 0, result.stderr
    chosen, best = result.stdout.split()
    assert chosen == best


@pytest.mark.parametrize("name", fastpw.available_isas())
def test_fastpw_isa_environment_variable(tmp_path, name):
    result = run_python("import fastpw; print(fastpw.isa())", tmp_path, fastpw_isa=name)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == name


def test_fastpw_isa_environment_variable_applies_to_layers(tmp_path):
    name = fastpw.available_isas()[-1]
    code = "import numpy as np, fastpw; print(fastpw.Conv1x1(np.ones((4, 3), np.float32)).isa)"
    result = run_python(code, tmp_path, fastpw_isa=name)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == name


def test_fastpw_isa_bogus_name_fails_import(tmp_path):
    result = run_python("import fastpw; print(fastpw.isa())", tmp_path, fastpw_isa="bogus512")
    assert result.returncode != 0, result.stdout
    assert "bogus512" in result.stderr, result.stderr
    for available in fastpw.available_isas():
        assert available in result.stderr, f"{available!r} not listed in: {result.stderr}"


def test_version():
    assert isinstance(fastpw.__version__, str) and fastpw.__version__
    assert fastpw.__version__ == importlib.metadata.version("fastpw")
