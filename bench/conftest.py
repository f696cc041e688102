"""pytest configuration for the fastpw benchmark suite (pytest-benchmark).

One rule decides whether anything is timed: benchmarks are timed only when you pass
``--benchmark-enable`` or ``--benchmark-only``. Otherwise (plain ``pytest``, which also
collects bench/) every benchmarked call runs once as a smoke test, with its
correctness check, and no statistics are kept.

``--fastpw-threads 1,2`` chooses the thread counts every case runs with (default 1,2):
fastpw's ``num_threads``, numpy's BLAS threads (float32) and ONNX Runtime's
``intra_op_num_threads`` (int8).
"""

from __future__ import annotations

import pytest

DEFAULT_THREADS = "1,2"
_NEEDS_TIMING = ("benchmark_save", "benchmark_autosave", "benchmark_json", "benchmark_compare")


def pytest_addoption(parser):
    parser.addoption(
        "--fastpw-threads",
        default=DEFAULT_THREADS,
        metavar="N[,N...]",
        help=f"Comma-separated thread counts for the benchmarks (default {DEFAULT_THREADS}).",
    )


def _thread_counts(config) -> list[int]:
    text = config.getoption("fastpw_threads")
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise pytest.UsageError(f"--fastpw-threads wants positive integers like 1,2; got {text!r}")
    return sorted(set(counts))


def pytest_configure(config):
    _thread_counts(config)  # fail early on a malformed --fastpw-threads
    timed = config.getoption("benchmark_enable", default=False) or config.getoption(
        "benchmark_only", default=False
    )
    if timed:
        return
    asked = [name for name in _NEEDS_TIMING if config.getoption(name, default=None)]
    if asked:
        flags = ", ".join("--" + name.replace("_", "-") for name in asked)
        raise pytest.UsageError(
            f"{flags} needs timed benchmarks: add --benchmark-enable (or --benchmark-only)."
        )
    config.option.benchmark_disable = True
    # pytest-benchmark reads the option in its own (trylast) pytest_configure. If this
    # conftest was loaded late (pytest run on a folder that does not contain bench/ at
    # the top), its session already exists: tell it directly.
    session = getattr(config, "_benchmarksession", None)
    if session is not None:
        session.disabled = True


def pytest_generate_tests(metafunc):
    if "threads" in metafunc.fixturenames:
        counts = _thread_counts(metafunc.config)
        metafunc.parametrize("threads", counts, ids=[f"{n}t" for n in counts])


def pytest_report_header(config):
    try:
        import fastpw
    except ImportError as error:  # the header must not hide the real collection error
        return f"fastpw: not importable ({error})"
    timed = not config.getoption("benchmark_disable", default=False) or config.getoption(
        "benchmark_enable", default=False
    )
    from fastpw._peers import onnxruntime_version

    ort_version = onnxruntime_version() or "not installed (its rows skipped)"
    return [
        f"fastpw {fastpw.__version__}: kernel family {fastpw.isa()} "
        f"({', '.join(f'{op} {fastpw.isa(op)}' for op in fastpw.OPERATIONS)}; "
        f"available: {', '.join(fastpw.available_isas())}), "
        f"OpenMP {'on' if fastpw.openmp_enabled() else 'off'}, "
        f"benchmark threads {config.getoption('fastpw_threads')}, "
        f"timed: {'yes' if timed else 'no (smoke run; add --benchmark-enable)'}",
        f"int8 baseline onnxruntime: {ort_version}",
    ]
