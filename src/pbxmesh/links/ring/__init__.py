"""The link to a ring of Asterisks running res_corosync (see ``link.py``)."""

from .link import RING_PART, RingLink, RingLinkConfig
from .protocol import Effects, RingPeer, RingProtocol

__all__ = ["RING_PART", "Effects", "RingLink", "RingLinkConfig", "RingPeer", "RingProtocol"]
