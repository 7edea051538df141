"""The transport contract.

A transport moves opaque byte strings (encoded frames) between the members of one group and
reports who the members are. It knows nothing of devices, origins or signatures: those live in
the node above it. Every transport — in-memory, Corosync CPG, NATS — keeps this contract, and
``tests/transport_contract.py`` checks it against each one:

1. ``await start()`` connects and joins; the first event is a :class:`MembershipChange` whose
   ``members`` include ``self_id``. Messages sent before that event are not lost: ``send``
   waits until the transport has joined.
2. ``await send(data)`` delivers ``data`` to every member of the current view, **including the
   sender** (Corosync does so; it lets a node see its own order). Order is FIFO per sender.
   ``send`` never drops silently: it retries while the engine says "try again", and raises
   :class:`~pbxmesh.errors.TransportClosed` only when the transport is closed, and
   ``ValueError`` for data longer than ``max_message_size``.
3. ``events()`` yields :class:`Message`, :class:`MembershipChange` and :class:`LinkState`
   events, in order, until the transport is closed. It never blocks the engine: a transport
   queues internally (bounded by the engine's own flow control) and the consumer must drain.
   A :class:`MembershipChange` with no joined or left member reports a change of quorum only.
4. When the engine goes away (daemon killed, server lost) the transport yields
   ``LinkState(up=False)``, reconnects by itself, and yields ``LinkState(up=True)`` followed by a
   fresh :class:`MembershipChange`. The node resynchronises on that membership change.
5. ``await close()`` leaves the group cleanly, so that the others see this member leave at once
   rather than after a failure-detection timeout; then ``events()`` ends.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Final

__all__ = [
    "END",
    "LinkState",
    "Member",
    "MembershipChange",
    "Message",
    "Transport",
    "TransportEvent",
    "drain",
]


@dataclass(frozen=True, slots=True)
class Member:
    """One member of the group as the engine sees it.

    ``member_id`` is unique within the group for the member's lifetime (Corosync: node id and
    pid; NATS: the node's instance id). ``nodeid`` is the engine's node number when it has one
    (Corosync), ``address`` the member's network address when known.
    """

    member_id: str
    name: str = ""
    nodeid: int | None = None
    address: str | None = None


@dataclass(frozen=True, slots=True)
class Message:
    """A frame delivered by the engine; ``sender`` is the engine's ``member_id`` of the sender."""

    sender: str
    data: bytes


@dataclass(frozen=True, slots=True)
class MembershipChange:
    """A new view of the group: everybody now in it, and who joined or left since the last one."""

    members: tuple[Member, ...]
    joined: tuple[Member, ...] = ()
    left: tuple[Member, ...] = ()
    view: int = 0
    quorate: bool = True
    # True when ``left`` members went away cleanly (leave), False when they failed.
    clean: tuple[bool, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class LinkState:
    """The link to the engine went down (with a reason) or came back up."""

    up: bool
    reason: str = ""


TransportEvent = Message | MembershipChange | LinkState

#: put on a transport's event queue to end ``events()``
END: Final = object()


async def drain(queue: asyncio.Queue[TransportEvent | object]) -> AsyncIterator[TransportEvent]:
    """``events()`` of a transport that queues its events: everything up to :data:`END`.

    END is put back, so a second reader (or a later call) ends at once too.
    """
    while True:
        item = await queue.get()
        if item is END:
            queue.put_nowait(END)
            return
        assert isinstance(item, Message | MembershipChange | LinkState)
        yield item


class Transport(abc.ABC):
    """Base class of the transports; see the module docstring for the contract."""

    #: the engine's identifier of this member, known after ``start()``
    self_id: str = ""
    #: a short name for logs and metrics ("memory", "corosync", "nats")
    kind: str = "abstract"

    @abc.abstractmethod
    async def start(self) -> None:
        """Connect to the engine and join the group. May raise TransportError."""

    @abc.abstractmethod
    async def send(self, data: bytes) -> None:
        """Multicast ``data`` to the group (self included), retrying until accepted."""

    @abc.abstractmethod
    def events(self) -> AsyncIterator[TransportEvent]:
        """The stream of messages, membership changes and link states, until closed."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Leave the group cleanly and release the engine; idempotent."""

    @property
    def max_message_size(self) -> int:
        """The largest ``data`` that ``send`` accepts; the node batches below it."""
        return 64 * 1024
