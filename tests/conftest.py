"""Shared test settings: hypothesis profiles for a shared, noisy 2-core machine."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

pytest_plugins = [
    "pytester",  # tests/test_leaks.py runs a pytest of its own
    "tests.harness.fixtures",
    "tests.harness.leaks",
    "tests.harness.nats_fixtures",
]

# Timing health checks and deadlines measure the machine, not the code: the CI host is shared.
settings.register_profile(
    "default",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "ci",
    parent=settings.get_profile("default"),
    derandomize=False,
    print_blob=True,
)
settings.load_profile(os.environ.get("PBXMESH_HYPOTHESIS_PROFILE", "default"))
