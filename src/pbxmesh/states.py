"""Device states, their aggregation, and extension (hint) states — Asterisk's exact rules.

Theory of operation
-------------------
Asterisk keeps one state per device per server (per entity id). The *cluster* value of a
device is the aggregation of those states (``main/devicestate.c: ast_devstate_aggregate_*``):
a running result starting at INVALID and two sticky flags, "ringing" and "in use". Because the
flags can always be read back from the running result (RINGING alone means ringing; INUSE,
BUSY or ONHOLD means in use; anything lower means neither), the fold is a plain associative,
commutative binary operation. We precompute its 9×9 table once from the flag algorithm and
fold with table look-ups, which is what makes the store fast. Tests check the table against
the flag algorithm for every sequence, and against Asterisk's own expected table.

A hint lists devices joined by ``&``; its extension state is the aggregation of those devices
mapped to Asterisk's extension-state bit values and strings (``Idle``, ``InUse``, …).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Final

from .errors import StateError

__all__ = [
    "DeviceState",
    "ExtensionState",
    "aggregate",
    "aggregate_pair",
    "device_to_extension_state",
    "extension_state_text",
    "hint_devices",
    "hint_state",
    "parse_state",
]


class DeviceState(enum.IntEnum):
    """Asterisk's ``enum ast_device_state``.

    WARNING: the numbers travel on the wire; never change them.
    """

    UNKNOWN = 0
    NOT_INUSE = 1
    INUSE = 2
    BUSY = 3
    INVALID = 4
    UNAVAILABLE = 5
    RINGING = 6
    RINGINUSE = 7
    ONHOLD = 8

    def __str__(self) -> str:
        return self.name


# Asterisk's human strings (ast_devstate2str), used by a few CLI outputs and logs.
HUMAN_NAMES: Final[dict[DeviceState, str]] = {
    DeviceState.UNKNOWN: "Unknown",
    DeviceState.NOT_INUSE: "Not in use",
    DeviceState.INUSE: "In use",
    DeviceState.BUSY: "Busy",
    DeviceState.INVALID: "Invalid",
    DeviceState.UNAVAILABLE: "Unavailable",
    DeviceState.RINGING: "Ringing",
    DeviceState.RINGINUSE: "Ring+Inuse",
    DeviceState.ONHOLD: "On Hold",
}

_BY_NAME: Final[dict[str, DeviceState]] = {s.name: s for s in DeviceState}


def parse_state(text: str) -> DeviceState:
    """Parse a state name case-insensitively (``inuse``, ``NOT_INUSE``…).

    Unlike Asterisk's ``ast_devstate_val``, which silently turns garbage into UNKNOWN, anything
    that is not one of the nine names is an error that lists the valid ones.
    """
    state = _BY_NAME.get(text.strip().upper())
    if state is None:
        valid = ", ".join(s.name for s in DeviceState)
        raise StateError(f"{text!r} is not a device state; valid states are {valid}")
    return state


# Rank used by ast_devstate_aggregate_add: higher wins.
_RANK: Final[dict[DeviceState, int]] = {
    DeviceState.INVALID: 0,
    DeviceState.UNKNOWN: 1,
    DeviceState.UNAVAILABLE: 2,
    DeviceState.NOT_INUSE: 3,
    DeviceState.ONHOLD: 4,
    DeviceState.RINGING: 5,
    DeviceState.INUSE: 6,
    DeviceState.BUSY: 7,
    DeviceState.RINGINUSE: 8,
}
_INUSE_LIKE: Final = frozenset({DeviceState.INUSE, DeviceState.ONHOLD, DeviceState.BUSY})


def aggregate(states: Iterable[DeviceState]) -> DeviceState:
    """Asterisk's aggregation, step by step with its two sticky flags. No input gives INVALID.

    This is the reference implementation; hot paths use :data:`AGGREGATE_TABLE` instead.
    """
    result = DeviceState.INVALID
    ringing = inuse = False
    for state in states:
        if state is DeviceState.RINGING:
            ringing = True
        elif state in _INUSE_LIKE:
            inuse = True
        if ringing and inuse:
            result = DeviceState.RINGINUSE
        elif _RANK[state] > _RANK[result]:
            result = state
    return result


def _build_table() -> tuple[int, ...]:
    table = [0] * 81
    for a in DeviceState:
        for b in DeviceState:
            table[a * 9 + b] = int(aggregate((a, b)))
    return tuple(table)


#: ``AGGREGATE_TABLE[a * 9 + b]`` is the aggregation of states ``a`` and ``b`` (as ints).
AGGREGATE_TABLE: Final[tuple[int, ...]] = _build_table()


def aggregate_pair(a: DeviceState, b: DeviceState) -> DeviceState:
    """The aggregation of two states; associative and commutative, INVALID is its identity."""
    return DeviceState(AGGREGATE_TABLE[a * 9 + b])


class ExtensionState(enum.IntEnum):
    """Asterisk's ``enum ast_extension_states`` as AMI ``ExtensionStatus`` reports it."""

    REMOVED = -2
    DEACTIVATED = -1
    NOT_INUSE = 0
    INUSE = 1
    BUSY = 2
    UNAVAILABLE = 4
    RINGING = 8
    INUSE_RINGING = 9
    ONHOLD = 16
    INUSE_ONHOLD = 17

    @property
    def text(self) -> str:
        """The string Asterisk prints (``core show hints``, AMI ``StatusText``)."""
        return extension_state_text(int(self))


_EXTEN_TEXT: Final[dict[int, str]] = {
    0: "Idle",
    1: "InUse",
    2: "Busy",
    4: "Unavailable",
    8: "Ringing",
    9: "InUse&Ringing",
    16: "Hold",
    17: "InUse&Hold",
}


def extension_state_text(value: int) -> str:
    """``ast_extension_state2str``: any value without a string (including -1, -2) is ``Unknown``."""
    return _EXTEN_TEXT.get(value, "Unknown")


_DEV_TO_EXTEN: Final[dict[DeviceState, ExtensionState]] = {
    DeviceState.UNKNOWN: ExtensionState.NOT_INUSE,
    DeviceState.NOT_INUSE: ExtensionState.NOT_INUSE,
    DeviceState.INUSE: ExtensionState.INUSE,
    DeviceState.BUSY: ExtensionState.BUSY,
    DeviceState.INVALID: ExtensionState.UNAVAILABLE,
    DeviceState.UNAVAILABLE: ExtensionState.UNAVAILABLE,
    DeviceState.RINGING: ExtensionState.RINGING,
    DeviceState.RINGINUSE: ExtensionState.INUSE_RINGING,
    DeviceState.ONHOLD: ExtensionState.ONHOLD,
}


def device_to_extension_state(state: DeviceState) -> ExtensionState:
    """``ast_devstate_to_extenstate``: map an aggregated device state to an extension state."""
    return _DEV_TO_EXTEN[state]


def hint_devices(hint: str) -> list[str]:
    """The devices of a hint string ``dev1&dev2[,presence]``; empty items are skipped."""
    devices = hint.split(",", 1)[0]
    return [d for d in devices.split("&") if d]


def hint_state(hint: str, lookup: dict[str, DeviceState] | None = None) -> ExtensionState:
    """The extension state of a hint, given each device's cluster state.

    A device missing from ``lookup`` counts as UNKNOWN (Asterisk asks its provider, which
    answers UNKNOWN for a device it has never seen). A hint with no device is Unavailable.
    """
    states = lookup or {}
    agg = aggregate(states.get(d, DeviceState.UNKNOWN) for d in hint_devices(hint))
    return device_to_extension_state(agg)
