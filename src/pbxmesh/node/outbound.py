"""This node's way out: the superseding queue, the paced sender and frame sealing.

Theory of operation
-------------------
Every change of this node's own origin is put in one queue keyed by ``(kind, name)``: a newer
state for a device (or counts for a mailbox) replaces the queued one and goes to the back of
the line, so a flapping device costs one item however fast it flaps (memberlist's
``Broadcast.Invalidates``). A single sender task drains the queue in batches: one CHANGES frame
per channel that publishes the item's kind, at most :meth:`Outbound.items_per_frame` items each.
Presence items go in CHANGES frames of their own (a node older than presence rejects those
frames only, and keeps taking device states and MWI).

Pacing: after a frame is sent the sender waits ``frame_interval`` before the next, and changes
that arrive meanwhile share it. A change after a quiet spell goes at once; under load frames
carry many changes (Corosync has no back-pressure, so many tiny frames would only queue up in
it). A send that fails (engine gone) puts the batch back, unless superseded meanwhile, and is
retried; nothing is dropped.

Every frame leaves through :meth:`Outbound.send_frame`, which stamps it with our EID, a fresh
sequence number from the clock and our name, and seals it with the guard when signing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging

from ..clock import HybridClock
from ..errors import PbxmeshError
from ..transport.base import Transport
from ..wire import frame as wire
from ..wire.frame import Frame, FrameType, Item, ItemKind
from .config import EVENT_TYPE_OF, NodeConfig
from .guard import FrameGuard
from .stats import NodeStats, count

__all__ = ["Outbound"]

log = logging.getLogger(__name__)


class Outbound:
    """The queue of our own changes and the task that sends it; see the module docstring."""

    def __init__(
        self,
        config: NodeConfig,
        transport: Transport,
        clock: HybridClock,
        guard: FrameGuard | None,
        stats: NodeStats,
    ) -> None:
        #: replaced by the node on reload (channels)
        self.config = config
        self.transport = transport
        self.clock = clock
        self.guard = guard
        self.stats = stats
        self.queue: dict[tuple[int, str], Item] = {}
        self._wake = asyncio.Event()

    def enqueue(self, item: Item) -> None:
        key = item.key
        self.queue.pop(key, None)  # a newer state goes to the back of the line
        self.queue[key] = item
        self._wake.set()

    async def run(self) -> None:
        """The sender task: drain the queue, one paced frame at a time, until cancelled."""
        while True:
            await self._wake.wait()
            if self.config.batch_delay:
                await asyncio.sleep(self.config.batch_delay)
            self._wake.clear()
            try:
                await self.flush()
            except (PbxmeshError, ValueError) as exc:
                # The transport reconnects by itself; the queue is kept and a resync follows.
                log.warning("sending failed, will retry after reconnect: %s", exc)
                await asyncio.sleep(0.2)
                self._wake.set()
            if self.config.frame_interval:
                await asyncio.sleep(self.config.frame_interval)

    async def flush(self) -> None:
        """Send everything queued now."""
        limit = self.items_per_frame()
        while self.queue:
            batch: list[Item] = []
            for key in list(self.queue)[:limit]:
                batch.append(self.queue.pop(key))
            try:
                for channel in self.config.channels:
                    items = tuple(i for i in batch if EVENT_TYPE_OF[i.kind] in channel.publish)
                    older = tuple(i for i in items if i.kind is not ItemKind.PRESENCE)
                    presence = tuple(i for i in items if i.kind is ItemKind.PRESENCE)
                    for chunk in _chunks(older, limit) + _chunks(presence, self.presence_limit()):
                        await self.send_frame(
                            Frame(
                                type=FrameType.CHANGES,
                                origin=self.config.eid,
                                seq=0,
                                channel=channel.name,
                                items=chunk,
                            )
                        )
                        count(self.stats.changes_out, channel.name, len(chunk))
            except BaseException:
                for item in batch:  # put back what was not sent, unless superseded meanwhile
                    self.queue.setdefault(item.key, item)
                raise

    def items_per_frame(self) -> int:
        # An item is at most 1 + 1 + 255 + 16 bytes (MWI); keep under the message size.
        by_size = max(1, (self.transport.max_message_size - 512) // 273)
        return max(1, min(self.config.max_items_per_frame, by_size))

    def presence_limit(self) -> int:
        """Presence items per frame: each is at most 1 + 1 + 79 + 9 + 1 + 255 + 1 + 255."""
        by_size = max(1, (self.transport.max_message_size - 512) // 602)
        return max(1, min(self.config.max_items_per_frame, by_size))

    async def send_frame(self, f: Frame) -> None:
        """Stamp, encode, seal and send one frame."""
        f = dataclasses.replace(
            f, origin=self.config.eid, seq=self.clock.tick(), name=self.config.name
        )
        guard = self.guard
        data = wire.encode(f, signed=guard is not None and guard.signed)
        if guard is not None:
            data = guard.seal(data)
        await self.transport.send(data)
        count(self.stats.frames_out, f.channel or "-")


def _chunks(items: tuple[Item, ...], limit: int) -> list[tuple[Item, ...]]:
    return [items[i : i + limit] for i in range(0, len(items), limit)]
