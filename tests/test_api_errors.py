"""Bad input raises TypeError/ValueError naming the argument; ISA selection and discovery.

Message checks stay loose on purpose (a case-insensitive regex on the argument's name,
plus the given and expected values where they are distinctive numbers or names) so the
wording can evolve without breaking the tests.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import subprocess
import sys
from types import FunctionType

import numpy as np
import pytest

import fastpw
from fastpw.testing import assert_matches_reference

# A valid problem: x (2, 13, 5, 6) NCHW, weight (12, 13), bias (12,).
N, C, H, W, K = 2, 13, 5, 6, 12


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


def test_available_isas_are_the_supported_rows_of_the_table():
    table = fastpw.kernel_table()
    names = fastpw.available_isas()
    assert names == [row["family"] for row in table if row["supported"]]
    assert names[-1] == table[-1]["family"], "the reference family is last and always runs"
    assert fastpw.isa() in names


def test_kernel_table_rows():
    table = fastpw.kernel_table()
    features = fastpw.cpu_features()
    names = [row["family"] for row in table]
    assert len(set(names)) == len(names), names
    for row in table:
        assert set(row) == {"family", "requires", "supported", *fastpw.OPERATIONS}, row
        assert set(row["requires"]) <= set(features), row
        assert row["supported"] == all(features[name] for name in row["requires"]), row
        assert any(row[operation] for operation in fastpw.OPERATIONS), f"{row} brings nothing"
        for operation in fastpw.OPERATIONS:
            kernel = row[operation]
            if kernel is None:
                continue
            assert kernel["lanes"] >= 1, kernel
            if operation != "quantize":
                assert kernel["mr"] >= 1 and kernel["nr"] >= kernel["lanes"], kernel
    last = table[-1]
    assert last["requires"] == [] and all(last[operation] for operation in fastpw.OPERATIONS), last


@pytest.mark.parametrize("family", fastpw.available_isas())
def test_peak_probes_of_each_family(family):
    """The benchmarks' ceilings: the register-only loops of the float32 and int8 kernels
    a family runs give a finite, positive rate; the portable scalar kernels have none
    (NaN), and the benchmark prints no ceiling there."""
    from fastpw import _kernels

    rates = (_kernels.fma_peak_gflops(family, 0.01), _kernels.int8_peak_gops(family, 0.01))
    for rate in rates:
        if family == "scalar":
            assert np.isnan(rate)
        else:
            assert np.isfinite(rate) and rate > 0, (family, rates)


def test_kernel_table_is_best_first():
    """Best first: each family requires everything the families below it require, so
    the first one the CPU supports is the most capable, and a capped operation only
    ever steps down to families the CPU also supports."""
    table = fastpw.kernel_table()
    for better, worse in zip(table, table[1:], strict=False):
        assert set(worse["requires"]) <= set(better["requires"]), (better, worse)


def expected_choice(table, operation, selected, supported):
    """The family whose kernel `operation` runs: the first at or below `selected` that
    is supported and has a kernel of its own for it (dispatch.h, restated)."""
    start = [row["family"] for row in table].index(selected)
    return next(
        row["family"] for row in table[start:] if supported(row) and row[operation] is not None
    )


def test_each_operation_chooses_its_kernel_on_its_own():
    table = fastpw.kernel_table()
    start = fastpw.isa()
    try:
        for selected in fastpw.available_isas():
            fastpw._set_isa(selected)
            assert fastpw.isa() == selected
            for operation in fastpw.OPERATIONS:
                expected = expected_choice(table, operation, selected, lambda row: row["supported"])
                assert fastpw.isa(operation) == expected, (selected, operation)
    finally:
        fastpw._set_isa(start)


def test_kernel_choice_on_every_cpu_the_table_knows():
    """For each family's requirements taken as a CPU's whole feature set, and each family
    selected on it, every operation's choice: also the families this CPU lacks."""
    table = fastpw.kernel_table()
    for cpu in table:

        def has(row, cpu=cpu):
            return set(row["requires"]) <= set(cpu["requires"])

        for selected in table:
            for operation in fastpw.OPERATIONS:
                got = fastpw._kernels._kernel_choice(operation, selected["family"], cpu["requires"])
                assert got == expected_choice(table, operation, selected["family"], has), (
                    cpu["family"],
                    selected["family"],
                    operation,
                )


def test_isa_of_an_unknown_operation_raises():
    with pytest.raises(ValueError, match="operation must be one of float32, int8, quantize"):
        fastpw.isa("float16")


def test_a_family_with_only_an_int8_kernel():
    """A family may bring one operation's kernel alone (on x86-64 the AVX512-VNNI one,
    on AArch64 the dot-product one): selected, int8 layers run its kernel while float32
    layers and quantize run the best ones below it. Every CPU checks the choice; a CPU
    that has such a family also runs it, against the reference kernels."""
    table = fastpw.kernel_table()
    families = [row["family"] for row in table]
    int8_only = [row for row in table if row["int8"] is not None and row["float32"] is None]
    assert int8_only, "each architecture's table has an int8-only family"
    for row in int8_only:
        choice = {
            operation: fastpw._kernels._kernel_choice(operation, row["family"], row["requires"])
            for operation in fastpw.OPERATIONS
        }
        assert choice["int8"] == row["family"], choice
        for operation in ("float32", "quantize"):
            assert families.index(choice[operation]) > families.index(row["family"]), choice
    f_args, q_args = valid(), qvalid()
    reference_family = table[-1]["family"]
    for row in (row for row in int8_only if row["supported"]):
        layers, float32_family = {}, {}
        for family in (row["family"], reference_family):
            previous = fastpw._set_isa(family)
            try:
                layers[family] = (fastpw.Conv1x1(f_args["weight"], f_args["bias"]), qlayer())
                float32_family[family] = fastpw.isa("float32")
            finally:
                fastpw._set_isa(previous)
        below = float32_family[row["family"]]
        f_layer, q_layer = layers[row["family"]]
        assert q_layer.isa == row["family"] and f_layer.isa == below != row["family"]
        y = f_layer(f_args["x"])
        assert_matches_reference(y, f_args["x"], f_args["weight"], f_args["bias"], "NCHW")
        assert np.array_equal(q_layer(q_args["x"]), layers[reference_family][1](q_args["x"]))


