"""The :class:`~pbxmesh.links.base.LinkPort` a node hands its links: reports go to the node's
own assertions (with this node's grant checked first), reads to its read view.
"""

from __future__ import annotations

from ..eid import EID
from ..links.base import BridgePort
from ..presence import (
    PresenceState,
    check_presentity,
)
from ..states import DeviceState
from ..store import normalize_mailbox
from ..wire.frame import DeviceItem, MwiItem, PresenceItem
from .assertions import OwnAssertions
from .reading import ReadView

__all__ = ["OwnPort"]


class OwnPort:
    """The :class:`~pbxmesh.links.base.LinkPort` for this node's own origin."""

    __slots__ = ("_own", "_reads")

    def __init__(self, own: OwnAssertions, reads: ReadView) -> None:
        self._own = own
        self._reads = reads

    @property
    def origin(self) -> EID:
        return self._reads.eid

    def device(self, device: str, state: DeviceState) -> None:
        if self._own.refused_by_grant(DeviceItem(device, int(state), 0)):
            return
        self._own.publish_device(device, state)

    def mwi(self, mailbox: str, new: int, old: int) -> None:
        if self._own.refused_by_grant(MwiItem(normalize_mailbox(mailbox), new, old, 0)):
            return
        self._own.publish_mwi(mailbox, new, old)

    def remote_devices(self) -> dict[str, DeviceState]:
        return self._reads.remote_devices()

    def origin_devices(self) -> list[tuple[str, EID, DeviceState]]:
        return self._reads.origin_devices()

    def withdraw(self) -> int:
        return self._own.withdraw_reported()

    # -- BridgePort: for a link that bridges a ring of Asterisks -------------------------------
    def part_device(self, part: str, device: str, state: DeviceState) -> None:
        if state is not DeviceState.INVALID and self._own.refused_by_grant(
            DeviceItem(device, int(state), 0)
        ):
            return
        self._own.publish_part(part, device, state)

    def part_mwi(self, part: str, mailbox: str, new: int, old: int) -> None:
        if self._own.refused_by_grant(MwiItem(normalize_mailbox(mailbox), new, old, 0)):
            return
        self._own.publish_mwi(mailbox, new, old, part=part)

    def own_devices(self) -> dict[str, DeviceState]:
        return self._own.own_devices()

    def own_mwi(self) -> dict[str, tuple[int, int]]:
        return self._own.own_mwi()

    def is_origin(self, eid: EID) -> bool:
        return self._reads.knows_origin(eid)

    def state_excluding(self, device: str, origins: frozenset[EID]) -> DeviceState:
        return self._reads.state_excluding(device, origins)

    def remote_mwi(self) -> dict[str, tuple[int, int, EID]]:
        return self._reads.remote_mwi_origins()

    def presence(
        self, presentity: str, state: PresenceState, subtype: str = "", message: str = ""
    ) -> None:
        item = PresenceItem(check_presentity(presentity), int(state), subtype, message, 0)
        if self._own.refused_by_grant(item):
            return
        self._own.publish_presence(presentity, state, subtype, message)

    def remote_presence(self) -> dict[str, tuple[PresenceState, str, str, EID]]:
        return self._reads.remote_presence()


_: type[BridgePort] = OwnPort  # the port fits the protocol
