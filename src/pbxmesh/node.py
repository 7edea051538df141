"""The node: one server's share of the cluster, over any transport.

Theory of operation
-------------------
A node owns one origin, its EID. It keeps the per-origin :class:`~pbxmesh.store.DeviceStore`
and the :class:`~pbxmesh.store.MwiStore` for the whole cluster, and speaks pbxmesh frames over
one :class:`~pbxmesh.transport.Transport`.

*Local changes* (``publish_device``/``publish_mwi``, from Asterisk or the CLI) get a version
from the node's hybrid clock, are applied to the store at once (so local state is served even
while the cluster is unreachable) and are queued for sending. The queue supersedes by key: a
newer state for a device replaces the queued one. A sender task drains it in batches, one
CHANGES frame per channel that publishes the item's kind, and awaits the transport, which
retries while the engine says "try again": nothing is dropped.

*Channels* are ais.conf's event channels: a channel publishes and subscribes event types
(``device_state``, ``mwi``). Frames carry their channel's name; a receiver applies an item only
if its own channel of that name subscribes to the item's kind.

*Membership and convergence.* On every membership change the node re-announces its own origin
as a complete SNAPSHOT on each channel (split in parts under the transport's message size).
Receivers merge it with ``merge_snapshot(complete_as_of=…)``, which also retracts what the
origin no longer has. Frames teach the node which transport member speaks for which EID; when
a member is no longer in the view, the slots of its EIDs are dropped and the changed cluster
values are emitted. A restarted node (same EID, new member) is not dropped by the late leave of
its previous incarnation: an EID is dropped only if its *current* member left. After a
partition heals the joined members re-announce and every store converges. When the link to
the engine goes down the node keeps serving its local state and resynchronises on the fresh
membership change that follows the reconnect.

*Own echo.* Transports deliver our own frames back; frames carrying our EID are dropped, and
a frame with our EID from another member means two nodes share an EID: logged loudly.

Listeners get cluster-value changes, changes of the *remote* aggregate (other origins only,
what the Asterisk bridge writes to ``Custom:`` counterparts), MWI changes and membership
views. Listeners run on the event loop and must not block.

Security (origin signatures, authorisation, replay protection) plugs in as a
:class:`FrameGuard`; without one frames are accepted as they are (as Corosync's own ring does).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fnmatch
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final, Protocol

from .clock import HybridClock, version_millis
from .eid import EID
from .errors import PbxmeshError, RemoteProtocolError, SecurityError, StateError
from .states import DeviceState
from .store import (
    DeviceChange,
    DeviceStore,
    MwiChange,
    MwiRecord,
    MwiStore,
    check_device_name,
    normalize_mailbox,
)
from .tasks import cancel_and_wait
from .transport.base import LinkState, Member, MembershipChange, Message, Transport
from .wire import frame as wire
from .wire.frame import DeviceItem, Frame, FrameType, MwiItem

__all__ = [
    "EVENT_TYPES",
    "ChannelConfig",
    "FrameGuard",
    "MemberInfo",
    "Node",
    "NodeConfig",
    "NodeListener",
]

log = logging.getLogger(__name__)

#: the event types a channel can carry (ais.conf's publish_event/subscribe_event values)
EVENT_TYPES: Final = ("device_state", "mwi")


@dataclass(frozen=True, slots=True)
class ChannelConfig:
    """An event channel, as ais.conf's ``[name] type=event_channel`` declared it."""

    name: str
    publish: frozenset[str] = frozenset(EVENT_TYPES)
    subscribe: frozenset[str] = frozenset(EVENT_TYPES)

    def __post_init__(self) -> None:
        if not self.name or len(self.name.encode()) > wire.MAX_NAME:
            raise StateError(f"channel name {self.name!r} must be 1 to {wire.MAX_NAME} bytes")
        for what, kinds in (("publish", self.publish), ("subscribe", self.subscribe)):
            bad = sorted(set(kinds) - set(EVENT_TYPES))
            if bad:
                raise StateError(
                    f"channel {self.name!r}: {what} event type {bad[0]!r} is not one of "
                    f"{', '.join(EVENT_TYPES)}"
                )


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """What a node needs to know about itself; timers in seconds."""

    name: str
    eid: EID
    channels: tuple[ChannelConfig, ...] = (ChannelConfig("device_state"),)
    # How long a first change waits for others to share its frame. Every change pays it, so
    # keep it 0 and let frame_interval do the batching.
    batch_delay: float = 0.0
    # Pacing: after a frame is sent, the next one waits this long (seconds), and changes that
    # arrive meanwhile share it. A change after a quiet spell goes at once; under load frames
    # carry many changes (Corosync has no back-pressure: many tiny frames only queue up in it).
    # Costs at most one interval of latency once changes come faster than one per interval.
    frame_interval: float = 0.001
    # Most items per CHANGES or SNAPSHOT frame (also bounded by the transport's message size).
    max_items_per_frame: int = 1000

    def __post_init__(self) -> None:
        if not self.channels:
            raise StateError("a node needs at least one channel")
        names = [c.name for c in self.channels]
        if len(set(names)) != len(names):
            raise StateError(f"channel names must be unique: {names}")
        if len(self.name.encode()) > wire.MAX_NAME:
            raise StateError(f"node name {self.name!r} is longer than {wire.MAX_NAME} bytes")