def test_cpu_features():
    features = fastpw.cpu_features()
    assert isinstance(features, dict) and features
    assert all(isinstance(key, str) for key in features), features
    assert all(isinstance(value, bool) for value in features.values()), features


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


def test_set_isa_refuses_the_families_this_cpu_lacks():
    before = fastpw.isa()
    lacking = [row["family"] for row in fastpw.kernel_table() if not row["supported"]]
    for name in lacking:
        with pytest.raises(ValueError, match="this CPU lacks it") as info:
            fastpw._set_isa(name)
        for available in fastpw.available_isas():
            assert available in str(info.value)
        assert fastpw.isa() == before
    # On a CPU that lacks none, every family of the table is available.
    assert len(lacking) + len(fastpw.available_isas()) == len(fastpw.kernel_table())


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


def test_cli_prints_the_kernel_table(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "fastpw", "--kernels"],
        cwd=tmp_path,  # not the repository root: run the installed package
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    table = fastpw.kernel_table()
    for row in table:
        line = next(line for line in lines if line.split()[0] == row["family"])
        assert ("yes" if row["supported"] else "no") == line.split()[1], line
        running = [op for op in fastpw.OPERATIONS if fastpw.isa(op) == row["family"]]
        assert line.count("*") == len(running), (line, running)
    assert sum(line.count("*") for line in lines[: len(table) + 1]) == len(fastpw.OPERATIONS)


def test_fastpw_isa_bogus_name_fails_import(tmp_path):
    result = run_python("import fastpw; print(fastpw.isa())", tmp_path, fastpw_isa="bogus512")
    assert result.returncode != 0, result.stdout
    assert "bogus512" in result.stderr, result.stderr
    for available in fastpw.available_isas():
        assert available in result.stderr, f"{available!r} not listed in: {result.stderr}"


def test_version():
    assert isinstance(fastpw.__version__, str) and fastpw.__version__
    assert fastpw.__version__ == importlib.metadata.version("fastpw")


# --------------------------------------------------------------------------- int8 path


def u8(*shape):
    return np.zeros(shape, dtype=np.uint8)


def qvalid(layout="NCHW"):
    """A valid quantized problem: uint8 x (2, 13, 5, 6), int8 weight (12, 13), int32
    bias, per-channel weight scales."""
    rng = np.random.default_rng(0)
    shape = (N, C, H, W) if layout == "NCHW" else (N, H, W, C)
    return dict(
        x=rng.integers(0, 256, shape).astype(np.uint8),
        weight=rng.integers(-127, 128, (K, C)).astype(np.int8),
        bias=rng.integers(-1000, 1000, K).astype(np.int32),
        layout=layout,
        x_quant=(0.02, 128),
        w_quant=(np.full(K, 0.01, np.float32), 0),
        y_quant=(0.1, 3),
    )


def qwith(**changes):
    """The valid quantized problem with some arguments replaced (a value may be a
    function of the valid arguments, or REMOVE to drop the argument)."""

    def build():
        args = qvalid()
        for name, value in changes.items():
            if value is REMOVE:
                del args[name]
            else:  # a lambda; dtypes such as np.uint8 are callable but are values here
                args[name] = value(args) if isinstance(value, FunctionType) else value
        return args

    return build


REMOVE = object()
NAN, INF = float("nan"), float("inf")

