"""The link contract suite (tests/link_contract.py) over the SIP PUBLISH link, on a real
Asterisk configured with what ``pbxmesh asterisk-config`` prints.

What the link writes is read back as Asterisk's own aggregate (``Getvar DEVICE_STATE``) of a
device nothing local holds: the other servers' states, aggregated by Asterisk itself.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from pbxmesh.links.sip.link import SipLink, SipLinkConfig
from tests.harness.asterisk import eid_of
from tests.link_contract import *  # noqa: F403 - the contract's test functions
from tests.link_contract import Asterisk
from tests.sip_helpers import SipAsterisk, sip_asterisk

pytestmark = [pytest.mark.asterisk]

_numbers = itertools.count(40)


class SipBackend:
    timeout = 10.0

    def __init__(self) -> None:
        self.configs: dict[int, SipLinkConfig] = {}

    async def asterisk(self) -> Asterisk:
        star, config = sip_asterisk(f"sip{next(_numbers)}", eid_of(next(_numbers)))
        ast = SipAsterisk(star)
        # A quick keep-alive, so the contract's restart is seen within its timeout.
        self.configs[id(ast)] = replace(config, keepalive=0.2, keepalive_timeout=0.5)
        await ast.start()
        return ast

    def link(self, asterisk: Asterisk) -> SipLink:
        return SipLink(self.configs[id(asterisk)])


@pytest.fixture
async def link_backend(require_asterisk: None) -> AsyncIterator[SipBackend]:
    yield SipBackend()
