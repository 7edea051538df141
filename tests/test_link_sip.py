"""The link contract suite (tests/link_contract.py) over the SIP PUBLISH link, on the PBX
simulator's SIP subset and on a real Asterisk configured with what ``pbxmesh asterisk-config``
prints.

What the link writes is read back as Asterisk's own aggregate (``Getvar DEVICE_STATE``) of a
device nothing local holds: the other servers' states, aggregated by Asterisk itself.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from pbxmesh.links.sip.link import SipLink, SipLinkConfig
from pbxmesh.states import DeviceState
from tests.ami_helpers import THERE, FakeCluster
from tests.harness.asterisk import eid_of, free_port
from tests.harness.fixtures import pbx_params
from tests.link_contract import *  # noqa: F403 - the contract's test functions
from tests.link_contract import Asterisk
from tests.sip_helpers import SimSipAsterisk, SipAsterisk, sip_asterisk

_numbers = itertools.count(40)


class SipBackend:
    timeout = 10.0

    def __init__(self, kind: str, state_dir: Path) -> None:
        self.kind, self.state_dir = kind, state_dir
        self.configs: dict[int, SipLinkConfig] = {}

    async def asterisk(self) -> Asterisk:
        ast: SipAsterisk
        if self.kind == "simulator":
            listen = free_port()
            config = SipLinkConfig(listen=("127.0.0.1", listen))
            ast = SimSipAsterisk(
                self.state_dir, eid_of(next(_numbers)), f"sip:pbxmesh@127.0.0.1:{listen}"
            )
            config = replace(config, uri=f"sip:pbxmesh@127.0.0.1:{ast.sip_port}")
        else:
            star, config = sip_asterisk(f"sip{next(_numbers)}", eid_of(next(_numbers)))
            ast = SipAsterisk(star)
        # A quick keep-alive, so the contract's restart is seen within its timeout.
        self.configs[id(ast)] = replace(config, keepalive=0.2, keepalive_timeout=0.5)
        await ast.start()
        return ast

    def link(self, asterisk: Asterisk) -> SipLink:
        return SipLink(self.configs[id(asterisk)])


@pytest.fixture(params=pbx_params())
async def link_backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SipBackend]:
    if request.param == "asterisk":
        request.getfixturevalue("require_asterisk")
    yield SipBackend(request.param, tmp_path)


@pytest.mark.asterisk
@pytest.mark.parametrize("transport", ["tcp", "udp"])
async def test_digest_both_ways_and_tcp_on_a_real_asterisk(
    require_asterisk: None, transport: str
) -> None:
    """With username/secret, each side challenges the other (the auth object that
    ``asterisk-config`` prints); with transport tcp, pbxmesh publishes over TCP."""
    star, config = sip_asterisk(
        "auth", eid_of(next(_numbers)), secret="s3cr3t", transport=transport
    )
    ast = SipAsterisk(star)
    await ast.start()
    port = FakeCluster()
    link = SipLink(replace(config, keepalive=0.2))
    try:
        await link.start(port)
        async with asyncio.timeout(20):
            await link.wait_synced()
        await ast.set_device("Custom:authed", DeviceState.BUSY)
        await wait_for(lambda: port.last("Custom:authed") is DeviceState.BUSY, "reported")
        link.origin_device("Custom:far", THERE, DeviceState.RINGING)
        await wait_for(
            lambda: ast.remote_device("Custom:far"), "written", expect=DeviceState.RINGING
        )
        assert link.status().extra["publish_failures"] == 0
        assert "Unauthorized" not in star.messages()
    finally:
        await link.close()
        await ast.close()


async def wait_for(check, what: str, expect=True, within: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    end = loop.time() + within
    while True:
        got = check()
        if not isinstance(got, (bool, DeviceState)):
            got = await got
        if got == expect:
            return
        if loop.time() > end:
            raise AssertionError(f"not within {within}s: {what} (last {got!r})")
        await asyncio.sleep(0.02)
