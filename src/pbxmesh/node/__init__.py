"""The node: one server's share of the cluster (``core.py`` says how its parts fit)."""

from .config import EVENT_TYPES, ChannelConfig, NodeConfig
from .core import Node
from .fanout import NodeListener, make_listener
from .guard import FrameGuard
from .membership import MemberInfo
from .stats import NodeStats

__all__ = [
    "EVENT_TYPES",
    "ChannelConfig",
    "FrameGuard",
    "MemberInfo",
    "Node",
    "NodeConfig",
    "NodeListener",
    "NodeStats",
    "make_listener",
]
