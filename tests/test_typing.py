"""fastpw as a type checker sees it: the py.typed marker, the stub of the compiled
extension (fastpw/_kernels.pyi) and the annotations of the public API.

``mypy --strict`` checks tests/typecheck/user_script.py, a user's script that calls every
public function, class and method, against the installed fastpw, and then the package's
own modules; the script also runs, so every call in it is real. mypy's stubtest compares
the stub with the compiled module, so a def added to the pyx needs its line in the stub.

mypy runs outside the repository, so that it finds fastpw where a user's mypy would:
installed in site-packages with its py.typed, or, for an editable install (whose import
hook mypy does not run), in the source folder the installed package is.
"""

from __future__ import annotations

import os
import pkgutil
import runpy
import site
import subprocess
import sys
from pathlib import Path

import pytest

import fastpw

TYPECHECK = Path(__file__).parent / "typecheck"
USER_SCRIPT = TYPECHECK / "user_script.py"
STUBTEST_ALLOWLIST = TYPECHECK / "stubtest_allowlist.txt"
PACKAGE_DIR = Path(fastpw.__file__).resolve().parent
# Modules not annotated yet, left out of the package check: the command line (not API a
# user calls).
NOT_ANNOTATED = {"fastpw.__main__"}


@pytest.fixture(scope="module")
def mypy_run(tmp_path_factory):
    """`mypy_run(module, *args)` runs `python -m module args` (mypy or mypy.stubtest)
    against the installed fastpw, with none of the repository's or the user's mypy
    settings but the config file it is given, and fails with the tool's report."""
    pytest.importorskip("mypy")
    folder = tmp_path_factory.mktemp("mypy")
    (folder / "mypy.ini").write_text("[mypy]\n")
    env = {name: value for name, value in os.environ.items() if name != "MYPYPATH"}
    site_dirs = {Path(p).resolve() for p in site.getsitepackages() + [site.getusersitepackages()]}
    if PACKAGE_DIR.parent not in site_dirs:
        env["MYPYPATH"] = str(PACKAGE_DIR.parent)  # an editable install: its source folder

    def run(module, *args):
        # From a folder of its own: mypy puts its working folder on the search path, and
        # the repository root would put the source folder before the installed package.
        result = subprocess.run(
            [sys.executable, "-m", module, *args],
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if result.returncode != 0:
            pytest.fail(
                f"{module} {' '.join(args)} failed (fastpw from {PACKAGE_DIR}):\n"
                f"{result.stdout}{result.stderr}",
                pytrace=False,
            )

    return run


def mypy_strict(mypy_run, *args):
    mypy_run("mypy", "--strict", "--config-file", "mypy.ini", "--cache-dir", "cache", *args)


def test_typing_files_are_installed():
    """PEP 561: the marker that tells type checkers fastpw is typed, and the stub of the
    extension (without it, everything from fastpw._kernels is Any to a user)."""
    assert (PACKAGE_DIR / "py.typed").is_file(), f"no py.typed in {PACKAGE_DIR}"
    assert (PACKAGE_DIR / "_kernels.pyi").is_file(), f"no _kernels.pyi in {PACKAGE_DIR}"


def test_user_script_passes_mypy_strict(mypy_run):
    mypy_strict(mypy_run, str(USER_SCRIPT))


def test_package_passes_mypy_strict(mypy_run):
    modules = sorted(
        f"fastpw.{module.name}"
        for module in pkgutil.iter_modules([str(PACKAGE_DIR)])
        if f"fastpw.{module.name}" not in NOT_ANNOTATED
    )
    assert {"fastpw._api", "fastpw._kernels", "fastpw.quant", "fastpw.testing"} <= set(modules)
    args = ["-m", "fastpw"]
    for module in modules:
        args += ["-m", module]
    mypy_strict(mypy_run, *args)


def test_stub_matches_the_compiled_module(mypy_run):
    mypy_run(
        "mypy.stubtest",
        "fastpw._kernels",
        "--mypy-config-file",
        "mypy.ini",
        "--allowlist",
        str(STUBTEST_ALLOWLIST),
        "--ignore-unused-allowlist",
    )


def test_user_script_runs():
    runpy.run_path(str(USER_SCRIPT), run_name="__main__")
