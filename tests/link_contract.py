"""The link contract suite (see ``pbxmesh/links/base.py``), run over every link to Asterisk.

A test module imports everything below (the ``linked`` fixture and the ``test_*``
functions) and provides a ``link_backend`` fixture:
an object with

* ``async asterisk() -> Asterisk`` -- start "an Asterisk" (the simulator, a real one) with a
  dialplan the link can work with; the suite closes it;
* ``link(asterisk) -> Link`` -- a new, unstarted link to that Asterisk;
* ``timeout`` -- seconds to wait for anything to arrive.

An :class:`Asterisk` is driven the way an administrator or a phone would drive it, and read
back the way a hint would read it, so the same suite holds for every protocol:

* ``address`` -- ``(host, port)`` of its AMI (how the suite's own helpers reach it);
* ``async set_device(device, state)`` -- change a local device (``Custom:`` names only);
* ``async set_mailbox(mailbox, new, old)`` -- change a local mailbox's counts;
* ``async remote_device(device) -> DeviceState`` -- what the link wrote there for the other
  servers' state of ``device`` (INVALID when nothing, or nothing any more);
* ``async mailbox(mailbox) -> (new, old)`` -- the counts Asterisk shows for a mailbox;
* ``async set_presence(presentity, state, subtype, message)`` -- set a local presence, as
  ``Set(PRESENCE_STATE(CustomPresence:NAME)=...)`` would;
* ``async presence(presentity) -> (state, subtype, message)`` -- what Asterisk shows for it;
* ``async restart()`` -- stop and start again on the same address, keeping its database (the
  link must notice, reconnect and resync); ``async close()``.

The link is attached to a real :class:`~pbxmesh.node.Node` (``here``) on the in-memory
transport; a second node (``there``) is the rest of the cluster. Nothing is mocked.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol

import pytest

from pbxmesh.eid import EID
from pbxmesh.links.base import Interest, Link, LinkStatus
from pbxmesh.node import ChannelConfig, Node, NodeConfig
from pbxmesh.presence import PresenceState
from pbxmesh.states import DeviceState
from pbxmesh.transport.memory import MemoryNetwork

__all__ = [
    "Asterisk",
    "LinkBackend",
    "Setup",
    "linked",
    "test_a_burst_of_remote_changes_ends_at_the_last",
    "test_close_is_idempotent_and_reports_disconnected",
    "test_local_device_is_reported_as_this_servers_origin",
    "test_local_mailbox_is_reported_and_remote_counts_are_written_without_echo",
    "test_local_presence_is_reported_and_remote_presence_is_written_without_echo",
    "test_presence_survives_commas_quotes_and_backslashes_both_ways",
    "test_remote_device_is_written_and_cleared_when_its_server_leaves",
    "test_resync_after_asterisk_restarts",
    "test_start_connects_and_resyncs",
    "test_what_the_link_writes_is_never_reported_back",
]

S = DeviceState
CHANNELS = (ChannelConfig("device_state"),)


class Asterisk(Protocol):
    address: tuple[str, int]

    async def set_device(self, device: str, state: DeviceState) -> None: ...

    async def set_mailbox(self, mailbox: str, new: int, old: int) -> None: ...

    async def remote_device(self, device: str) -> DeviceState: ...

    async def mailbox(self, mailbox: str) -> tuple[int, int]: ...

    async def set_presence(
        self, presentity: str, state: PresenceState, subtype: str, message: str
    ) -> None: ...

    async def presence(self, presentity: str) -> tuple[PresenceState, str, str]: ...

    async def restart(self) -> None: ...

    async def close(self) -> None: ...


class LinkBackend(Protocol):
    timeout: float

    async def asterisk(self) -> Asterisk: ...

    def link(self, asterisk: Asterisk) -> Link: ...


class Setup:
    """An Asterisk, its link attached to node ``here``, and node ``there``."""

    def __init__(
        self, backend: LinkBackend, net: MemoryNetwork, asterisk: Asterisk, here: Node, there: Node
    ) -> None:
        self.backend = backend
        self.net = net
        self.asterisk = asterisk
        self.here = here
        self.there = there
        self.link: Link = backend.link(asterisk)

    async def eventually(
        self, check: Callable[[], Awaitable[bool] | bool], what: str, deadline: float = 0.0
    ) -> None:
        """Poll ``check`` until true; fail after the backend's timeout."""
        loop = asyncio.get_running_loop()
        end = loop.time() + (deadline or self.backend.timeout)
        while True:
            result = check()
            if not isinstance(result, bool):
                result = await result
            if result:
                return
            if loop.time() > end:
                raise AssertionError(f"not within {deadline or self.backend.timeout}s: {what}")
            await asyncio.sleep(0.01)

    async def synced(self) -> None:
        async with asyncio.timeout(self.backend.timeout):
            await self.link.wait_synced()

    async def idle(self) -> None:
        async with asyncio.timeout(self.backend.timeout):
            await self.link.wait_idle()

    def reported(self, device: str) -> DeviceState:
        """``here``'s own slot for a device, as the rest of the cluster sees it."""
        return self.there.devices.slot_state(device, self.here.eid)

    async def remote_is(self, device: str, state: DeviceState) -> bool:
        return await self.asterisk.remote_device(device) is state


