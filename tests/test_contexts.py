"""fastpw in the calling contexts of real programs: forked workers, an outer OpenMP team,
thread requests past the cores, process limits, Ctrl-C, and the thread plan's arithmetic.

Most of these run a scenario of tests/scenarios.py in a child process with a timeout and
its own process group: a hang (libgomp after fork), a crash (scratch overflow) or an exit
(libgomp's "Thread creation failed") fails one test instead of stopping the session.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import fastpw
from fastpw import _kernels

TESTS = Path(__file__).resolve().parent
CHILD_TIMEOUT = 120  # seconds: far above any scenario's normal run, far below a hang

needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="the platform has no fork()")
needs_two_cores = pytest.mark.skipif(
    fastpw.max_threads() < 2 or not fastpw.openmp_enabled(),
    reason="needs 2 usable cores and an OpenMP build to run a team of threads",
)


def run_scenario(call: str, env: dict | None = None) -> str:
    """Run `scenarios.<call>` in a fresh interpreter; return its output, fail on a non-zero
    exit or a timeout (killing the whole process group: forked grandchildren too)."""
    child_env = dict(os.environ)
    child_env["PYTHONPATH"] = os.pathsep.join(
        [str(TESTS)] + [p for p in child_env.get("PYTHONPATH", "").split(os.pathsep) if p]
    )
    child_env.update(env or {})
    process = subprocess.Popen(
        [sys.executable, "-c", f"import scenarios; scenarios.{call}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=child_env,
        # Not the repository root, whose unbuilt fastpw/ would come first on sys.path
        # (python -c puts the working folder there): the installed package is tested.
        cwd=TESTS,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=CHILD_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"scenarios.{call} hung (killed after {CHILD_TIMEOUT} s):\n{output}")
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)  # any forked child left behind
        except ProcessLookupError:
            pass
    assert process.returncode == 0, f"scenarios.{call} exited with {process.returncode}:\n{output}"
    print(output)
    return output


# ---------------------------------------------------------------------------------------
# 1. fork


@needs_fork
@needs_two_cores
@pytest.mark.parametrize("kind", ["float32", "int8"])
@pytest.mark.parametrize("variant", ["os.fork", "fork-of-fork", "pool", "executor"])
def test_fork_after_threads(variant, kind):
    run_scenario(f"fork_after_threads({variant!r}, {kind!r})")


@needs_fork
@needs_two_cores
@pytest.mark.parametrize("variant", ["os.fork", "pool"])
def test_fork_after_threads_quantize(variant):
    run_scenario(f"fork_after_threads({variant!r}, 'quantize')")


@needs_fork
@needs_two_cores
def test_fork_before_threads_keeps_threads():
    run_scenario("fork_before_threads()")


# ---------------------------------------------------------------------------------------
# 2. an outer OpenMP team


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds libgomp in /proc")
@pytest.mark.skipif(not fastpw.openmp_enabled(), reason="a serial build has no libgomp")
@pytest.mark.parametrize("family", fastpw.available_isas())
def test_inside_openmp_team(family):
    output = run_scenario(f"inside_openmp_team({family!r})")
    assert output.count("all equal") == 4


# ---------------------------------------------------------------------------------------
# 3. thread counts and limits


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="needs sched_getaffinity")
@pytest.mark.parametrize("num_threads", [2000, 65536])
def test_huge_thread_request_is_capped_at_the_cores(num_threads):
    run_scenario(f"huge_thread_request({num_threads})")


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs sched_setaffinity")
def test_affinity_caps_threads():
    run_scenario("pinned_to_one_core()")


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0,
    reason="RLIMIT_NPROC binds no root process: the scenario drops to another uid, as root",
)
@needs_two_cores
def test_refused_thread_creation_does_not_end_the_process():
    run_scenario("thread_creation_refused()", env={"OPENBLAS_NUM_THREADS": "1"})


def test_max_threads_within_affinity():
    if hasattr(os, "sched_getaffinity"):
        assert 1 <= fastpw.max_threads() <= len(os.sched_getaffinity(0))
    else:
        assert fastpw.max_threads() >= 1


@pytest.mark.parametrize(
    "files, cores",
    [
        ({"cpu.max": "150000 100000"}, 2),
        ({"cpu.max": "50000 100000"}, 1),
        ({"cpu.max": "max 100000"}, 0),
        ({"cpu/cpu.cfs_quota_us": "250000", "cpu/cpu.cfs_period_us": "100000"}, 3),
        ({"cpu,cpuacct/cpu.cfs_quota_us": "400000", "cpu,cpuacct/cpu.cfs_period_us": "100000"}, 4),
        ({"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"}, 0),
        ({"cpu.max": "garbage"}, 0),
        ({}, 0),
    ],
)
def test_cgroup_cpu_quota(tmp_path, files, cores):
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    assert _kernels._cgroup_cpu_quota(str(tmp_path)) == cores


# ---------------------------------------------------------------------------------------
# 4. the thread plan's arithmetic


@pytest.mark.parametrize(
    "flops, requested, threads",
    [
        (0.0, 8, 1),
        (1e5, 8, 1),
        (1e6, 8, 5),
        (1e9, 8, 8),
        # Past INT_MAX threads' worth of flops (4.3e14): the count must not wrap.
        (4.4e14, 2, 2),
        (2 * 2048 * 2048 * 56 * 56 * 32 * 256.0, 2, 2),
        (1e300, 3, 3),
        (float("inf"), 4, 4),
        (1e15, 1, 1),
    ],
)
def test_useful_threads_never_overflow(flops, requested, threads):
    assert _kernels._useful_threads_for(flops, requested) == threads


# ---------------------------------------------------------------------------------------
# 5. Ctrl-C


@pytest.mark.skipif(not hasattr(signal, "SIGINT") or sys.platform == "win32", reason="POSIX")
@pytest.mark.parametrize("num_threads", [1, 2])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("kind", ["float32", "int8"])
def test_ctrl_c_stops_a_long_call(kind, layout, num_threads):
    run_scenario(f"ctrl_c_stops_a_long_call({kind!r}, {layout!r}, {num_threads})")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="measures glibc's heap")
@pytest.mark.parametrize("kind", ["float32", "int8"])
def test_ctrl_c_storm_on_out_slices(kind):
    run_scenario(f"ctrl_c_storm({kind!r})")
