"""Build script for fastpw's one compiled extension, ``fastpw._kernels``.

The build never passes ISA flags (no -march=native, no global -mavx2): every SIMD
microkernel carries its own target attribute and is chosen at run time from CPUID,
so one build runs on any CPU of its architecture.

OpenMP is detected with a compile-and-link test, as scikit-learn does. Without it
(or with FASTPW_NO_OPENMP=1) the extension builds serially and says so.
"""

import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

OPENMP_TEST_PROGRAM = r"""
#include <omp.h>
int main(void) {
    int n = 0;
    #pragma omp parallel reduction(+:n)
    n += 1;
    return omp_get_max_threads() > 0 && n > 0 ? 0 : 1;
}
"""


def openmp_flags(compiler):
    """Return (compile_args, link_args) for OpenMP, or None if the compiler lacks it."""
    if sys.platform == "win32":
        candidates = [(["/openmp"], [])]
    elif sys.platform == "darwin":
        candidates = [(["-Xpreprocessor", "-fopenmp"], ["-lomp"])]
    else:
        candidates = [(["-fopenmp"], ["-fopenmp"])]
    for compile_args, link_args in candidates:
        tmp = tempfile.mkdtemp(prefix="fastpw-openmp-")
        try:
            source = os.path.join(tmp, "test_openmp.c")
            with open(source, "w") as f:
                f.write(OPENMP_TEST_PROGRAM)
            objects = compiler.compile([source], output_dir=tmp, extra_postargs=compile_args)
            exe = os.path.join(tmp, "test_openmp")
            # Link as the extension will be linked: LDFLAGS reach shared objects but not
            # executables, and a build with sanitizer flags in CFLAGS needs them here too.
            env_link_args = shlex.split(os.environ.get("LDFLAGS", ""))
            compiler.link_executable(objects, exe, extra_postargs=link_args + env_link_args)
            if not cross_compiling():
                subprocess.run([exe], check=True, capture_output=True)
            return compile_args, link_args
        except Exception:  # any compile, link or run failure means "no usable OpenMP"
            continue
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return None


def cross_compiling():
    """True when _PYTHON_HOST_PLATFORM names another machine than this one (e.g.
    "linux-aarch64" on x86-64, .ci/arm64): the OpenMP test program cannot run here, so
    compiling and linking it must do. (sysconfig.get_platform() returns that same
    variable, so it cannot tell.)"""
    target = os.environ.get("_PYTHON_HOST_PLATFORM")
    return target is not None and not target.endswith("-" + platform.machine())


def compile_sources_in_parallel(compiler):
    """Make `compiler.compile` compile each source in a thread of its own (the compiler
    processes run in parallel): the extension's two translation units, the Cython module
    and the kernels (include/fastpw/families.c), take about as long each."""
    compile_serially = compiler.compile

    def compile_each(sources, *args, **kwargs):
        workers = max(1, min(len(sources), os.cpu_count() or 1))
        with ThreadPoolExecutor(workers) as pool:
            results = pool.map(lambda source: compile_serially([source], *args, **kwargs), sources)
            return [obj for objects in results for obj in objects]

    compiler.compile = compile_each


class BuildExtWithOpenMP(build_ext):
    def build_extensions(self):
        flags = None
        if os.environ.get("FASTPW_NO_OPENMP", "") not in ("", "0"):
            warnings.warn(
                "FASTPW_NO_OPENMP is set: building fastpw without OpenMP (serial).", stacklevel=1
            )
        else:
            flags = openmp_flags(self.compiler)
            if flags is None:
                warnings.warn(
                    "The C compiler has no usable OpenMP: building fastpw serially. "
                    "Install an OpenMP runtime (libgomp/libomp) for multi-threaded kernels.",
                    stacklevel=1,
                )
        for ext in self.extensions:
            if flags is not None:
                ext.extra_compile_args += flags[0]
                ext.extra_link_args += flags[1]
        compile_sources_in_parallel(self.compiler)
        super().build_extensions()


def optimization_flags():
    """-O3, unless CFLAGS names an optimization level of its own (.ci/sanitize builds
    with -O1, where ASan makes -O3 take twice as long to compile): the extension's flags
    come after CFLAGS on the compile line, so they would override it."""
    if any(flag.startswith("-O") for flag in shlex.split(os.environ.get("CFLAGS", ""))):
        return []
    return ["-O3"]


compile_args = (
    [] if sys.platform == "win32" else [*optimization_flags(), "-std=c11", "-fno-strict-aliasing"]
)

extensions = [
    Extension(
        "fastpw._kernels",
        # The tile loop (Cython) and the kernel families (C): two translation units.
        sources=["fastpw/_kernels.pyx", "include/fastpw/families.c"],
        include_dirs=["include", np.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=list(compile_args),
        depends=[
            os.path.join(root, name)
            for root, _, names in os.walk("include")
            for name in names
            if name.endswith(".h")
        ],
    )
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={
            "language_level": 3,
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
    ),
    cmdclass={"build_ext": BuildExtWithOpenMP},
)
