"""The benchmark regression workflow the README shows, end to end on one small row:
save a baseline, compare with it, and warn when the compared run ran other kernels.
The timings themselves are not judged (they are noise on a shared machine): only what
is recorded and said."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import fastpw

ROOT = Path(__file__).resolve().parent.parent
ONE_ROW = [str(ROOT / "bench" / "test_bench_f32.py"), "-k", "mobilenetv2-160 and NHWC-fastpw"]


def run_bench(storage: Path, *options: str) -> subprocess.CompletedProcess:
    """pytest on one benchmark row, from the folder that holds the storage
    (pytest-benchmark names a storage outside the working folder wrongly)."""
    command = [
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *ONE_ROW,
        "--fastpw-threads", "1", "--benchmark-enable", "--benchmark-min-rounds=3",
        "--benchmark-max-time=0.01", f"--benchmark-storage=file://{storage}", *options,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONWARNINGS": "default"}
    return subprocess.run(
        command, cwd=storage.parent, capture_output=True, text=True, env=env, timeout=300
    )


def test_saved_run_records_kernels_and_cpu_then_a_compare_warns_on_other_kernels(tmp_path):
    storage = tmp_path / "benchmarks"
    saved = run_bench(storage, "--benchmark-save=baseline")
    assert saved.returncode == 0, saved.stdout + saved.stderr
    assert "throughput (median round)" in saved.stdout and "GFLOP/s" in saved.stdout
    (baseline,) = storage.glob("*/0001_baseline.json")
    info = json.loads(baseline.read_text())["machine_info"]["fastpw"]
    assert info["version"] == fastpw.__version__
    assert info["kernels"] == {op: fastpw.isa(op) for op in fastpw.OPERATIONS}
    assert info["threads"] == [1] and info["cpu_model"]

    # The README's compare command, with a threshold no noise reaches (times are not
    # judged here).
    same = run_bench(storage, "--benchmark-compare=0001", "--benchmark-compare-fail=min:1000%")
    assert same.returncode == 0, same.stdout + same.stderr
    assert "compared runs differ" not in same.stdout + same.stderr

    other = json.loads(baseline.read_text())
    other["machine_info"]["fastpw"]["kernels"]["float32"] = "some-other-family"
    baseline.with_name("0002_other.json").write_text(json.dumps(other))
    compared = run_bench(storage, "--benchmark-compare=0002")
    assert compared.returncode == 0, compared.stdout + compared.stderr
    assert "float32 ran the some-other-family kernels then" in compared.stdout + compared.stderr
