"""Shared fixtures: the ``isa`` fixture that selects the kernel families in turn, and the
hypothesis profiles.

Profiles (choose with ``HYPOTHESIS_PROFILE=<name>``; "ci" is the default):

- "ci": modest example counts so the whole suite runs in a few minutes on 2 cores;
- "dev": many more examples, for a long local hunt after touching a kernel;
- "emulated": 50 examples, for the aarch64 suites under qemu (.ci/arm64).
"""

from __future__ import annotations

import os

import kernels
import pytest
from hypothesis import HealthCheck, settings

import fastpw

_SUPPRESSED = [
    # The ``isa`` fixture is set once per test item and holds for all its examples,
    # which is exactly what we want.
    HealthCheck.function_scoped_fixture,
    HealthCheck.too_slow,
    HealthCheck.data_too_large,
]

settings.register_profile(
    "ci", max_examples=200, deadline=None, suppress_health_check=_SUPPRESSED, print_blob=True
)
settings.register_profile(
    "dev", max_examples=2000, deadline=None, suppress_health_check=_SUPPRESSED, print_blob=True
)
# Fewer examples for the aarch64 suites run under qemu (.ci/arm64), about 10x slower.
settings.register_profile("emulated", parent=settings.get_profile("ci"), max_examples=50)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_generate_tests(metafunc):
    """The families the ``isa`` fixture runs a test under: every one this CPU supports,
    except that in a module that tests one operation's kernels (KERNEL_OPERATION) a
    family without a kernel of its own for it is left out. It would run the kernel of
    the family below it (avx512vnni's float32 is avx512's, avx512's int8 is avx2's,
    neondot's float32 is neon's), which that family's own run already tests; which
    kernel a family falls back to is tested with the dispatch (test_api_errors.py)."""
    if "isa" not in metafunc.fixturenames:
        return
    operation = getattr(metafunc.module, "KERNEL_OPERATION", None)
    families = [
        family
        for family in fastpw.available_isas()
        if operation is None or kernels.kernel(family, operation) is not None
    ]
    metafunc.parametrize("isa", families, indirect=True)


@pytest.fixture
def isa(request):
    """Select a kernel family (the configurations FASTPW_ISA gives; which ones:
    pytest_generate_tests), then restore the one selected before. Each operation then
    runs the kernel the table chooses at or below it (tests/kernels.py tells which)."""
    previous = fastpw._set_isa(request.param)
    try:
        yield request.param
    finally:
        fastpw._set_isa(previous)
