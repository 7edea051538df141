"""The NATS transport (``transport.py`` has its theory of operation)."""

from .config import NatsConfig, group_subjects, member_token
from .heartbeat import Heartbeat, HeartbeatKind, PeerTable, decode_heartbeat, encode_heartbeat
from .transport import NatsTransport

__all__ = [
    "Heartbeat",
    "HeartbeatKind",
    "NatsConfig",
    "NatsTransport",
    "PeerTable",
    "decode_heartbeat",
    "encode_heartbeat",
    "group_subjects",
    "member_token",
]