@pytest.fixture
async def linked(link_backend: LinkBackend) -> AsyncIterator[Setup]:
    net = MemoryNetwork()
    here = Node(NodeConfig("here", EID.generate(), CHANNELS), net.new_transport("here"))
    there = Node(NodeConfig("there", EID.generate(), CHANNELS), net.new_transport("there"))
    asterisk = await link_backend.asterisk()
    s = Setup(link_backend, net, asterisk, here, there)
    try:
        await here.start()
        await there.start()
        await here.add_link(s.link)
        await s.synced()
        yield s
    finally:
        await here.close()  # closes the link too
        await there.close()
        await asterisk.close()


def needs_presence(linked: Setup) -> None:
    """Presence is carried by the links whose Asterisk side has it (AMI: func_presencestate);
    Asterisk's own res_corosync ring carries device states and MWI only."""
    if Interest.PRESENCE not in linked.link.interest:
        pytest.skip(f"the {linked.link.kind} link carries no presence (its protocol has none)")


async def test_start_connects_and_resyncs(linked: Setup) -> None:
    status = linked.link.status()
    assert isinstance(status, LinkStatus)
    assert status.kind == linked.link.kind and status.kind != "link"
    assert status.connected
    assert status.resyncs >= 1
    assert status.address
    assert linked.link.interest & (Interest.REMOTE_DEVICES | Interest.ORIGIN_DEVICES)
    assert linked.here.links == [linked.link]


async def test_local_device_is_reported_as_this_servers_origin(linked: Setup) -> None:
    await linked.asterisk.set_device("Custom:lc-local", S.INUSE)
    await linked.eventually(lambda: linked.reported("Custom:lc-local") is S.INUSE, "reported")
    await linked.asterisk.set_device("Custom:lc-local", S.NOT_INUSE)
    await linked.eventually(lambda: linked.reported("Custom:lc-local") is S.NOT_INUSE, "again")
    assert linked.link.status().published >= 2


async def test_remote_device_is_written_and_cleared_when_its_server_leaves(linked: Setup) -> None:
    linked.there.publish_device("Custom:lc-remote", S.RINGING)
    await linked.eventually(lambda: linked.remote_is("Custom:lc-remote", S.RINGING), "written")
    linked.there.publish_device("Custom:lc-remote", S.INUSE)
    await linked.eventually(lambda: linked.remote_is("Custom:lc-remote", S.INUSE), "rewritten")
    await linked.there.close()  # the other server leaves: no other origin has the device
    await linked.eventually(lambda: linked.remote_is("Custom:lc-remote", S.INVALID), "cleared")


async def test_what_the_link_writes_is_never_reported_back(linked: Setup) -> None:
    linked.there.publish_device("Custom:lc-echo", S.BUSY)
    await linked.eventually(lambda: linked.remote_is("Custom:lc-echo", S.BUSY), "written")
    await linked.idle()
    await linked.asterisk.set_device("Custom:lc-marker", S.INUSE)  # a later local change
    await linked.eventually(lambda: linked.reported("Custom:lc-marker") is S.INUSE, "marker")
    # Only what changed locally is this server's: nothing the link wrote came back as ours.
    assert {d for d, _, _ in linked.there.devices.snapshot(linked.here.eid)} == {"Custom:lc-marker"}
    assert linked.here.devices.slot_state("Custom:lc-echo", linked.here.eid) is S.INVALID


async def test_local_mailbox_is_reported_and_remote_counts_are_written_without_echo(
    linked: Setup,
) -> None:
    await linked.asterisk.set_mailbox("1000@default", 2, 1)

    def reported() -> bool:
        r = linked.there.mwi.get("1000@default")
        return r is not None and r.origin == linked.here.eid and (r.new, r.old) == (2, 1)

    await linked.eventually(reported, "local mailbox reported")
    linked.there.publish_mwi("2000@default", 5, 3)

    async def written() -> bool:
        return await linked.asterisk.mailbox("2000@default") == (5, 3)

    await linked.eventually(written, "remote counts written")
    await linked.idle()
    await linked.asterisk.set_mailbox("3000@default", 1, 0)  # a later local change
    await linked.eventually(lambda: linked.there.mwi.get("3000@default") is not None, "marker")
    record = linked.there.mwi.get("2000@default")
    assert record is not None and record.origin == linked.there.eid, "the write came back"


