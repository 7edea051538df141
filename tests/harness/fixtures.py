"""pytest fixtures that start real corosync daemons and choose the real Asterisk build;
enabled from tests/conftest.py with ``pytest_plugins = ["tests.harness.fixtures"]``.

Without corosync, root or an Asterisk build the tests that need them are skipped with the
reason, except when ``CI=true``: CI must never skip silently, so there they fail.

Every Asterisk build beside the checkout is tested: a test marked ``asterisk`` runs once per
build (``test_x[ast-22.10.1]``, ``test_x[ast-master]``), and a fixture whose params choose
between the simulator and a real Asterisk takes :func:`pbx_params`, which gives one ``asterisk``
param per build (``[simulator]``, ``[asterisk-22.10.1]``, ...). Either way the build is selected
(:func:`tests.harness.asterisk.selected_build`) before any fixture of the test starts Asterisk.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from .asterisk import Build, asterisk_builds, asterisk_missing_reason, selected_build
from .corosync import Cluster, CorosyncInstance, corosync_missing_reason, loopback_corosync
from .corosync import three_node_cluster as _three_node_cluster

__all__ = [
    "asterisk_build",
    "corosync_cluster",
    "corosync_group",
    "corosync_loopback",
    "pbx_params",
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


# -- one run per Asterisk build -----------------------------------------------------------------
def pbx_params() -> list[Any]:
    """Params for a fixture that runs on the simulator and on every real Asterisk build: the
    value is ``"simulator"`` or ``"asterisk"``; the id names the build, and a ``build`` mark
    carries it to :func:`_select_marked_build`. With no build here, one ``asterisk`` param that
    skips with the reason."""
    builds = asterisk_builds()
    if not builds:
        return ["simulator", pytest.param("asterisk", marks=pytest.mark.asterisk)]
    return [
        "simulator",
        *(
            pytest.param(
                "asterisk",
                marks=[pytest.mark.asterisk, pytest.mark.build(b)],
                id=f"asterisk-{b.name}",
            )
            for b in builds
        ),
    ]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "build(b): the real Asterisk build this test runs against")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test marked ``asterisk`` (itself, its class or its module) runs once per build."""
    if metafunc.definition.get_closest_marker("asterisk") is None:
        return
    builds = asterisk_builds()
    if builds:
        metafunc.parametrize(
            "asterisk_build",
            builds,
            indirect=True,
            scope="module",
            ids=[f"ast-{b.name}" for b in builds],
        )


@pytest.fixture(scope="module", autouse=True)
def asterisk_build(request: pytest.FixtureRequest) -> Iterator[Build | None]:
    """The build a test marked ``asterisk`` runs against (module-scoped, so a module fixture
    that starts Asterisk and takes this argument is made again for each build)."""
    build: Build | None = getattr(request, "param", None)
    if build is None:
        yield None
        return
    with selected_build(build):
        yield build


@pytest.fixture(autouse=True)
def _select_marked_build(request: pytest.FixtureRequest) -> Iterator[None]:
    """Select the build of a :func:`pbx_params` param before the test's own fixtures run
    (autouse fixtures come first within their scope)."""
    mark = request.node.get_closest_marker("build")
    if mark is None:
        yield
        return
    with selected_build(mark.args[0]):
        yield
