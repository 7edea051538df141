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

This module holds the lifecycle, the one inbound boundary (:meth:`Node._on_message`: decode,
own echo, guard, channel subscription, apply) and the reads.

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
import fnmatch
import logging
import time
from collections.abc import Callable, Iterable

from ..clock import HybridClock, version_millis
from ..eid import EID
from ..errors import PbxmeshError, RemoteProtocolError, SecurityError, StateError
from ..links.base import BridgePort, Link
from ..presence import (
    PresenceChange,
    PresenceRecord,
    PresenceState,
    PresenceStore,
    check_presence_text,
    check_presentity,
)
from ..states import DeviceState
from ..store import (
    DeviceChange,
    DeviceStore,
    MwiChange,
    MwiRecord,
    MwiStore,
    check_device_name,
    normalize_mailbox,
)
from ..tasks import cancel_and_wait
from ..transport.base import LinkState, MembershipChange, Message, Transport
from ..wire import frame as wire
from ..wire.frame import DeviceItem, Frame, FrameType, MwiItem, PresenceItem
from .config import ChannelConfig, NodeConfig
from .fanout import Fanout, NodeListener
from .guard import FrameGuard
from .membership import MemberInfo, Membership
from .outbound import Outbound
from .parts import OwnParts
from .snapshots import SnapshotGatherer, send_snapshots
from .stats import NodeStats, count

__all__ = ["Node"]

log = logging.getLogger(__name__)


