"""Shared fixtures: the ``isa`` fixture that selects every kernel family in turn, and the
hypothesis profiles.

Profiles (choose with ``HYPOTHESIS_PROFILE=<name>``; "ci" is the default):

- "ci": modest example counts so the whole suite runs in a few minutes on 2 cores;
- "dev": many more examples, for a long local hunt after touching a kernel;
- "emulated": 50 examples, for the aarch64 suites under qemu (.ci/arm64).
"""

from __future__ import annotations

import os

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


@pytest.fixture(params=fastpw.available_isas())
def isa(request):
    """Select each kernel family this CPU supports in turn (the configurations FASTPW_ISA
    gives), then restore the one selected before. Each operation then runs the kernel
    the table chooses at or below it (tests/kernels.py tells which)."""
    previous = fastpw._set_isa(request.param)
    try:
        yield request.param
    finally:
        fastpw._set_isa(previous)
