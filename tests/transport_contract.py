"""The transport contract suite (see ``pbxmesh/transport/base.py``), run over every transport.

A test module imports the ``test_*`` functions below and provides a ``transport_backend``
fixture: an object with

* ``transport() -> Transport`` — a new, unstarted transport in this process;
* ``async peer() -> Peer`` — a second member, started and joined, that records what it sees
  as dicts (``tests/harness/cpg_peer.py`` documents the format; :func:`event_dict`);
* ``timeout`` — seconds to wait for anything to arrive, and ``prompt`` — seconds within
  which a clean leave must be seen.

The peer may live in another process (Corosync refuses a second join from one PID), which
is why it is driven through this small interface rather than as a second ``Transport``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

import pytest

from pbxmesh.errors import TransportClosed
from pbxmesh.transport import MembershipChange, Message, Transport, TransportEvent
from tests.harness.cpg_peer import event_dict
from tests.harness.recorder import Recorder

__all__ = [
    "Backend",
    "EventLog",
    "InProcessPeer",
    "Peer",
    "test_close_is_seen_as_clean_leave_and_ends_events",
    "test_first_event_is_membership_with_self",
    "test_large_message_up_to_max_message_size",
    "test_peer_close_is_seen_as_clean_leave",
    "test_per_sender_fifo_without_loss",
    "test_second_member_is_seen_by_both",
    "test_send_after_close_raises_transport_closed",
    "test_send_delivers_to_every_member_including_self",
]


class InProcessPeer:
    """A second member in this process (any transport that allows several per process),
    recording its events as the contract's dicts."""

    def __init__(self, transport: Transport) -> None:
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


FIFO_COUNT = 2000


class Peer(Protocol):
    member_id: str
    log: Recorder[dict[str, Any]]

    async def send(self, data: bytes) -> None: ...
    async def send_seq(self, prefix: str, count: int) -> None: ...
    async def close(self) -> None: ...


class Backend(Protocol):
    timeout: float
    prompt: float

    def transport(self) -> Transport: ...
    async def peer(self) -> Peer: ...


