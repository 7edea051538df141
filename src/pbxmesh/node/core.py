"""The node: one server's share of the cluster, over any transport.

Theory of operation
-------------------
A node owns one origin, its EID. It keeps the per-origin :class:`~pbxmesh.store.DeviceStore`,
the :class:`~pbxmesh.store.MwiStore` and the :class:`~pbxmesh.presence.PresenceStore` for the
whole cluster, and speaks pbxmesh frames over
one :class:`~pbxmesh.transport.Transport`. Its parts, each in its own module:

* ``outbound.py`` -- *local changes* (``publish_device``/``publish_mwi``, from a link to
  Asterisk or the CLI) get a version from the node's hybrid clock, are applied to the store at
  once (so local state is served even while the cluster is unreachable) and are queued for
  sending; the queue supersedes by key and a paced sender drains it in CHANGES frames;
* ``snapshots.py`` -- on every membership change with a join the node re-announces its own
  origin as a complete SNAPSHOT per channel; receivers gather the parts and merge them with
  ``merge_snapshot(complete_as_of=…)``, which also retracts what the origin no longer has;
* ``membership.py`` -- frames teach the node which transport member speaks for which EID; when
  an EID's current member is no longer in the view, its slots are dropped and the changed
  cluster values emitted. After a partition heals the joined members re-announce and every
  store converges. When the link to the engine goes down the node keeps serving its local
  state and resynchronises on the fresh membership change that follows the reconnect;
* ``fanout.py`` -- listeners and links to Asterisk are told what changed (``links/base.py``).

* ``assertions.py`` -- this node's own assertions (published, restored, kept, withdrawn) and
  its own grant; ``reading.py`` -- the reads; ``port.py`` -- the port a link reports through.

This module holds the lifecycle and the one inbound boundary (:meth:`Node._on_message`:
decode, own echo, guard, channel subscription, apply).

*Channels* are ais.conf's event channels: a channel publishes and subscribes event types
(``device_state``, ``mwi``, ``presence_state``). Frames carry their channel's name; a receiver
applies an item only if its own channel of that name subscribes to the item's kind.

*Own echo.* Transports deliver our own frames back; frames carrying our EID are dropped, and
a frame with our EID from another member means two nodes share an EID: logged loudly.

Security (origin signatures, authorisation, replay protection) plugs in as a
:class:`FrameGuard`; without one frames are accepted as they are (as Corosync's own ring does).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable

from ..clock import HybridClock, version_millis
from ..eid import EID
from ..errors import PbxmeshError, RemoteProtocolError, SecurityError
from ..links.base import Link
from ..presence import (
    PresenceState,
    PresenceStore,
)
from ..store import (
    DeviceStore,
    MwiStore,
)
from ..tasks import cancel_and_wait
from ..transport.base import LinkState, MembershipChange, Message, Transport
from ..wire import frame as wire
from ..wire.frame import DeviceItem, Frame, FrameType, Item, ItemKind, MwiItem, PresenceItem
from .assertions import NodeAssertions
from .config import EVENT_TYPE_OF, ChannelConfig, NodeConfig
from .fanout import Fanout, NodeListener
from .guard import FrameGuard
from .membership import Membership
from .outbound import Outbound
from .parts import OwnParts
from .port import OwnPort
from .reading import NodeReading
from .snapshots import SnapshotGatherer, send_snapshots
from .stats import NodeStats, count

__all__ = ["Node"]

log = logging.getLogger(__name__)


class Node(NodeAssertions, NodeReading):
    """One node of the mesh. ``await start()``, then publish and listen; ``await close()``."""

    def __init__(
        self,
        config: NodeConfig,
        transport: Transport,
        clock: HybridClock | None = None,
        guard: FrameGuard | None = None,
    ) -> None:
        self.config = config
        self.eid = config.eid
        self.transport = transport
        self.clock = clock or HybridClock(lambda: time.time_ns() // 1_000_000)
        self.guard = guard
        self.devices = DeviceStore()
        self.mwi = MwiStore()
        self.presence = PresenceStore()
        self.stats = NodeStats()
        self._fanout = Fanout(self.devices, self.eid)
        #: listeners of the cluster's changes (append to it); see :class:`NodeListener`
        self.listeners: list[NodeListener] = self._fanout.listeners
        self._channels = {c.name: c for c in config.channels}
        self._out = Outbound(config, transport, self.clock, guard, self.stats)
        self._membership = Membership(self.eid, config.name)
        self._snapshots = SnapshotGatherer()
        self._tasks: list[asyncio.Task[None]] = []
        self._warned: set[tuple[str, str]] = set()
        self._joined = asyncio.Event()
        #: the other members in the view we joined, and the snapshot kinds still awaited from
        #: each (see :meth:`wait_caught_up`)
        self._awaited: dict[str, int] = {}
        self._caught_up = asyncio.Event()
        self._closed = False
        self._resync_started = 0.0
        #: counts this node's own assertions, so a saver knows when to write them
        self.own_changes = 0
        #: (kind, name) of the device states saved across restarts (kind 1; every mailbox
        #: and presentity this node wrote last is saved anyway: see own_state)
        self.kept: set[tuple[int, str]] = set()
        #: set when a kept assertion is made, so it is saved at once
        self.kept_changed = asyncio.Event()
        #: called with the seconds from a frame's origin clock to its application here
        self.latency_observer: Callable[[float], None] | None = None
        #: this node's own slot as direct assertions plus bridged parts (``parts.py``)
        self._parts = OwnParts()
        #: mailboxes this node wrote last through a part (a bridged ring), not directly
        self._mwi_parts: dict[str, str] = {}

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the transport and the node's tasks; returns once the node has joined."""
        await self.transport.start()
        self.stats.link_up = True
        self._tasks.append(asyncio.create_task(self._receive_loop(), name="pbxmesh-receive"))
        self._tasks.append(asyncio.create_task(self._out.run(), name="pbxmesh-send"))
        await self._joined.wait()
        log.info(
            "node started name=%s eid=%s transport=%s member=%s",
            self.config.name,
            self.eid,
            self.transport.kind,
            self.transport.self_id,
        )

    async def wait_caught_up(self, within: float) -> bool:
        """Wait until every member that was in the group when this node joined has sent its
        complete snapshot (or left), at most ``within`` seconds; True if it did.

        A link reads its Asterisk at start, and tells a copy of another server's state from one
        of this server's own by comparing it with what the cluster holds: before the snapshots
        are in, a stale copy (from before a restart) would pass for this server's own."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                await self._caught_up.wait()
        return self._caught_up.is_set()

    def _snapshot_kinds_wanted(self) -> int:
        want = 0
        for ch in self._channels.values():
            if "device_state" in ch.subscribe or "mwi" in ch.subscribe:
                want |= wire.SNAP_DEVICES | wire.SNAP_MWI
            if "presence_state" in ch.subscribe:
                want |= wire.SNAP_PRESENCE
        return want

    def _snapshot_from(self, member: str, kinds: int) -> None:
        left = self._awaited.get(member)
        if left is None:
            return
        if kinds & (wire.SNAP_DEVICES | wire.SNAP_MWI):
            left &= ~(wire.SNAP_DEVICES | wire.SNAP_MWI)
        if kinds & wire.SNAP_PRESENCE:
            left &= ~wire.SNAP_PRESENCE
        if left:
            self._awaited[member] = left
        else:
            del self._awaited[member]
            if not self._awaited:
                self._caught_up.set()

    async def close(self) -> None:
        """Close the links, send what is queued, leave the group cleanly and stop."""
        if self._closed:
            return
        self._closed = True
        for link in list(self._fanout.links):
            await self.remove_link(link)
        # Best effort, bounded: with the engine gone there is nobody to tell (and a node that
        # never joined has told nobody anything).
        with contextlib.suppress(PbxmeshError, TimeoutError):
            async with asyncio.timeout(2.0 if self._joined.is_set() else 0.0):
                await self._out.flush()
                await self._out.send_frame(Frame(type=FrameType.LEAVE, origin=self.eid, seq=0))
        await self.transport.close()
        if self.guard is not None:
            self.guard.flush()
        await cancel_and_wait(*self._tasks)  # a copy: done-callbacks edit the list
        log.info("node stopped name=%s eid=%s", self.config.name, self.eid)

    def reconfigure(self, channels: tuple[ChannelConfig, ...]) -> None:
        """Replace the channels at run time (SIGHUP); state is kept, and re-announced."""
        self.config = NodeConfig(
            name=self.config.name,
            eid=self.eid,
            channels=channels,
            batch_delay=self.config.batch_delay,
            frame_interval=self.config.frame_interval,
            max_items_per_frame=self.config.max_items_per_frame,
        )
        self._out.config = self.config
        self._channels = {c.name: c for c in channels}
        log.info("channels reloaded channels=%s", ",".join(self._channels))
        self._announce()

    # -- links to Asterisk -------------------------------------------------------------------
    async def add_link(self, link: Link) -> None:
        """Attach a link to Asterisk and start it: it reports through a port for this node's
        origin and is told the cluster's changes from now on (``links/base.py``)."""
        self._fanout.add_link(link)
        try:
            await link.start(OwnPort(self))
        except BaseException:
            self._fanout.remove_link(link)
            raise
        log.info("link added kind=%s address=%s", link.kind, link.status().address)

    async def remove_link(self, link: Link) -> None:
        """Stop telling a link anything, and close it."""
        self._fanout.remove_link(link)
        await link.close()

    @property
    def links(self) -> list[Link]:
        """The links to Asterisk, in the order they were added."""
        return list(self._fanout.links)

    # -- announcing --------------------------------------------------------------------------
    def _announce(self) -> None:
        """Queue a complete snapshot of our own origin on every channel."""
        task = asyncio.create_task(
            send_snapshots(
                self._out,
                self.clock,
                self.eid,
                self.devices,
                self.mwi,
                list(self._channels.values()),
                self.presence,
            ),
            name="pbxmesh-announce",
        )
        self._tasks.append(task)
        task.add_done_callback(self._forget_task)

    def _forget_task(self, task: asyncio.Task[None]) -> None:
        if task in self._tasks:
            self._tasks.remove(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("announcing our state failed: %s", task.exception())

    # -- receiving ---------------------------------------------------------------------------
    async def _receive_loop(self) -> None:
        async for event in self.transport.events():
            try:
                match event:
                    case Message(sender, data):
                        self._on_message(sender, data)
                    case MembershipChange():
                        self._on_membership(event)
                    case LinkState(up, reason):
                        self._on_link(up, reason)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not stop the node; say so loudly
                log.exception("error handling %s", type(event).__name__)

    def _reject(self, reason: str, origin: str, message: str, n: int = 1) -> None:
        count(self.stats.rejected, reason, n)
        if (origin, reason) not in self._warned:
            self._warned.add((origin, reason))
            log.warning("frame rejected reason=%s origin=%s: %s", reason, origin, message)

    def _on_message(self, sender: str, data: bytes) -> None:
        if sender == self.transport.self_id and data[10:16] == self.eid.raw:
            return  # our own frame, echoed by the transport: nothing to learn, skip decoding
        try:
            f = wire.decode(data)
        except RemoteProtocolError as exc:
            self._reject("malformed", sender, str(exc))
            return
        if f.origin == self.eid:
            if sender != self.transport.self_id:
                self._reject(
                    "duplicate-eid",
                    sender,
                    f"member {sender} sends frames with our own entity id {self.eid}; "
                    "every node needs its own (delete one node's state_dir/eid)",
                )
            return
        items = f.items
        if self.guard is not None:
            try:
                items = self.guard.check(f, data)
            except SecurityError as exc:
                self._reject(exc.reason, f.name or str(f.origin), str(exc))
                return
            if len(items) < len(f.items):
                kept = set(items)
                denied = [i for i in f.items if i not in kept]
                self._reject(
                    "unauthorised",
                    f.name or str(f.origin),
                    f"node {f.name!r} may not assert {denied[0].name!r} "
                    f"({len(denied)} item(s) dropped); grant it in [security.peers]",
                    n=len(denied),
                )
        self.clock.observe(f.seq)
        # Channels we do not have are counted together: a peer cannot grow our labels.
        count(self.stats.frames_in, f.channel if f.channel in self._channels else "-")
        if self.latency_observer is not None and f.type is FrameType.CHANGES:
            lag = time.time() - version_millis(f.seq) / 1000.0
            self.latency_observer(max(0.0, lag))
        if self._membership.learn(sender, f.origin, f.name):
            self._notify_members()
        match f.type:
            case FrameType.CHANGES:
                self._apply_items(f.origin, f.channel, items)
            case FrameType.SNAPSHOT:
                if f.channel in self._channels:  # nothing to gather for a channel we lack
                    whole = self._snapshots.add(f, items)
                    if whole is not None:
                        self._merge_snapshot(f.origin, f.channel, f.as_of, f.kinds, whole)
                        self._snapshot_from(sender, f.kinds)
            case FrameType.LEAVE:
                self._drop(f.origin)
            case FrameType.SYNC_REQUEST:
                self._announce()
            case FrameType.HEARTBEAT:
                pass

    def _subscribes(self, channel: str, kind: str) -> bool:
        ch = self._channels.get(channel)
        return ch is not None and kind in ch.subscribe

    def _apply_items(self, origin: EID, channel: str, items: Iterable[Item]) -> None:
        wanted = {kind: self._subscribes(channel, EVENT_TYPE_OF[kind]) for kind in ItemKind}
        touched: list[str] = []
        n = 0
        for item in items:
            if not wanted[item.kind]:
                continue
            n += 1
            match item:
                case DeviceItem(device, state, version):
                    change = self.devices.apply(origin, device, state, version)
                    touched.append(device)
                    if change is not None:
                        self._fanout.device(change)
                case MwiItem(mailbox, new, old, version):
                    mchange = self.mwi.apply(origin, mailbox, new, old, version)
                    if mchange is not None:
                        self.stats.mwi_changes += 1
                        self._fanout.mwi(mchange)
                case PresenceItem(presentity, state, subtype, message, version):
                    pstate = PresenceState(state)
                    pchange = self.presence.apply(
                        origin, presentity, pstate, subtype, message, version
                    )
                    if pchange is not None:
                        self.stats.presence_changes += 1
                        self._fanout.presence(pchange)
        if n:
            count(self.stats.changes_in, channel, n)  # n > 0 only for a channel we have
        self._fanout.touched(origin, touched)

    def _merge_snapshot(
        self,
        origin: EID,
        channel: str,
        as_of: int,
        kinds: int,
        items: list[Item],
    ) -> None:
        self.stats.snapshots_merged += 1
        if kinds & wire.SNAP_DEVICES and self._subscribes(channel, "device_state"):
            entries = [(i.device, i.state, i.version) for i in items if type(i) is DeviceItem]
            before = {d for d, _, _ in self.devices.snapshot(origin)}
            for change in self.devices.merge_snapshot(origin, entries, complete_as_of=as_of):
                self._fanout.device(change)
            self._fanout.touched(origin, before | {e[0] for e in entries})
            count(self.stats.changes_in, channel, len(entries))
        # MWI and presence are last-writer-wins: a snapshot's items are applied as changes.
        lww = [i for i in items if i.kind is not ItemKind.DEVICE]
        if lww:
            self._apply_items(origin, channel, lww)
        if self._resync_started:
            self.stats.last_resync_seconds = time.monotonic() - self._resync_started

    def revoke(self) -> int:
        """Drop every device state another origin holds that the guard no longer lets it
        assert (its node was removed from the list of nodes, or its grant narrowed, by a
        SIGHUP): it stops counting at once, not when that node leaves. Returns how many
        states were dropped. Its later frames are refused by the guard as they come."""
        guard = self.guard
        if guard is None:
            return 0
        dropped = 0
        for origin in self.devices.origins():
            if origin == self.eid:
                continue
            gone = [
                device
                for device, state, version in self.devices.snapshot(origin)
                if not guard.allows(origin, DeviceItem(device, int(state), version))
            ]
            for device in gone:
                change = self.devices.remove(origin, device)
                if change is not None:
                    self._fanout.device(change)
            if gone:
                self._fanout.touched(origin, gone)
                dropped += len(gone)
                log.warning(
                    "revoked eid=%s name=%s devices=%d: no longer granted to that node",
                    origin,
                    self._membership.name_of(origin),
                    len(gone),
                )
        return dropped

    def _drop(self, origin: EID) -> None:
        held = [d for d, _, _ in self.devices.snapshot(origin)]
        changes = self.devices.drop_origin(origin)
        for change in changes:
            self._fanout.device(change)
        self._fanout.touched(origin, held)
        self._fanout.origin_left(origin)
        self._membership.forget(origin)
        self._snapshots.forget(origin)
        if held:
            log.info(
                "origin dropped eid=%s name=%s devices=%d changed=%d",
                origin,
                self._membership.name_of(origin),
                len(held),
                len(changes),
            )

    def _on_membership(self, change: MembershipChange) -> None:
        gone = self._membership.apply_view(change, self.transport.self_id, time.time())
        # Drop the origins whose current member is gone (left, failed, or across a partition).
        for origin in gone:
            self._drop(origin)
        log.info(
            "membership view=%s members=%d joined=%s left=%s quorate=%s",
            change.view,
            len(change.members),
            ",".join(m.member_id for m in change.joined) or "-",
            ",".join(m.member_id for m in change.left) or "-",
            change.quorate,
        )
        self._notify_members()
        if not self._joined.is_set():
            want = self._snapshot_kinds_wanted()
            me = self.transport.self_id
            self._awaited = {m.member_id: want for m in change.members if m.member_id != me}
            if not want:
                self._awaited.clear()
        for m in change.left:
            self._awaited.pop(m.member_id, None)
        if not self._awaited:
            self._caught_up.set()
        if change.joined or not self._joined.is_set():
            self.stats.resyncs += 1
            self._resync_started = time.monotonic()
            self._announce()
        self._joined.set()

    def _on_link(self, up: bool, reason: str) -> None:
        self.stats.link_up = up
        self.stats.link_changes += 1
        if up:
            log.info("transport link up transport=%s", self.transport.kind)
        else:
            log.warning(
                "transport link down transport=%s reason=%s; serving local state, reconnecting",
                self.transport.kind,
                reason,
            )

    def _notify_members(self) -> None:
        self._fanout.members(self.members())
