"""res_corosync's ring protocol as one member sees it: sans-IO, no time, no logging.

Theory of operation
-------------------
Asterisk's ``res_corosync`` members multicast ``ast_event`` frames (``wire/asterisk.py``) to
the CPG group ``asterisk``. :class:`RingProtocol` is what a pbxmesh bridge needs to be one of
them. It is fed what CPG delivers -- views (:meth:`RingProtocol.view`) and messages
(:meth:`RingProtocol.receive`) -- and what the bridge wants to offer to the ring
(:meth:`RingProtocol.offer`, :meth:`RingProtocol.offer_mwi`); it answers with
:class:`Effects`: frames to multicast, changes of the ring's aggregate per device, ring MWI
writes, and notes for the log.

**Membership, as Asterisk keeps it** (reference §5.8). A member announces itself with
CLUSTER_DISCOVERY (corosync node id, first ring address, EID) when it joins, and answers every
announcement from a node id it does not know yet, so that a newcomer learns every member.
Asterisk forgets a node id when any member on it leaves, and then ignores nothing from it; we
do the same, so a restarted Asterisk always hears our announcement again (without it, it could
not clear our states when we leave). Every join, ours included, makes every member re-send its
own cache: we re-send everything we offer. On our own join we also send one PING, as
Asterisk's ``corosync ping`` does: each Asterisk logs our EID, which shows an administrator
that the bridge is heard. When another member on *our* corosync node leaves
(an Asterisk wrongly placed beside the bridge), every Asterisk drops our states with it and
forgets our node: we announce ourselves and re-send everything at once.

**Learning the ring.** Each ring Asterisk's DEVICE_STATE_CHANGE goes to that Asterisk's slot
(keyed by its EID) in a :class:`~pbxmesh.store.DeviceStore` of the ring's own; its aggregate
per device is what the bridge reports to the cluster. Type 5 (aggregates) and PING carry no
state of anybody's own and are ignored; so are our own frames (our EID) and frames of another
pbxmesh bridge on the same ring (an EID the cluster knows as a pbxmesh origin): its offers are
the cluster's states, which reach us through the cluster, and taking them for an Asterisk's
would keep stale states alive between two bridges. A member's slots are dropped when *that
member* (``nodeid:pid``) leaves -- more precise than Asterisk's node-id match, so a passive
process leaving a node does not wipe the states of the Asterisk still running there.

**Offering.** For each device the bridge offers one value under its own EID, cachable: the
aggregate of the cluster's non-ring origins (``remote``) and of this node's direct assertions
(``direct``), folded with Asterisk's own table. A value that went away is sent once as INVALID
(the identity of aggregation: it never wins in Asterisk's hint). Only what Asterisk can take is
ever sent: states 0..8, device names of at most 79 bytes without NUL or control characters,
non-empty mailbox and context.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final

from ...eid import EID
from ...errors import LocalProtocolError, RemoteProtocolError, StateError
from ...states import DeviceState, aggregate_pair
from ...store import DeviceStore, check_device_name, normalize_mailbox
from ...wire.asterisk import (
    AstClusterDiscovery,
    AstDeviceState,
    AstDeviceStateChange,
    AstEvent,
    AstMwi,
    AstPing,
    decode_event,
    encode_event,
)

__all__ = ["Effects", "RingPeer", "RingProtocol"]

INT_MAX: Final = 0x7FFFFFFF  # Asterisk clamps received counts to this
_INVALID: Final = DeviceState.INVALID


@dataclass(frozen=True, slots=True)
class RingPeer:
    """A ring member that announced itself (or sent a state) : one Asterisk."""

    member: str  # the CPG member, "nodeid:pid"
    node_id: int | None  # from its CLUSTER_DISCOVERY (None: it sent none yet)
    address: str  # its first ring address, from the same announcement
    eid: EID


@dataclass(slots=True)
class Effects:
    """What one input caused: frames to multicast, ring changes, notes for the log."""

    send: list[bytes] = field(default_factory=list)
    #: (device, the ring Asterisks' new aggregate); INVALID: no Asterisk holds it any more
    devices: list[tuple[str, DeviceState]] = field(default_factory=list)
    #: (mailbox@context, new, old, writer) written by a ring Asterisk
    mwi: list[tuple[str, int, int, EID]] = field(default_factory=list)
    #: (level, text) for the log: "warning" or "info"
    notes: list[tuple[str, str]] = field(default_factory=list)

    def extend(self, other: Effects) -> None:
        self.send += other.send
        self.devices += other.devices
        self.mwi += other.mwi
        self.notes += other.notes


def _member_node(member: str) -> int | None:
    head, sep, _ = member.partition(":")
    return int(head) if sep and head.isdigit() else None


class RingProtocol:
    """One bridge's side of the ring; see the module docstring."""

    def __init__(
        self,
        eid: EID,
        node_id: int,
        address: str,
        is_bridge: Callable[[EID], bool] = lambda _eid: False,
    ) -> None:
        self.eid = eid
        self.node_id = node_id
        self.address = address
        self._is_bridge = is_bridge
        #: the ring Asterisks' own states, one origin per EID
        self.slots = DeviceStore()
        self._version = 0
        #: members that spoke, by CPG member id
        self.peers: dict[str, RingPeer] = {}
        self._known_nodes: set[int] = set()
        #: EIDs seen on the ring that are pbxmesh nodes (other bridges)
        self.bridges: set[EID] = set()
        self._remote: dict[str, DeviceState] = {}
        self._direct: dict[str, DeviceState] = {}
        #: what the ring holds from us: device -> state (never INVALID)
        self.offered: dict[str, DeviceState] = {}
        #: mailbox@context -> counts we wrote to the ring
        self.offered_mwi: dict[str, tuple[int, int]] = {}
        self._ring_mwi: dict[str, tuple[int, int]] = {}
        # counters, for status and metrics
        self.received = 0
        self.malformed = 0
        self.ignored = 0  # type 5, PING, other bridges, own echo
        self.skipped = 0  # valid frames whose content the cluster cannot carry

    # -- frames of our own ---------------------------------------------------------------------
    def discovery(self) -> bytes:
        return encode_event(AstClusterDiscovery(self.node_id, self.address, self.eid))

    def ping(self) -> bytes:
        """PING, as ``corosync ping`` sends it: every Asterisk logs our EID once."""
        return encode_event(AstPing(self.eid))

    def _device_frame(self, device: str, state: DeviceState) -> bytes:
        return encode_event(AstDeviceStateChange(device, int(state), 1, self.eid))

    def _mwi_frame(self, mailbox: str, new: int, old: int) -> bytes:
        box, _, context = mailbox.partition("@")
        if not box or not context:
            raise LocalProtocolError(f"mailbox {mailbox!r} needs a mailbox and a context")
        return encode_event(AstMwi(box, context, min(new, INT_MAX), min(old, INT_MAX), self.eid))

    def dump(self) -> list[bytes]:
        """Everything we offer, as sent after every join (Asterisk's cache dump)."""
        frames = [self._device_frame(d, s) for d, s in self.offered.items()]
        frames += [self._mwi_frame(m, n, o) for m, (n, o) in self.offered_mwi.items()]
        return frames

    # -- offering --------------------------------------------------------------------------------
    def set_remote(self, device: str, state: DeviceState) -> Effects:
        """The cluster's non-ring origins' aggregate for ``device`` (INVALID: none)."""
        if state is _INVALID:
            self._remote.pop(device, None)
        else:
            self._remote[device] = state
        return self._offer(device)

    def set_direct(self, device: str, state: DeviceState) -> Effects:
        """This node's direct assertion for ``device`` (INVALID: none)."""
        if state is _INVALID:
            self._direct.pop(device, None)
        else:
            self._direct[device] = state
        return self._offer(device)

    def offer(self, device: str) -> DeviceState:
        """What we mean to offer for ``device`` now."""
        return aggregate_pair(
            self._remote.get(device, _INVALID), self._direct.get(device, _INVALID)
        )

    def _offer(self, device: str) -> Effects:
        fx = Effects()
        state = self.offer(device)
        if self.offered.get(device, _INVALID) is state:
            return fx
        try:
            check_device_name(device)
            frame = self._device_frame(device, state)
        except (StateError, LocalProtocolError) as exc:
            self.skipped += 1
            fx.notes.append(("warning", f"not offered to the ring: {exc}"))
            return fx
        if state is _INVALID:
            del self.offered[device]
        else:
            self.offered[device] = state
        fx.send.append(frame)
        return fx

    def reset_offers(
        self, remote: dict[str, DeviceState], direct: dict[str, DeviceState]
    ) -> Effects:
        """Take the whole picture again (a resync); send what differs from what the ring
        holds from us, INVALID for what it should no longer hold."""
        self._remote = {d: s for d, s in remote.items() if s is not _INVALID}
        self._direct = {d: s for d, s in direct.items() if s is not _INVALID}
        fx = Effects()
        for device in {*self._remote, *self._direct, *self.offered}:
            fx.extend(self._offer(device))
        return fx

    def offer_mwi(self, mailbox: str, new: int, old: int) -> Effects:
        """Write ``mailbox@context`` to the ring under our EID (the cluster's counts)."""
        fx = Effects()
        counts = (max(0, min(new, INT_MAX)), max(0, min(old, INT_MAX)))
        if self.offered_mwi.get(mailbox) == counts:
            return fx
        try:
            frame = self._mwi_frame(normalize_mailbox(mailbox), *counts)
        except (StateError, LocalProtocolError) as exc:
            self.skipped += 1
            fx.notes.append(("warning", f"mailbox not offered to the ring: {exc}"))
            return fx
        self.offered_mwi[mailbox] = counts
        self._ring_mwi.pop(mailbox, None)  # the ring holds our counts now
        fx.send.append(frame)
        return fx

    # -- membership ------------------------------------------------------------------------------
    def view(
        self,
        joined: Iterable[tuple[str, int | None]],
        left: Iterable[tuple[str, int | None]],
        self_member: str,
    ) -> Effects:
        """A CPG configuration change: ``(member, corosync node id)`` that joined and left."""
        fx = Effects()
        joined_ids = [member for member, _ in joined]
        repair = False
        for member, node in left:
            if node is not None:
                self._known_nodes.discard(node)  # as Asterisk: it must announce itself again
            peer = self.peers.pop(member, None)
            if peer is not None:
                fx.extend(self._drop_peer(peer))
            if node == self.node_id and member != self_member:
                # Every Asterisk just dropped our states with it (it matches node ids only)
                # and forgot our node: announce ourselves and send everything again.
                repair = True
                fx.notes.append(
                    (
                        "warning",
                        f"ring member {member} on this corosync node {self.node_id} left the "
                        "group: every Asterisk dropped our states with it; sending them again",
                    )
                )
        if self_member in joined_ids or repair:
            fx.send.append(self.discovery())
        if self_member in joined_ids:
            fx.send.append(self.ping())  # each Asterisk logs "Got event PING ... EID"
        if joined_ids or repair:
            fx.send += self.dump()
        return fx

    def _drop_peer(self, peer: RingPeer) -> Effects:
        fx = Effects()
        if any(p.eid == peer.eid for p in self.peers.values()):
            return fx  # the same Asterisk speaks through another member (restarted)
        fx.notes.append(
            (
                "info",
                f"ring Asterisk {peer.eid} (node {peer.node_id}, {peer.address or '-'}) left; "
                "its states are dropped",
            )
        )
        for change in self.slots.drop_origin(peer.eid):
            fx.devices.append((change.device, change.state))
        return fx

    def forget_all(self) -> Effects:
        """The ring is out of reach (corosync gone): drop every Asterisk's states."""
        fx = Effects()
        peers, self.peers = list(self.peers.values()), {}
        self._known_nodes.clear()
        for peer in peers:
            fx.extend(self._drop_peer(peer))
        return fx

    def learn_bridge(self, eid: EID) -> Effects:
        """``eid`` turned out to be a pbxmesh node: forget what was taken as its states."""
        fx = Effects()
        if eid in self.bridges:
            return fx
        self.bridges.add(eid)
        for member, peer in list(self.peers.items()):
            if peer.eid == eid:
                del self.peers[member]
        for change in self.slots.drop_origin(eid):
            fx.devices.append((change.device, change.state))
        fx.notes.append(
            (
                "info",
                f"another pbxmesh bridge {eid} is on the ring; its offers are "
                "ignored (its states come through the cluster)",
            )
        )
        return fx

    # -- receiving -------------------------------------------------------------------------------
    def receive(self, member: str, data: bytes) -> Effects:
        """One message CPG delivered from ``member``."""
        fx = Effects()
        self.received += 1
        try:
            event = decode_event(data)
        except RemoteProtocolError as exc:
            self.malformed += 1
            fx.notes.append(("warning", f"malformed ast_event from ring member {member}: {exc}"))
            return fx
        eid = event.eid
        if eid == self.eid:
            self.ignored += 1
            return fx  # our own, delivered back
        if eid in self.bridges or self._is_bridge(eid):
            self.ignored += 1
            fx.extend(self.learn_bridge(eid))
            return fx
        fx.extend(self._apply(member, event))
        return fx

    def _peer(self, member: str, eid: EID) -> RingPeer:
        peer = self.peers.get(member)
        if peer is None or peer.eid != eid:
            peer = RingPeer(member, _member_node(member), peer.address if peer else "", eid)
            self.peers[member] = peer
        return peer

    def _apply(self, member: str, event: AstEvent) -> Effects:
        fx = Effects()
        match event:
            case AstDeviceState() | AstPing():
                self.ignored += 1
            case AstClusterDiscovery(node_id, address, eid):
                self.peers[member] = RingPeer(member, node_id, address, eid)
                if node_id == self.node_id:
                    fx.notes.append(
                        (
                            "warning",
                            f"Asterisk {eid} announced itself from this bridge's own corosync "
                            f"node {node_id}: the ring cannot tell us apart, so this bridge "
                            "must never leave the group while it runs; run the ring link on "
                            "a corosync node of its own",
                        )
                    )
                if node_id not in self._known_nodes:
                    self._known_nodes.add(node_id)
                    fx.send.append(self.discovery())  # so the newcomer learns about us
            case AstDeviceStateChange(device, state, _cachable, eid):
                self._peer(member, eid)
                try:
                    check_device_name(device)
                except StateError as exc:
                    self.skipped += 1
                    fx.notes.append(("warning", f"ring state not shared: {exc}"))
                    return fx
                self._version += 1
                change = self.slots.apply(eid, device, state, self._version)
                if change is not None:
                    fx.devices.append((device, change.state))
            case AstMwi(mailbox, context, new, old, eid):
                self._peer(member, eid)
                if not mailbox or not context:
                    self.skipped += 1
                    return fx  # Asterisk drops these too
                try:
                    box = normalize_mailbox(f"{mailbox}@{context}")
                except StateError as exc:
                    self.skipped += 1
                    fx.notes.append(("warning", f"ring mailbox not shared: {exc}"))
                    return fx
                counts = (min(new, INT_MAX), min(old, INT_MAX))
                if self._ring_mwi.get(box) == counts:
                    return fx  # the same counts again (a join dump): nothing new
                self._ring_mwi[box] = counts
                self.offered_mwi.pop(box, None)  # the ring wrote it after us
                fx.mwi.append((box, *counts, eid))
        return fx

    # -- reading ---------------------------------------------------------------------------------
    def asterisks(self) -> list[RingPeer]:
        """The ring's Asterisks we know, by member."""
        return sorted(self.peers.values(), key=lambda p: (p.node_id or 0, p.member))

    def aggregate(self, device: str) -> DeviceState:
        """The ring Asterisks' aggregate for ``device`` (INVALID: none holds it)."""
        return self.slots.cluster_state(device) or _INVALID