class FrameGuard(Protocol):
    """Origin authentication and authorisation for frames (see ``security.py``).

    ``seal`` turns an encoded, unsigned-but-flagged frame into what goes on the wire.
    ``check`` raises :class:`SecurityError` for a frame that must be rejected; it may also
    drop single items the origin may not assert by returning the items to keep.
    Both run on the event loop and must not block.
    """

    signed: bool

    def seal(self, data: bytes) -> bytes: ...

    def check(self, frame: Frame, data: bytes) -> tuple[DeviceItem | MwiItem, ...]: ...

    def flush(self) -> None: ...


class NodeListener(Protocol):
    """Receives what changes in the cluster. Called on the event loop; must not block."""

    def on_device(self, change: DeviceChange) -> None:
        """The cluster value of a device changed (``removed``: no origin has it any more)."""

    def on_remote_device(self, device: str, state: DeviceState) -> None:
        """The aggregate of the *other* origins' slots changed (INVALID: none left)."""

    def on_mwi(self, change: MwiChange) -> None:
        """The counts of a mailbox changed."""

    def on_members(self, members: list[MemberInfo]) -> None:
        """The membership view changed."""


@dataclass(slots=True)
class MemberInfo:
    """A member as ``pbxmesh members`` shows it."""

    member_id: str
    name: str  # the pbxmesh node name (from its frames); the engine's name until then
    nodeid: int | None
    address: str | None
    eids: list[EID] = field(default_factory=list)
    host: str = ""  # the engine's name for the member's host (corosync nodelist name)
    joined_at: float = 0.0
    is_self: bool = False
    member: bool = True


@dataclass(slots=True)
class NodeStats:
    """Counters for metrics and ``status``."""

    frames_in: dict[str, int] = field(default_factory=dict)
    frames_out: dict[str, int] = field(default_factory=dict)
    changes_in: dict[str, int] = field(default_factory=dict)
    changes_out: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)
    resyncs: int = 0
    snapshots_merged: int = 0
    last_resync_seconds: float = 0.0
    link_up: bool = False
    link_changes: int = 0