class EventLog(Recorder[TransportEvent]):
    """Drains ``transport.events()`` in a task; ``ended`` once the stream ends."""

    def __init__(self, transport: Transport) -> None:
        super().__init__()
        self._task = asyncio.create_task(self._pump(transport))

    async def _pump(self, transport: Transport) -> None:
        try:
            async for event in transport.events():
                self.add(event)
        finally:
            self.end()

    async def aclose(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def own_messages(items: list[TransportEvent], sender: str) -> list[bytes]:
    return [e.data for e in items if isinstance(e, Message) and e.sender == sender]


def peer_digests(items: list[dict[str, Any]], sender: str) -> list[str]:
    return [e["sha"] for e in items if e["ev"] == "msg" and e["sender"] == sender]


def change_where(pred: Callable[[MembershipChange], bool]) -> Callable[..., Any]:
    def find(items: list[TransportEvent]) -> MembershipChange | None:
        return next((e for e in items if isinstance(e, MembershipChange) and pred(e)), None)

    return find


def ids(members: Any) -> set[str]:
    return {m.member_id for m in members}


@contextlib.asynccontextmanager
async def running(backend: Backend) -> AsyncIterator[tuple[Transport, EventLog]]:
    transport = backend.transport()
    await transport.start()
    log = EventLog(transport)
    try:
        await log.wait_for(
            change_where(lambda c: transport.self_id in ids(c.members)), backend.timeout, "join"
        )
        yield transport, log
    finally:
        await transport.close()
        await log.aclose()


async def peer_in_view(backend: Backend, log: EventLog) -> Peer:
    """Start a second member and wait until our view has it."""
    peer = await backend.peer()
    await log.wait_for(
        change_where(lambda c: peer.member_id in ids(c.members)), backend.timeout, "peer in view"
    )
    return peer


# -- the contract ----------------------------------------------------------------------------------
async def test_first_event_is_membership_with_self(transport_backend: Backend) -> None:
    transport = transport_backend.transport()
    await transport.start()
    log = EventLog(transport)
    try:
        first = await log.wait_for(
            lambda items: items[0] if items else None, transport_backend.timeout, "first event"
        )
        assert isinstance(first, MembershipChange)
        assert transport.self_id
        assert transport.self_id in ids(first.members)
    finally:
        await transport.close()
        await log.aclose()


async def test_send_delivers_to_every_member_including_self(transport_backend: Backend) -> None:
    async with running(transport_backend) as (transport, log):
        peer = await peer_in_view(transport_backend, log)
        await transport.send(b"from-local")
        await peer.send(b"from-peer")
        timeout = transport_backend.timeout
        assert await log.wait_for(
            lambda items: own_messages(items, transport.self_id) or None, timeout, "own message"
        ) == [b"from-local"]
        assert await log.wait_for(
            lambda items: own_messages(items, peer.member_id) or None, timeout, "peer message"
        ) == [b"from-peer"]
        assert await peer.log.wait_for(
            lambda items: peer_digests(items, transport.self_id) or None, timeout, "at peer"
        ) == [sha(b"from-local")]
        assert await peer.log.wait_for(
            lambda items: peer_digests(items, peer.member_id) or None, timeout, "peer's own"
        ) == [sha(b"from-peer")]


async def test_per_sender_fifo_without_loss(transport_backend: Backend) -> None:
    n = FIFO_COUNT
    timeout = transport_backend.timeout * 3
    async with running(transport_backend) as (transport, log):
        peer = await peer_in_view(transport_backend, log)
        await peer.send_seq("p", n)  # runs concurrently with our own sends
        for i in range(n):
            await transport.send(f"t{i}".encode())
        mine = [f"t{i}".encode() for i in range(n)]
        theirs = [f"p{i}".encode() for i in range(n)]

        def complete(sender: str) -> Callable[[list[TransportEvent]], list[bytes] | None]:
            return lambda items: got if len(got := own_messages(items, sender)) >= n else None

        assert await log.wait_for(complete(transport.self_id), timeout, "own 2000") == mine
        assert await log.wait_for(complete(peer.member_id), timeout, "peer's 2000") == theirs

        def complete_at_peer(sender: str) -> Callable[[list[dict[str, Any]]], list[str] | None]:
            return lambda items: got if len(got := peer_digests(items, sender)) >= n else None

        for sender, expect in ((transport.self_id, mine), (peer.member_id, theirs)):
            got = await peer.log.wait_for(
                complete_at_peer(sender), timeout, f"2000 from {sender} at peer"
            )
            assert got == [sha(m) for m in expect]


async def test_second_member_is_seen_by_both(transport_backend: Backend) -> None:
    async with running(transport_backend) as (transport, log):
        peer = await transport_backend.peer()
        change = await log.wait_for(
            change_where(lambda c: peer.member_id in ids(c.joined)),
            transport_backend.timeout,
            "peer joined",
        )
        assert ids(change.members) >= {transport.self_id, peer.member_id}
        assert change.left == ()
        first = await peer.log.wait_for(
            lambda items: next((e for e in items if e["ev"] == "members"), None),
            transport_backend.timeout,
            "peer's first view",
        )
        assert {transport.self_id, peer.member_id} <= set(first["members"])


async def test_close_is_seen_as_clean_leave_and_ends_events(transport_backend: Backend) -> None:
    transport = transport_backend.transport()
    await transport.start()
    log = EventLog(transport)
    try:
        peer = await peer_in_view(transport_backend, log)
        me = transport.self_id
        began = time.monotonic()
        await transport.close()
        left = await peer.log.wait_for(
            lambda items: next(
                (e for e in items if e["ev"] == "members" and me in e["left"]), None
            ),
            transport_backend.timeout,
            "local member left, at peer",
        )
        elapsed = time.monotonic() - began
        assert left["clean"][left["left"].index(me)] is True
        assert me not in left["members"]
        assert elapsed < transport_backend.prompt, f"leave seen after {elapsed:.2f} s"
        await log.wait_ended(transport_backend.timeout)
    finally:
        await transport.close()
        await log.aclose()


async def test_peer_close_is_seen_as_clean_leave(transport_backend: Backend) -> None:
    async with running(transport_backend) as (transport, log):
        peer = await peer_in_view(transport_backend, log)
        await peer.close()
        change = await log.wait_for(
            change_where(lambda c: peer.member_id in ids(c.left)),
            transport_backend.prompt,
            "peer left",
        )
        assert change.clean == tuple(True for _ in change.left)
        assert peer.member_id not in ids(change.members)
        assert transport.self_id in ids(change.members)


async def test_send_after_close_raises_transport_closed(transport_backend: Backend) -> None:
    transport = transport_backend.transport()
    await transport.start()
    await transport.close()
    await transport.close()  # idempotent
    with pytest.raises(TransportClosed):
        await transport.send(b"too late")


async def test_large_message_up_to_max_message_size(transport_backend: Backend) -> None:
    async with running(transport_backend) as (transport, log):
        peer = await peer_in_view(transport_backend, log)
        size = transport.max_message_size
        assert size >= 64 * 1024
        data = (bytes(range(256)) * (size // 256 + 1))[:size]
        await transport.send(data)
        got = await log.wait_for(
            lambda items: own_messages(items, transport.self_id) or None,
            transport_backend.timeout,
            "own large message",
        )
        assert got == [data]
        at_peer = await peer.log.wait_for(
            lambda items: peer_digests(items, transport.self_id) or None,
            transport_backend.timeout,
            "large message at peer",
        )
        assert at_peer == [sha(data)]
        with pytest.raises(ValueError, match="exceeds"):
            await transport.send(data + b"x")
