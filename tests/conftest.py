"""Shared fixtures: the ``isa`` fixture that forces every kernel family with its own
kernel for the operation under test in turn, and the hypothesis profiles.

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


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "operation(name): the operation of fastpw.OPERATIONS whose kernels the test's "
        "`isa` runs through (None: every supported family); the module's "
        "KERNEL_OPERATION otherwise",
    )


def pytest_generate_tests(metafunc):
    """A test that takes ``isa`` runs once per family with its own kernel for the
    operation it tests (tests/kernels.py), read from the compiled kernel table."""
    if "isa" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("operation")
    operation = marker.args[0] if marker else getattr(metafunc.module, "KERNEL_OPERATION", None)
    metafunc.parametrize("isa", kernels.families(operation), indirect=True)


@pytest.fixture
def isa(request):
    """Select one kernel family for the test, then restore the one selected before it."""
    previous = fastpw._set_isa(request.param)
    try:
        yield request.param
    finally:
        fastpw._set_isa(previous)