# (id, problem, exception, regex on the message)
BAD_QCALLS = [
    # Missing quantization parameters.
    ("missing-x_quant", qwith(x_quant=REMOVE), TypeError, r"x_quant"),
    ("missing-w_quant", qwith(w_quant=REMOVE), TypeError, r"w_quant"),
    ("missing-y_quant", qwith(y_quant=REMOVE), TypeError, r"y_quant"),
    ("missing-y_quant-uint8", qwith(y_quant=REMOVE, out_dtype=np.uint8), TypeError, r"y_quant"),
    ("missing-y_quant-int8", qwith(y_quant=REMOVE, out_dtype="int8"), TypeError, r"y_quant"),
    (
        "missing-y_quant-int8-x",
        qwith(y_quant=REMOVE, x=lambda a: (a["x"].astype(np.int16) - 128).astype(np.int8)),
        TypeError,
        r"y_quant",
    ),
    # Weight and x dtypes that do not go together.
    ("float-weight-uint8-x", qwith(weight=f32(K, C)), TypeError, r"weight"),
    (
        "float-weight-int8-x",
        qwith(weight=f32(K, C), x=np.zeros((N, C, H, W), np.int8)),
        TypeError,
        r"weight",
    ),
    ("uint8-weight", qwith(weight=lambda a: a["weight"].view(np.uint8)), EITHER, r"weight"),
    ("int32-weight", qwith(weight=lambda a: a["weight"].astype(np.int32)), EITHER, r"weight"),
    ("int16-x", qwith(x=lambda a: a["x"].astype(np.int16)), TypeError, r"\bx\b|int16"),
    # Weight zero point.
    ("w-zero-point-1", qwith(w_quant=(0.01, 1)), ValueError, r"w_quant|zero"),
    ("w-zero-point--3", qwith(w_quant=(0.01, -3)), ValueError, r"w_quant|zero"),
    (
        "w-zero-point-array",
        qwith(w_quant=(np.full(K, 0.01), np.eye(1, K, 5, dtype=np.int8)[0])),
        ValueError,
        r"w_quant|zero",
    ),
    # Scales.
    ("x-scale-zero", qwith(x_quant=(0.0, 128)), ValueError, r"x_quant|scale"),
    ("x-scale-negative", qwith(x_quant=(-0.1, 128)), ValueError, r"x_quant|scale"),
    ("x-scale-nan", qwith(x_quant=(NAN, 128)), ValueError, r"x_quant|scale"),
    ("x-scale-inf", qwith(x_quant=(INF, 128)), ValueError, r"x_quant|scale"),
    ("w-scale-zero", qwith(w_quant=(0.0, 0)), ValueError, r"w_quant|scale"),
    ("w-scale-negative", qwith(w_quant=(-0.5, 0)), ValueError, r"w_quant|scale"),
    ("w-scale-nan", qwith(w_quant=(NAN, 0)), ValueError, r"w_quant|scale"),
    ("w-scale-inf", qwith(w_quant=(INF, 0)), ValueError, r"w_quant|scale"),
    (
        "w-scale-per-channel-one-zero",
        qwith(w_quant=(np.r_[np.full(K - 1, 0.01), 0.0], 0)),
        ValueError,
        r"w_quant|scale",
    ),
    (
        "w-scale-per-channel-one-nan",
        qwith(w_quant=(np.r_[NAN, np.full(K - 1, 0.01)], 0)),
        ValueError,
        r"w_quant|scale",
    ),
    (
        "w-scale-per-channel-one-negative",
        qwith(w_quant=(np.r_[np.full(K - 1, 0.01), -0.01], 0)),
        ValueError,
        r"w_quant|scale",
    ),
    (
        "w-scale-per-channel-one-inf",
        qwith(w_quant=(np.r_[np.full(K - 1, 0.01), INF], 0)),
        ValueError,
        r"w_quant|scale",
    ),
    ("y-scale-zero", qwith(y_quant=(0.0, 3)), ValueError, r"y_quant|scale"),
    ("y-scale-negative", qwith(y_quant=(-1.0, 3)), ValueError, r"y_quant|scale"),
    ("y-scale-nan", qwith(y_quant=(NAN, 3)), ValueError, r"y_quant|scale"),
    ("y-scale-inf", qwith(y_quant=(INF, 3)), ValueError, r"y_quant|scale"),
    # Per-channel scale length.
    ("w-scale-too-long", qwith(w_quant=(np.full(K + 1, 0.01), 0)), ValueError, r"w_quant|scale"),
    ("w-scale-too-short", qwith(w_quant=(np.full(K - 1, 0.01), 0)), ValueError, r"w_quant|scale"),
    ("w-scale-2d", qwith(w_quant=(np.full((K, 1), 0.01), 0)), ValueError, r"w_quant|scale"),
    # Zero points out of range.
    ("x-zp-300-uint8", qwith(x_quant=(0.02, 300)), ValueError, r"x_quant|zero"),
    ("x-zp-256-uint8", qwith(x_quant=(0.02, 256)), ValueError, r"x_quant|zero"),
    ("x-zp--1-uint8", qwith(x_quant=(0.02, -1)), ValueError, r"x_quant|zero"),
    (
        "x-zp-128-int8",
        qwith(x=np.zeros((N, C, H, W), np.int8), x_quant=(0.02, 128)),
        ValueError,
        r"x_quant|zero",
    ),
    (
        "x-zp--129-int8",
        qwith(x=np.zeros((N, C, H, W), np.int8), x_quant=(0.02, -129)),
        ValueError,
        r"x_quant|zero",
    ),
    ("y-zp--1-uint8", qwith(y_quant=(0.1, -1)), ValueError, r"y_quant|zero"),
    ("y-zp-256-uint8", qwith(y_quant=(0.1, 256)), ValueError, r"y_quant|zero"),
    ("y-zp-128-int8", qwith(y_quant=(0.1, 128), out_dtype=np.int8), ValueError, r"y_quant|zero"),
    (
        "y-zp-200-int8-default",  # int8 x: the output is int8 too
        qwith(x=np.zeros((N, C, H, W), np.int8), x_quant=(0.02, 0), y_quant=(0.1, 200)),
        ValueError,
        r"y_quant|zero",
    ),
    ("y-zp--129-int8", qwith(y_quant=(0.1, -129), out_dtype="int8"), ValueError, r"y_quant|zero"),
    # Bias.
    ("bias-float32", qwith(bias=f32(K)), TypeError, r"bias"),
    ("bias-float64", qwith(bias=np.zeros(K)), TypeError, r"bias"),
    ("bias-int64", qwith(bias=np.zeros(K, np.int64)), EITHER, r"bias"),
    ("bias-int8", qwith(bias=np.zeros(K, np.int8)), EITHER, r"bias"),
    ("bias-length", qwith(bias=np.zeros(K + 1, np.int32)), ValueError, r"bias"),
    # out_dtype.
    ("out_dtype-int16", qwith(out_dtype=np.int16), ValueError, r"out_dtype"),
    ("out_dtype-float64", qwith(out_dtype=np.float64), ValueError, r"out_dtype"),
    ("out_dtype-int64", qwith(out_dtype="int64"), ValueError, r"out_dtype"),
    ("out_dtype-uint16", qwith(out_dtype=np.uint16), ValueError, r"out_dtype"),
    ("out_dtype-bool", qwith(out_dtype=bool), ValueError, r"out_dtype"),
    ("out_dtype-bogus", qwith(out_dtype="bogus"), EITHER, r"out_dtype|bogus"),
    # Activation with int32 output.
    ("activation-int32-relu", qwith(out_dtype=np.int32, activation="relu"), ValueError, r"activ"),
    (
        "activation-int32-clamp",
        qwith(out_dtype="int32", activation=(-1.0, 1.0)),
        ValueError,
        r"activ",
    ),
    # out.
    ("out-float32-for-uint8", qwith(out=f32(N, K, H, W)), EITHER, r"\bout\b"),
    ("out-int8-for-uint8", qwith(out=np.zeros((N, K, H, W), np.int8)), EITHER, r"\bout\b"),
    (
        "out-uint8-for-int32",
        qwith(out=u8(N, K, H, W), out_dtype=np.int32),
        EITHER,
        r"\bout\b",
    ),
    ("out-shape", qwith(out=u8(N, K + 1, H, W)), ValueError, r"\bout\b"),
    # Malformed pairs.
    ("x_quant-scalar", qwith(x_quant=0.02), EITHER, r"x_quant"),
    ("x_quant-1-tuple", qwith(x_quant=(0.02,)), EITHER, r"x_quant"),
    ("x_quant-3-tuple", qwith(x_quant=(0.02, 128, 0)), EITHER, r"x_quant"),
    ("x-zp-float", qwith(x_quant=(0.02, 128.0)), EITHER, r"x_quant|zero"),
    ("x-zp-bool", qwith(x_quant=(0.02, True)), EITHER, r"x_quant|zero"),
    ("y-zp-float", qwith(y_quant=(0.1, 3.5)), EITHER, r"y_quant|zero"),
    # Shapes still checked on the quantized path.
    ("q-channel-mismatch", qwith(weight=np.zeros((K, 17), np.int8)), ValueError, r"weight|chan"),
    ("q-x-3d", qwith(x=u8(C, H, W)), ValueError, r"\bx\b"),
    ("q-groups-not-dividing-K", qwith(groups=5), ValueError, r"groups"),
]


