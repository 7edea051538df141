"""Cluster transports: move opaque frames between nodes and report membership, nothing else."""

from .base import (
    LinkState,
    Member,
    MembershipChange,
    Message,
    Transport,
    TransportEvent,
)
from .memory import MemoryNetwork, MemoryTransport

__all__ = [
    "LinkState",
    "Member",
    "MembershipChange",
    "MemoryNetwork",
    "MemoryTransport",
    "Message",
    "Transport",
    "TransportEvent",
]
