"""pytest fixtures that start real corosync daemons; enabled from tests/conftest.py with
``pytest_plugins = ["tests.harness.fixtures"]``.

Without corosync or root the tests that use them are skipped with the reason, except when
``CI=true``: CI must never skip silently, so there they fail.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest

from .asterisk import asterisk_missing_reason
from .corosync import Cluster, CorosyncInstance, corosync_missing_reason, loopback_corosync
from .corosync import three_node_cluster as _three_node_cluster

__all__ = [
    "corosync_cluster",
    "corosync_group",
    "corosync_loopback",
    "require_asterisk",
    "require_corosync",
    "skip_or_fail",
]


def skip_or_fail(reason: str | None, what: str) -> None:
    """Skip with ``reason`` when something a test needs is missing, except under CI=true,
    where it fails: CI must never skip silently."""
    if reason is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and {what} tests cannot run: {reason}")
    pytest.skip(reason)


def require_corosync(netns: bool = False) -> None:
    """Skip (or, under CI=true, fail) unless corosync can run here."""
    skip_or_fail(corosync_missing_reason(netns=netns), "corosync")


@pytest.fixture(scope="session")
def corosync_loopback() -> Iterator[CorosyncInstance]:
    """One corosync on 127.0.0.1 for the whole session (tests may kill and restart it)."""
    require_corosync()
    with loopback_corosync() as instance:
        yield instance


@pytest.fixture
def corosync_group() -> str:
    """A fresh CPG group name, so tests never see members left over from other tests."""
    return f"pbxm-test-{secrets.token_hex(4)}"


@pytest.fixture(scope="module")
def corosync_cluster() -> Iterator[Cluster]:
    """Three corosync nodes in network namespaces, token 1000 ms (node loss seen in ~3.5 s)."""
    require_corosync(netns=True)
    with _three_node_cluster(token_ms=1000) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def require_asterisk() -> None:
    """Skip (or, under CI=true, fail) unless a real Asterisk can be started here."""
    skip_or_fail(asterisk_missing_reason(), "real-Asterisk")
