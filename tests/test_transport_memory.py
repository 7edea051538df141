"""The transport contract over the in-memory transport."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from pbxmesh.transport import MemoryNetwork, Transport
from tests.transport_contract import (  # noqa: F401  (collected by pytest)
    InProcessPeer,
    test_close_is_seen_as_clean_leave_and_ends_events,
    test_first_event_is_membership_with_self,
    test_large_message_up_to_max_message_size,
    test_peer_close_is_seen_as_clean_leave,
    test_per_sender_fifo_without_loss,
    test_second_member_is_seen_by_both,
    test_send_after_close_raises_transport_closed,
    test_send_delivers_to_every_member_including_self,
)


class MemoryBackend:
    timeout = 5.0  # never reached: delivery is immediate
    prompt = 1.0

    def __init__(self) -> None:
        self.network = MemoryNetwork()
        self.peers: list[InProcessPeer] = []

    def transport(self) -> Transport:
        return self.network.new_transport("local")

    async def peer(self) -> InProcessPeer:
        peer = InProcessPeer(self.network.new_transport("peer"))
        self.peers.append(peer)
        await peer.start()
        return peer


@pytest.fixture
async def transport_backend() -> AsyncIterator[MemoryBackend]:
    backend = MemoryBackend()
    try:
        yield backend
    finally:
        for peer in backend.peers:
            await peer.aclose()
