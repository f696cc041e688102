"""fastpw: fast CPU kernels for 1x1 ("pointwise") convolution.

A 1x1 convolution mixes channels at every pixel, y[n,k,h,w] = sum_c W[k,c] x[n,c,h,w]
+ b[k]: a GEMM per image. fastpw computes it with cache-blocked SIMD microkernels in
either layout, without transposing or im2col-ing the input:

    python call ──► fastpw._api        validate, normalize layout/dtype, pick a path
                     │
                     ▼
                   fastpw._kernels     tile loop: OpenMP over output blocks, GIL released
                     │  function-pointer table
                     ▼
                   include/fastpw/dispatch.h   CPU features found once; families best first,
                     │                         each operation's kernel chosen on its own
                     │
                     ▼
                   include/fastpw/{f32,q8}/<isa>.h  one microkernel family per file

Kernel families: the best one the CPU supports is selected at import (CPUID + XGETBV
on x86-64, HWCAP on aarch64), and each operation (float32 GEMM, int8 GEMM,
quantize/dequantize) runs the best kernel at or below it; the environment variable
FASTPW_ISA=<name> selects one of those ``available_isas()`` lists instead, capping
every operation there. ``isa()`` names the selected family, ``isa("int8")`` the one an
operation runs, and ``kernel_table()`` is the table of families and their kernels
(include/fastpw/dispatch.h: no list of them is kept here; ``python -m fastpw`` prints it).

Quantized path: uint8/int8 input, int8 weights and int32 bias give ONNX QLinearConv's
result bit for bit (``QConv1x1``), with requantization fused into the kernel.

Threads: each call splits its outputs into blocks that OpenMP threads take one at a time
(dynamic schedule: a thread that loses its core holds up one block, not a share). Blocks
depend only on the shape and the reduction over channels is never shared between threads
(long ones run in fixed blocks of channels), so every output is summed by one thread in
one order: results are bitwise identical for any thread count.
``num_threads`` caps a call; by default OpenMP's setting applies (OMP_NUM_THREADS,
threadpoolctl). Every call is also capped at the cores the process may use (affinity,
cgroup quota) and at the threads it can create; in a child forked from a process that
ran threaded calls, and inside another OpenMP team, calls run on one thread. A call in
the main thread raises KeyboardInterrupt soon after Ctrl-C, leaving ``out`` partly
written. The README's Threading section has the details.
"""

import os as _os


def _built_here() -> bool:
    """Is the compiled extension in this folder? (Not in an unbuilt source checkout.)"""
    folder = _os.path.dirname(_os.path.abspath(__file__))
    return any(
        name.startswith("_kernels.") and name.endswith((".so", ".pyd"))
        for name in _os.listdir(folder)
    )


try:
    from . import _kernels
except ImportError:
    if _built_here():
        raise
    raise ImportError(
        f"fastpw is being imported from a source folder without its compiled extension "
        f"({_os.path.dirname(_os.path.abspath(__file__))}): run `pip install -e .` in the "
        f"repository root to build it there, or run Python from another folder to use an "
        f"installed fastpw"
    ) from None

# (After the extension: an unbuilt source folder gets the message above, not an error
# from inside these modules.)
from . import quant  # noqa: E402
from ._api import Conv1x1, QConv1x1, conv1x1  # noqa: E402
from ._checks import QParams  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "OPERATIONS",
    "Conv1x1",
    "QConv1x1",
    "QParams",
    "available_isas",
    "conv1x1",
    "cpu_features",
    "isa",
    "kernel_table",
    "max_threads",
    "openmp_enabled",
    "quant",
]

cpu_features = _kernels.cpu_features
available_isas = _kernels.available_isas
isa = _kernels.isa
kernel_table = _kernels.kernel_table
OPERATIONS = _kernels.OPERATIONS
openmp_enabled = _kernels.openmp_enabled
max_threads = _kernels.max_threads
_set_isa = _kernels.set_isa

_kernels._init_family(_os.environ.get("FASTPW_ISA", "").strip().lower() or None)