def qcall(args):
    args = dict(args)
    return fastpw.conv1x1(args.pop("x"), args.pop("weight"), args.pop("bias"), **args)


@pytest.mark.parametrize(
    "build,exc,pattern", [c[1:] for c in BAD_QCALLS], ids=[c[0] for c in BAD_QCALLS]
)
def test_bad_quantized_call_raises(build, exc, pattern):
    with pytest.raises(exc, match="(?i)" + pattern):
        qcall(build())


def test_valid_quantized_problem_runs():
    """The base of the bad-input table is itself valid (so each row tests one fault)."""
    y = qcall(qvalid())
    assert y.dtype == np.uint8 and y.shape == (N, K, H, W)
    for out_dtype in (np.int32, np.float32):  # no y_quant needed
        args = qvalid()
        del args["y_quant"]
        assert qcall(dict(args, out_dtype=out_dtype)).dtype == out_dtype


def test_float_bias_message_says_to_quantize():
    args = qvalid()
    args["bias"] = args["bias"].astype(np.float32)
    with pytest.raises(TypeError, match="(?i)bias") as info:
        qcall(args)
    message = str(info.value)
    assert "quantiz" in message.lower() or "from_float" in message, message


@pytest.mark.parametrize("name", ["x_quant", "w_quant", "y_quant"])
def test_quant_arguments_with_float_x_raise(name):
    args = valid()
    args[name] = (0.1, 0)
    with pytest.raises(TypeError, match="(?i)" + name):
        call(args)


def test_integer_out_dtype_with_float_x_raises():
    with pytest.raises(EITHER, match="(?i)out_dtype|quant|float32"):
        call(dict(valid(), out_dtype=np.uint8))


def test_int8_weight_with_float_x_raises():
    args = valid()
    args["weight"] = np.zeros((K, C), np.int8)
    with pytest.raises(TypeError, match="(?i)weight|int8|float32"):
        call(args)


def test_quantized_out_overlapping_x_raises():
    weight = np.eye(12, dtype=np.int8)
    kwargs = dict(x_quant=(0.1, 0), w_quant=(0.1, 0), y_quant=(0.1, 0))
    buf = np.zeros((1, 24, 4, 4), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"(?i)\bout\b"):
        fastpw.conv1x1(buf[:, :12], weight, out=buf[:, :12], **kwargs)
    with pytest.raises(ValueError, match=r"(?i)\bout\b"):
        fastpw.conv1x1(buf[:, :12], weight, out=buf[:, 6:18], **kwargs)


def test_failed_quantized_call_leaves_out_alone():
    args = qvalid()
    out = np.full((N, K, H, W), 9, dtype=np.uint8)
    with pytest.raises(ValueError):
        qcall(dict(args, y_quant=(0.1, 300), out=out))
    assert (out == 9).all()


# (id, changes to QConv1x1's arguments, exception, regex on the message)
BAD_QLAYERS = [
    ("missing-x_quant", dict(x_quant=REMOVE), TypeError, r"x_quant"),
    ("missing-w_quant", dict(w_quant=REMOVE), TypeError, r"w_quant"),
    ("float-weight", dict(weight=f32(K, C)), TypeError, r"weight"),
    ("float-bias", dict(bias=f32(K)), TypeError, r"bias"),
    ("w-zero-point", dict(w_quant=(0.01, 2)), ValueError, r"w_quant|zero"),
    ("w-scale-length", dict(w_quant=(np.full(K + 2, 0.01), 0)), ValueError, r"w_quant|scale"),
    ("w-scale-zero", dict(w_quant=(0.0, 0)), ValueError, r"w_quant|scale"),
    ("x-scale-nan", dict(x_quant=(NAN, 0)), ValueError, r"x_quant|scale"),
    ("x-zp-300", dict(x_quant=(0.1, 300)), ValueError, r"x_quant|zero"),
    ("y-scale-inf", dict(y_quant=(INF, 0)), ValueError, r"y_quant|scale"),
    ("y-zp-256", dict(y_quant=(0.1, 256)), ValueError, r"y_quant|zero"),
    ("y-zp--129", dict(y_quant=(0.1, -129)), ValueError, r"y_quant|zero"),
    ("out_dtype", dict(out_dtype=np.float16), ValueError, r"out_dtype"),
    ("activation-int32", dict(out_dtype=np.int32, activation="relu6"), ValueError, r"activ"),
    ("y-zp-uint8-out", dict(out_dtype=np.uint8, y_quant=(0.1, -1)), ValueError, r"y_quant|zero"),
    ("y-zp-int8-out", dict(out_dtype=np.int8, y_quant=(0.1, 128)), ValueError, r"y_quant|zero"),
    ("layout", dict(layout="NWHC"), ValueError, r"layout"),
    ("groups-not-dividing-K", dict(groups=5), ValueError, r"groups"),
]


