"""Corosync transport without a daemon: optional import, clear errors, config validation."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pbxmesh.errors import ConfigError, TransportClosed, TransportError
from pbxmesh.transport import _csabi
from pbxmesh.transport.corosync import CorosyncConfig, CorosyncTransport


@pytest.fixture
def no_libcpg(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    _csabi.load.cache_clear()
    monkeypatch.setitem(_csabi.LIB_NAMES, "cpg", "libcpg-missing-for-test.so.4")
    try:
        yield
    finally:
        _csabi.load.cache_clear()


async def test_start_without_libcpg_raises_a_clear_transport_error(no_libcpg: None) -> None:
    transport = CorosyncTransport(CorosyncConfig(group="g"))
    with pytest.raises(TransportError, match=r"not found: apt-get install corosync"):
        await transport.start()
    with pytest.raises(TransportClosed):
        await transport.send(b"x")


def test_cs_errors_map_to_the_exception_tree() -> None:
    _csabi.check(_csabi.CS_OK, "cpg_join")
    with pytest.raises(_csabi.CsTryAgain, match=r"cpg_mcast_joined.*CS_ERR_TRY_AGAIN"):
        _csabi.check(_csabi.CS_ERR_TRY_AGAIN, "cpg_mcast_joined")
    with pytest.raises(TransportClosed, match="CS_ERR_LIBRARY"):
        _csabi.check(_csabi.CS_ERR_LIBRARY, "cpg_dispatch")
    with pytest.raises(TransportError, match=r"CS_ERR_EXIST.*already joined"):
        _csabi.check(_csabi.CS_ERR_EXIST, "cpg_join")
    assert _csabi.cs_error_name(99) == "cs_error_t(99)"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"group": ""},
        {"group": "x" * 129},
        {"reconnect_interval": 0},
        {"send_retry_delay": 0.1, "send_retry_max_delay": 0.01},
        {"max_message_size": -1},
    ],
)
def test_config_is_validated(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        CorosyncConfig(**kwargs)  # type: ignore[arg-type]