async def test_local_presence_is_reported_and_remote_presence_is_written_without_echo(
    linked: Setup,
) -> None:
    needs_presence(linked)
    P = PresenceState
    alice = "CustomPresence:lc-alice"
    await linked.asterisk.set_presence(alice, P.DND, "", "back at 3")

    def reported(value: tuple[PresenceState, str, str]) -> bool:
        r = linked.there.presence.get(alice)
        return r is not None and r.origin == linked.here.eid and r.value == value

    await linked.eventually(lambda: reported((P.DND, "", "back at 3")), "local presence reported")
    await linked.asterisk.set_presence(alice, P.AVAILABLE, "", "")
    await linked.eventually(lambda: reported((P.AVAILABLE, "", "")), "changed back")

    bob = "CustomPresence:lc-bob"
    linked.there.publish_presence(bob, P.AWAY, "lunch", "back at 2")

    async def shows(value: tuple[PresenceState, str, str]) -> bool:
        return await linked.asterisk.presence(bob) == value

    await linked.eventually(lambda: shows((P.AWAY, "lunch", "back at 2")), "remote written")
    linked.there.publish_presence(bob, P.AVAILABLE)
    await linked.eventually(lambda: shows((P.AVAILABLE, "", "")), "remote cleared")
    await linked.idle()
    await linked.asterisk.set_presence("CustomPresence:lc-marker", P.XA, "", "")
    await linked.eventually(
        lambda: linked.there.presence.get("CustomPresence:lc-marker") is not None, "marker"
    )
    record = linked.there.presence.get(bob)
    assert record is not None and record.origin == linked.there.eid, "the write came back"


async def test_presence_survives_commas_quotes_and_backslashes_both_ways(linked: Setup) -> None:
    needs_presence(linked)
    P = PresenceState
    text = 'in a meeting, "urgent" only \\ ask?'
    here = "CustomPresence:lc-here"
    await linked.asterisk.set_presence(here, P.AWAY, "meeting, room 2", text)

    def reported() -> bool:
        r = linked.there.presence.get(here)
        return r is not None and r.value == (P.AWAY, "meeting, room 2", text)

    await linked.eventually(reported, "reported unchanged")
    there = "CustomPresence:lc-there"
    linked.there.publish_presence(there, P.DND, 'it\'s, "late"', text)

    async def written() -> bool:
        return await linked.asterisk.presence(there) == (P.DND, 'it\'s, "late"', text)

    await linked.eventually(written, "written unchanged")


async def test_resync_after_asterisk_restarts(linked: Setup) -> None:
    third = Node(NodeConfig("third", EID.generate(), CHANNELS), linked.net.new_transport("third"))
    await third.start()
    try:
        await linked.asterisk.set_device("Custom:lc-kept", S.BUSY)
        await linked.eventually(lambda: linked.reported("Custom:lc-kept") is S.BUSY, "reported")
        linked.there.publish_device("Custom:lc-far", S.RINGING)
        third.publish_device("Custom:lc-gone", S.INUSE)
        await linked.eventually(lambda: linked.remote_is("Custom:lc-far", S.RINGING), "written")
        await linked.eventually(lambda: linked.remote_is("Custom:lc-gone", S.INUSE), "written")
        await linked.idle()
        resyncs = linked.link.status().resyncs
        restarted = asyncio.create_task(linked.asterisk.restart())
        await linked.eventually(lambda: not linked.link.status().connected, "link down")
        # While the link is down the cluster moves on: the far phone stops ringing, and the
        # third server leaves, taking its device with it.
        linked.there.publish_device("Custom:lc-far", S.NOT_INUSE)
        await third.close()
        await restarted
        await linked.synced()
        await linked.idle()
        status = linked.link.status()
        assert status.connected and status.resyncs == resyncs + 1
        assert await linked.asterisk.remote_device("Custom:lc-far") is S.NOT_INUSE
        assert await linked.asterisk.remote_device("Custom:lc-gone") is S.INVALID
        # Asterisk's own state was read again and is still this server's.
        await linked.eventually(lambda: linked.reported("Custom:lc-kept") is S.BUSY, "kept")
    finally:
        await third.close()


async def test_a_burst_of_remote_changes_ends_at_the_last(linked: Setup) -> None:
    states = [S.INUSE, S.BUSY, S.RINGING, S.ONHOLD, S.NOT_INUSE] * 20 + [S.RINGINUSE]
    for state in states:
        linked.there.publish_device("Custom:lc-burst", state)
    await linked.eventually(lambda: linked.remote_is("Custom:lc-burst", S.RINGINUSE), "last")
    await linked.idle()
    assert await linked.asterisk.remote_device("Custom:lc-burst") is S.RINGINUSE


async def test_close_is_idempotent_and_reports_disconnected(linked: Setup) -> None:
    await linked.here.remove_link(linked.link)
    await linked.link.close()
    assert not linked.link.status().connected
    assert linked.here.links == []
    # The node no longer tells it anything: publishing elsewhere must not reach the link.
    linked.there.publish_device("Custom:lc-after", S.INUSE)
    await linked.eventually(
        lambda: linked.here.devices.cluster_state("Custom:lc-after") is S.INUSE, "arrived"
    )
    assert linked.link.status().queue_depth == 0
