"""Reading a node: the one read view of the cluster's values.

``pbxmesh devices``/``mwi``/``presence``, the control API, ``/metrics`` and the links (through
:class:`~pbxmesh.node.port.OwnPort`) all read the node here, never in its stores: a
:class:`ReadView` is built from the stores and parts it reads and writes none of them.
"""

from __future__ import annotations

import fnmatch

from ..eid import EID
from ..presence import PresenceRecord, PresenceState, PresenceStore
from ..states import DeviceState
from ..store import DeviceStore, MwiRecord, MwiStore
from .fanout import Fanout
from .membership import MemberInfo, Membership
from .outbound import Outbound
from .stats import NodeStats

__all__ = ["ReadView"]


class ReadView:
    """The node's reads (:class:`~pbxmesh.node.core.Node` builds one and delegates to it)."""

    def __init__(
        self,
        eid: EID,
        name: str,
        devices: DeviceStore,
        mwi: MwiStore,
        presence: PresenceStore,
        stats: NodeStats,
        membership: Membership,
        fanout: Fanout,
        out: Outbound,
    ) -> None:
        self.eid = eid
        self.name = name
        self._devices = devices
        self._mwi = mwi
        self._presence = presence
        self._stats = stats
        self._membership = membership
        self._fanout = fanout
        self._out = out

    # -- counts and counters -------------------------------------------------------------------
    @property
    def stats(self) -> NodeStats:
        """The node's counters (to read: the node alone counts)."""
        return self._stats

    @property
    def device_count(self) -> int:
        """Devices with a cluster value."""
        return len(self._devices)

    @property
    def mailbox_count(self) -> int:
        return len(self._mwi)

    @property
    def presentity_count(self) -> int:
        return len(self._presence)

    @property
    def queue_depth(self) -> int:
        return len(self._out.queue)

    # -- membership ----------------------------------------------------------------------------
    @property
    def view(self) -> int:
        return self._membership.view

    @property
    def quorate(self) -> bool:
        return self._membership.quorate

    def members(self) -> list[MemberInfo]:
        """The current view, self included."""
        return list(self._membership.members.values())

    def link_members(self) -> list[MemberInfo]:
        """Asterisk servers the links see as members of their own ring (kind "asterisk")."""
        return [m for link in self._fanout.links for m in link.members()]

    def origin_name(self, eid: EID) -> str:
        return self.name if eid == self.eid else self._membership.name_of(eid)

    def knows_origin(self, eid: EID) -> bool:
        """True for this node's EID and every pbxmesh origin heard from and not gone."""
        return eid == self.eid or self._membership.knows(eid)

    # -- devices -------------------------------------------------------------------------------
    def cluster_state(self, device: str) -> DeviceState | None:
        """A device's cluster value (None: no origin has it)."""
        return self._devices.cluster_state(device)

    def remote_state(self, device: str) -> DeviceState:
        """The aggregate of the other origins' slots for a device (INVALID if none)."""
        return self._devices.state_excluding(device, self.eid)

    def state_excluding(self, device: str, origins: frozenset[EID]) -> DeviceState:
        """The aggregate of the slots of every origin but ours and ``origins``."""
        return self._devices.state_excluding_all(device, origins | {self.eid})

    def remote_devices(self) -> dict[str, DeviceState]:
        """Every device some other origin holds, with the aggregate of the others' slots."""
        devices, eid = self._devices, self.eid
        return {
            device: devices.state_excluding(device, eid)
            for device, _ in devices.devices()
            if any(o != eid for o in devices.slots_of(device))
        }

    def origin_devices(self) -> list[tuple[str, EID, DeviceState]]:
        """Every other origin's slot: ``(device, origin, state)``."""
        devices = self._devices
        return [
            (device, origin, state)
            for device, _ in devices.devices()
            for origin, (state, _) in devices.slots_of(device).items()
            if origin != self.eid
        ]

    def own_slot(self, device: str) -> DeviceState | None:
        """This node's own slot for ``device`` as the cluster sees it (None: none)."""
        slot = self._devices.slots_of(device).get(self.eid)
        return None if slot is None else slot[0]

    def device_rows(
        self, pattern: str | None = None
    ) -> list[tuple[str, DeviceState, dict[EID, DeviceState]]]:
        """Devices matching a glob pattern: cluster value and each origin's state, sorted."""
        rows = []
        for device, state in sorted(self._devices.devices()):
            if pattern and not fnmatch.fnmatchcase(device, pattern):
                continue
            rows.append((device, state, self.device_origins(device)))
        return rows

    def device_origins(self, device: str) -> dict[EID, DeviceState]:
        """Each origin's state of ``device``: the cluster's slots and those only a link knows
        (a res_corosync ring's Asterisks). Every reader (``devices``, the lamp page's live
        events) takes them from here, so a device shows the same origins everywhere."""
        slots = {o: s for o, (s, _) in self._devices.slots_of(device).items()}
        for link in self._fanout.links:
            slots.update(link.origin_slots(device))
        return slots

    # -- mailboxes -----------------------------------------------------------------------------
    def mailbox(self, mailbox: str) -> MwiRecord | None:
        """The record of ``mailbox@context`` (None: unknown)."""
        return self._mwi.get(mailbox)

    def remote_mwi(self) -> dict[str, tuple[int, int]]:
        """Mailboxes whose last writer is another node: ``mailbox@context -> (new, old)``."""
        return {r.mailbox: (r.new, r.old) for r in self._mwi.records() if r.origin != self.eid}

    def remote_mwi_origins(self) -> dict[str, tuple[int, int, EID]]:
        """As :meth:`remote_mwi`, with the writer: ``mailbox -> (new, old, origin)``."""
        return {
            r.mailbox: (r.new, r.old, r.origin) for r in self._mwi.records() if r.origin != self.eid
        }

    def mwi_rows(self, pattern: str | None = None) -> list[MwiRecord]:
        return sorted(
            (
                r
                for r in self._mwi.records()
                if not pattern or fnmatch.fnmatchcase(r.mailbox, pattern)
            ),
            key=lambda r: r.mailbox,
        )

    # -- presence ------------------------------------------------------------------------------
    def presentity(self, presentity: str) -> PresenceRecord | None:
        """The record of ``CustomPresence:NAME`` (None: unknown)."""
        return self._presence.get(presentity)

    def remote_presence(self) -> dict[str, tuple[PresenceState, str, str, EID]]:
        """Presentities whose last writer is another node, with that writer."""
        return {
            r.presentity: (r.state, r.subtype, r.message, r.origin)
            for r in self._presence.records()
            if r.origin != self.eid
        }

    def presence_rows(self, pattern: str | None = None) -> list[PresenceRecord]:
        """Presentities matching a glob pattern, sorted (``CustomPresence:*``; a pattern
        without ``:`` is matched against the name after ``CustomPresence:``)."""
        return sorted(
            (r for r in self._presence.records() if not pattern or _presence_match(r, pattern)),
            key=lambda r: r.presentity,
        )


def _presence_match(record: PresenceRecord, pattern: str) -> bool:
    if ":" not in pattern:
        return fnmatch.fnmatchcase(record.presentity.partition(":")[2], pattern)
    return fnmatch.fnmatchcase(record.presentity, pattern)
