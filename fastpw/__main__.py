"""``python -m fastpw``: what this machine runs, whether it is right, and how fast it is.

Four parts, in order:

1. Machine: fastpw version, CPU features, kernel family in use, OpenMP and threads, and
   the measured single-thread float32 FMA peak of the active family.
2. Correctness: a few layers (stride 2, groups, fused activations, ``out`` channel
   slices) against the float64 numpy reference, ``fastpw.testing.conv1x1_reference``.
   Any FAIL ends the run with status 1.
3. Benchmark: every layer of ``fastpw.shapes.STANDARD_SHAPES`` for fastpw (NCHW and/or
   NHWC, prepacked ``Conv1x1``) and its float32 peers on as many threads: numpy
   ``matmul``, and ONNX Runtime's Conv and PyTorch's conv2d where installed, each peer
   checked against the reference first. Implementations are timed round by round
   (``fastpw._timing.measure_interleaved``); rows report the median round, and a row
   whose rounds disagree is marked unsteady and gives no ratio.
4. int8 benchmark (``--no-int8`` skips it): the same layers quantized
   (``fastpw.shapes.make_int8_inputs``) for fastpw's prepacked ``QConv1x1`` (uint8
   output), checked bit for bit against the int8 formula
   (``fastpw.testing.qconv1x1_reference``; a mismatch ends the run with status 1), and,
   when onnxruntime and onnx are installed, ONNX Runtime's QLinearConv in the same
   layout, whose differences from the formula are counted. Speedups against ONNX
   Runtime and against part 3's float32 GFLOP/s.

``--kernels`` prints the kernel table of this build and exits.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import platform
import sys
import time
from contextlib import nullcontext

import numpy as np

import fastpw
from fastpw import _kernels
from fastpw._peer_litert import litert_version, xnnpack_conv, xnnpack_qconv
from fastpw._peers import (
    Int8Differences,
    float32_errors,
    implementation_label,
    int8_differences,
    numpy_baseline,
    onednn_kernels,
    onnxruntime_conv,
    onnxruntime_qlinearconv,
    onnxruntime_qlinearconv_nhwc,
    onnxruntime_version,
    torch_conv2d,
    torch_qconv2d,
    torch_quantized_engines,
    torch_version,
)
from fastpw._plot import PLOT_INSTALL, draw_report, draw_sweep, matplotlib_missing
from fastpw._sweep import CLIFF_RATIO, SWEEP_LINES, SweepLine, trend_ratios
from fastpw._timing import (
    BANDWIDTH_BYTES,
    BLAS_IDLE_SECONDS,
    ORT_IDLE_SECONDS,
    SPREAD_LIMIT,
    cpu_model,
    gflops,
    machine_load,
    measure_interleaved,
    memory_bandwidth_gbs,
)
from fastpw.shapes import (
    LAYOUTS,
    STANDARD_SHAPES,
    LayerShape,
    empty_output,
    make_inputs,
    make_int8_inputs,
    parse_layer_shape,
    quantized_layer,
)
from fastpw.testing import (
    RELATIVE_TOLERANCE,
    conv1x1_reference,
    max_relative_error,
    qconv1x1_reference,
)

try:
    import threadpoolctl
except ImportError:  # optional: without it numpy's BLAS uses its own default threads
    threadpoolctl = None

# The one command that installs every peer and helper the benchmarks use (pyproject.toml's
# "bench" extra): printed wherever one is missing.
BENCH_INSTALL = 'pip install "fastpw[bench]"'


def layer_shape_argument(text: str) -> LayerShape:
    """``--shape``'s parser: argparse reports the ValueError's message (exit status 2)."""
    try:
        return parse_layer_shape(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m fastpw",
        description=(
            "Report fastpw's kernel selection, check its results against float64 numpy, "
            "and benchmark float32 1x1 convolutions of MobileNetV2, ResNet-50, "
            "SqueezeNet and ConvNeXt-T (batch 1 unless --batch) against numpy, ONNX "
            "Runtime, PyTorch and XNNPACK, then the same layers in int8. Exit status 1 "
            "if a check fails."
        ),
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="threads for fastpw and numpy's BLAS (default: fastpw.max_threads(), "
        "the OpenMP default, which respects OMP_NUM_THREADS)",
    )
    parser.add_argument(
        "--layout",
        type=str.upper,
        choices=("NCHW", "NHWC", "BOTH"),
        default="BOTH",
        help="activation layouts to benchmark, in any case (default: both)",
    )
    parser.add_argument(
        "--shapes",
        metavar="SUBSTRING",
        default="",
        help="benchmark only the standard layers whose name contains SUBSTRING, in any "
        'case, e.g. "resnet50" or "7x7"',
    )
    parser.add_argument(
        "--shape",
        metavar="C,K,H,W[,S][,G]",
        action="append",
        type=layer_shape_argument,
        help="benchmark your own layer instead of the standard ones: C input and K output "
        "channels, an H x W input, stride S and groups G (default 1); repeat it for more "
        "layers. With --shapes, the matching standard layers come first.",
    )
    parser.add_argument(
        "--batch",
        type=int,
        default=1,
        metavar="N",
        help="run every layer on N images at once (default 1)",
    )
    parser.add_argument(
        "--int8",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="after the float32 table, benchmark the int8 path (QConv1x1) against ONNX "
        "Runtime's QLinearConv when onnxruntime is installed (default: on)",
    )
    parser.add_argument(
        "--json", metavar="FILE", help="also write machine info and all rows as JSON to FILE"
    )
    parser.add_argument(
        "--plot",
        metavar="FILE",
        help="also draw a roofline per dtype and fastpw's ratio to the best peer per layer "
        f"to FILE (PNG; needs matplotlib: {PLOT_INSTALL})",
    )
    parser.add_argument(
        "--sweep",
        action="store_true",
        help="instead of the standard layers, time fastpw's float32 layers along lines "
        "of spatial sizes 7..128 and channel counts 8..2048 in both layouts, and name "
        f"every point below {CLIFF_RATIO}x its neighbours' trend (a cliff)",
    )
    parser.add_argument(
        "--kernels",
        action="store_true",
        help="print the kernel families of this build and what this CPU runs, then exit",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="fewer, shorter repeats, and on 2+ threads no wait for the peers' pools to go"
        " idle between samples (noisier numbers: a first look)",
    )
    args = parser.parse_args(argv)
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be at least 1")
    if args.batch < 1:
        parser.error("--batch must be at least 1")
    return args


# ----------------------------------------------------------------------------- machine


#: The register-only loops that measure each operation's compute ceiling, one thread:
#: the float32 kernel's FMA (GFLOP/s) and the int8 kernel's multiply-accumulate (GOP/s).
PEAK_PROBES = {"float32": _kernels.fma_peak_gflops, "int8": _kernels.int8_peak_gops}


def probe_peak(operation: str, seconds: float) -> tuple[float | None, str | None]:
    """``(peak, error)``: the single-thread ceiling of the kernel ``operation`` runs, or
    None and why not."""
    family = fastpw.isa(operation)
    try:
        # Best of three short probes: another process stealing the core for a moment
        # lowers one probe, not the result.
        peak = max(PEAK_PROBES[operation](family, seconds=seconds / 3) for _ in range(3))
    except Exception as error:  # a missing probe must not hide the rest of the report
        return None, f"{type(error).__name__}: {error}"
    if not (math.isfinite(peak) and peak > 0):
        return None, f"the {family} {operation} kernel has no probe"
    return peak, None


def machine_info(threads: int, peak_seconds: float) -> dict:
    features = fastpw.cpu_features()
    active = fastpw.isa()
    peak, peak_error = probe_peak("float32", peak_seconds)
    int8_peak, int8_peak_error = probe_peak("int8", peak_seconds)
    blas = []
    if threadpoolctl is not None:
        blas = [
            {key: pool.get(key) for key in ("internal_api", "version", "num_threads")}
            for pool in threadpoolctl.threadpool_info()
            if pool.get("user_api") == "blas"
        ]
    bandwidth_threads = threads if fastpw.openmp_enabled() else 1
    return {
        "fastpw_version": fastpw.__version__,
        "cpu_model": cpu_model(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_features": sorted(name for name, present in features.items() if present),
        "isa": active,
        "kernel_per_operation": {op: fastpw.isa(op) for op in fastpw.OPERATIONS},
        "available_isas": list(fastpw.available_isas()),
        "openmp": bool(fastpw.openmp_enabled()),
        "max_threads": int(fastpw.max_threads()),
        "threads": threads,
        "fma_peak_gflops_1thread": peak,
        "fma_peak_error": peak_error,
        "fma_peak_method": (
            f"register-only {active} FMA loop, independent accumulators, 1 thread, "
            f"best of 3 x {peak_seconds / 3:.2g} s, 2 flops per lane"
        ),
        "int8_peak_gops_1thread": int8_peak,
        "int8_peak_error": int8_peak_error,
        "int8_peak_method": (
            f"register-only loop of the {fastpw.isa('int8')} int8 kernel's multiply-"
            f"accumulate instructions, 1 thread, best of 3 x {peak_seconds / 3:.2g} s, "
            "2 ops per product"
        ),
        "memory_bandwidth_gbs": memory_bandwidth_gbs(bandwidth_threads),
        "memory_bandwidth_method": (
            f"best of 5 copies of {BANDWIDTH_BYTES // 2**20} MiB on {bandwidth_threads} "
            "thread(s), read + write bytes"
        ),
        "numpy_blas": blas,
        "cpu_count": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }


def kernel_table_lines() -> list[str]:
    """The kernel table of this build (fastpw.kernel_table()) as text: one line per
    family, best first, with the kernel it brings per operation ("-": the families
    below serve), and a * on the kernel each operation runs now."""
    header = ["family", "CPU has it", *fastpw.OPERATIONS]
    rows = []
    for row in fastpw.kernel_table():
        cells = [row["family"], "yes" if row["supported"] else "no"]
        for operation in fastpw.OPERATIONS:
            kernel = row[operation]
            if kernel is None:
                cells.append("-")
                continue
            tile = f"{kernel['mr']}x{kernel['nr']} " if "mr" in kernel else ""
            running = "*" if fastpw.isa(operation) == row["family"] else ""
            cells.append(f"{tile}{kernel['format']}{running}")
        rows.append(cells)
    widths = [max(len(line[i]) for line in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True))
        for line in [header, *rows]
    ]
    requires = [
        f"{row['family']} requires: {' '.join(row['requires']) or 'nothing'}"
        for row in fastpw.kernel_table()
    ]
    return [line.rstrip() for line in lines] + [
        f"(* runs now: family {fastpw.isa()} selected"
        + ("" if fastpw.isa() == fastpw.available_isas()[0] else " by FASTPW_ISA")
        + "; MR x NR register tile and operand format of each kernel)",
        *requires,
    ]


def print_machine(info: dict) -> None:
    rows = [
        ("fastpw", info["fastpw_version"]),
        ("CPU", info["cpu_model"]),
        ("python / numpy", f"{info['python']} / {info['numpy']} ({info['machine']})"),
        ("CPU features", " ".join(info["cpu_features"]) or "(none detected)"),
        ("kernels", f"{info['isa']} (available, best first: {', '.join(info['available_isas'])})"),
        ("", ", ".join(f"{op}: {family}" for op, family in info["kernel_per_operation"].items())),
        (
            "OpenMP",
            f"{'on' if info['openmp'] else 'off'}; "
            f"using {info['threads']} thread(s), default {info['max_threads']}",
        ),
    ]
    if info["fma_peak_gflops_1thread"] is None:
        rows.append(("FMA peak", f"unavailable ({info['fma_peak_error']})"))
    else:
        rows.append(("FMA peak", f"{info['fma_peak_gflops_1thread']:.1f} GFLOP/s per thread"))
        rows.append(("", f"({info['fma_peak_method']})"))
    if info["int8_peak_gops_1thread"] is None:
        rows.append(("int8 peak", f"unavailable ({info['int8_peak_error']})"))
    else:
        rows.append(("int8 peak", f"{info['int8_peak_gops_1thread']:.1f} GOP/s per thread"))
        rows.append(("", f"({info['int8_peak_method']})"))
    rows.append(("memory", f"{info['memory_bandwidth_gbs']:.1f} GB/s"))
    rows.append(("", f"({info['memory_bandwidth_method']})"))
    if info["numpy_blas"]:
        blas = ", ".join(f"{b['internal_api']} {b['version']}" for b in info["numpy_blas"])
        rows.append(("numpy BLAS", blas))
    if info["load_average_1min"] is not None:
        load, cpus = info["load_average_1min"], info["cpu_count"] or 1
        busy = (
            "  BUSY: other processes share the cores; rows whose rounds disagree are "
            "marked unsteady and give no ratio"
        )
        rows.append(("load", f"{load:.2f} on {cpus} CPUs{busy if load > cpus / 2 else ''}"))
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value}")


# ------------------------------------------------------------------------- correctness


def _random(rng, shape):
    return rng.standard_normal(shape, np.float32)


def correctness_cases(threads: int):
    """Yield ``(label, run)``; ``run()`` returns ``(result_region, reference, untouched_ok)``."""
    rng = np.random.default_rng(1)

    def functional(c, k, h, w, layout, label, **options):
        groups = options.get("groups", 1)
        x_shape = (1, c, h, w) if layout == "NCHW" else (1, h, w, c)
        x, weight, bias = _random(rng, x_shape), _random(rng, (k, c // groups)), _random(rng, k)

        def run():
            y = fastpw.conv1x1(x, weight, bias, layout=layout, num_threads=threads, **options)
            ref = conv1x1_reference(x, weight, bias, layout=layout, **options)
            return y, ref, True

        return label, run

    def concat(c, k, h, w, layout, lo, label):
        """Write channels [lo, lo + k) of a wider buffer; the rest must stay untouched."""
        x_shape = (1, c, h, w) if layout == "NCHW" else (1, h, w, c)
        x, weight, bias = _random(rng, x_shape), _random(rng, (k, c, 1, 1)), _random(rng, k)
        total = lo + k + 16

        def run():
            layer = fastpw.Conv1x1(weight, bias, layout=layout, activation="relu")
            if layout == "NCHW":
                buf = np.full((1, total, h, w), 7.0, np.float32)
                region = buf[:, lo : lo + k]
            else:
                buf = np.full((1, h, w, total), 7.0, np.float32)
                region = buf[..., lo : lo + k]
            layer(x, out=region, num_threads=threads)
            if layout == "NCHW":
                rest = np.concatenate([buf[:, :lo], buf[:, lo + k :]], axis=1)
            else:
                rest = np.concatenate([buf[..., :lo], buf[..., lo + k :]], axis=-1)
            ref = conv1x1_reference(x, weight, bias, layout=layout, activation="relu")
            return region, ref, bool(np.all(rest == 7.0))

        return label, run

    big = STANDARD_SHAPES[8]  # resnet50 1024->256 14x14: long reduction
    x, weight, bias = make_inputs(big, "NCHW", seed=2)

    def run_big():
        layer = fastpw.Conv1x1(weight, bias, layout="NCHW")
        return layer(x, num_threads=threads), conv1x1_reference(x, weight, bias), True

    yield f"{big.name}, NCHW, bias, Conv1x1", run_big
    yield functional(37, 29, 13, 11, "NHWC", "37->29 13x11, NHWC, edge tiles")
    yield functional(
        64, 96, 15, 17, "NHWC", "64->96 15x17, NHWC, stride 2, relu", stride=2, activation="relu"
    )
    yield functional(
        64,
        128,
        9,
        11,
        "NCHW",
        "64->128 9x11, NCHW, stride (2,1), groups 4, relu6",
        stride=(2, 1),
        groups=4,
        activation="relu6",
    )
    yield functional(
        48, 40, 10, 10, "NCHW", "48->40 10x10, NCHW, clamp (-0.5, 0.5)", activation=(-0.5, 0.5)
    )
    yield concat(96, 64, 13, 13, "NCHW", 64, "96->64 13x13, NCHW, out=buf[:, 64:128], relu")
    yield concat(96, 64, 13, 13, "NHWC", 32, "96->64 13x13, NHWC, out=buf[..., 32:96], relu")


def check_correctness(threads: int) -> list[dict]:
    results = []
    cases = list(correctness_cases(threads))
    width = max(len(label) for label, _ in cases)
    print(f"{'case':<{width}}  max rel err  result")
    for label, run in cases:
        try:
            result, reference, untouched = run()
            if result.shape != reference.shape:
                raise ValueError(f"output shape {result.shape}, expected {reference.shape}")
            error = max_relative_error(result, reference)
            ok = error <= RELATIVE_TOLERANCE and untouched
            note = "" if untouched else "  (wrote outside its out slice)"
        except Exception as exc:  # report and go on: one broken path must not hide the rest
            error, ok, note = None, False, f"  ({type(exc).__name__}: {exc})"
        shown = "-" if error is None else f"{error:.1e}"
        print(f"{label:<{width}}  {shown:>11}  {'PASS' if ok else 'FAIL'}{note}")
        results.append({"case": label, "max_rel_error": error, "passed": ok, "note": note.strip()})
    return results


# --------------------------------------------------------------------------- benchmark


class PeakCeiling:
    """The ceiling %peak is taken against: the single-thread probe of ``operation``'s
    kernel (PEAK_PROBES) times the threads used. A layer measured above it means the
    probe ran low (another process had the core then): probe again, longer, and keep the
    best; a layer still above gets no %peak rather than one over 100 %."""

    def __init__(self, per_thread: float | None, threads: int, operation: str = "float32"):
        self.per_thread, self.threads, self.operation = per_thread, threads, operation

    def percent(self, achieved: float) -> float | None:
        if not self.per_thread:
            return None
        if achieved > self.per_thread * self.threads:
            probe, _ = probe_peak(self.operation, seconds=0.6)
            self.per_thread = max(self.per_thread, probe or 0.0)
        ceiling = self.per_thread * self.threads
        return 100 * achieved / ceiling if achieved <= ceiling else None


#: Rounds of measure_interleaved per layer: full run, --quick.
ROUNDS = {False: 7, True: 3}


def timing_settings(threads: int, quick: bool, names, idle: float) -> dict:
    """measure_interleaved's settings: fewer, shorter rounds with --quick; with more than
    one thread, a wait after each implementation's sample before another's. Every pool
    spins after a call (OpenBLAS and ONNX Runtime for about 0.1 s, OpenMP, PyTorch's
    and XNNPACK's briefly): a sample taken then shares the cores with it. One thread
    leaves the other cores to those pools, so it needs no wait. --quick skips the waits
    too: they were most of its time on 2 threads (5 of 5.5 minutes with every peer), and
    its numbers are a first look, not a comparison to quote."""
    settings: dict = {"rounds": ROUNDS[quick]}
    if quick:
        settings["target_seconds"] = 0.12
    settings["idle_after"] = {name: idle for name in names} if threads > 1 and not quick else {}
    return settings


def record(row: dict, name: str, spread, flops: int, unit: str = "gflops") -> None:
    """A measured implementation's columns: the median and the spread of its rounds."""
    row[f"{name}_{unit}"] = gflops(flops, spread.median)
    row[f"{name}_min_{unit}"] = gflops(flops, spread.max)
    row[f"{name}_max_{unit}"] = gflops(flops, spread.min)
    row[f"{name}_spread"] = spread.relative_spread
    # The same median under one key per implementation ("fastpw_NCHW", "numpy_NHWC",
    # ...), for readers of the JSON report and the plot.
    row.setdefault("rates", {})[name] = row[f"{name}_{unit}"]
    row.setdefault("unsteady", [])
    if not spread.steady:
        row["unsteady"].append(name)


def peer_versions(dtype: str = "float32") -> str:
    """The peers this report times for ``dtype``, with versions, and how to add the
    missing ones."""
    present, missing = ["numpy"] if dtype == "float32" else [], []
    optional = (
        ("onnxruntime", onnxruntime_version(), BENCH_INSTALL),
        ("torch", torch_version(), "pip install torch"),
        ("XNNPACK (ai-edge-litert)", litert_version(), BENCH_INSTALL),
    )
    for name, version, install in optional:
        if version:
            present.append(f"{name} {version}")
        else:
            missing.append(f"{name} ({install})")
    note = ", ".join(present)
    return note + (f"; not installed: {', '.join(missing)}" if missing else "")


def _build_peers(builders: dict, check) -> tuple[dict, dict]:
    """Build each peer (``builders``: name -> function returning ``(call, out)``) and
    ``check(name, result)`` the result of a call; returns ``(calls, absent)``. A peer that cannot
    run the layer, or whose check raises, is left out with the reason in ``absent``:
    one peer's failure must not hide the others."""
    calls, absent = {}, {}
    for name, build in builders.items():
        try:
            call, _ = build()
            check(name, call())  # a fresh call: some peers' out is only a buffer
        except Exception as error:
            absent[name] = f"{type(error).__name__}: {error}"
            continue
        calls[name] = call
    return calls, absent


def float_peers(x, weight, bias, layout: str, threads: int, shape: LayerShape) -> tuple[dict, dict]:
    """The float32 peers importable here, each on the row's threads: numpy's bare matmul
    (no bias: the strictest baseline), ONNX Runtime's Conv, PyTorch's conv2d and, in
    NHWC, XNNPACK (all with bias), the last three checked against the float64
    reference before they are timed; ``shape`` gives the stride and groups. Returns
    ``(calls, absent)`` (``_build_peers``)."""
    options = shape.options
    builders = {"numpy": functools.partial(numpy_baseline, x, weight, layout, **options)}
    if onnxruntime_version() is not None:
        builders["onnxruntime"] = functools.partial(
            onnxruntime_conv, x, weight, bias, threads, layout, **options
        )
    if torch_version() is not None:
        builders["torch"] = functools.partial(
            torch_conv2d, x, weight, bias, threads, layout, **options
        )
    if layout == "NHWC" and litert_version() is not None:
        # TensorFlow Lite reads the groups from the filter's depth.
        builders["xnnpack"] = functools.partial(
            xnnpack_conv, x, weight, bias, threads, stride=shape.stride
        )

    def check(name: str, out) -> None:
        if name == "numpy":  # the bare matmul: no bias to compare
            return
        outside, error = float32_errors(out, x, weight, bias, layout, **options)
        if outside:
            raise RuntimeError(f"{outside} values off the reference (max rel {error:.1e})")

    return _build_peers(builders, check)


def torch_kernels(call) -> str:
    """What a PyTorch float32 peer ran: oneDNN's kernel (with its ISA) where torch chose
    oneDNN, else ATen's backend (``torch_conv2d`` records it)."""
    found = onednn_kernels(call)
    return f"oneDNN {found}" if found else f"ATen {getattr(call, 'backend', 'unknown')}"


def print_kernels(rows: list, operation: str) -> None:
    """Which kernels (and ISA) each implementation ran, where it can be found: fastpw's
    own table, OpenBLAS's architecture (threadpoolctl), oneDNN's verbose log for torch
    (per layer, as torch's choice varies); ONNX Runtime (MLAS) and XNNPACK choose by
    CPUID and do not say."""
    family = fastpw.isa(operation)
    kernel = next(r[operation] for r in fastpw.kernel_table() if r["family"] == family)
    lines = [f"fastpw: {kernel['kernel']} (family {family})"]
    keys = list(dict.fromkeys(key for row in rows for key in row["rates"]))
    if any(key.startswith("numpy_") for key in keys) and threadpoolctl is not None:
        for pool in threadpoolctl.threadpool_info():
            if pool.get("user_api") == "blas":
                architecture = pool.get("architecture") or "architecture not reported"
                lines.append(f"numpy: {pool['internal_api']} {pool['version']} ({architecture})")
    if any(key.startswith("onnxruntime_") for key in keys):
        lines.append("ORT: MLAS, which picks its kernels by CPUID and does not report them")
    for key in keys:
        found = [row["kernels"][key] for row in rows if key in row.get("kernels", {})]
        if found:
            counts = {text: found.count(text) for text in dict.fromkeys(found)}
            listed = "; ".join(f"{text} ({count} layers)" for text, count in counts.items())
            lines.append(f"{implementation_label(key)}: {listed}")
    if any(key.startswith("xnnpack_") for key in keys):
        lines.append("XNNPACK: picks its kernels by CPUID; LiteRT does not report them")
    print("Kernels each implementation ran, where it can be found:")
    print("\n".join(f"  {line}" for line in lines))


def compare_with_best(row: dict, layouts, peers_of: dict, marked=()) -> None:
    """The ratio columns of a row: fastpw against the best peer in each layout, and
    fastpw's better layout against the best peer in any layout. Ratios only from steady
    rows; the best peer's name always, with a * when its key is in ``marked``."""
    rates, steady = row["rates"], not row["unsteady"]

    def named(key: str, text: str) -> str:
        return f"{rates[key]:.1f} {text}{'*' if key in marked else ''}"

    every_peer = []
    for layout in layouts:
        peers = [f"{name}_{layout}" for name in peers_of[layout]]
        every_peer += peers
        if not peers:
            continue
        best = max(peers, key=rates.__getitem__)
        row[f"best_{layout}"] = named(best, implementation_label(best).rsplit(" ", 1)[0])
        if steady:
            row[f"fastpw_{layout}_vs_best"] = rates[f"fastpw_{layout}"] / rates[best]
    if every_peer:
        best = max(every_peer, key=rates.__getitem__)
        mine = max((f"fastpw_{layout}" for layout in layouts), key=rates.__getitem__)
        row["best_any"] = named(best, implementation_label(best))
        if steady:
            row["fastpw_vs_best_any"] = rates[mine] / rates[best]


def benchmark_shape(shape: LayerShape, layouts, threads: int, ceiling, quick: bool) -> dict:
    """Time one layer, fastpw and every float32 peer interleaved round by round
    (``measure_interleaved``); GFLOP/s from the median round. Ratios (fastpw against
    numpy, against the best peer in the same layout, and its better layout against the
    best peer in any layout) only from steady rows: a row whose rounds spread more than
    SPREAD_LIMIT is marked instead. ``ceiling``: a PeakCeiling (or None)."""
    row = {"shape": shape.name, "dtype": "float32", "layer": dataclasses.asdict(shape)}
    row.update(flops=shape.flops, threads=threads, absent={}, kernels={})
    calls, peers_of = {}, {}
    for layout in layouts:
        x, weight, bias = make_inputs(shape, layout)
        layer = fastpw.Conv1x1(weight, bias, layout=layout, **shape.options)
        out = empty_output(x, shape.c_out, layout, stride=shape.stride)
        calls[f"fastpw_{layout}"] = functools.partial(layer, x, out=out, num_threads=threads)
        peers, absent = float_peers(x, weight, bias, layout, threads, shape)
        peers_of[layout] = list(peers)
        calls.update({f"{name}_{layout}": call for name, call in peers.items()})
        row["absent"].update({f"{name}_{layout}": why for name, why in absent.items()})
        if "torch" in peers:
            row["kernels"][f"torch_{layout}"] = torch_kernels(peers["torch"])
    time.sleep(BLAS_IDLE_SECONDS)  # BLAS threads from earlier numpy work go idle
    spreads = measure_interleaved(
        calls, **timing_settings(threads, quick, calls, BLAS_IDLE_SECONDS)
    )
    for name, spread in spreads.items():
        record(row, name, spread, shape.flops)
    compare_with_best(row, layouts, peers_of)
    for layout in layouts:
        achieved = row[f"fastpw_{layout}_gflops"]
        if not row["unsteady"] and f"numpy_{layout}" in row["rates"]:
            row[f"fastpw_{layout}_speedup"] = achieved / row[f"numpy_{layout}_gflops"]
        row[f"fastpw_{layout}_percent_of_peak"] = ceiling.percent(achieved) if ceiling else None
    row["steady"] = "yes" if not row["unsteady"] else "NO"
    return row


#: fastpw's better layout against the best peer in any layout (compare_with_best).
BEST_ANY_COLUMNS = [
    ("best peer, any layout", "best_any", "{}"),
    ("vs best", "fastpw_vs_best_any", "{:.2f}x"),
]


class Table:
    """Fixed-width table printed row by row, so progress shows while layers are timed.

    ``columns``: (header, row key, format of the value) after the shape; by default the
    float32 table's columns for ``layouts``.
    """

    def __init__(self, layouts, shape_width: int, columns=None):
        # (header, row key, format of the value); widths come from the headers.
        self.columns = [("shape", "shape", "{}")]
        if columns is not None:
            self.columns += columns
        else:
            for lay in layouts:
                self.columns += [
                    (f"fastpw {lay}", f"fastpw_{lay}_gflops", "{:.1f}"),
                    (f"best peer {lay}", f"best_{lay}", "{}"),
                    ("vs best", f"fastpw_{lay}_vs_best", "{:.2f}x"),
                ]
            self.columns += BEST_ANY_COLUMNS
            self.columns += [
                (f"{lay} %peak", f"fastpw_{lay}_percent_of_peak", "{:.0f}%") for lay in layouts
            ]
            self.columns.append(("steady", "steady", "{}"))
        self.widths = [shape_width] + [max(len(h), 7) for h, _, _ in self.columns[1:]]

    def _line(self, cells) -> str:
        first, *rest = cells
        parts = [f"{first:<{self.widths[0]}}"]
        parts += [f"{cell:>{width}}" for cell, width in zip(rest, self.widths[1:], strict=False)]
        return "  ".join(parts).rstrip()

    def header(self) -> None:
        print(self._line([header for header, _, _ in self.columns]))
        self.rule()

    def rule(self) -> None:
        print(self._line(["-" * width for width in self.widths]))

    def row(self, row: dict, missing: str = "-") -> None:
        cells = [
            missing if row.get(key) is None else fmt.format(row[key])
            for _, key, fmt in self.columns
        ]
        print(self._line(cells), flush=True)


SUMMARY_LABEL = "geometric mean"
UNSTEADY_NOTE = (
    "steady = every implementation's rounds agree (interquartile range <= "
    f"{SPREAD_LIMIT:.0%} of the median); rows marked NO show their GFLOP/s but no "
    "ratio, and the geometric means are over the steady rows only."
)


def geometric_mean(values) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def busy_note() -> str:
    """A warning for a table's header when the machine is busy now (the load average
    above half the CPUs this process may use), else ""."""
    load, cpus = machine_load()
    if load is None or load <= cpus / 2:
        return ""
    return (
        f"BUSY machine: load average {load:.2f} on {cpus} CPUs. Other processes share the "
        "cores: expect unsteady rows (no ratio) and lower rates.\n"
    )


def print_summary(table: Table, rows: list, ratio_keys) -> None:
    """The geometric mean of each ratio column over the rows that have it (the steady
    ones), and how many rows were steady."""
    summary = {"shape": SUMMARY_LABEL}
    for key in ratio_keys:
        values = [row[key] for row in rows if row.get(key)]
        if values:
            summary[key] = geometric_mean(values)
    summary["steady"] = f"{sum(row['steady'] == 'yes' for row in rows)}/{len(rows)}"
    table.rule()
    table.row(summary, missing="")


def print_matrix(rows: list, title: str, keys, cell) -> None:
    """A table with one column per implementation key, headed by its label, and
    ``cell(row, key)`` in it, or "-" where that gives None."""
    width = max(len(label) for label in [row["shape"] for row in rows] + ["shape"])
    table = Table((), width, columns=[(implementation_label(key), key, "{}") for key in keys])
    cells = [{"shape": row["shape"]} | {key: cell(row, key) for key in keys} for row in rows]
    for column, key in enumerate(keys, start=1):
        longest = max(len(shown[key] or "") for shown in cells)
        table.widths[column] = max(table.widths[column], longest)
    print(f"\n{title}")
    table.header()
    for shown in cells:
        table.row(shown)


def print_every_implementation(rows: list, unit: str) -> None:
    """Every implementation timed (fastpw and each peer, each layout): the median rate
    and the interquartile range of its rounds, then why a peer did not run a layer."""
    appearance = list(dict.fromkeys(key for row in rows for key in row["rates"]))
    layouts = list(dict.fromkeys(key.rsplit("_", 1)[1] for key in appearance))
    # By layout, fastpw first, then the peers in the order they were timed.
    keys = sorted(
        appearance,
        key=lambda key: (
            layouts.index(key.rsplit("_", 1)[1]),
            not key.startswith("fastpw_"),
            appearance.index(key),
        ),
    )

    def rate(row: dict, key: str) -> str | None:
        if key not in row["rates"]:
            return None
        return f"{row['rates'][key]:.1f} ±{row[f'{key}_spread']:.0%}"

    title = f"Every implementation, {unit} (median of the rounds ±interquartile range):"
    print_matrix(rows, title, keys, rate)
    for row in rows:
        for key, why in row.get("absent", {}).items():
            print(f"  not run: {row['shape']}, {implementation_label(key)}: {why}")


# ---------------------------------------------------------------------- int8 benchmark

#: Wait after ONNX Runtime, BLAS (the numpy int8 formula) or fastpw work before timing
#: the other: their idle threads spin for a while (see fastpw._timing).
INT8_IDLE_SECONDS = max(BLAS_IDLE_SECONDS, ORT_IDLE_SECONDS)


def _from_nchw(y: np.ndarray, layout: str) -> np.ndarray:
    return y if layout == "NCHW" else y.transpose(0, 2, 3, 1)


def _int8_reference(inputs) -> np.ndarray:
    """The uint8 output the int8 contract gives for ``inputs`` (fastpw.testing)."""
    return qconv1x1_reference(inputs.x, inputs.weight, inputs.bias, **inputs.layer_options)


def int8_peers(inputs, expected, threads: int) -> tuple[dict, dict, dict]:
    """The 8-bit peers importable here on ``inputs``' layout, each on ``threads``: ONNX
    Runtime's QLinearConv (NCHW: the ONNX operator; NHWC: ``com.microsoft`` with
    channels_last), PyTorch's quantized Conv2d on each of its engines, and, in NHWC,
    XNNPACK. Returns ``(calls, differences, absent)``: each peer's ``Int8Differences``
    from the formula's ``expected`` output (a peer that differs is timed all the same,
    and the tables say by how much), and why a peer did not run (``_build_peers``)."""
    layout = inputs.layout
    builders = {}
    if onnxruntime_version() is not None:
        peer = onnxruntime_qlinearconv if layout == "NCHW" else onnxruntime_qlinearconv_nhwc
        builders["onnxruntime"] = functools.partial(peer, inputs, threads)
    for engine in torch_quantized_engines():
        builders[f"torch-{engine}"] = functools.partial(torch_qconv2d, inputs, threads, engine)
    if layout == "NHWC" and litert_version() is not None:
        builders["xnnpack"] = functools.partial(xnnpack_qconv, inputs, threads)
    differences = {}

    def check(name: str, out) -> None:
        differences[name] = int8_differences(out, inputs, expected)

    calls, absent = _build_peers(builders, check)
    return calls, differences, absent


def exactness(differences: Int8Differences) -> str:
    """A peer's difference from the int8 formula, as the tables show it."""
    if differences.exact:
        return "exact"
    if not differences.by_more:
        return f"{differences.by_one} off by 1"
    return f"{differences.by_one + differences.by_more} off (max {differences.largest})"


def benchmark_int8_shape(
    shape: LayerShape, layouts, threads: int, float_row: dict | None, quick: bool, ceiling=None
) -> dict:
    """Check, then time, one layer in int8: fastpw and every 8-bit peer (``int8_peers``)
    interleaved round by round; GOP/s from the median round, ratios only from steady
    rows (as benchmark_shape), also against fastpw float32 in the same layout
    (``float_row``); ``ceiling``: the int8 PeakCeiling (or None).

    ``exact``: "yes" when fastpw's uint8 output equals the int8 formula
    (``fastpw.testing.qconv1x1_reference``) bit for bit in every layout, else "NO".
    Each peer's difference from the formula is in ``differences`` (and shown by
    ``exactness``): on x86 without VNNI, ONNX Runtime's and oneDNN's/fbgemm's u8s8
    kernels saturate 16-bit pair sums.
    """
    row = {"shape": shape.name, "dtype": "int8", "layer": dataclasses.asdict(shape)}
    row.update(ops=shape.flops, threads=threads, absent={}, differences={}, kernels={})
    timed, peers_of, fastpw_exact = {}, {}, True
    for layout in layouts:
        inputs = make_int8_inputs(shape, layout)
        expected = _from_nchw(_int8_reference(make_int8_inputs(shape, "NCHW")), layout)
        layer = quantized_layer(inputs)
        out = empty_output(inputs.x, shape.c_out, layout, np.uint8, shape.stride)
        timed[f"fastpw_{layout}"] = functools.partial(layer, inputs.x, out=out, num_threads=threads)
        timed[f"fastpw_{layout}"]()  # correctness, outside the timing
        if not np.array_equal(out, expected):
            fastpw_exact = False
            row[f"fastpw_{layout}_mismatches"] = int(np.count_nonzero(out != expected))
        peers, differences, absent = int8_peers(inputs, expected, threads)
        peers_of[layout] = list(peers)
        timed.update({f"{name}_{layout}": call for name, call in peers.items()})
        for name, call in peers.items():
            if name.startswith("torch-"):
                found = onednn_kernels(call)
                engine = name.removeprefix("torch-")
                # torch's "x86" engine runs oneDNN or fbgemm, whichever it finds faster
                ran = "fbgemm" if engine == "x86" else engine
                row["kernels"][f"{name}_{layout}"] = f"oneDNN {found}" if found else ran
        for name, difference in differences.items():
            row["differences"][f"{name}_{layout}"] = dataclasses.asdict(difference)
        row["absent"].update({f"{name}_{layout}": why for name, why in absent.items()})
    row["exact"] = "yes" if fastpw_exact else "NO"
    inexact = [key for key, d in row["differences"].items() if d["by_one"] or d["by_more"]]
    row["peers_exact"] = f"{len(row['differences']) - len(inexact)}/{len(row['differences'])}"

    time.sleep(INT8_IDLE_SECONDS)  # ONNX Runtime's and BLAS's threads go idle
    spreads = measure_interleaved(
        timed, **timing_settings(threads, quick, timed, INT8_IDLE_SECONDS)
    )
    for name, spread in spreads.items():
        record(row, name, spread, shape.flops, unit="gops")
    compare_with_best(row, layouts, peers_of, marked=inexact)
    # A peer that gets a different answer may be faster for it (ONNX Runtime's saturating
    # pairs): fastpw against the fastest peer whose output equals the formula, too.
    exact = [key for key in row["differences"] if key not in inexact]
    if exact:
        best = max(exact, key=row["rates"].__getitem__)
        mine = max((f"fastpw_{layout}" for layout in layouts), key=row["rates"].__getitem__)
        row["best_exact"] = f"{row['rates'][best]:.1f} {implementation_label(best)}"
        if not row["unsteady"]:
            row["fastpw_vs_best_exact"] = row["rates"][mine] / row["rates"][best]
    steady = not row["unsteady"]
    for layout in layouts:
        achieved = row[f"fastpw_{layout}_gops"]
        if steady and float_row and float_row.get(f"fastpw_{layout}_gflops"):
            row[f"fastpw_{layout}_vs_f32"] = achieved / float_row[f"fastpw_{layout}_gflops"]
        row[f"fastpw_{layout}_percent_of_peak"] = ceiling.percent(achieved) if ceiling else None
    row["steady"] = "yes" if steady else "NO"
    return row


def int8_columns(layouts) -> list:
    columns = []
    for lay in layouts:
        columns += [
            (f"fastpw {lay}", f"fastpw_{lay}_gops", "{:.1f}"),
            (f"best peer {lay}", f"best_{lay}", "{}"),
            ("vs best", f"fastpw_{lay}_vs_best", "{:.2f}x"),
        ]
    columns += BEST_ANY_COLUMNS
    columns += [
        ("best exact peer, any layout", "best_exact", "{}"),
        ("vs exact", "fastpw_vs_best_exact", "{:.2f}x"),
    ]
    columns += [(f"{lay} vs f32", f"fastpw_{lay}_vs_f32", "{:.2f}x") for lay in layouts]
    columns += [(f"{lay} %peak", f"fastpw_{lay}_percent_of_peak", "{:.0f}%") for lay in layouts]
    columns += [("exact", "exact", "{}"), ("peers exact", "peers_exact", "{}")]
    columns.append(("steady", "steady", "{}"))
    return columns


def run_int8(
    shapes, layouts, threads: int, float_rows: list, quick: bool, ceiling=None
) -> tuple[list, bool]:
    """Print the int8 tables; return their rows and whether every fastpw result was
    right. ``ceiling``: the int8 PeakCeiling (or None)."""
    print()
    exact = (
        "exact = fastpw's uint8 output equals the int8 formula (qconv1x1_reference) bit for "
        "bit; peers exact = how many peers do (each peer's difference is in the last "
        "table); * = this peer's result differs from the formula; best exact peer = the "
        "fastest peer whose output equals the formula"
    )
    print(
        f"Benchmark: int8 (uint8 x, int8 per-channel weights, int32 bias, uint8 output), "
        f"batch {shapes[0].batch}, {threads} thread(s), prepacked QConv1x1 "
        f"(kernels {fastpw.isa('int8')}), "
        f"median of {ROUNDS[quick]} rounds interleaved with the peers: {peer_versions('int8')}. "
        "ONNX Runtime: QLinearConv on NCHW input, com.microsoft QLinearConv with "
        "channels_last=1 on NHWC input; PyTorch: quantized Conv2d on each engine; "
        "XNNPACK: TensorFlow Lite's int8 CONV_2D (NHWC), its output shifted back to uint8."
    )
    print(
        f"GOP/s = 2*N*C*K*H*W / time. vs best = fastpw / the fastest peer; vs f32 = fastpw "
        f"int8 / fastpw float32 (table above) in the same layout; %peak = fastpw / (int8 "
        f"peak x threads used). {exact}.\n"
    )
    print(busy_note(), end="")
    by_shape = {row["shape"]: row for row in float_rows}
    names = [shape.name for shape in shapes]
    table = Table(
        layouts,
        max(len(label) for label in [SUMMARY_LABEL, *names]),
        columns=int8_columns(layouts),
    )
    table.header()
    rows = []
    for shape in shapes:
        float_row = by_shape.get(shape.name)
        rows.append(benchmark_int8_shape(shape, layouts, threads, float_row, quick, ceiling))
        table.row(rows[-1])
    ratios = [f"fastpw_{lay}_{what}" for lay in layouts for what in ("vs_best", "vs_f32")]
    print_summary(table, rows, [*ratios, "fastpw_vs_best_any", "fastpw_vs_best_exact"])
    print(UNSTEADY_NOTE)
    print_every_implementation(rows, "GOP/s")
    print_kernels(rows, "int8")
    peers = list(dict.fromkeys(key for row in rows for key in row["differences"]))

    def difference(row: dict, key: str) -> str | None:
        found = row["differences"].get(key)
        return None if found is None else exactness(Int8Differences(**found))

    title = "Each peer's uint8 output against the int8 formula (values that differ):"
    print_matrix(rows, title, peers, difference)
    passed = all(row["exact"] != "NO" for row in rows)
    if not passed:
        print("\nint8 results differ from the int8 formula: see the rows marked NO.")
    return rows, passed


# ------------------------------------------------------------------------------- sweep


def sweep_line(line: SweepLine, threads: int, quick: bool) -> list[dict]:
    """Time every point of ``line`` in both layouts, all interleaved round by round (a
    busy spell of the machine falls on the whole line alike, not on one point); a
    point's rate is from its best round, as a cliff is what stays when the noise is
    gone. Each point is checked against the float64 reference first."""
    calls, points = {}, {}
    for shape in line.shapes:
        for layout in LAYOUTS:
            x, weight, bias = make_inputs(shape, layout)
            layer = fastpw.Conv1x1(weight, bias, layout=layout)
            out = empty_output(x, shape.c_out, layout)
            error = max_relative_error(
                layer(x, out=out, num_threads=threads),
                conv1x1_reference(x, weight, bias, layout=layout),
            )
            if error > RELATIVE_TOLERANCE:
                raise AssertionError(f"{shape.name} {layout}: max relative error {error:.2e}")
            key = f"{shape.slug}_{layout}"
            calls[key] = functools.partial(layer, x, out=out, num_threads=threads)
            points[key] = {"shape": shape.name, "size": line.size(shape), "layout": layout}
            points[key]["flops"] = shape.flops
    spreads = measure_interleaved(calls, rounds=ROUNDS[quick], target_seconds=0.3 if quick else 1.0)
    for key, spread in spreads.items():
        points[key]["gflops"] = gflops(points[key]["flops"], spread.min)
    for layout in LAYOUTS:
        along = [points[f"{shape.slug}_{layout}"] for shape in line.shapes]
        ratios = trend_ratios([p["size"] for p in along], [p["gflops"] for p in along])
        for point, ratio in zip(along, ratios, strict=True):
            point["vs_trend"] = ratio
    return list(points.values())


def run_sweep(args: argparse.Namespace, info: dict, threads: int) -> int:
    """``--sweep``: print each line's GFLOP/s and trend ratios per layout, then the
    cliffs; write them to --json and draw them to --plot."""
    print(
        f"\nSweep: float32 fastpw (kernels {fastpw.isa('float32')}), batch 1, {threads} "
        f"thread(s), GFLOP/s from the best of {ROUNDS[args.quick]} interleaved rounds; vs "
        "trend = the rate over the line through its two neighbours (log-log); CLIFF "
        f"= below {CLIFF_RATIO}x."
    )
    print(busy_note(), end="")
    lines = []
    for line in SWEEP_LINES:
        points = sweep_line(line, threads, args.quick)
        lines.append({"title": line.title, "varies": line.varies, "points": points})
        by_key = {(p["size"], p["layout"]): p for p in points}
        print(f"\n{line.title}")
        header = f"{'size':>6}" + "".join(f"  {lay:>6} GFLOP/s  vs trend" for lay in LAYOUTS)
        print(header)
        print("-" * len(header))
        for shape in line.shapes:
            size = line.size(shape)
            cells = []
            for layout in LAYOUTS:
                point = by_key[(size, layout)]
                mark = " CLIFF" if point["vs_trend"] < CLIFF_RATIO else ""
                cells.append(f"  {point['gflops']:14.1f}  {point['vs_trend']:7.2f}x{mark:6}")
            print(f"{size:>6}" + "".join(cells))
    cliffs = [
        f"{p['shape']} {p['layout']} ({p['vs_trend']:.2f}x)"
        for line in lines
        for p in line["points"]
        if p["vs_trend"] < CLIFF_RATIO
    ]
    print(f"\nCliffs (below {CLIFF_RATIO}x the neighbours' trend): {', '.join(cliffs) or 'none'}")
    report = {"machine": info, "sweep": lines}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
        print(f"\nwrote {args.json}")
    if args.plot:
        draw_sweep(report, args.plot)
        print(f"wrote {args.plot}")
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.kernels:
        print("\n".join(kernel_table_lines()))
        return 0
    if args.plot and matplotlib_missing():
        print(f"python -m fastpw: error: {matplotlib_missing()}", file=sys.stderr)
        return 2
    load, cpus = machine_load()
    # By default as many threads as there are idle cores (within fastpw's own cap): a
    # thread that shares its core with another process times that process too. Only
    # where threadpoolctl can hold numpy's BLAS to the same count: otherwise BLAS keeps
    # its default, and fastpw must too for the two to be compared.
    idle_cores = max(1, cpus - math.floor(load)) if load is not None else cpus
    threads = args.threads or int(fastpw.max_threads())
    if not args.threads and threadpoolctl is not None:
        threads = max(1, min(threads, idle_cores))
    layouts = ("NCHW", "NHWC") if args.layout == "BOTH" else (args.layout,)
    standard = [s for s in STANDARD_SHAPES if args.shapes.lower() in s.name.lower()]
    if args.shape:  # the user's own layers; standard ones only where --shapes asks
        shapes = (standard if args.shapes else []) + args.shape
    else:
        shapes = standard
    shapes = [shape.with_batch(args.batch) for shape in shapes]
    names = [shape.name for shape in shapes]
    if not shapes:
        every = "\n  ".join(shape.name for shape in STANDARD_SHAPES)
        print(f"no layer name contains {args.shapes!r}; the layers are:\n  {every}")
        return 2

    info = machine_info(threads, peak_seconds=0.1 if args.quick else 0.3)
    peak = info["fma_peak_gflops_1thread"]
    print_machine(info)
    if args.sweep:
        return run_sweep(args, info, threads)
    print("\nKernel families of this build, best first (python -m fastpw --kernels)")
    print("\n".join(kernel_table_lines()))

    print(
        f"\nCorrectness against float64 numpy (tolerance {RELATIVE_TOLERANCE:.0e}, "
        f"{threads} thread(s))"
    )
    checks = check_correctness(threads)
    passed = all(c["passed"] for c in checks)

    rows, int8_rows = [], []
    if passed:
        if threadpoolctl is not None:
            blas_note = f"numpy's BLAS limited to {threads} thread(s) with threadpoolctl"
            limits = threadpoolctl.threadpool_limits(limits=threads, user_api="blas")
        else:
            blas_note = (
                "threadpoolctl not installed: numpy's BLAS uses its default threads "
                f"(install it with: {BENCH_INSTALL})"
            )
            limits = nullcontext()
        print(
            f"\nBenchmark: float32, batch {args.batch}, {threads} thread(s), median of "
            f"{ROUNDS[args.quick]} rounds, fastpw and its peers interleaved; {blas_note}."
        )
        if not info["openmp"] and threads > 1:
            print("fastpw was built without OpenMP: its kernels run on 1 thread.")
        print(
            "GFLOP/s = 2*N*C*K*H*W / time. numpy NCHW = W @ X, numpy NHWC = X @ W.T (bare "
            "matmul; fastpw adds the bias too). best peer = the fastest of the peers in "
            f"the same layout, on as many threads: {peer_versions()}. best peer, any "
            "layout: against fastpw's better layout. %peak = fastpw / (FMA peak x threads "
            "used).\n"
        )
        print(busy_note(), end="")
        # A serial build runs on one core whatever it is asked for.
        ceiling = PeakCeiling(peak, threads if info["openmp"] else 1)
        table = Table(layouts, max(len(label) for label in [SUMMARY_LABEL, *names]))
        table.header()
        with limits:
            for shape in shapes:
                rows.append(benchmark_shape(shape, layouts, threads, ceiling, args.quick))
                table.row(rows[-1])
        ratios = [f"fastpw_{layout}_vs_best" for layout in layouts]
        print_summary(table, rows, [*ratios, "fastpw_vs_best_any"])
        print(UNSTEADY_NOTE)
        print_every_implementation(rows, "GFLOP/s")
        print_kernels(rows, "float32")
        if args.int8:
            used = threads if info["openmp"] else 1
            int8_ceiling = PeakCeiling(info["int8_peak_gops_1thread"], used, "int8")
            int8_rows, int8_passed = run_int8(
                shapes, layouts, threads, rows, args.quick, int8_ceiling
            )
            passed = passed and int8_passed
    else:
        print("\nCorrectness FAILED: benchmark skipped.")

    report = {"machine": info, "correctness": checks, "benchmark": rows}
    if args.int8:
        report["int8_benchmark"] = int8_rows
        report["onnxruntime"] = onnxruntime_version()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
        print(f"\nwrote {args.json}")
    if args.plot and rows:
        draw_report(report, args.plot)
        print(f"wrote {args.plot}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
