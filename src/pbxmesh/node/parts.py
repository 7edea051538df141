"""This node's own slot as an aggregation of *parts*: direct assertions and bridged rings.

Theory of operation
-------------------
A node owns one origin, and the cluster sees one slot per device for it. Most nodes fill that
slot from one source at a time: ``pbxmesh publish``, or their Asterisk's own states over AMI or
SIP (the *direct* assertions). A node that bridges a res_corosync ring (``links/ring/``) also
speaks for the ring's Asterisks: it reports the aggregate of their states as a named *part*.
The slot the cluster sees is the aggregation of the direct assertion and every part, folded
with Asterisk's own table (``states.py``), so that neither source overwrites the other:

* a script asserting ``Custom:x INUSE`` on the bridge, then a ring Asterisk saying
  ``NOT_INUSE``, gives ``INUSE`` -- exactly what Asterisk's hints would show if both were
  servers of their own, because aggregation is associative;
* the ring's part going away (its Asterisk left) leaves the direct assertion alone.

INVALID is the identity of aggregation: a part or direct assertion of INVALID contributes
nothing (a part of INVALID is removed). When nothing contributes any more the slot is INVALID.

This module is pure (no I/O); the node applies what it returns.
"""

from __future__ import annotations

from ..states import AGGREGATE_TABLE, DeviceState

__all__ = ["OwnParts"]

_INVALID = int(DeviceState.INVALID)


class OwnParts:
    """The direct assertion and the parts of each own device, and their aggregation."""

    __slots__ = ("_direct", "_parts")

    def __init__(self) -> None:
        #: device -> the state asserted directly (publish, a link's own port)
        self._direct: dict[str, DeviceState] = {}
        #: device -> part name -> state (only devices that have a part)
        self._parts: dict[str, dict[str, DeviceState]] = {}

    def direct(self, device: str) -> DeviceState | None:
        return self._direct.get(device)

    def directs(self) -> dict[str, DeviceState]:
        return dict(self._direct)

    def has_parts(self, device: str) -> bool:
        return device in self._parts

    def set_direct(self, device: str, state: DeviceState) -> DeviceState:
        """Record a direct assertion; the slot's new value."""
        self._direct[device] = state
        return self.value(device)

    def drop_direct(self, device: str) -> DeviceState | None:
        """Forget a direct assertion (withdrawn); the slot's value, None if nothing is left."""
        self._direct.pop(device, None)
        return self.value(device) if device in self._parts else None

    def set_part(self, part: str, device: str, state: DeviceState) -> DeviceState:
        """Record (INVALID: remove) one part's state; the slot's new value."""
        parts = self._parts.get(device)
        if state is DeviceState.INVALID:
            if parts is not None:
                parts.pop(part, None)
                if not parts:
                    del self._parts[device]
        else:
            self._parts.setdefault(device, {})[part] = state
        return self.value(device)

    def value(self, device: str) -> DeviceState:
        """The aggregation of the direct assertion and every part (INVALID: nothing)."""
        acc = _INVALID
        direct = self._direct.get(device)
        if direct is not None:
            acc = AGGREGATE_TABLE[acc * 9 + int(direct)]
        for state in self._parts.get(device, {}).values():
            acc = AGGREGATE_TABLE[acc * 9 + int(state)]
        return DeviceState(acc)
