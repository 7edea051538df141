"""The transport contract over Corosync CPG (a loopback corosync), and losing the daemon."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from pbxmesh.transport import LinkState, MembershipChange, Message
from pbxmesh.transport.corosync import CorosyncConfig, CorosyncTransport
from tests.harness.corosync import CorosyncInstance
from tests.harness.cpg_peer import CpgPeerProcess
from tests.transport_contract import (  # noqa: F401  (collected by pytest)
    EventLog,
    test_close_is_seen_as_clean_leave_and_ends_events,
    test_first_event_is_membership_with_self,
    test_large_message_up_to_max_message_size,
    test_peer_close_is_seen_as_clean_leave,
    test_per_sender_fifo_without_loss,
    test_second_member_is_seen_by_both,
    test_send_after_close_raises_transport_closed,
    test_send_delivers_to_every_member_including_self,
)

pytestmark = pytest.mark.integration


class CorosyncBackend:
    timeout = 20.0
    prompt = 2.0  # a clean leave is seen in ~10 ms; node loss would take seconds

    def __init__(self, group: str) -> None:
        self.group = group
        self.peers: list[CpgPeerProcess] = []

    def transport(self) -> CorosyncTransport:
        return CorosyncTransport(CorosyncConfig.local(self.group))

    async def peer(self) -> CpgPeerProcess:
        peer = CpgPeerProcess(self.group)
        self.peers.append(peer)
        await peer.start()
        return peer


@pytest.fixture
async def transport_backend(
    corosync_loopback: CorosyncInstance, corosync_group: str
) -> AsyncIterator[CorosyncBackend]:
    backend = CorosyncBackend(corosync_group)
    try:
        yield backend
    finally:
        for peer in backend.peers:
            await peer.kill()


async def test_daemon_killed_and_restarted(
    corosync_loopback: CorosyncInstance, corosync_group: str
) -> None:
    transport = CorosyncTransport(CorosyncConfig.local(corosync_group))
    await transport.start()
    log = EventLog(transport)
    try:
        me = transport.self_id
        await log.wait_for(lambda items: items or None, 10, "first view")

        killed = time.monotonic()
        corosync_loopback.kill()
        down = await log.wait_for(
            lambda items: next((e for e in items if isinstance(e, LinkState) and not e.up), None),
            10,
            "LinkState(up=False)",
        )
        detected = time.monotonic() - killed
        assert "CS_ERR_LIBRARY" in down.reason or "CS_ERR" in down.reason

        # The dead fd stays readable: with the reader removed the process must sit idle
        # (reconnect attempts every 50 ms cost next to nothing).
        cpu0, wall0 = time.process_time(), time.monotonic()
        await asyncio.sleep(1.0)  # a measurement window, not a wait for a condition
        cpu = (time.process_time() - cpu0) / (time.monotonic() - wall0)
        assert cpu < 0.3, f"event loop spinning while corosync is down: {cpu:.0%} CPU"

        restarted = time.monotonic()
        corosync_loopback.start()
        mark = len(log.items)
        await log.wait_for(
            lambda items: next(
                (e for e in items[mark:] if isinstance(e, LinkState) and e.up), None
            ),
            20,
            "LinkState(up=True)",
        )
        up_at = next(
            i for i, e in enumerate(log.items) if i >= mark and isinstance(e, LinkState) and e.up
        )
        view = await log.wait_for(
            lambda items: next(
                (
                    e
                    for e in items[up_at:]
                    if isinstance(e, MembershipChange) and me in {m.member_id for m in e.members}
                ),
                None,
            ),
            20,
            "fresh view with self",
        )
        reconnected = time.monotonic() - restarted
        assert view.members
        await transport.send(b"after restart")
        await log.wait_for(
            lambda items: next(
                (e for e in items if isinstance(e, Message) and e.data == b"after restart"), None
            ),
            10,
            "own message after restart",
        )
        print(f"\nkill -9 detected in {detected * 1000:.0f} ms; rejoined {reconnected:.2f} s")
    finally:
        await transport.close()
        await log.aclose()
        if corosync_loopback.pid is None:  # leave the session daemon running
            corosync_loopback.start()
