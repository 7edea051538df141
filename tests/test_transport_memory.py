"""The transport contract over the in-memory transport."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from pbxmesh.transport import MemoryNetwork, MemoryTransport, Transport
from tests.harness.cpg_peer import event_dict
from tests.harness.recorder import Recorder
from tests.transport_contract import (  # noqa: F401  (collected by pytest)
    test_close_is_seen_as_clean_leave_and_ends_events,
    test_first_event_is_membership_with_self,
    test_large_message_up_to_max_message_size,
    test_peer_close_is_seen_as_clean_leave,
    test_per_sender_fifo_without_loss,
    test_second_member_is_seen_by_both,
    test_send_after_close_raises_transport_closed,
    test_send_delivers_to_every_member_including_self,
)


class MemoryPeer:
    """A second in-memory member that records its events as the contract's dicts."""

    def __init__(self, transport: MemoryTransport) -> None:
        self.transport = transport
        self.log: Recorder[dict[str, Any]] = Recorder()
        self.member_id = ""
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        await self.transport.start()
        self.member_id = self.transport.self_id
        self._tasks.append(asyncio.create_task(self._pump()))

    async def _pump(self) -> None:
        try:
            async for event in self.transport.events():
                self.log.add(event_dict(event))
        finally:
            self.log.end()

    async def send(self, data: bytes) -> None:
        await self.transport.send(data)

    async def send_seq(self, prefix: str, count: int) -> None:
        async def run() -> None:
            for i in range(count):
                await self.transport.send(f"{prefix}{i}".encode())

        self._tasks.append(asyncio.create_task(run()))

    async def close(self) -> None:
        await self.transport.close()

    async def aclose(self) -> None:
        await self.transport.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class MemoryBackend:
    timeout = 5.0  # never reached: delivery is immediate
    prompt = 1.0

    def __init__(self) -> None:
        self.network = MemoryNetwork()
        self.peers: list[MemoryPeer] = []

    def transport(self) -> Transport:
        return self.network.new_transport("local")

    async def peer(self) -> MemoryPeer:
        peer = MemoryPeer(self.network.new_transport("peer"))
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