def qlayer_args(changes):
    args = qvalid()
    del args["x"]
    for name, value in changes.items():
        if value is REMOVE:
            del args[name]
        else:
            args[name] = value
    return args


@pytest.mark.parametrize(
    "changes,exc,pattern", [c[1:] for c in BAD_QLAYERS], ids=[c[0] for c in BAD_QLAYERS]
)
def test_bad_quantized_layer_raises(changes, exc, pattern):
    args = qlayer_args(changes)
    with pytest.raises(exc, match="(?i)" + pattern):
        fastpw.QConv1x1(args.pop("weight"), args.pop("bias"), **args)


@pytest.mark.parametrize("out_dtype", [None, np.uint8, np.int8])
def test_quantized_layer_without_y_quant_needs_it_for_8bit_output(out_dtype):
    """An 8-bit output (out_dtype=None follows x's dtype, here uint8) needs y_quant:
    building the layer or calling it without must fail, naming y_quant."""
    args = qlayer_args(dict(y_quant=REMOVE, out_dtype=out_dtype))
    x = qvalid()["x"]
    with pytest.raises(TypeError, match="(?i)y_quant"):
        layer = fastpw.QConv1x1(args.pop("weight"), args.pop("bias"), **args)
        layer(x)


BAD_QLAYER_CALLS = [
    ("x-float32", dict(x=f32(N, C, H, W)), TypeError, r"\bx\b|float32|uint8|int8"),
    ("x-int16", dict(x=np.zeros((N, C, H, W), np.int16)), TypeError, r"\bx\b|int16"),
    ("x-channels", dict(x=u8(N, C + 1, H, W)), ValueError, r"\bx\b|weight|channel"),
    ("out-dtype", dict(out=f32(N, K, H, W)), EITHER, r"\bout\b"),
    ("out-shape", dict(out=u8(N, K, H + 1, W)), ValueError, r"\bout\b"),
    ("num_threads-zero", dict(num_threads=0), ValueError, r"num_threads"),
]


@pytest.mark.parametrize(
    "changes,exc,pattern",
    [c[1:] for c in BAD_QLAYER_CALLS],
    ids=[c[0] for c in BAD_QLAYER_CALLS],
)
def test_bad_quantized_layer_call_raises(changes, exc, pattern):
    args = qvalid()
    x = args.pop("x")
    layer = fastpw.QConv1x1(args.pop("weight"), args.pop("bias"), **args)
    call_args = dict(x=x)
    call_args.update(changes)
    with pytest.raises(exc, match="(?i)" + pattern):
        layer(call_args.pop("x"), **call_args)


def test_layers_refuse_byte_swapped_arrays():
    """The layers' fast path once read big-endian arrays as native numbers (the type
    number does not record byte order); they must refuse them as conv1x1 does."""
    x = np.array([[[[2.0]]]], np.float32)
    layer = fastpw.Conv1x1(np.array([[3.0]], np.float32))
    with pytest.raises(TypeError):
        layer(x.astype(">f4"))
    with pytest.raises(TypeError):
        layer(x, out=np.zeros((1, 1, 1, 1), ">f4"))
    qlayer = fastpw.QConv1x1(
        np.array([[3]], np.int8), x_quant=(1.0, 0), w_quant=(1.0, 0), out_dtype=np.int32
    )
    with pytest.raises(TypeError):
        qlayer(np.array([[[[2]]]], np.uint8), out=np.zeros((1, 1, 1, 1), ">i4"))


# ------------------------------------------- messages that name the argument and the fix


def uint8_image(layout="NCHW"):
    shape = (N, C, H, W) if layout == "NCHW" else (N, H, W, C)
    return np.random.default_rng(3).integers(0, 256, shape).astype(np.uint8)


# (id, a call that must raise TypeError, substrings the message must contain); the
# message must not talk about int8 weights: the caller passed float ones.
UINT8_IMAGE_TO_FLOAT_LAYER = [
    ("conv1x1", lambda: fastpw.conv1x1(uint8_image(), valid()["weight"])),
    ("conv1x1-bias-nhwc", lambda: call(dict(valid("NHWC"), x=uint8_image("NHWC")))),
    ("Conv1x1", lambda: fastpw.Conv1x1(valid()["weight"])(uint8_image())),
    (
        "Conv1x1-nhwc-stride",
        lambda: fastpw.Conv1x1(valid()["weight"], layout="NHWC", stride=2)(uint8_image("NHWC")),
    ),
    ("Conv1x1-int8-x", lambda: fastpw.Conv1x1(valid()["weight"])(uint8_image().view(np.int8))),
]


