"""The link contract suite (tests/link_contract.py) over the SIP PUBLISH link, on the PBX
simulator's SIP subset and on a real Asterisk configured with what ``pbxmesh asterisk-config``
prints.

What the link writes is read back as Asterisk's own aggregate (``Getvar DEVICE_STATE``) of a
device nothing local holds: the other servers' states, aggregated by Asterisk itself.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from pbxmesh.links.sip.link import SipLink, SipLinkConfig
from tests.harness.asterisk import eid_of, free_port
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


@pytest.fixture(params=["simulator", pytest.param("asterisk", marks=pytest.mark.asterisk)])
async def link_backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SipBackend]:
    if request.param == "asterisk":
        request.getfixturevalue("require_asterisk")
    yield SipBackend(request.param, tmp_path)
