"""The link contract suite (tests/link_contract.py) over the res_corosync ring link.

"An Asterisk" is :class:`tests.ring_sim.SimRingAsterisk`, a member of an in-memory ring that
follows res_corosync's rules; the ring link joins the same ring as a bridge. The real thing
(three Asterisk servers on a real corosync ring) is in ``test_ring_asterisk.py``.
"""

from __future__ import annotations

import pytest

from pbxmesh.links.base import Link
from pbxmesh.links.ring import RingLink, RingLinkConfig
from pbxmesh.transport.memory import MemoryNetwork
from tests.link_contract import *  # noqa: F403 - the contract's test functions
from tests.link_contract import Asterisk
from tests.ring_sim import SimRingAsterisk


class RingBackend:
    timeout = 5.0

    async def asterisk(self) -> Asterisk:
        sim = SimRingAsterisk(MemoryNetwork())
        await sim.start()
        return sim

    def link(self, asterisk: Asterisk) -> Link:
        assert isinstance(asterisk, SimRingAsterisk)
        return RingLink(RingLinkConfig(down_grace=0.2), transport=asterisk.net.new_transport("b"))


@pytest.fixture
def link_backend() -> RingBackend:
    return RingBackend()