@pytest.mark.parametrize(
    "run",
    [c[1] for c in UINT8_IMAGE_TO_FLOAT_LAYER],
    ids=[c[0] for c in UINT8_IMAGE_TO_FLOAT_LAYER],
)
def test_8bit_image_to_float_layer_says_to_convert_it(run):
    """An 8-bit image given to the float layer: the message says the layer takes float32
    x and how to get it, or where the quantized path is (not "int8 weights need ...")."""
    with pytest.raises(TypeError) as info:
        run()
    message = str(info.value)
    for text in ("float32", "x.astype(np.float32)", "QConv1x1", "quant.quantize"):
        assert text in message, f"{text!r} missing from: {message}"
    assert "int8 weights" not in message and "weight must be int8" not in message, message


def from_float_args(**changes):
    rng = np.random.default_rng(4)
    args = dict(
        weight=rng.standard_normal((K, C)).astype(np.float32),
        bias=rng.standard_normal(K).astype(np.float32),
        x_quant=(0.02, 128),
        y_quant=(0.1, 3),
    )
    args.update(changes)
    return args


def bias_of(value, channel=5):
    """The valid bias with one channel set to `value`."""
    bias = from_float_args()["bias"]
    bias[channel] = value
    return bias


# (id, changes to from_float's arguments, exception, substrings the message must contain)
BAD_FROM_FLOAT = [
    # A bias so large for the x_quant scale that no float32 weight scale makes it fit
    # int32 (it once came out as "w_quant scale must be positive and finite", an
    # argument from_float's caller never passes).
    (
        "bias-1e10-x-scale-1e-38",
        dict(bias=bias_of(1e10), x_quant=(1e-38, 128)),
        ValueError,
        ["bias[5]", "x_quant", "1e-38", "1e+10"],
    ),
    (
        "bias-1e30-x-scale-1e-20-per-tensor",
        dict(bias=bias_of(-1e30), x_quant=(1e-20, 128), per_channel=False),
        ValueError,
        ["bias[5]", "x_quant", "1e-20"],
    ),
    (
        "bias-1e6-x-scale-1e-45",  # the smallest float32 scale
        dict(bias=bias_of(1e6, channel=0), x_quant=(1e-45, 0)),
        ValueError,
        ["bias[0]", "x_quant"],
    ),
    # A NaN or Inf bias once quantized to -2**31 or a weight scale of inf.
    ("bias-nan", dict(bias=bias_of(np.nan)), ValueError, ["bias", "NaN"]),
    ("bias-inf", dict(bias=bias_of(-np.inf)), ValueError, ["bias", "Inf"]),
]


@pytest.mark.parametrize(
    "changes,exc,contains", [c[1:] for c in BAD_FROM_FLOAT], ids=[c[0] for c in BAD_FROM_FLOAT]
)
def test_bad_from_float_raises(changes, exc, contains):
    args = from_float_args(**changes)
    with pytest.raises(exc, match="(?i)bias") as info:
        fastpw.QConv1x1.from_float(args.pop("weight"), args.pop("bias"), **args)
    message = str(info.value)
    for text in contains:
        assert text in message, f"{text!r} missing from: {message}"
    assert "w_quant" not in message, f"blames w_quant, which the caller never passed: {message}"


def test_from_float_bias_message_gives_values_that_fit():
    """The x_quant scale and the bias bound the message suggests do build the layer."""
    args = from_float_args(bias=bias_of(1e10), x_quant=(1e-38, 128))
    with pytest.raises(ValueError) as info:
        fastpw.QConv1x1.from_float(args.pop("weight"), args.pop("bias"), **args)
    numbers = [float(v) for v in re.findall(r"(?:>=|<=) ([-+.e0-9]+)", str(info.value))]
    assert len(numbers) == 2, str(info.value)
    x_scale, bias_bound = numbers
    weight, bias = from_float_args()["weight"], bias_of(1e10)
    for x_quant, b in [
        ((x_scale, 128), bias),
        ((1e-38, 128), np.clip(bias, -bias_bound, bias_bound)),
    ]:
        layer = fastpw.QConv1x1.from_float(weight, b, x_quant=x_quant, y_quant=(0.1, 3))
        assert np.all(np.isfinite(np.asarray(layer.w_quant.scale)))


# Per-tensor qparams spelled as one-element arrays (as ONNX initializers often are, and as
# fastpw.quant.quantize takes them): the same layer as plain numbers.
ONE_ELEMENT = {
    "x_quant": (np.array([0.02], np.float32), np.array([128], np.int64)),
    "w_quant": (np.array([0.01], np.float32), np.array([0], np.int8)),
    "y_quant": (np.array([0.1]), np.array([3], np.int32)),
}
PLAIN = {"x_quant": (0.02, 128), "w_quant": (0.01, 0), "y_quant": (0.1, 3)}


def build_quantized(entry, x, qparams):
    """The valid quantized problem's result through `entry`, with these qparams."""
    args = qvalid()
    del args["x"]
    args.update(qparams)
    weight, bias = args.pop("weight"), args.pop("bias")
    if entry == "conv1x1":
        return None, fastpw.conv1x1(x, weight, bias, **args)
    if entry == "from_float":  # (it derives w_quant and the bias)
        del args["w_quant"]
        layer = fastpw.QConv1x1.from_float(
            weight.astype(np.float32) / 100, per_channel=False, **args
        )
    else:
        layer = fastpw.QConv1x1(weight, bias, **args)
    return layer, layer(x)


ONE_ELEMENT_CASES = [
    (entry, names)
    for entry in ("conv1x1", "QConv1x1", "from_float")
    for names in (["x_quant"], ["w_quant"], ["y_quant"], list(PLAIN))
    if not (entry == "from_float" and names == ["w_quant"])
]


