"""The state a :class:`~pbxmesh.node.core.Node` keeps, declared once for the mixins that
make it up (``assertions.py``, ``reading.py``); ``Node.__init__`` sets every attribute."""

from __future__ import annotations

import asyncio

from ..clock import HybridClock
from ..eid import EID
from ..presence import PresenceStore
from ..store import DeviceStore, MwiStore
from ..transport.base import Transport
from .config import ChannelConfig, NodeConfig
from .fanout import Fanout
from .guard import FrameGuard
from .membership import Membership
from .outbound import Outbound
from .parts import OwnParts
from .stats import NodeStats

__all__ = ["NodeState"]


class NodeState:
    """Attribute declarations shared by the node's mixins (no behaviour of its own)."""

    config: NodeConfig
    eid: EID
    clock: HybridClock
    guard: FrameGuard | None
    devices: DeviceStore
    mwi: MwiStore
    presence: PresenceStore
    stats: NodeStats
    transport: Transport
    own_changes: int
    kept: set[tuple[int, str]]
    kept_changed: asyncio.Event
    _fanout: Fanout
    _out: Outbound
    _membership: Membership
    _channels: dict[str, ChannelConfig]
    _warned: set[tuple[str, str]]
    _parts: OwnParts
    _mwi_parts: dict[str, str]

    def _announce(self) -> None:
        """Queue a snapshot of this origin (:meth:`Node._announce`)."""
        raise NotImplementedError
