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

* ``assertions.py`` -- :class:`OwnAssertions`, the one writer of this node's own slots
  (published, restored, kept, withdrawn) and of the warnings about its own grant;
  ``remote.py`` -- :class:`RemoteWrites`, the one writer of the other origins' values;
  ``reading.py`` -- :class:`ReadView`, the one read view (links, control API, metrics);
  ``port.py`` -- the port a link reports through (own assertions in, read view out).

The node is composed of these objects, each built from explicit collaborators; its public
methods delegate to them. This module holds the lifecycle and the one inbound boundary
(:meth:`Node._on_message`: decode, own echo, guard, channel subscription, apply).

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
from collections.abc import Callable

from ..clock import HybridClock, version_millis
from ..eid import EID
from ..errors import PbxmeshError, RemoteProtocolError, SecurityError
from ..links.base import Link
from ..presence import PresenceChange, PresenceRecord, PresenceState, PresenceStore
from ..states import DeviceState
from ..store import DeviceChange, DeviceStore, MwiChange, MwiRecord, MwiStore
from ..tasks import cancel_and_wait
from ..transport.base import LinkState, MembershipChange, Message, Transport
from ..wire import frame as wire
from ..wire.frame import Frame, FrameType, Item
from .assertions import OwnAssertions
from .config import ChannelConfig, NodeConfig
from .fanout import Fanout, NodeListener
from .guard import FrameGuard
from .membership import MemberInfo, Membership
from .outbound import Outbound
from .port import OwnPort
from .reading import ReadView
from .remote import RemoteWrites
from .snapshots import CatchUp, SnapshotGatherer, send_snapshots
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
        self.eid = eid = config.eid
        self.transport = transport
        self.clock = clock = clock or HybridClock(lambda: time.time_ns() // 1_000_000)
        self.guard = guard
        self.devices = devices = DeviceStore()
        self.mwi = mwi = MwiStore()
        self.presence = presence = PresenceStore()
        self.stats = stats = NodeStats()
        self._fanout = fanout = Fanout(devices, eid, stats)
        #: listeners of the cluster's changes (append to it); see :class:`NodeListener`
        self.listeners: list[NodeListener] = fanout.listeners
        self._channels = {c.name: c for c in config.channels}
        self._out = out = Outbound(config, transport, self.clock, guard, stats)
        self._membership = membership = Membership(eid, config.name)
        self._snapshots = SnapshotGatherer()
        self._catch_up = CatchUp()
        #: the one writer of this node's own slots, and the one writer of the others'
        self.own = OwnAssertions(
            eid, clock, devices, mwi, presence, fanout, out, guard, self._announce
        )
        self._remote = RemoteWrites(eid, devices, mwi, presence, stats, fanout, config.channels)
        #: the one read view (links, the control API and metrics read the node here)
        self.reads = ReadView(
            eid, config.name, devices, mwi, presence, stats, membership, fanout, out
        )
        self._tasks: list[asyncio.Task[None]] = []
        #: (origin, reason) of the rejected frames warned about (once each)
        self._warned: set[tuple[str, str]] = set()
        self._joined = asyncio.Event()
        self._closed = False
        #: called with the seconds from a frame's origin clock to its application here
        self.latency_observer: Callable[[float], None] | None = None

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
        done = self._catch_up.done
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                await done.wait()
        return done.is_set()

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
        self._remote.set_channels(channels)
        log.info("channels reloaded channels=%s", ",".join(self._channels))
        self._announce()

    def channels(self) -> list[ChannelConfig]:
        return list(self._channels.values())

    # -- links to Asterisk -------------------------------------------------------------------
    async def add_link(self, link: Link) -> None:
        """Attach a link to Asterisk and start it: it reports through a port for this node's
        origin and is told the cluster's changes from now on (``links/base.py``)."""
        self._fanout.add_link(link)
        try:
            await link.start(OwnPort(self.own, self.reads))
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
        channels = list(self._channels.values())
        sending = send_snapshots(
            self._out, self.clock, self.eid, self.devices, self.mwi, channels, self.presence
        )
        task = asyncio.create_task(sending, name="pbxmesh-announce")
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
        items = self._guarded(f, data)
        if items is None:
            return
        self.clock.observe(f.seq)
        # Channels we do not have are counted together: a peer cannot grow our labels.
        count(self.stats.frames_in, f.channel if f.channel in self._channels else "-")
        if self.latency_observer is not None and f.type is FrameType.CHANGES:
            lag = time.time() - version_millis(f.seq) / 1000.0
            self.latency_observer(max(0.0, lag))
        if self._membership.learn(sender, f.origin, f.name):
            self._notify_members()
        self._dispatch(sender, f, items)

    def _dispatch(self, sender: str, f: Frame, items: tuple[Item, ...]) -> None:
        match f.type:
            case FrameType.CHANGES:
                self._remote.apply(f.origin, f.channel, items)
            case FrameType.SNAPSHOT:
                if f.channel in self._channels:  # nothing to gather for a channel we lack
                    whole = self._snapshots.add(f, items)
                    if whole is not None:
                        self._remote.merge_snapshot(f.origin, f.channel, f.as_of, f.kinds, whole)
                        self._catch_up.snapshot_from(sender, f.kinds)
            case FrameType.LEAVE:
                self._drop(f.origin)
            case FrameType.SYNC_REQUEST:
                self._announce()
            case FrameType.HEARTBEAT:
                pass

    def _guarded(self, f: Frame, data: bytes) -> tuple[Item, ...] | None:
        """The items of ``f`` the guard lets through (None: the frame is rejected)."""
        if self.guard is None:
            return f.items
        try:
            items = self.guard.check(f, data)
        except SecurityError as exc:
            self._reject(exc.reason, f.name or str(f.origin), str(exc))
            return None
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
        return items

    def revoke(self) -> int:
        """Drop every device state another origin holds that the guard no longer lets it
        assert (its node was removed from the list of nodes, or its grant narrowed, by a
        SIGHUP): it stops counting at once, not when that node leaves. Returns how many
        states were dropped. Its later frames are refused by the guard as they come."""
        if self.guard is None:
            return 0
        return self._remote.revoke(self.guard, self._membership.name_of)

    def _drop(self, origin: EID) -> None:
        held, changed = self._remote.drop(origin)
        self._membership.forget(origin)
        self._snapshots.forget(origin)
        if held:
            log.info(
                "origin dropped eid=%s name=%s devices=%d changed=%d",
                origin,
                self._membership.name_of(origin),
                held,
                changed,
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
            me = self.transport.self_id
            others = [m.member_id for m in change.members if m.member_id != me]
            self._catch_up.joined(others, CatchUp.kinds_wanted(self._channels.values()))
        self._catch_up.view(m.member_id for m in change.left)
        if change.joined or not self._joined.is_set():
            self.stats.resyncs += 1
            self._remote.resync_started = time.monotonic()
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
        self._fanout.members(self.reads.members())

    # -- this node's own assertions (OwnAssertions) --------------------------------------------
    @property
    def own_changes(self) -> int:  # for a saver: when to write the own state
        return self.own.own_changes

    @property
    def kept_changed(self) -> asyncio.Event:  # set: save the own state at once
        return self.own.kept_changed

    def publish_device(
        self, device: str, state: DeviceState, keep: bool = False
    ) -> DeviceChange | None:
        return self.own.publish_device(device, state, keep)

    def publish_part(self, part: str, device: str, state: DeviceState) -> DeviceChange | None:
        return self.own.publish_part(part, device, state)

    def publish_mwi(
        self, mailbox: str, new: int, old: int, keep: bool = False, part: str | None = None
    ) -> MwiChange | None:
        return self.own.publish_mwi(mailbox, new, old, keep, part)

    def publish_presence(
        self,
        presentity: str,
        state: PresenceState,
        subtype: str = "",
        message: str = "",
        keep: bool = False,
    ) -> PresenceChange | None:
        return self.own.publish_presence(presentity, state, subtype, message, keep)

    def withdraw_reported(self) -> int:
        return self.own.withdraw_reported()

    # -- reads (ReadView) ----------------------------------------------------------------------
    def remote_state(self, device: str) -> DeviceState:
        return self.reads.remote_state(device)

    def remote_devices(self) -> dict[str, DeviceState]:
        return self.reads.remote_devices()

    def remote_mwi(self) -> dict[str, tuple[int, int]]:
        return self.reads.remote_mwi()

    def members(self) -> list[MemberInfo]:
        return self.reads.members()

    def link_members(self) -> list[MemberInfo]:
        return self.reads.link_members()

    def device_rows(
        self, pattern: str | None = None
    ) -> list[tuple[str, DeviceState, dict[EID, DeviceState]]]:
        return self.reads.device_rows(pattern)

    def device_origins(self, device: str) -> dict[EID, DeviceState]:
        return self.reads.device_origins(device)

    def mwi_rows(self, pattern: str | None = None) -> list[MwiRecord]:
        return self.reads.mwi_rows(pattern)

    def presence_rows(self, pattern: str | None = None) -> list[PresenceRecord]:
        return self.reads.presence_rows(pattern)

    def origin_name(self, eid: EID) -> str:
        return self.reads.origin_name(eid)

    @property
    def view(self) -> int:
        return self.reads.view

    @property
    def quorate(self) -> bool:
        return self.reads.quorate

    @property
    def queue_depth(self) -> int:
        return self.reads.queue_depth
