"""Queue agents across servers over the AMI link, on real Asterisk (every build): a queue on
this server whose member is another server's phone names the member's *counterpart* as its
``state_interface`` (the AMI link writes the other servers' state there), and app_queue's
``Queue:<name>_avail`` device is shared as any local device.

The agent's remote state is reported through the link's port (as the node reports another
server's ``PJSIP/2001``); no SIPp phone is in a call here.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest

from pbxmesh.links.ami import AmiConfig, AmiLink, AmiLinkConfig
from pbxmesh.links.ami.client import AmiClient
from pbxmesh.states import DeviceState
from tests.ami_helpers import FakeCluster, wait_until
from tests.harness.asterisk import AMI_MODULES, AMI_SECRET, AMI_USER, Asterisk, Build, eid_of
from tests.harness.docs import doc_block

pytestmark = [pytest.mark.asterisk, pytest.mark.integration]

#: docs/asterisk.md's queues.conf for the AMI link
QUEUES = "[general]\n" + doc_block("docs/asterisk.md", "[support]   ; queues.conf, AMI link")


@pytest.fixture(scope="module")
def star(asterisk_build: Build, require_asterisk: None) -> Iterator[Asterisk]:
    ast = Asterisk(
        "queues",
        eid_of(0x63),
        modules=(*AMI_MODULES, "app_queue"),
        dialplan="[from-internal]\nexten => 2001,1,NoOp()\n",
        files={"queues.conf": QUEUES},
    )
    try:
        ast.start()
        yield ast
    finally:
        ast.cleanup()


@pytest.fixture
async def probe(star: Asterisk) -> AsyncIterator[AmiClient]:
    async with AmiClient(AmiConfig("127.0.0.1", star.ami_port, AMI_USER, AMI_SECRET)) as client:
        await client.wait_connected()
        yield client


async def member_status(probe: AmiClient) -> tuple[str, str]:
    """The member's state interface and app_queue's device state number for it."""
    answer = await probe.list_action("QueueStatus", Queue="support")
    (member,) = [e for e in answer.items if e.name == "QueueMember"]
    return member.get("StateInterface") or "", member.get("Status") or ""


async def test_a_remote_agent_counts_in_use_and_the_queue_avail_device_is_shared(
    star: Asterisk, probe: AmiClient
) -> None:
    cluster = FakeCluster()
    link = AmiLink(
        AmiConfig("127.0.0.1", star.ami_port, AMI_USER, AMI_SECRET),
        AmiLinkConfig(include=("PJSIP/*", "Queue:*_avail")),
    )
    await link.start(cluster)
    try:
        await link.client.wait_connected()
        async with asyncio.timeout(5):
            await link.wait_synced()
        cp = "Custom:remote-PJSIP-2001"
        link.remote_device("PJSIP/2001", DeviceState.INUSE)  # the agent's phone, on B
        await wait_until(lambda: _is(probe, (cp, "2")), 2.0, "member InUse (AST_DEVICE_INUSE)")
        await wait_until(
            lambda: cluster.last("Queue:support_avail") is DeviceState.INUSE, 2.0, "no agent free"
        )
        link.remote_device("PJSIP/2001", DeviceState.NOT_INUSE)
        await wait_until(lambda: _is(probe, (cp, "1")), 2.0, "member free again")
        await wait_until(
            lambda: cluster.last("Queue:support_avail") is DeviceState.NOT_INUSE, 2.0, "free"
        )
        assert not any(d.startswith("Queue:support_pause") for d, _ in cluster.published)
    finally:
        await link.close()


async def _is(probe: AmiClient, want: tuple[str, str]) -> bool:
    return await member_status(probe) == want
