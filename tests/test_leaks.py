"""A socket or transport a test leaves open fails that test, not a later one
(tests/harness/leaks.py), shown by running pytest on leaky tests (pytester); and the helpers
that start servers close what they opened when a start fails."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.harness.asterisk import eid_of
from tests.sip_helpers import SimSipAsterisk

REPO = Path(__file__).resolve().parents[1]

LEAKY = """
import asyncio
import socket


def test_leaks_a_socket_in_a_cycle():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    holder = {"sock": sock}
    holder["self"] = holder  # only the garbage collector can free it


async def test_leaks_a_datagram_transport():
    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0))


def test_runs_after_them():
    pass
"""


@pytest.fixture
def inner(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    pytester.makeconftest('pytest_plugins = ["tests.harness.leaks"]\n')
    pytester.makeini(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
        "filterwarnings =\n    error\n    error::ResourceWarning\n"
    )
    pytester.makepyfile(test_leaky=LEAKY)
    return pytester


def test_a_leak_fails_the_test_that_leaked(inner: pytest.Pytester) -> None:
    result = inner.runpytest_subprocess("-p", "no:cacheprovider", "-rA")
    result.assert_outcomes(passed=3, errors=2)
    result.stdout.fnmatch_lines(
        [
            "ERROR test_leaky.py::test_leaks_a_socket_in_a_cycle - ResourceWarning*",
            "ERROR test_leaky.py::test_leaks_a_datagram_transport - *",
        ]
    )
    result.stdout.no_fnmatch_line("ERROR test_leaky.py::test_runs_after_them*")
    output = result.stdout.str()
    cycle = output.split("ERROR at teardown of test_leaks_a_socket_in_a_cycle")[1]
    cycle, transport = cycle.split("ERROR at teardown of test_leaks_a_datagram_transport")
    assert "ResourceWarning: unclosed <socket.socket" in cycle
    # the transport and, freed with it, its socket: both in the test that opened them
    assert "ResourceWarning: unclosed transport <_SelectorDatagramTransport" in transport
    assert "ResourceWarning: unclosed <socket.socket" in transport


def test_with_tracemalloc_it_names_the_line_that_opened_it(inner: pytest.Pytester) -> None:
    # Traced from the module's import on, as PYTHONTRACEMALLOC would from the start (slowly).
    inner.makepyfile(test_leaky="import tracemalloc\ntracemalloc.start(5)\n" + LEAKY)
    result = inner.runpytest_subprocess("-p", "no:cacheprovider", "-k", "cycle")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        ["*was allocated at:*", '*File "*test_leaky.py", line *', "*sock = socket.socket(*"]
    )


SKIPS_AFTER_OPENING = """
import socket

import pytest


@pytest.fixture(scope="session")
def unavailable():
    pytest.skip("not on this machine")


@pytest.fixture
def opened(request):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    request.getfixturevalue("unavailable")  # skips, with the socket open
    yield sock
    sock.close()


def test_first(opened):
    pass


def test_second(opened):
    pass


def test_third():
    pass
"""


def test_a_fixture_that_skips_with_a_socket_open_fails_each_test(inner: pytest.Pytester) -> None:
    # The skip is kept by the session fixture and raised again for the next test: the frames
    # it holds must not carry the first test's socket into a later one.
    inner.makepyfile(test_leaky=SKIPS_AFTER_OPENING)
    result = inner.runpytest_subprocess("-p", "no:cacheprovider", "-rA")
    result.assert_outcomes(passed=1, skipped=2, errors=2)
    result.stdout.fnmatch_lines(
        ["ERROR test_leaky.py::test_first - *", "ERROR test_leaky.py::test_second - *"]
    )


async def test_the_sip_simulator_closes_its_ami_server_when_its_sip_port_is_taken(
    tmp_path: Path,
) -> None:
    # free_port() only names a port that was free: on a busy machine another process may bind
    # it before the simulator does, and the failed start must not leak the AMI server too.
    ast = SimSipAsterisk(tmp_path, eid_of(1), "sip:pbxmesh@127.0.0.1:9")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", ast.sip_port))
        with pytest.raises(OSError):
            await ast.start()
    assert ast.sim is None
