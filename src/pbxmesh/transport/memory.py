"""An in-memory transport: several nodes in one process, for unit tests and the contract suite.

A :class:`MemoryNetwork` is one group. Each :class:`MemoryTransport` joined to it receives every
message sent to the group, itself included, in per-sender FIFO order (in fact in one total
order, which is stronger than the contract). The network can be *partitioned*: members in
different partitions neither see each other's messages nor each other in the membership, and
messages sent during the split are never delivered across after the heal — as with Corosync.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterable

from ..errors import TransportClosed
from .base import (
    END,
    Member,
    MembershipChange,
    Message,
    Transport,
    TransportEvent,
    drain,
)

__all__ = ["MemoryNetwork", "MemoryTransport"]


class MemoryNetwork:
    """One group of in-memory members, with partitions."""

    def __init__(self) -> None:
        self._members: dict[str, MemoryTransport] = {}
        self._side: dict[str, int] = {}
        self._ids = itertools.count(1)
        self._view = 0

    def new_transport(self, name: str = "") -> MemoryTransport:
        """A transport that joins this network when started."""
        return MemoryTransport(self, name=name)

    # -- used by MemoryTransport -------------------------------------------------------------
    def _next_id(self) -> int:
        return next(self._ids)

    def _visible(self, member_id: str) -> list[MemoryTransport]:
        side = self._side.get(member_id, 0)
        return [t for mid, t in self._members.items() if self._side.get(mid, 0) == side]

    def _join(self, transport: MemoryTransport) -> None:
        self._members[transport.self_id] = transport
        self._announce(joined=[transport], left=[], clean=[])

    def _leave(self, transport: MemoryTransport, clean: bool) -> None:
        if self._members.pop(transport.self_id, None) is None:
            return
        self._side.pop(transport.self_id, None)
        self._announce(joined=[], left=[transport], clean=[clean], exclude=transport)

    def _announce(
        self,
        joined: list[MemoryTransport],
        left: list[MemoryTransport],
        clean: list[bool],
        exclude: MemoryTransport | None = None,
        sides: Iterable[int] | None = None,
    ) -> None:
        self._view += 1
        wanted = set(sides) if sides is not None else None
        for side in {self._side.get(mid, 0) for mid in self._members}:
            if wanted is not None and side not in wanted:
                continue
            view = [t for mid, t in self._members.items() if self._side.get(mid, 0) == side]
            members = tuple(t.member for t in view)
            change = MembershipChange(
                members=members,
                joined=tuple(t.member for t in joined if t in view),
                left=tuple(t.member for t in left),
                view=self._view,
                quorate=2 * len(view) > len(self._members),
                clean=tuple(clean),
            )
            for t in view:
                if t is not exclude:
                    t._deliver(change)

    def _send(self, sender: MemoryTransport, data: bytes) -> None:
        msg = Message(sender=sender.self_id, data=data)
        for t in self._visible(sender.self_id):
            t._deliver(msg)

    # -- fault injection ---------------------------------------------------------------------
    def partition(self, *groups: Iterable[MemoryTransport]) -> None:
        """Split the network: each group given becomes its own side; the rest stay on side 0."""
        before = {mid: self._side.get(mid, 0) for mid in self._members}
        for n, group in enumerate(groups, start=1):
            for t in group:
                self._side[t.self_id] = n
        self._reannounce(before)

    def heal(self) -> None:
        """Join every side again; each member sees the others join."""
        before = {mid: self._side.get(mid, 0) for mid in self._members}
        self._side.clear()
        self._reannounce(before)

    def crash(self, transport: MemoryTransport) -> None:
        """The member fails without leaving (as kill -9): the others see it leave, not cleanly."""
        self._leave(transport, clean=False)
        transport._deliver(END)

    def _reannounce(self, before: dict[str, int]) -> None:
        self._view += 1
        for mid, t in self._members.items():
            side = self._side.get(mid, 0)
            now = [o for oid, o in self._members.items() if self._side.get(oid, 0) == side]
            was = {oid for oid, s in before.items() if s == before[mid]}
            members = tuple(o.member for o in now)
            t._deliver(
                MembershipChange(
                    members=members,
                    joined=tuple(o.member for o in now if o.self_id not in was),
                    left=tuple(
                        self._members[oid].member
                        for oid in was
                        if oid in self._members and self._side.get(oid, 0) != side
                    ),
                    view=self._view,
                    quorate=2 * len(now) > len(self._members),
                )
            )


class MemoryTransport(Transport):
    """One member of a :class:`MemoryNetwork`."""

    kind = "memory"

    def __init__(self, network: MemoryNetwork, name: str = "") -> None:
        self._net = network
        self._name = name
        self._queue: asyncio.Queue[TransportEvent | object] = asyncio.Queue()
        self._started = False
        self._closed = False
        self.member = Member(member_id="")

    async def start(self) -> None:
        if self._closed:
            raise TransportClosed("memory transport is closed")
        if self._started:
            return
        n = self._net._next_id()
        self.self_id = f"mem-{n}"
        self.member = Member(member_id=self.self_id, name=self._name, nodeid=n, address="memory")
        self._started = True
        self._net._join(self)

    async def send(self, data: bytes) -> None:
        if self._closed or not self._started:
            raise TransportClosed("memory transport is not running")
        if len(data) > self.max_message_size:
            raise ValueError(f"message of {len(data)} bytes exceeds {self.max_message_size}")
        self._net._send(self, bytes(data))
        await asyncio.sleep(0)

    def _deliver(self, event: TransportEvent | object) -> None:
        if not self._closed:
            self._queue.put_nowait(event)

    def events(self) -> AsyncIterator[TransportEvent]:
        return drain(self._queue)

    async def close(self) -> None:
        if self._closed:
            return
        if self._started:
            self._net._leave(self, clean=True)
        self._queue.put_nowait(END)
        self._closed = True
