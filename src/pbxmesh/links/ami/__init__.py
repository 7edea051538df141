"""Asterisk over AMI: codec, asyncio client, cluster bridge and a PBX simulator."""

from .bridge import AmiBridge, BridgeConfig, ClusterPort, hint_lines
from .client import AmiClient, AmiConfig
from .codec import (
    CLOSED,
    NEED_DATA,
    Action,
    AmiCodec,
    Banner,
    Event,
    ListAssembler,
    ListResponse,
    Response,
    Role,
)

__all__ = [
    "CLOSED",
    "NEED_DATA",
    "Action",
    "AmiBridge",
    "AmiClient",
    "AmiCodec",
    "AmiConfig",
    "Banner",
    "BridgeConfig",
    "ClusterPort",
    "Event",
    "ListAssembler",
    "ListResponse",
    "Response",
    "Role",
    "hint_lines",
]
