"""Types of the compiled extension fastpw._kernels (fastpw/_kernels.pyx).

Only what the pyx defines with def (functions, the cdef classes' def methods and readonly
attributes, module constants) is seen from Python, so only that is here. Arguments that
the fast paths check themselves (x, out and num_threads of `run`) are `object`: a run returns
None for anything it does not take, and the Python layer (fastpw._api) handles it.
"""

from collections.abc import Iterable
from typing import Any, Final, Self

import numpy as np
import numpy.typing as npt

# One epilogue of Q8Plan, per output type: (scale float32 (K,) or None for int32 output,
# lo, hi, zero point, clamp 0/1), as fpw_q8_tile holds them.
_Epilogue = tuple[npt.NDArray[np.float32] | None, float, float, int, int]

_FEATURE_NAMES: Final[tuple[str, ...]]
OPERATIONS: Final[tuple[str, ...]]

def cpu_features() -> dict[str, bool]: ...
def kernel_table() -> list[dict[str, Any]]: ...
def available_isas() -> list[str]: ...
def set_isa(name: str) -> str: ...
def isa(operation: str | None = None) -> str: ...
def _kernel_choice(operation: str, selected: str, features: Iterable[str]) -> str: ...
def _init_family(requested: str | None) -> None: ...
def openmp_enabled() -> bool: ...
def _cgroup_cpu_quota(root: str = "/sys/fs/cgroup") -> int: ...
def _set_core_limit(limit: int | None) -> int | None: ...
def max_threads() -> int: ...
def fma_peak_gflops(name: str, seconds: float = 0.2) -> float: ...
def int8_peak_gops(name: str, seconds: float = 0.2) -> float: ...
def _useful_threads_for(flops: float, threads: int) -> int: ...
def _set_restride_min_rows(rows: int) -> int: ...

class F32Plan:
    """A float32 1x1 convolution bound to one kernel family, with its weights packed."""

    # (__new__, not __init__: the pyx builds the plan in __cinit__.)
    def __new__(
        cls,
        weight: npt.NDArray[np.float32],
        bias: npt.NDArray[np.float32] | None,
        groups: int,
        nhwc: bool,
        clamp: tuple[float, float] | None,
        prepack: bool,
    ) -> Self: ...
    @property
    def weight(self) -> npt.NDArray[np.float32]: ...
    @property
    def bias(self) -> npt.NDArray[np.float32] | None: ...
    @property
    def in_channels(self) -> int: ...
    @property
    def out_channels(self) -> int: ...
    @property
    def groups(self) -> int: ...
    @property
    def nhwc(self) -> bool: ...
    @property
    def isa(self) -> str: ...
    def run(
        self, x: object, out: object, num_threads: object, check_overlap: bool = True
    ) -> npt.NDArray[np.float32] | None: ...

# Output types of the quantized path (keys of Q8Plan's epilogues, `out_type` of its run).
OUT_UINT8: Final[int]
OUT_INT8: Final[int]
OUT_INT32: Final[int]
OUT_FLOAT32: Final[int]
_OUT_NUMPY_TYPES: Final[dict[int, int]]

class Q8Plan:
    """An int8 1x1 convolution bound to one kernel family, its weights packed."""

    def __new__(
        cls,
        weight: npt.NDArray[np.int8],
        bias: npt.NDArray[np.int32] | None,
        groups: int,
        nhwc: bool,
        x_zero_point: int,
        epilogues: dict[int, _Epilogue],
    ) -> Self: ...
    @property
    def weight(self) -> npt.NDArray[np.int8]: ...
    @property
    def in_channels(self) -> int: ...
    @property
    def out_channels(self) -> int: ...
    @property
    def groups(self) -> int: ...
    @property
    def nhwc(self) -> bool: ...
    @property
    def isa(self) -> str: ...
    def run(
        self,
        x: object,
        out: object,
        out_type: int | None,
        num_threads: object,
        check_overlap: bool = True,
    ) -> npt.NDArray[Any] | None: ...

def quantize_elementwise(
    src: npt.NDArray[Any],
    dst: npt.NDArray[Any],
    scale: npt.NDArray[np.float32],
    zero_point: npt.NDArray[np.int32],
    inner: int,
    quantizing: bool,
    num_threads: int | None,
) -> None: ...