@pytest.mark.parametrize(
    "entry,names", ONE_ELEMENT_CASES, ids=[f"{e}-{'-'.join(n)}" for e, n in ONE_ELEMENT_CASES]
)
def test_one_element_qparams_are_per_tensor(entry, names):
    x = qvalid()["x"]
    plain_layer, expected = build_quantized(entry, x, PLAIN)
    given = dict(PLAIN, **{name: ONE_ELEMENT[name] for name in names})
    layer, got = build_quantized(entry, x, given)
    assert got.dtype == expected.dtype and got.tobytes() == expected.tobytes()
    if layer is not None:  # the attributes hold plain numbers either way
        assert layer.x_quant == plain_layer.x_quant and layer.y_quant == plain_layer.y_quant
        assert layer.w_quant == plain_layer.w_quant
        assert np.ndim(layer.w_quant.scale) == 0


# (id, problem, exception, regex on the message): what stays refused beside them
BAD_ONE_ELEMENT_NEIGHBOURS = [
    ("x-scale-two", qwith(x_quant=(np.full(2, 0.02), 128)), ValueError, r"x_quant"),
    ("x-zp-two", qwith(x_quant=(0.02, np.array([128, 128]))), TypeError, r"x_quant"),
    ("x-zp-1x1", qwith(x_quant=(0.02, np.array([[128]]))), TypeError, r"x_quant"),
    ("x-scale-1x1", qwith(x_quant=(np.full((1, 1), 0.02), 128)), ValueError, r"x_quant"),
    ("y-scale-two", qwith(y_quant=(np.full(2, 0.1), 3)), ValueError, r"y_quant"),
    ("y-zp-one-float", qwith(y_quant=(0.1, np.array([3.0]))), TypeError, r"y_quant"),
    ("y-zp-one-out-of-range", qwith(y_quant=(0.1, np.array([256]))), ValueError, r"y_quant"),
    ("w-scale-two", qwith(w_quant=(np.full(2, 0.01), 0)), ValueError, r"w_quant"),
    ("w-zp-one-nonzero", qwith(w_quant=(np.array([0.01]), np.array([1]))), ValueError, r"w_q"),
]


@pytest.mark.parametrize(
    "build,exc,pattern",
    [c[1:] for c in BAD_ONE_ELEMENT_NEIGHBOURS],
    ids=[c[0] for c in BAD_ONE_ELEMENT_NEIGHBOURS],
)
def test_bad_qparams_arrays_raise(build, exc, pattern):
    with pytest.raises(exc, match="(?i)" + pattern):
        qcall(build())


def masked(array):
    """`array` as a masked array with its first element masked."""
    mask = np.zeros(array.shape, bool)
    mask.flat[0] = True
    return np.ma.masked_array(array, mask=mask)


def quantized_layer():
    args = qvalid()
    del args["x"]
    return fastpw.QConv1x1(args.pop("weight"), args.pop("bias"), **args)


def float_layer():
    return fastpw.Conv1x1(valid()["weight"], valid()["bias"])


def observe(x):
    from fastpw.quant import Observer

    Observer().update(x)


def calibrate(x):
    from fastpw.quant import QuantizedSequential

    QuantizedSequential.calibrate([float_layer()], [valid()["x"], x])


# (id, a call with one masked array, the argument's name in the message)
MASKED_CALLS = [
    ("conv1x1-x", lambda: call(dict(valid(), x=masked(valid()["x"]))), "x"),
    ("conv1x1-weight", lambda: call(dict(valid(), weight=masked(valid()["weight"]))), "weight"),
    ("conv1x1-bias", lambda: call(dict(valid(), bias=masked(valid()["bias"]))), "bias"),
    ("conv1x1-out", lambda: call(dict(valid(), out=masked(f32(N, K, H, W)))), "out"),
    ("conv1x1-stride-x", lambda: call(dict(valid(), x=masked(valid()["x"]), stride=2)), "x"),
    ("conv1x1-q-x", lambda: qcall(dict(qvalid(), x=masked(qvalid()["x"]))), "x"),
    (
        "conv1x1-q-weight",
        lambda: qcall(dict(qvalid(), weight=masked(qvalid()["weight"]))),
        "weight",
    ),
    ("conv1x1-q-bias", lambda: qcall(dict(qvalid(), bias=masked(qvalid()["bias"]))), "bias"),
    ("conv1x1-q-out", lambda: qcall(dict(qvalid(), out=masked(u8(N, K, H, W)))), "out"),
    ("Conv1x1-weight", lambda: fastpw.Conv1x1(masked(valid()["weight"])), "weight"),
    ("Conv1x1-bias", lambda: fastpw.Conv1x1(valid()["weight"], masked(valid()["bias"])), "bias"),
    ("Conv1x1-call-x", lambda: float_layer()(masked(valid()["x"])), "x"),
    ("Conv1x1-call-out", lambda: float_layer()(valid()["x"], out=masked(f32(N, K, H, W))), "out"),
    (
        "QConv1x1-weight",
        lambda: fastpw.QConv1x1(
            masked(qvalid()["weight"]), x_quant=(0.1, 0), w_quant=(0.1, 0), out_dtype=np.int32
        ),
        "weight",
    ),
    (
        "QConv1x1-bias",
        lambda: fastpw.QConv1x1(
            qvalid()["weight"],
            masked(qvalid()["bias"]),
            x_quant=(0.1, 0),
            w_quant=(0.1, 0),
            out_dtype=np.int32,
        ),
        "bias",
    ),
    ("QConv1x1-call-x", lambda: quantized_layer()(masked(qvalid()["x"])), "x"),
    (
        "QConv1x1-call-out",
        lambda: quantized_layer()(qvalid()["x"], out=masked(u8(N, K, H, W))),
        "out",
    ),
    (
        "from_float-weight",
        lambda: fastpw.QConv1x1.from_float(
            masked(valid()["weight"]), x_quant=(0.1, 0), out_dtype=np.int32
        ),
        "weight",
    ),
    (
        "from_float-bias",
        lambda: fastpw.QConv1x1.from_float(
            valid()["weight"], masked(valid()["bias"]), x_quant=(0.1, 0), out_dtype=np.int32
        ),
        "bias",
    ),
    ("quantize-x", lambda: fastpw.quant.quantize(masked(valid()["x"]), (0.1, 128)), "x"),
    (
        "quantize-out",
        lambda: fastpw.quant.quantize(valid()["x"], (0.1, 128), out=masked(u8(N, C, H, W))),
        "out",
    ),
    ("dequantize-xq", lambda: fastpw.quant.dequantize(masked(qvalid()["x"]), (0.1, 128)), "xq"),
    (
        "dequantize-out",
        lambda: fastpw.quant.dequantize(qvalid()["x"], (0.1, 128), out=masked(f32(N, C, H, W))),
        "out",
    ),
    ("choose_qparams-x", lambda: fastpw.quant.choose_qparams(masked(valid()["x"])), "x"),
    ("Observer.update-x", lambda: observe(masked(valid()["x"])), "x"),
    ("calibrate-inputs", lambda: calibrate(masked(valid()["x"])), "calibration_inputs[1]"),
]


