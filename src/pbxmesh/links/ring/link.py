"""The link to a ring of Asterisks running ``res_corosync`` (a :class:`~pbxmesh.links.base.Link`).

Theory of operation
-------------------
The node joins the ring's CPG group (``asterisk``) as one more member and speaks ``ast_event``
exactly as Asterisk does (``protocol.py``), over a
:class:`~pbxmesh.transport.corosync.CorosyncTransport` of that group: the same asyncio
driving (add_reader + dispatch), TRY_AGAIN retries and reconnect after a corosync restart as
the mesh's own transport. (Asterisk's res_corosync does not reconnect by itself; we do.)

**Ring → cluster, one origin.** The ring's Asterisks keep their slots here, one per EID
(``pbxmesh devices`` on the bridge shows them, :meth:`RingLink.origin_slots`). The cluster
gets their aggregate per device as a *part* of this node's own slot
(:meth:`~pbxmesh.links.base.BridgePort.part_device`): every other pbxmesh node sees one
origin, the bridge, so signatures and grants keep working, and aggregation being associative,
the cluster value is the one Asterisk itself would compute. Ring MWI becomes this node's write
(last writer wins, as on the ring).

**Cluster → ring, under the bridge's EID.** We are told each other origin's slot
(``Interest.ORIGIN_DEVICES``) and this node's direct assertions (``Interest.OWN``: ``pbxmesh
publish``, another link's PBX). For each device we offer the ring one cachable value: the
aggregate of every pbxmesh origin *except* this node and any other bridge seen on the same
ring, folded with the direct assertion. The ring part is never in it -- no echo -- and another
bridge's slot is not either, since its direct assertions reach the ring through that bridge
itself and its ring part is the ring's own states: two bridges on one ring neither echo nor
keep stale states alive for each other. A value that goes away is sent as INVALID, which never
wins in Asterisk's aggregation. Cluster MWI (``Interest.MWI``, writer another origin but no
ring bridge) is written with our EID.

**Leaving.** When this process goes (stop or kill -9), CPG tells every Asterisk, which drops
everything under our EID (we announced node id → EID with CLUSTER_DISCOVERY). A ring Asterisk
that leaves takes its slots with it here, and the cluster is told the new aggregate.

**Placement** (reference §12). Asterisk clears a node's states by corosync *node id* when any
member on that node leaves, and ignores an announcement from a node id it knows. So before
joining we look at the group without joining it (``cpg_iteration``) and refuse to start when
another process on our corosync node is in it (:class:`~pbxmesh.errors.RingPlacementError`,
naming the node id): run the ring link on a corosync node of its own. If an Asterisk joins on
our node later we say so loudly; our leaving would then wipe its states on every other
Asterisk, which is logged again at close.

The outbound queue supersedes by key (a newer offer for a device replaces the queued one, per-
device order kept) and one writer task sends, so a burst costs one frame per device.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import time
from dataclasses import dataclass
from typing import Any, cast

from ...eid import EID
from ...errors import ConfigError, PbxmeshError, RingPlacementError, StateError
from ...members import MemberInfo
from ...states import DeviceState
from ...tasks import cancel_and_wait
from ...transport.base import LinkState, MembershipChange, Message, Transport
from ...wire.asterisk import AstDeviceStateChange, AstMwi, decode_event
from ..base import BridgePort, Interest, LinkPort
from ..common import LinkBase, Selection
from .protocol import Effects, RingProtocol

__all__ = ["RING_PART", "RingLink", "RingLinkConfig"]

log = logging.getLogger(__name__)

#: the name of the ring's part of this node's own slot (``node/parts.py``)
RING_PART = "ring"


@dataclass(frozen=True, slots=True)
class RingLinkConfig:
    """How the ring link joins the ring and what it shares."""

    # The CPG group res_corosync uses; Asterisk hard-codes "asterisk".
    group: str = "asterisk"
    # fnmatch patterns (case-sensitive) of device names shared in both directions.
    include: tuple[str, ...] = ("*",)
    # Patterns removed from what include selected.
    exclude: tuple[str, ...] = ()
    # Share MWI in both directions.
    mwi: bool = True
    # Seconds corosync may be unreachable before the ring's states stop counting in the
    # cluster. Longer rides out a corosync restart with the lamps lit; shorter clears a lost
    # ring's lamps sooner.
    down_grace: float = 5.0
    # Seconds between reconnect attempts while corosync is down.
    reconnect_interval: float = 0.2

    def __post_init__(self) -> None:
        if not 1 <= len(self.group.encode()) <= 128:
            raise ConfigError(f"ring group must be 1..128 bytes, not {self.group!r}")
        if not self.down_grace >= 0:
            raise ConfigError("ring down_grace must be zero or a positive number of seconds")
        if not self.reconnect_interval > 0:
            raise ConfigError("ring reconnect_interval must be a positive number of seconds")


class RingLink(LinkBase):
    """One bridge to a res_corosync ring; see the module docstring.

    ``transport``: the ring's CPG group (None: a CorosyncTransport of ``config.group``);
    ``identity``: this member's corosync node id and ring address (None: read from corosync
    with libcfg, and the placement checked before joining). Tests pass an in-memory transport
    and an identity.
    """

    kind = "ring"
    interest = Interest.ORIGIN_DEVICES | Interest.MWI | Interest.OWN
    log = log

    def __init__(
        self,
        config: RingLinkConfig | None = None,
        transport: Transport | None = None,
        identity: tuple[int, str] | None = None,
    ) -> None:
        self.config = config = config or RingLinkConfig()
        super().__init__(
            Selection(config.include, config.exclude, config.mwi, config.include, config.exclude),
            config.down_grace,
        )
        self._transport = transport
        self._identity = identity
        self.port: BridgePort | None = None
        self.protocol: RingProtocol | None = None
        self._queue: collections.OrderedDict[object, bytes] = collections.OrderedDict()
        self._keys = itertools.count()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._joined = False
        self._tasks: list[asyncio.Task[None]] = []
        self._joined_at: dict[str, float] = {}
        self._others: set[str] = set()  # the other members of the group now
        self._colocated: set[str] = set()
        self.reconnects = 0
        self.sent = 0

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self, port: LinkPort) -> None:
        if not hasattr(port, "part_device"):
            raise PbxmeshError("the ring link needs a bridge port (a node's own port)")
        self.port = cast(BridgePort, port)
        if self._transport is None:
            from ...transport.corosync import CorosyncConfig, CorosyncTransport

            self._identity = self._identity or _local_identity(self.config.group)
            self._transport = CorosyncTransport(
                CorosyncConfig(
                    group=self.config.group, reconnect_interval=self.config.reconnect_interval
                )
            )
        await self._transport.start()  # a TransportError here leaves nothing running
        self._tasks.append(asyncio.create_task(self._send_loop(), name="ring link writer"))
        self._tasks.append(asyncio.create_task(self._receive_loop(), name="ring link reader"))

    async def close(self) -> None:
        self._came_up()  # no grace runs on after close
        if self._colocated:
            log.error(
                "leaving CPG group %r while ring member(s) %s run on this corosync node: every "
                "other Asterisk now drops their device states until they send them again "
                "(their next change, or 'module unload res_corosync.so' and load). Run the "
                "ring link on a corosync node of its own",
                self.config.group,
                ", ".join(sorted(self._colocated)),
            )
        port, p = self.port, self.protocol
        if port is not None and p is not None:
            # The ring's part of this node's slot goes with the link (a reload that removes
            # it); the node itself keeps running. MWI stays, as Asterisk keeps a gone
            # server's MWI.
            for device, _ in list(p.slots.devices()):
                if self._shares(device):
                    port.part_device(RING_PART, device, DeviceState.INVALID)
        self.port = None
        if self._transport is not None:
            await self._transport.close()
        await cancel_and_wait(*self._tasks)
        self._tasks.clear()
        self._joined = False
        self._queue.clear()
        self._idle.set()

    def _address(self) -> str:
        ident = self._identity or (0, "")
        return f"corosync node {ident[0]} ({ident[1] or '-'}) group {self.config.group}"

    def _connected(self) -> bool:
        return self._joined and bool(self._others)

    def _counts(self) -> dict[str, int]:
        p = self.protocol
        return {
            "reconnects": self.reconnects,
            "queue_depth": len(self._queue),
            "protocol_errors": p.malformed if p else 0,
        }

    def _extra(self) -> dict[str, Any]:
        p = self.protocol
        return {
            "asterisks": len(p.peers) if p else 0,
            "bridges": sorted(str(b) for b in p.bridges) if p else [],
            "offered": len(p.offered) if p else 0,
            "offered_mwi": len(p.offered_mwi) if p else 0,
            "ring_devices": len(p.slots) if p else 0,
            "received": p.received if p else 0,
            "ignored": p.ignored if p else 0,
            "skipped": p.skipped if p else 0,
            "sent": self.sent,
            "colocated": sorted(self._colocated),
        }

    async def wait_idle(self) -> None:
        while self._queue:
            self._idle.clear()
            await self._idle.wait()
        await asyncio.sleep(0)

    # -- what the node and the CLI read --------------------------------------------------------
    def members(self) -> list[MemberInfo]:
        p = self.protocol
        if p is None:
            return []
        return [
            MemberInfo(
                member_id=peer.member,
                name=f"asterisk {peer.eid}",
                nodeid=peer.node_id,
                address=peer.address or None,
                eids=[peer.eid],
                joined_at=self._joined_at.get(peer.member, 0.0),
                kind="asterisk",
            )
            for peer in p.asterisks()
        ]

    def origin_slots(self, device: str) -> dict[EID, DeviceState]:
        p = self.protocol
        if p is None:
            return {}
        return {eid: state for eid, (state, _) in p.slots.slots_of(device).items()}

    # -- told by the node ----------------------------------------------------------------------
    def _shares(self, name: str) -> bool:
        """Devices and mailboxes alike, by ``include``/``exclude`` (MWI as a whole by ``mwi``)."""
        return self.shares_device(name)

    def origin_device(self, device: str, origin: EID, state: DeviceState) -> None:
        p = self.protocol
        if p is None or self.port is None or not self._shares(device):
            return
        if origin not in p.bridges and any(peer.eid == origin for peer in p.peers.values()):
            self._apply(p.learn_bridge(origin))  # a pbxmesh node we took for an Asterisk
        if origin in p.bridges:
            return  # another bridge on this ring: it offers its own assertions itself
        remote = self.port.state_excluding(device, frozenset(p.bridges))
        self._apply(p.set_remote(device, remote))

    def own_device(self, device: str, state: DeviceState) -> None:
        if self.protocol is not None and self._shares(device):
            self._apply(self.protocol.set_direct(device, state))

    def remote_mwi(self, mailbox: str, new: int, old: int, writer: EID) -> None:
        p = self.protocol
        if p is None or not self.config.mwi or writer in p.bridges:
            return
        if self._shares(mailbox):
            self._apply(p.offer_mwi(mailbox, new, old))

    def own_mwi(self, mailbox: str, new: int, old: int) -> None:
        if self.protocol is not None and self.config.mwi and self._shares(mailbox):
            self._apply(self.protocol.offer_mwi(mailbox, new, old))

    # -- the ring ------------------------------------------------------------------------------
    async def _receive_loop(self) -> None:
        transport = self._transport
        assert transport is not None
        async for event in transport.events():
            try:
                match event:
                    case Message(sender, data):
                        if self.protocol is not None:
                            self._apply(self.protocol.receive(sender, data))
                    case MembershipChange():
                        self._on_view(event)
                    case LinkState(up, reason):
                        self._on_link(up, reason)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not end the link; say so loudly
                log.exception("ring link: error handling %s", type(event).__name__)

    def _on_view(self, change: MembershipChange) -> None:
        transport, port = self._transport, self.port
        if transport is None or port is None:
            return
        me = transport.self_id
        if self.protocol is None:
            # Our first view: without libcfg (a test's transport) the engine names our node.
            own = next((m for m in change.members if m.member_id == me), None)
            if own is None:
                return
            if self._identity is None:
                self._identity = (own.nodeid or 0, own.address or "")
            node_id, address = self._identity
            self.protocol = RingProtocol(port.origin, node_id, address, port.is_origin)
            log.info(
                "ring link joined group=%s node=%d address=%s eid=%s",
                self.config.group,
                node_id,
                address,
                port.origin,
            )
        p = self.protocol
        joined = [m.member_id for m in change.joined]
        left = [m.member_id for m in change.left]
        joined_nodes = [(m.member_id, m.nodeid) for m in change.joined]
        left_nodes = [(m.member_id, m.nodeid) for m in change.left]
        now = time.time()
        for mid in joined:
            self._joined_at[mid] = now
        for m in change.members:  # there before us: seen since our join
            self._joined_at.setdefault(m.member_id, now)
        for mid in left:
            self._joined_at.pop(mid, None)
            self._colocated.discard(mid)
        for member in change.joined:
            if member.member_id != me and member.nodeid == p.node_id:
                self._colocated.add(member.member_id)
                log.error(
                    "ring member %s joined CPG group %r on this bridge's own corosync node %d "
                    "(an Asterisk?): Asterisk tells members apart by node id only, so when "
                    "either of us leaves, every other Asterisk drops the other's states too. "
                    "Run the ring link on a corosync node of its own",
                    member.member_id,
                    self.config.group,
                    p.node_id,
                )
        if me in joined:
            self._resync(change)
        self._others = {m.member_id for m in change.members} - {me}
        self._apply(p.view(joined_nodes, left_nodes, me))
        if joined:  # everything we offer was queued again (a join dump): a resync
            self._synced()
        if me in joined:
            self._joined = True
            log.info(
                "ring joined group=%s members=%d offered=%d",
                self.config.group,
                len(change.members),
                len(p.offered) + len(p.offered_mwi),
            )

    def _resync(self, change: MembershipChange) -> None:
        """Our own (re)join: forget members that are gone, read the cluster's whole picture."""
        p, port = self.protocol, self.port
        if p is None or port is None:
            return
        self._came_up()
        present = {m.member_id for m in change.members}
        for member in [m for m in p.peers if m not in present]:
            self._apply(p.view([], [(member, p.peers[member].node_id)], ""))
        devices = {d for d, _, _ in port.origin_devices() if self._shares(d)}
        bridges = frozenset(p.bridges)
        remote = {d: port.state_excluding(d, bridges) for d in devices}
        direct = {d: s for d, s in port.own_devices().items() if self._shares(d)}
        p.reset_offers(remote, direct)  # the dump after the join sends all of it
        if self.config.mwi:
            mwi = {
                box: (new, old)
                for box, (new, old, writer) in port.remote_mwi().items()
                if writer not in bridges and self._shares(box)
            }
            mwi.update((b, c) for b, c in port.own_mwi().items() if self._shares(b))
            p.offered_mwi.clear()
            for box, (new, old) in mwi.items():
                p.offer_mwi(box, new, old)

    def _on_link(self, up: bool, reason: str) -> None:
        if up:
            self.reconnects += 1
            log.info("ring link: corosync is back; rejoining group %s", self.config.group)
            return
        self._joined = False
        self._others = set()
        log.warning(
            "ring link: corosync lost (%s); the ring's states count for %.1f s more",
            reason,
            self.config.down_grace,
        )
        self._went_down()

    def _grace_over(self) -> None:
        """Gone past the grace: the ring's states stop counting (not this server's own)."""
        if self.protocol is not None and not self._joined:
            self._apply(self.protocol.forget_all())

    # -- effects -------------------------------------------------------------------------------
    def _apply(self, fx: Effects) -> None:
        for frame in fx.send:
            self._enqueue(frame)
        port = self.port
        if port is not None:
            for device, state in fx.devices:
                if not self._shares(device):
                    continue
                try:
                    port.part_device(RING_PART, device, state)
                    self.published += 1
                except StateError as exc:
                    self._note("warning", f"ring state not shared: {exc}")
            if self.config.mwi:
                for box, new, old, _writer in fx.mwi:
                    if not self._shares(box):
                        continue
                    try:
                        port.part_mwi(RING_PART, box, new, old)
                        self.published += 1
                    except StateError as exc:
                        self._note("warning", f"ring mailbox not shared: {exc}")
        for level, text in fx.notes:
            self._note(level, text)

    def _note(self, level: str, text: str) -> None:
        if level == "info":
            log.info("ring: %s", text)
        else:
            self._warn_once(text, "ring: %s", text)

    def _enqueue(self, frame: bytes) -> None:
        # DEVICE_STATE_CHANGE and MWI of one name supersede each other; anything else
        # (CLUSTER_DISCOVERY) keeps its own place.
        key: object = next(self._keys)
        match decode_event(frame):  # our own frame: valid by construction
            case AstDeviceStateChange(device=device):
                key = ("device", device)
            case AstMwi(mailbox=box, context=context):
                key = ("mwi", box, context)
        self._queue.pop(key, None)
        self._queue[key] = frame
        self._idle.clear()
        self._wake.set()

    async def _send_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            transport = self._transport
            while self._queue and transport is not None:
                key, frame = next(iter(self._queue.items()))
                try:
                    await transport.send(frame)
                except PbxmeshError as exc:
                    log.debug("ring send interrupted: %s", exc)
                    break
                if self._queue.get(key) is frame:
                    del self._queue[key]
                self.sent += 1
            if not self._queue:
                self._idle.set()


def _local_identity(group: str) -> tuple[int, str]:
    """This corosync node's id and ring address; refuses a node shared with an Asterisk."""
    from ...transport import _cpg

    node_id, address = _cpg.local_node()
    others = [m for m in _cpg.group_members(group) if m.nodeid == node_id]
    if others:
        pids = ", ".join(str(m.pid) for m in others)
        raise RingPlacementError(
            f"CPG group {group!r} already has a member on this corosync node {node_id} "
            f"(pid {pids}: an Asterisk with res_corosync?). Asterisk tells ring members apart by "
            "node id only: if this bridge joined, its leaving would wipe that Asterisk's states "
            "on every other Asterisk, and its own announcement would be ignored. Run the ring "
            "link on a corosync node of its own (see docs/ring.md)"
        )
    return node_id, address
