"""Reading a node: the cluster's values as ``pbxmesh devices``/``mwi``/``presence``, the
control API and links read them (a mixin of :class:`~pbxmesh.node.core.Node`)."""

from __future__ import annotations

import fnmatch

from ..eid import EID
from ..presence import (
    PresenceRecord,
)
from ..states import DeviceState
from ..store import (
    MwiRecord,
)
from .config import ChannelConfig
from .membership import MemberInfo
from .state import NodeState

__all__ = ["NodeReading"]


class NodeReading(NodeState):
    """The node's reads (mixed into :class:`~pbxmesh.node.core.Node`)."""

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
            rows.append((device, state, self.device_origins(device)))
        return rows

    def device_origins(self, device: str) -> dict[EID, DeviceState]:
        """Each origin's state of ``device``: the cluster's slots and those only a link knows
        (a res_corosync ring's Asterisks). Every reader (``devices``, the lamp page's live
        events) takes them from here, so a device shows the same origins everywhere."""
        slots = {o: s for o, (s, _) in self.devices.slots_of(device).items()}
        for link in self._fanout.links:
            slots.update(link.origin_slots(device))
        return slots

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


def _presence_match(record: PresenceRecord, pattern: str) -> bool:
    if ":" not in pattern:
        return fnmatch.fnmatchcase(record.presentity.partition(":")[2], pattern)
    return fnmatch.fnmatchcase(record.presentity, pattern)