@pytest.mark.parametrize(
    "run,name", [c[1:] for c in MASKED_CALLS], ids=[c[0] for c in MASKED_CALLS]
)
def test_masked_array_is_refused(run, name):
    """The kernels read an array's data, never its mask: a masked array would be computed
    as if nothing were masked, so every entry point refuses one and says what to pass."""
    with pytest.raises(TypeError, match="(?i)masked") as info:
        run()
    message = str(info.value)
    for text in (f"{name} ", f"{name}.filled(", f"np.asarray({name})"):
        assert text in message, f"{text!r} missing from: {message}"


def test_masked_out_is_left_alone():
    out = masked(np.full((N, K, H, W), 7.0, np.float32))
    with pytest.raises(TypeError):
        float_layer()(valid()["x"], out=out)
    assert (out.data == 7.0).all() and out.mask.flat[0]


# ------------------------------------------------- one check for the layers and quant


def qlayer(**changes):
    args = {**qvalid(), **changes}
    del args["x"]
    return fastpw.QConv1x1(args.pop("weight"), args.pop("bias"), **args)


def conv_in_place():
    x = f32(N, C, H, W)
    return fastpw.conv1x1(x, np.eye(C, dtype=np.float32), out=x)


def dequantize_in_place():
    buffer = np.zeros(16, np.uint8)
    return fastpw.quant.dequantize(buffer[:4], (0.1, 3), out=buffer.view(np.float32))


# (id, the fault through the layers, the same fault through fastpw.quant, exception,
# the message both give, with {} for the part that names the argument or its values).
# Unlike the loose checks above, the words are pinned: the point is that both entry
# points say the same thing, so a change of wording in fastpw/_checks.py changes this.
SAME_FAULT = [
    (
        "out-dtype",
        lambda: call(dict(valid(), out=np.zeros((N, K, H, W), np.int32))),
        lambda: fastpw.quant.quantize(valid()["x"], (0.1, 3), out=np.zeros((N, C, H, W), np.int8)),
        TypeError,
        r"out must have dtype {}; got {}",
    ),
    (
        "out-shape",
        lambda: call(dict(valid(), out=f32(N, K, H, W + 1))),
        lambda: fastpw.quant.quantize(valid()["x"], (0.1, 3), out=u8(N, C, H, W + 1)),
        ValueError,
        r"out must have shape \({}\); got \({}\)",
    ),
    (
        "out-overlaps-the-input",
        conv_in_place,
        dequantize_in_place,
        ValueError,
        r"out overlaps {}; fastpw does not compute in place",
    ),
    (
        "zero-point-float",
        lambda: qlayer(x_quant=(0.02, 3.0)),
        lambda: fastpw.quant.quantize(valid()["x"], (0.1, 3.0)),
        TypeError,
        r"{} zero point must be an int",
    ),
    (
        "zero-point-range",
        lambda: qlayer(y_quant=(0.1, 300), out_dtype=np.uint8),
        lambda: fastpw.quant.quantize(valid()["x"], (0.1, 300)),
        ValueError,
        r"{} zero point 300 is outside the {} range \[0, 255\]",
    ),
    (
        "scale-zero",
        lambda: qlayer(x_quant=(0.0, 128)),
        lambda: fastpw.quant.dequantize(qvalid()["x"], (0.0, 128)),
        ValueError,
        r"{} scale must be positive and finite; got 0.0",
    ),
    (
        "num-threads",
        lambda: call(dict(valid(), num_threads=0)),
        lambda: fastpw.quant.quantize(valid()["x"], (0.1, 3), num_threads=0),
        ValueError,
        r"num_threads must be None or >= 1; got 0",
    ),
]


@pytest.mark.parametrize(
    "layers,quant,exc,message", [c[1:] for c in SAME_FAULT], ids=[c[0] for c in SAME_FAULT]
)
def test_one_fault_one_answer_in_layers_and_quant(layers, quant, exc, message):
    """The layers and fastpw.quant share their checks (fastpw/_checks.py, issue 13 item
    3): one fault gives one exception and one message, whichever entry point sees it."""
    pattern = message.replace("{}", r"[^;]+?")
    for run in (layers, quant):
        with pytest.raises(exc, match=pattern):
            run()


def test_quant_imports_nothing_private_from_the_layers():
    """fastpw.quant takes its checks from fastpw._checks, not _api's private helpers."""
    import ast
    import inspect

    for module, other in ((fastpw.quant, "_api"), (fastpw._api, "quant")):
        tree = ast.parse(inspect.getsource(module))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == other:
                private = [alias.name for alias in node.names if alias.name.startswith("_")]
                assert not private, f"{module.__name__} imports {private} from {other}"