def _count(d: dict[str, int], key: str, n: int = 1) -> None:
    d[key] = d.get(key, 0) + n


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
        self.stats = NodeStats()
        self.listeners: list[NodeListener] = []
        self._channels = {c.name: c for c in config.channels}
        self._queue: dict[tuple[int, str], DeviceItem | MwiItem] = {}
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._members: dict[str, MemberInfo] = {}
        self._eid_member: dict[EID, str] = {}
        self._names: dict[EID, str] = {}
        self._remote_cache: dict[str, DeviceState] = {}
        self._pending: dict[tuple[EID, str], tuple[int, dict[int, Frame]]] = {}
        self._warned: set[tuple[str, str]] = set()
        self._view = 0
        self._quorate = True
        self._joined = asyncio.Event()
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

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the transport and the node's tasks; returns once the node has joined."""
        await self.transport.start()
        self.stats.link_up = True
        self._tasks.append(asyncio.create_task(self._receive_loop(), name="pbxmesh-receive"))
        self._tasks.append(asyncio.create_task(self._send_loop(), name="pbxmesh-send"))
        await self._joined.wait()
        log.info(
            "node started name=%s eid=%s transport=%s member=%s",
            self.config.name,
            self.eid,
            self.transport.kind,
            self.transport.self_id,
        )

    async def close(self) -> None:
        """Send what is queued, leave the group cleanly and stop."""
        if self._closed:
            return
        self._closed = True
        # Best effort, bounded: with the engine gone there is nobody to tell.
        with contextlib.suppress(PbxmeshError, TimeoutError):
            async with asyncio.timeout(2.0):
                await self._flush()
                await self._send_frame(Frame(type=FrameType.LEAVE, origin=self.eid, seq=0))
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
        self._channels = {c.name: c for c in channels}
        log.info("channels reloaded channels=%s", ",".join(self._channels))
        self._announce()

    # -- local assertions --------------------------------------------------------------------
    def restore(
        self,
        devices: Iterable[tuple[str, int, int]],
        mwi: Iterable[tuple[str, int, int, int]],
    ) -> None:
        """Take back this node's own assertions saved before a restart (call before start()).

        They keep their versions; the clock is moved past them, and the snapshot sent at join
        announces them. Newer assertions (the Asterisk bridge's resync) supersede them.
        """
        for device, state, version in devices:
            try:
                item = DeviceItem(check_device_name(device), state, version)
            except StateError as exc:
                log.warning("saved state skipped: %s", exc)
                continue
            self.clock.observe(version)
            self.devices.apply(self.eid, item.device, item.state, version)
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
        self.own_changes += 1

    def own_state(self) -> tuple[list[tuple[str, int, int]], list[tuple[str, int, int, int]]]:
        """This node's kept assertions (published with ``keep=True``, e.g. by the CLI): its
        slots for those devices and those mailboxes it wrote last. States learned from
        Asterisk are not kept: Asterisk is their source, and the bridge re-reads them."""
        devices = [
            (d, int(s), v) for d, s, v in self.devices.snapshot(self.eid) if (1, d) in self.kept
        ]
        mwi = [
            (r.mailbox, r.new, r.old, r.version)
            for r in self.mwi.written_by(self.eid)
            if (2, r.mailbox) in self.kept
        ]
        return devices, mwi

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
        version = self.clock.tick()
        change = self.devices.apply(self.eid, device, int(state), version)
        self.own_changes += 1
        self._enqueue(DeviceItem(device, int(state), version))
        if change is not None:
            self._emit_device(change)
        return change

    def publish_mwi(self, mailbox: str, new: int, old: int, keep: bool = False) -> MwiChange | None:
        """Assert message counts for ``mailbox[@context]`` as this node (``keep``: as above)."""
        mailbox = normalize_mailbox(mailbox)
        if keep:
            self.kept.add((2, mailbox))
            self.kept_changed.set()
        if not (0 <= new <= 0x7FFFFFFF and 0 <= old <= 0x7FFFFFFF):
            raise StateError(f"message counts {new}/{old} must be between 0 and 2147483647")
        version = self.clock.tick()
        change = self.mwi.apply(self.eid, mailbox, new, old, version)
        self.own_changes += 1
        self._enqueue(MwiItem(mailbox, new, old, version))
        if change is not None:
            self._emit_mwi(change)
        return change

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

    def members(self) -> list[MemberInfo]:
        """The current view, self included."""
        return list(self._members.values())

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
        return self.config.name if eid == self.eid else self._names.get(eid, "")

    @property
    def view(self) -> int:
        return self._view

    @property
    def quorate(self) -> bool:
        return self._quorate

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    # -- sending -----------------------------------------------------------------------------
    def _enqueue(self, item: DeviceItem | MwiItem) -> None:
        key = _queue_key(item)
        self._queue.pop(key, None)  # a newer state goes to the back of the line
        self._queue[key] = item
        self._wake.set()

    async def _send_loop(self) -> None:
        while True:
            await self._wake.wait()
            if self.config.batch_delay:
                await asyncio.sleep(self.config.batch_delay)
            self._wake.clear()
            try:
                await self._flush()
            except (PbxmeshError, ValueError) as exc:
                # The transport reconnects by itself; the queue is kept and a resync follows.
                log.warning("sending failed, will retry after reconnect: %s", exc)
                await asyncio.sleep(0.2)
                self._wake.set()
            if self.config.frame_interval:
                await asyncio.sleep(self.config.frame_interval)

    async def _flush(self) -> None:
        limit = self._items_per_frame()
        while self._queue:
            batch: list[DeviceItem | MwiItem] = []
            for key in list(self._queue)[:limit]:
                batch.append(self._queue.pop(key))
            try:
                for channel in self._channels.values():
                    items = tuple(i for i in batch if _kind(i) in channel.publish)
                    if items:
                        await self._send_frame(
                            Frame(
                                type=FrameType.CHANGES,
                                origin=self.eid,
                                seq=0,
                                channel=channel.name,
                                items=items,
                            )
                        )
                        _count(self.stats.changes_out, channel.name, len(items))
            except BaseException:
                for item in batch:  # put back what was not sent, unless superseded meanwhile
                    self._queue.setdefault(_queue_key(item), item)
                raise

    def _items_per_frame(self) -> int:
        # An item is at most 1 + 1 + 255 + 16 bytes (MWI); keep under the message size.
        by_size = max(1, (self.transport.max_message_size - 512) // 273)
        return max(1, min(self.config.max_items_per_frame, by_size))

    async def _send_frame(self, f: Frame) -> None:
        f = dataclasses.replace(f, origin=self.eid, seq=self.clock.tick(), name=self.config.name)
        signed = self.guard is not None and self.guard.signed
        data = wire.encode(f, signed=signed)
        if self.guard is not None:
            data = self.guard.seal(data)
        await self.transport.send(data)
        _count(self.stats.frames_out, f.channel or "-")

    def _announce(self) -> None:
        """Queue a complete snapshot of our own origin on every channel."""
        task = asyncio.create_task(self._send_snapshots(), name="pbxmesh-announce")
        self._tasks.append(task)
        task.add_done_callback(self._forget_task)

    def _forget_task(self, task: asyncio.Task[None]) -> None:
        if task in self._tasks:
            self._tasks.remove(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("announcing our state failed: %s", task.exception())

    async def _send_snapshots(self) -> None:
        as_of = self.clock.tick()
        devices = [DeviceItem(d, int(s), v) for d, s, v in self.devices.snapshot(self.eid)]
        mwis = [MwiItem(r.mailbox, r.new, r.old, r.version) for r in self.mwi.written_by(self.eid)]
        limit = self._items_per_frame()
        for channel in list(self._channels.values()):
            items: list[DeviceItem | MwiItem] = []
            kinds = 0
            if "device_state" in channel.publish:
                items += devices
                kinds |= wire.SNAP_DEVICES
            if "mwi" in channel.publish:
                items += mwis
                kinds |= wire.SNAP_MWI
            if not kinds:
                continue
            chunks = [items[i : i + limit] for i in range(0, len(items), limit)] or [[]]
            for part, chunk in enumerate(chunks):
                await self._send_frame(
                    Frame(
                        type=FrameType.SNAPSHOT,
                        origin=self.eid,
                        seq=0,
                        channel=channel.name,
                        items=tuple(chunk),
                        as_of=as_of,
                        part=part,
                        parts=len(chunks),
                        kinds=kinds,
                    )
                )

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

    def _reject(self, reason: str, origin: str, message: str, count: int = 1) -> None:
        _count(self.stats.rejected, reason, count)
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
                what = first.device if isinstance(first, DeviceItem) else first.mailbox
                self._reject(
                    "unauthorised",
                    f.name or str(f.origin),
                    f"node {f.name!r} may not assert {what!r} ({len(denied)} item(s) dropped); "
                    "grant it in [security.peers]",
                    count=len(denied),
                )
        self.clock.observe(f.seq)
        # Channels we do not have are counted together: a peer cannot grow our labels.
        _count(self.stats.frames_in, f.channel if f.channel in self._channels else "-")
        if self.latency_observer is not None and f.type is FrameType.CHANGES:
            lag = time.time() - version_millis(f.seq) / 1000.0
            self.latency_observer(max(0.0, lag))
        self._learn(sender, f)
        match f.type:
            case FrameType.CHANGES:
                self._apply_items(f.origin, f.channel, items)
            case FrameType.SNAPSHOT:
                if f.channel in self._channels:  # nothing to gather for a channel we lack
                    self._gather_snapshot(f, items)
            case FrameType.LEAVE:
                self._drop(f.origin)
            case FrameType.SYNC_REQUEST:
                self._announce()
            case FrameType.HEARTBEAT:
                pass

    def _learn(self, sender: str, f: Frame) -> None:
        previous = self._eid_member.get(f.origin)
        self._eid_member[f.origin] = sender
        if f.name:
            self._names[f.origin] = f.name
        info = self._members.get(sender)
        if info is not None and f.origin not in info.eids:
            info.eids.append(f.origin)
            if f.name:
                info.name = f.name
            if previous is None:
                self._notify_members()

    def _subscribes(self, channel: str, kind: str) -> bool:
        ch = self._channels.get(channel)
        return ch is not None and kind in ch.subscribe

    def _apply_items(
        self, origin: EID, channel: str, items: Iterable[DeviceItem | MwiItem]
    ) -> None:
        want_dev = self._subscribes(channel, "device_state")
        want_mwi = self._subscribes(channel, "mwi")
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
                    self._emit_device(change)
            elif isinstance(item, MwiItem) and want_mwi:
                n += 1
                mchange = self.mwi.apply(origin, item.mailbox, item.new, item.old, item.version)
                if mchange is not None:
                    self._emit_mwi(mchange)
        if n:
            _count(self.stats.changes_in, channel, n)  # n > 0 only for a channel we have
        self._update_remote(touched)

    def _gather_snapshot(self, f: Frame, items: tuple[DeviceItem | MwiItem, ...]) -> None:
        key = (f.origin, f.channel)
        as_of, parts = self._pending.get(key, (f.as_of, {}))
        if f.as_of != as_of:
            if f.as_of < as_of:
                return  # a part of an older snapshot than the one being gathered
            parts = {}
        parts[f.part] = Frame(
            type=f.type, origin=f.origin, seq=f.seq, items=items, kinds=f.kinds, parts=f.parts
        )
        if len(parts) < f.parts:
            self._pending[key] = (f.as_of, parts)
            return
        self._pending.pop(key, None)
        all_items = [i for p in sorted(parts) for i in parts[p].items]
        self._merge_snapshot(f.origin, f.channel, f.as_of, f.kinds, all_items)

    def _merge_snapshot(
        self, origin: EID, channel: str, as_of: int, kinds: int, items: list[DeviceItem | MwiItem]
    ) -> None:
        self.stats.snapshots_merged += 1
        if kinds & wire.SNAP_DEVICES and self._subscribes(channel, "device_state"):
            entries = [(i.device, i.state, i.version) for i in items if type(i) is DeviceItem]
            before = {d for d, _, _ in self.devices.snapshot(origin)}
            for change in self.devices.merge_snapshot(origin, entries, complete_as_of=as_of):
                self._emit_device(change)
            self._update_remote(before | {e[0] for e in entries})
            _count(self.stats.changes_in, channel, len(entries))
        mwis = [i for i in items if isinstance(i, MwiItem)]
        if mwis:
            self._apply_items(origin, channel, mwis)
        if self._resync_started:
            self.stats.last_resync_seconds = time.monotonic() - self._resync_started

    def _drop(self, origin: EID) -> None:
        held = [d for d, _, _ in self.devices.snapshot(origin)]
        changes = self.devices.drop_origin(origin)
        for change in changes:
            self._emit_device(change)
        self._update_remote(held)
        self._eid_member.pop(origin, None)
        for key in [k for k in self._pending if k[0] == origin]:
            del self._pending[key]
        if held:
            log.info(
                "origin dropped eid=%s name=%s devices=%d changed=%d",
                origin,
                self._names.get(origin, ""),
                len(held),
                len(changes),
            )

    def _on_membership(self, change: MembershipChange) -> None:
        self._view = change.view
        self._quorate = change.quorate
        now = time.time()
        current = {m.member_id: m for m in change.members}
        for member_id in list(self._members):
            if member_id not in current:
                del self._members[member_id]
        for m in change.members:
            if m.member_id not in self._members:
                self._members[m.member_id] = _member_info(
                    m, now, m.member_id == self.transport.self_id
                )
        own = self._members.get(self.transport.self_id)
        if own is not None and self.eid not in own.eids:
            own.eids.append(self.eid)
            own.name = self.config.name
        # Drop the origins whose current member is gone (left, failed, or across a partition).
        for origin, member_id in list(self._eid_member.items()):
            if member_id not in current:
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

    # -- listeners ---------------------------------------------------------------------------
    def _emit_device(self, change: DeviceChange) -> None:
        for listener in self.listeners:
            listener.on_device(change)

    def _emit_mwi(self, change: MwiChange) -> None:
        for listener in self.listeners:
            listener.on_mwi(change)

    def _notify_members(self) -> None:
        members = self.members()
        for listener in self.listeners:
            listener.on_members(members)

    def _update_remote(self, devices: Iterable[str]) -> None:
        # Only the Asterisk bridge wants the other origins' aggregate; skip the work otherwise.
        if not any(getattr(x, "wants_remote", True) for x in self.listeners):
            return
        for device in dict.fromkeys(devices):
            state = self.devices.state_excluding(device, self.eid)
            if self._remote_cache.get(device, DeviceState.INVALID) is state:
                continue
            if state is DeviceState.INVALID:
                self._remote_cache.pop(device, None)
            else:
                self._remote_cache[device] = state
            for listener in self.listeners:
                listener.on_remote_device(device, state)


def _queue_key(item: DeviceItem | MwiItem) -> tuple[int, str]:
    return (1, item.device) if isinstance(item, DeviceItem) else (2, item.mailbox)


def _kind(item: DeviceItem | MwiItem) -> str:
    return "device_state" if isinstance(item, DeviceItem) else "mwi"


def _member_info(m: Member, now: float, is_self: bool) -> MemberInfo:
    return MemberInfo(
        member_id=m.member_id,
        name=m.name,
        nodeid=m.nodeid,
        address=m.address,
        host=m.name,
        joined_at=now,
        is_self=is_self,
    )


def make_listener(
    on_device: Callable[[DeviceChange], None] | None = None,
    on_remote_device: Callable[[str, DeviceState], None] | None = None,
    on_mwi: Callable[[MwiChange], None] | None = None,
    on_members: Callable[[list[MemberInfo]], None] | None = None,
) -> NodeListener:
    """A listener from plain callables (any may be omitted)."""

    remote_wanted = on_remote_device is not None

    class _Listener:
        wants_remote = remote_wanted

        def on_device(self, change: DeviceChange) -> None:
            if on_device:
                on_device(change)

        def on_remote_device(self, device: str, state: DeviceState) -> None:
            if on_remote_device:
                on_remote_device(device, state)

        def on_mwi(self, change: MwiChange) -> None:
            if on_mwi:
                on_mwi(change)

        def on_members(self, members: list[MemberInfo]) -> None:
            if on_members:
                on_members(members)

    return _Listener()
