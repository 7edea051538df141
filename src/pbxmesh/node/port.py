"""The :class:`~pbxmesh.links.base.LinkPort` a node hands its links: reports go through the
node's own-assertion methods (with this node's grant checked first), reads through its reads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..eid import EID
from ..links.base import BridgePort
from ..presence import (
    PresenceState,
    check_presentity,
)
from ..states import DeviceState
from ..store import normalize_mailbox
from ..wire.frame import DeviceItem, MwiItem, PresenceItem

if TYPE_CHECKING:
    from .core import Node

__all__ = ["OwnPort"]


class OwnPort:
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


_: type[BridgePort] = OwnPort  # the port fits the protocol
