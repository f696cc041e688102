"""Keeps the repository's source folder `fastpw/` from shadowing the installed package.

`python -m pytest` (unlike `pytest`) puts the current folder first on sys.path, so from
the repository root `import fastpw` would find the source folder, which has no compiled
extension after the README's `pip install ".[test]"`. When that folder has no extension,
the repository root comes off sys.path before any test module imports fastpw; an
in-place build (`pip install -e .`) is left as it is.
"""

import os
import sys

_ROOT = os.path.dirname(os.path.abspath(__file__))
_SOURCE = os.path.join(_ROOT, "fastpw")


def _has_extension(folder: str) -> bool:
    return any(
        name.startswith("_kernels.") and name.endswith((".so", ".pyd"))
        for name in os.listdir(folder)
    )


if os.path.isdir(_SOURCE) and not _has_extension(_SOURCE):
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _ROOT]
