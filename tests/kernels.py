"""The kernel table (fastpw.kernel_table(), compiled from include/fastpw/dispatch.h) as
the tests read it: which kernel an operation runs, and the sizes that land on each
kernel's edges. No family or tile size is written down anywhere in the tests.
"""

from __future__ import annotations

import fastpw


def running_kernel(operation):
    """The table's entry for the kernel `operation` runs now (under the selected family)."""
    return kernel(fastpw.isa(operation), operation)


def kernel(family, operation):
    """The kernel table's entry for `family`'s own kernel of `operation`."""
    return next(row[operation] for row in fastpw.kernel_table() if row["family"] == family)


def kernel_sizes(kernel):
    """MR, NR and lanes of a kernel, once and twice, each -1, +0 and +1: the sizes whose
    last tile or vector is one short, exact or one over. Elementwise kernels have lanes
    only."""
    units = [kernel[key] for key in ("mr", "nr", "lanes") if key in kernel]
    units += [2 * unit for unit in units]
    return sorted({unit + d for unit in units for d in (-1, 0, 1)} - {0})


def edge_sizes(operation):
    """Sizes at the edges of every kernel of `operation` in this build, plus 1, 2 and 3."""
    sizes = {1, 2, 3}
    for row in fastpw.kernel_table():
        if row[operation] is not None:
            sizes.update(kernel_sizes(row[operation]))
    return sorted(sizes)
