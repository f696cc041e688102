"""Memory arrangements for test inputs, shared by the float32 and int8 suites.

The kernels must give the same bits whatever the strides of their input: these helpers
make the same values in another arrangement, with padding around non-contiguous views
that a kernel reading outside the view would pick up.
"""

from __future__ import annotations

import numpy as np
from layouts import channel_axis

MEMORY_KINDS = (
    "contiguous",
    "fortran",
    "other_layout",
    "negative_strides",
    "channel_slice",
    "every_other_column",
    "unaligned",
    "read_only",
)


def unaligned_empty(shape, dtype):
    """An array whose data starts one byte past an aligned address (for 1-byte dtypes
    this is only an odd address)."""
    dtype = np.dtype(dtype)
    count = int(np.prod(shape))
    raw = np.zeros(dtype.itemsize * count + 1, dtype=np.uint8)
    view = np.frombuffer(raw.data, dtype=dtype, count=count, offset=1).reshape(shape)
    assert view.flags.writeable
    assert dtype.itemsize == 1 or not view.flags.aligned
    return view


def rearranged(arr, kind, layout, padding):
    """The same values as ``arr`` in the memory arrangement ``kind`` (mostly a
    non-contiguous view). ``padding(shape)`` makes the arr.dtype array that surrounds
    the view where there is memory around it."""
    if kind == "contiguous":
        view = np.ascontiguousarray(arr)
    elif kind == "fortran":
        view = np.asfortranarray(arr)
    elif kind == "other_layout":
        perm = (0, 2, 3, 1) if layout.upper() == "NCHW" else (0, 3, 1, 2)
        view = np.ascontiguousarray(arr.transpose(perm)).transpose(np.argsort(perm))
    elif kind == "negative_strides":
        view = arr[:, ::-1, ::-1, ::-1].copy()[:, ::-1, ::-1, ::-1]
    elif kind == "channel_slice":
        axis = channel_axis(layout)
        shape = list(arr.shape)
        shape[axis] += 7
        big = padding(tuple(shape))
        index = [slice(None)] * 4
        index[axis] = slice(3, 3 + arr.shape[axis])
        big[tuple(index)] = arr
        view = big[tuple(index)]
    elif kind == "every_other_column":
        big = padding(arr.shape[:3] + (2 * arr.shape[3],))
        big[..., ::2] = arr
        view = big[..., ::2]
    elif kind == "unaligned":
        view = unaligned_empty(arr.shape, arr.dtype)
        view[...] = arr
    elif kind == "read_only":
        view = arr.copy()
        view.flags.writeable = False
    else:
        raise AssertionError(kind)
    assert view.dtype == arr.dtype
    assert np.array_equal(view, arr, equal_nan=arr.dtype.kind == "f")
    return view