class Node:
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
        #: (kind, name) of the assertions that are saved across restarts
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
            await link.start(_OwnPort(self))
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

    # -- local assertions --------------------------------------------------------------------
    def restore(
        self,
        devices: Iterable[tuple[str, int, int]],
        mwi: Iterable[tuple[str, int, int, int]],
        presence: Iterable[tuple[str, int, str, str, int]] = (),
    ) -> None:
        """Take back this node's own assertions saved before a restart (call before start()).

        They keep their versions; the clock is moved past them, and the snapshot sent at join
        announces them. Newer assertions (a link's resync) supersede them.
        """
        for device, state, version in devices:
            try:
                item = DeviceItem(check_device_name(device), state, version)
            except StateError as exc:
                log.warning("saved state skipped: %s", exc)
                continue
            self.clock.observe(version)
            self.devices.apply(self.eid, item.device, item.state, version)
            self._parts.set_direct(item.device, DeviceState(item.state))
            self.kept.add((1, item.device))
        for mailbox, new, old, version in mwi:
            try:
                box = MwiItem(normalize_mailbox(mailbox), new, old, version)
            except StateError as exc:
                log.warning("saved state skipped: %s", exc)
                continue
            self.clock.observe(version)
            self.mwi.apply(self.eid, box.mailbox, new, old, version)
            self.kept.add((2, box.mailbox))
        for presentity, state, subtype, message, version in presence:
            try:
                p = PresenceItem(check_presentity(presentity), state, subtype, message, version)
            except StateError as exc:
                log.warning("saved state skipped: %s", exc)
                continue
            self.clock.observe(version)
            self.presence.apply(
                self.eid, p.presentity, PresenceState(p.state), p.subtype, p.message, version
            )
            self.kept.add((3, p.presentity))
        self.own_changes += 1

    def own_state(self) -> tuple[list[tuple[str, int, int]], list[tuple[str, int, int, int]]]:
        """This node's kept assertions (published with ``keep=True``, e.g. by the CLI): its
        slots for those devices and those mailboxes it wrote last. States learned from
        Asterisk are not kept: Asterisk is their source, and its link re-reads them."""
        devices = [
            (d, int(self._parts.direct(d) or s), v)
            for d, s, v in self.devices.snapshot(self.eid)
            if (1, d) in self.kept
        ]
        mwi = [
            (r.mailbox, r.new, r.old, r.version)
            for r in self.mwi.written_by(self.eid)
            if (2, r.mailbox) in self.kept and r.mailbox not in self._mwi_parts
        ]
        return devices, mwi

    def own_presence(self) -> list[tuple[str, int, str, str, int]]:
        """This node's kept presence assertions it wrote last, as :meth:`own_state` does
        devices and mailboxes: ``(presentity, state, subtype, message, version)``."""
        return [
            (r.presentity, int(r.state), r.subtype, r.message, r.version)
            for r in self.presence.written_by(self.eid)
            if (3, r.presentity) in self.kept
        ]

    def publish_device(
        self, device: str, state: DeviceState, keep: bool = False
    ) -> DeviceChange | None:
        """Assert this node's own state for a device; returns the change of cluster value.

        ``keep``: the state has no other source (the CLI, a script) and is saved across
        restarts (see :meth:`own_state`).
        """
        check_device_name(device)
        if keep:
            self.kept.add((1, device))
            self.kept_changed.set()
        state = DeviceState(state)
        value = self._parts.set_direct(device, state)
        self._fanout.own_device(device, state, None)
        return self._set_own(device, value)

    def publish_part(self, part: str, device: str, state: DeviceState) -> DeviceChange | None:
        """A bridge's ``part`` of this node's own slot for ``device`` (INVALID: no part any
        more); the slot becomes the aggregation of every part and the direct assertion
        (``parts.py``). Returns the change of cluster value."""
        check_device_name(device)
        state = DeviceState(state)
        value = self._parts.set_part(part, device, state)
        current = self.devices.slots_of(device).get(self.eid)
        if current is not None and current[0] is value:
            return None  # the slot the cluster sees is unchanged
        if current is None and value is DeviceState.INVALID:
            return None  # nothing to retract
        return self._set_own(device, value)

    def _set_own(self, device: str, value: DeviceState) -> DeviceChange | None:
        version = self.clock.tick()
        change = self.devices.apply(self.eid, device, int(value), version)
        self.own_changes += 1
        self._out.enqueue(DeviceItem(device, int(value), version))
        if change is not None:
            self._fanout.device(change)
        return change

    def own_devices(self) -> dict[str, DeviceState]:
        """This node's direct assertions (what it says without any bridged part)."""
        held = {d for d, _, _ in self.devices.snapshot(self.eid)}
        return {d: s for d, s in self._parts.directs().items() if d in held}

    def own_mwi(self) -> dict[str, tuple[int, int]]:
        """Mailboxes this node wrote last directly (not through a bridged part)."""
        return {
            r.mailbox: (r.new, r.old)
            for r in self.mwi.written_by(self.eid)
            if r.mailbox not in self._mwi_parts
        }

    def knows_origin(self, eid: EID) -> bool:
        """True for this node's EID and every pbxmesh origin heard from and not gone."""
        return eid == self.eid or self._membership.knows(eid)

    def publish_mwi(
        self, mailbox: str, new: int, old: int, keep: bool = False, part: str | None = None
    ) -> MwiChange | None:
        """Assert message counts for ``mailbox[@context]`` as this node (``keep``: as above;
        ``part``: written on behalf of a bridged ring, see :meth:`publish_part`)."""
        mailbox = normalize_mailbox(mailbox)
        if part is None:
            self._mwi_parts.pop(mailbox, None)
        else:
            self._mwi_parts[mailbox] = part
        if keep:
            self.kept.add((2, mailbox))
            self.kept_changed.set()
        if not (0 <= new <= 0x7FFFFFFF and 0 <= old <= 0x7FFFFFFF):
            raise StateError(f"message counts {new}/{old} must be between 0 and 2147483647")
        version = self.clock.tick()
        change = self.mwi.apply(self.eid, mailbox, new, old, version)
        self.own_changes += 1
        self._out.enqueue(MwiItem(mailbox, new, old, version))
        self._fanout.own_mwi(mailbox, new, old, part)
        if change is not None:
            self._fanout.mwi(change)
        return change

    def publish_presence(
        self,
        presentity: str,
        state: PresenceState,
        subtype: str = "",
        message: str = "",
        keep: bool = False,
    ) -> PresenceChange | None:
        """Assert the presence of ``CustomPresence:NAME`` as this node (``keep``: as above).

        Raises :class:`StateError` for a name, subtype or message Asterisk could not carry.
        """
        presentity = check_presentity(presentity)
        check_presence_text("subtype", subtype)
        check_presence_text("message", message)
        state = PresenceState(state)
        if keep:
            self.kept.add((3, presentity))
            self.kept_changed.set()
        version = self.clock.tick()
        change = self.presence.apply(self.eid, presentity, state, subtype, message, version)
        self.own_changes += 1
        self._out.enqueue(PresenceItem(presentity, int(state), subtype, message, version))
        if change is not None:
            self.stats.presence_changes += 1
            self._fanout.presence(change)
        return change

    def withdraw_reported(self) -> int:
        """Remove this origin's device slots except the kept ones (see ``LinkPort.withdraw``)
        and announce a complete snapshot, so that every peer removes them too."""
        kept = []
        held = self.devices.snapshot(self.eid)
        bridged = self.clock.tick()
        for d, s, v in held:
            if (1, d) in self.kept:
                kept.append((d, int(s), v))
                continue
            rest = self._parts.drop_direct(d)
            if rest is not None and rest is not DeviceState.INVALID:
                kept.append((d, int(rest), bridged))  # a bridged ring's part stays
        for change in self.devices.merge_snapshot(self.eid, kept, complete_as_of=self.clock.tick()):
            self._fanout.device(change)
        self.own_changes += 1
        self._announce()
        withdrawn = len(held) - len(kept)
        log.info("reported device states withdrawn count=%d kept=%d", withdrawn, len(kept))
        return withdrawn

    def refused_by_grant(self, item: DeviceItem | MwiItem | PresenceItem) -> str | None:
        """Why the others would drop ``item`` from us (our grant in [security.peers]); a link
        that offers it is told once per device or mailbox in the log, and it is not sent."""
        reason = self.guard.refuses(item) if self.guard is not None else None
        if reason is not None:
            key = (
                item.device
                if isinstance(item, DeviceItem)
                else item.mailbox
                if isinstance(item, MwiItem)
                else item.presentity
            )
            if ("grant", key) not in self._warned:
                self._warned.add(("grant", key))
                log.warning("not shared: %s", reason)
        return reason

    # -- reading -----------------------------------------------------------------------------
    def remote_state(self, device: str) -> DeviceState:
        """The aggregate of the other origins' slots for a device (INVALID if none)."""
        return self.devices.state_excluding(device, self.eid)

    def remote_devices(self) -> dict[str, DeviceState]:
        """Every device some other origin holds, with the aggregate of the others' slots."""
        return {
            device: self.devices.state_excluding(device, self.eid)
            for device, _ in self.devices.devices()
            if any(o != self.eid for o in self.devices.slots_of(device))
        }

    def remote_mwi(self) -> dict[str, tuple[int, int]]:
        """Mailboxes whose last writer is another node: ``mailbox@context -> (new, old)``."""
        return {r.mailbox: (r.new, r.old) for r in self.mwi.records() if r.origin != self.eid}

    def presence_rows(self, pattern: str | None = None) -> list[PresenceRecord]:
        """Presentities matching a glob pattern, sorted (``CustomPresence:*``; a pattern
        without ``:`` is matched against the name after ``CustomPresence:``)."""
        return sorted(
            (r for r in self.presence.records() if not pattern or _presence_match(r, pattern)),
            key=lambda r: r.presentity,
        )

    def members(self) -> list[MemberInfo]:
        """The current view, self included."""
        return list(self._membership.members.values())

    def link_members(self) -> list[MemberInfo]:
        """Asterisk servers the links see as members of their own ring (kind "asterisk")."""
        return [m for link in self._fanout.links for m in link.members()]

    def channels(self) -> list[ChannelConfig]:
        return list(self._channels.values())

    def device_rows(
        self, pattern: str | None = None
    ) -> list[tuple[str, DeviceState, dict[EID, DeviceState]]]:
        """Devices matching a glob pattern: cluster value and each origin's state, sorted."""
        rows = []
        for device, state in sorted(self.devices.devices()):
            if pattern and not fnmatch.fnmatchcase(device, pattern):
                continue
            slots = {o: s for o, (s, _) in self.devices.slots_of(device).items()}
            for link in self._fanout.links:
                slots.update(link.origin_slots(device))
            rows.append((device, state, slots))
        return rows

    def mwi_rows(self, pattern: str | None = None) -> list[MwiRecord]:
        return sorted(
            (
                r
                for r in self.mwi.records()
                if not pattern or fnmatch.fnmatchcase(r.mailbox, pattern)
            ),
            key=lambda r: r.mailbox,
        )

    def origin_name(self, eid: EID) -> str:
        return self.config.name if eid == self.eid else self._membership.name_of(eid)

    @property
    def view(self) -> int:
        return self._membership.view

    @property
    def quorate(self) -> bool:
        return self._membership.quorate

    @property
    def queue_depth(self) -> int:
        return len(self._out.queue)

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
                first = denied[0]
                what = (
                    first.device
                    if isinstance(first, DeviceItem)
                    else first.mailbox
                    if isinstance(first, MwiItem)
                    else first.presentity
                )
                self._reject(
                    "unauthorised",
                    f.name or str(f.origin),
                    f"node {f.name!r} may not assert {what!r} ({len(denied)} item(s) dropped); "
                    "grant it in [security.peers]",
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

    def _apply_items(
        self, origin: EID, channel: str, items: Iterable[DeviceItem | MwiItem | PresenceItem]
    ) -> None:
        want_dev = self._subscribes(channel, "device_state")
        want_mwi = self._subscribes(channel, "mwi")
        want_presence = self._subscribes(channel, "presence_state")
        touched: list[str] = []
        n = 0
        for item in items:
            if type(item) is DeviceItem:
                if not want_dev:
                    continue
                n += 1
                change = self.devices.apply(origin, item.device, item.state, item.version)
                touched.append(item.device)
                if change is not None:
                    self._fanout.device(change)
            elif isinstance(item, MwiItem) and want_mwi:
                n += 1
                mchange = self.mwi.apply(origin, item.mailbox, item.new, item.old, item.version)
                if mchange is not None:
                    self._fanout.mwi(mchange)
            elif isinstance(item, PresenceItem) and want_presence:
                n += 1
                pchange = self.presence.apply(
                    origin,
                    item.presentity,
                    PresenceState(item.state),
                    item.subtype,
                    item.message,
                    item.version,
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
        items: list[DeviceItem | MwiItem | PresenceItem],
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
        lww = [i for i in items if isinstance(i, MwiItem | PresenceItem)]
        if lww:
            self._apply_items(origin, channel, lww)
        if self._resync_started:
            self.stats.last_resync_seconds = time.monotonic() - self._resync_started

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


class _OwnPort:
    """The :class:`~pbxmesh.links.base.LinkPort` for this node's own origin."""

    __slots__ = ("_node",)

    def __init__(self, node: Node) -> None:
        self._node = node

    @property
    def origin(self) -> EID:
        return self._node.eid

    def device(self, device: str, state: DeviceState) -> None:
        if self._node.refused_by_grant(DeviceItem(device, int(state), 0)):
            return
        self._node.publish_device(device, state)

    def mwi(self, mailbox: str, new: int, old: int) -> None:
        if self._node.refused_by_grant(MwiItem(normalize_mailbox(mailbox), new, old, 0)):
            return
        self._node.publish_mwi(mailbox, new, old)

    def remote_devices(self) -> dict[str, DeviceState]:
        return self._node.remote_devices()

    def origin_devices(self) -> list[tuple[str, EID, DeviceState]]:
        node = self._node
        return [
            (device, origin, state)
            for device, _ in node.devices.devices()
            for origin, (state, _) in node.devices.slots_of(device).items()
            if origin != node.eid
        ]

    def withdraw(self) -> int:
        return self._node.withdraw_reported()

    # -- BridgePort: for a link that bridges a ring of Asterisks -------------------------------
    def part_device(self, part: str, device: str, state: DeviceState) -> None:
        if state is not DeviceState.INVALID and self._node.refused_by_grant(
            DeviceItem(device, int(state), 0)
        ):
            return
        self._node.publish_part(part, device, state)

    def part_mwi(self, part: str, mailbox: str, new: int, old: int) -> None:
        if self._node.refused_by_grant(MwiItem(normalize_mailbox(mailbox), new, old, 0)):
            return
        self._node.publish_mwi(mailbox, new, old, part=part)

    def own_devices(self) -> dict[str, DeviceState]:
        return self._node.own_devices()

    def own_mwi(self) -> dict[str, tuple[int, int]]:
        return self._node.own_mwi()

    def is_origin(self, eid: EID) -> bool:
        return self._node.knows_origin(eid)

    def state_excluding(self, device: str, origins: frozenset[EID]) -> DeviceState:
        return self._node.devices.state_excluding_all(device, origins | {self._node.eid})

    def remote_mwi(self) -> dict[str, tuple[int, int, EID]]:
        node = self._node
        return {
            r.mailbox: (r.new, r.old, r.origin) for r in node.mwi.records() if r.origin != node.eid
        }

    def presence(
        self, presentity: str, state: PresenceState, subtype: str = "", message: str = ""
    ) -> None:
        item = PresenceItem(check_presentity(presentity), int(state), subtype, message, 0)
        if self._node.refused_by_grant(item):
            return
        self._node.publish_presence(presentity, state, subtype, message)

    def remote_presence(self) -> dict[str, tuple[PresenceState, str, str, EID]]:
        node = self._node
        return {
            r.presentity: (r.state, r.subtype, r.message, r.origin)
            for r in node.presence.records()
            if r.origin != node.eid
        }


def _presence_match(record: PresenceRecord, pattern: str) -> bool:
    if ":" not in pattern:
        return fnmatch.fnmatchcase(record.presentity.partition(":")[2], pattern)
    return fnmatch.fnmatchcase(record.presentity, pattern)


_: type[BridgePort] = _OwnPort  # the port fits the protocol
