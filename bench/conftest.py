"""pytest configuration for the fastpw benchmark suite (pytest-benchmark).

One rule decides whether anything is timed: benchmarks are timed only when you pass
``--benchmark-enable`` or ``--benchmark-only``. Otherwise (plain ``pytest``, which also
collects bench/) every benchmarked call runs once as a smoke test, with its
correctness check, and no statistics are kept.

``--fastpw-threads 1,2`` chooses the thread counts every case runs with (default 1,2):
fastpw's ``num_threads``, numpy's BLAS threads (float32) and ONNX Runtime's
``intra_op_num_threads`` (int8). ``--fastpw-batch 1,8,32`` chooses the batch sizes every
layer runs with (default 1).

Regression runs (README, "Benchmarks"): a saved run's ``machine_info["fastpw"]`` records
fastpw's version, the kernel family each operation ran, the CPU model and the thread
counts; comparing with a run whose kernels or CPU differ warns, as its times measure
other code. After a timed run, a table of the median GFLOP/s (GOP/s) of every row is
printed beside pytest-benchmark's own tables of seconds.
"""

from __future__ import annotations

import pytest

DEFAULT_THREADS = "1,2"
DEFAULT_BATCHES = "1"
_NEEDS_TIMING = ("benchmark_save", "benchmark_autosave", "benchmark_json", "benchmark_compare")


def pytest_addoption(parser):
    parser.addoption(
        "--fastpw-threads",
        default=DEFAULT_THREADS,
        metavar="N[,N...]",
        help=f"Comma-separated thread counts for the benchmarks (default {DEFAULT_THREADS}).",
    )
    parser.addoption(
        "--fastpw-batch",
        default=DEFAULT_BATCHES,
        metavar="N[,N...]",
        help=f"Comma-separated batch sizes for the benchmarks (default {DEFAULT_BATCHES}).",
    )


def _positive_list(config, option: str) -> list[int]:
    text = config.getoption(option)
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        flag = "--" + option.replace("_", "-")
        raise pytest.UsageError(f"{flag} wants positive integers like 1,2; got {text!r}")
    return sorted(set(counts))


def _thread_counts(config) -> list[int]:
    return _positive_list(config, "fastpw_threads")


def pytest_configure(config):
    _thread_counts(config)  # fail early on a malformed --fastpw-threads or --fastpw-batch
    _positive_list(config, "fastpw_batch")
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
    if "batch" in metafunc.fixturenames:
        batches = _positive_list(metafunc.config, "fastpw_batch")
        metafunc.parametrize("batch", batches, ids=[f"b{n}" for n in batches])


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


def _fastpw_machine_info(config) -> dict:
    import fastpw
    from fastpw._timing import cpu_model

    return {
        "version": fastpw.__version__,
        "selected_family": fastpw.isa(),
        "kernels": {operation: fastpw.isa(operation) for operation in fastpw.OPERATIONS},
        "cpu_model": cpu_model(),
        "cpu_features": sorted(name for name, has in fastpw.cpu_features().items() if has),
        "threads": _thread_counts(config),
        "batches": _positive_list(config, "fastpw_batch"),
    }


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["fastpw"] = _fastpw_machine_info(config)


def comparison_warnings(current: dict, saved: dict) -> list[str]:
    """What makes two runs' times measure different things: other kernels or another
    CPU. (``machine_info["fastpw"]`` of each; a run saved without it says so.)"""
    if not saved:
        return ["the saved run has no fastpw machine info: its kernels are unknown"]
    notes = []
    for operation, family in current["kernels"].items():
        before = saved.get("kernels", {}).get(operation)
        if before != family:
            notes.append(f"{operation} ran the {before} kernels then, {family} now")
    if saved.get("cpu_model") != current["cpu_model"]:
        notes.append(f"CPU {saved.get('cpu_model')!r} then, {current['cpu_model']!r} now")
    return notes


def pytest_benchmark_compare_machine_info(
    config, benchmarksession, machine_info, compared_benchmark
):
    saved = compared_benchmark.get("machine_info", {}).get("fastpw")
    for note in comparison_warnings(_fastpw_machine_info(config), saved):
        benchmarksession.logger.warning(
            f"fastpw: compared runs differ: {note}; their times are not comparable"
        )


def pytest_terminal_summary(terminalreporter, config):
    """The median throughput of every timed row, by group (pytest-benchmark's tables
    show seconds only)."""
    session = getattr(config, "_benchmarksession", None)
    rows = []
    for bench in getattr(session, "benchmarks", []) if session else []:
        info = getattr(bench, "extra_info", {})
        if "gflops" in info or "gops" in info:
            unit = "GFLOP/s" if "gflops" in info else "GOP/s"
            rows.append((bench.group or "", bench.name, info.get("gflops", info.get("gops")), unit))
    if not rows:
        return
    terminalreporter.section("throughput (median round)")
    width = max(len(name) for _, name, _, _ in rows)
    group = None
    for row_group, name, value, unit in sorted(rows):
        if row_group != group:
            terminalreporter.write_line(row_group)
            group = row_group
        terminalreporter.write_line(f"  {name:<{width}}  {value:9.1f} {unit}")
