"""What a node is configured with: its name, EID, event channels and pacing timers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from ..eid import EID
from ..errors import StateError
from ..wire import frame as wire

__all__ = ["EVENT_TYPES", "EVENT_TYPE_OF", "ChannelConfig", "NodeConfig"]

#: the event types a channel can carry (ais.conf's publish_event/subscribe_event values, and
#: ``presence_state``, which Asterisk's own clustering modules do not carry)
EVENT_TYPES: Final = ("device_state", "mwi", "presence_state")
#: the event type that carries each kind of item
EVENT_TYPE_OF: Final = {
    wire.ItemKind.DEVICE: "device_state",
    wire.ItemKind.MWI: "mwi",
    wire.ItemKind.PRESENCE: "presence_state",
}


@dataclass(frozen=True, slots=True)
class ChannelConfig:
    """An event channel, as ais.conf's ``[name] type=event_channel`` declared it."""

    name: str
    publish: frozenset[str] = frozenset(EVENT_TYPES)
    subscribe: frozenset[str] = frozenset(EVENT_TYPES)

    def __post_init__(self) -> None:
        if not self.name or len(self.name.encode()) > wire.MAX_NAME:
            raise StateError(f"channel name {self.name!r} must be 1 to {wire.MAX_NAME} bytes")
        for what, kinds in (("publish", self.publish), ("subscribe", self.subscribe)):
            bad = sorted(set(kinds) - set(EVENT_TYPES))
            if bad:
                raise StateError(
                    f"channel {self.name!r}: {what} event type {bad[0]!r} is not one of "
                    f"{', '.join(EVENT_TYPES)}"
                )


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """What a node needs to know about itself; timers in seconds."""

    name: str
    eid: EID
    channels: tuple[ChannelConfig, ...] = (ChannelConfig("device_state"),)
    # How long a first change waits for others to share its frame. Every change pays it, so
    # keep it 0 and let frame_interval do the batching.
    batch_delay: float = 0.0
    # Pacing: after a frame is sent, the next one waits this long (seconds), and changes that
    # arrive meanwhile share it. A change after a quiet spell goes at once; under load frames
    # carry many changes (Corosync has no back-pressure: many tiny frames only queue up in it).
    # Costs at most one interval of latency once changes come faster than one per interval.
    frame_interval: float = 0.001
    # Most items per CHANGES or SNAPSHOT frame (also bounded by the transport's message size).
    max_items_per_frame: int = 1000

    def __post_init__(self) -> None:
        if not self.channels:
            raise StateError("a node needs at least one channel")
        names = [c.name for c in self.channels]
        if len(set(names)) != len(names):
            raise StateError(f"channel names must be unique: {names}")
        if len(self.name.encode()) > wire.MAX_NAME:
            raise StateError(f"node name {self.name!r} is longer than {wire.MAX_NAME} bytes")
