"""The kernel table (fastpw.kernel_table(), compiled from include/fastpw/dispatch.h) as
the tests read it: which families to force for an operation, and the sizes that land
on each kernel's edges. No family or tile size is written down anywhere in the tests.
"""

from __future__ import annotations

import fastpw


def own_kernels(operation):
    """(family, kernel) for every family this CPU supports that brings its own kernel
    for `operation`, best first. Forcing such a family runs exactly that kernel."""
    return [
        (row["family"], row[operation])
        for row in fastpw.kernel_table()
        if row["supported"] and row[operation] is not None
    ]


def families(operation=None):
    """Families a test of `operation` runs under: those with their own kernel for it
    (forcing the others would run one of these kernels again); every supported family
    for a test of several operations (None)."""
    if operation is None:
        return fastpw.available_isas()
    return [family for family, _ in own_kernels(operation)]


def kernel(family, operation):
    """The kernel table's entry for `family`'s own kernel of `operation`."""
    return next(row[operation] for row in fastpw.kernel_table() if row["family"] == family)


def kernel_sizes(kernel):
    """MR, NR and lanes of a kernel, and twice MR and NR, each -1, +0 and +1: the sizes
    whose last tile or vector is one short, exact or one over. Elementwise kernels have
    lanes only."""
    units = [kernel["lanes"]]
    for key in ("mr", "nr"):
        if key in kernel:
            units += [kernel[key], 2 * kernel[key]]
    return sorted({unit + d for unit in units for d in (-1, 0, 1)} - {0})


def edge_sizes(operation):
    """Sizes at the edges of every kernel of `operation` in this build, plus 1, 2 and 3."""
    sizes = {1, 2, 3}
    for row in fastpw.kernel_table():
        if row[operation] is not None:
            sizes.update(kernel_sizes(row[operation]))
    return sorted(sizes)
