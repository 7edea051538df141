"""pytest fixtures that start real nats-servers; enabled from tests/conftest.py with
``pytest_plugins = [..., "tests.harness.nats_fixtures"]``.

Without nats-server (or nats-py) the tests that use them are skipped with the reason, except
when ``CI=true``: CI must never skip silently, so there they fail.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from .fixtures import skip_or_fail
from .nats import NatsCluster, NatsServer, nats_missing_reason, single_server, three_server_cluster

__all__ = ["nats_cluster", "nats_group", "nats_server", "require_nats"]


def require_nats() -> None:
    """Skip (or, under CI=true, fail) unless nats-server and nats-py are available."""
    skip_or_fail(nats_missing_reason(), "NATS")


@pytest.fixture(scope="session")
def nats_server() -> Iterator[NatsServer]:
    """One nats-server with JetStream on 127.0.0.1 for the whole session."""
    require_nats()
    with single_server(jetstream=True) as server:
        yield server


@pytest.fixture
def nats_cluster() -> Iterator[NatsCluster]:
    """Three routed nats-servers on loopback, fresh per test (drills kill and freeze them)."""
    require_nats()
    with three_server_cluster() as cluster:
        yield cluster


@pytest.fixture
def nats_group() -> str:
    """A fresh group name, so tests never see members left over from other tests."""
    return f"t{secrets.token_hex(4)}"
