"""The per-origin store: one slot per (device, origin), and the cluster value of each device.

Theory of operation
-------------------
Asterisk's model (reference §2): every server owns its own state for a device; the cluster
value is the aggregation of all servers' states. We keep exactly that:

* Each device has one record, a tuple: its cluster value, then one packed integer per origin,
  ``version << 4 | state``. Packing keeps 100k devices × several origins small (one int per
  slot, no per-slot tuple, one dict entry per device) and makes "is this newer?" a single integer
  comparison. Records are tuples of ints, replaced on change: the cycle collector untracks
  them, so a full collection in a node holding 100k devices × 3 origins takes about 3 ms
  instead of 17 ms with lists. Each origin's versions strictly increase (``clock.py``), so
  a change replaces a slot only when its version is newer; an equal packed value is a
  duplicate; an older one is a reordering. Both are ignored — which makes applying changes
  commutative, associative and idempotent.
* The record's first cell is the aggregation over every origin's slot, folded with the 9×9 table
  from ``states.py``. When an apply leaves it unchanged there is no event (Asterisk dedupes the
  same way); when it changes, the caller gets a :class:`DeviceChange`.
* Dropping an origin (its node left) removes all its slots at once and recomputes the devices
  it touched. A device whose last slot disappears is *removed*, and that is reported as a
  change to INVALID with ``removed=True`` — Asterisk instead keeps showing the stale value.
* A snapshot of one origin's slots can be merged elsewhere. A *complete* snapshot taken at
  version V also removes the origin's slots that it does not list and that are not newer than
  V, so a node that re-announces itself after a restart also retracts what it no longer has.

MWI is different (reference §4): one record per ``mailbox@context``, last writer wins by
``(version, origin)``; never aggregated, and kept when the writer leaves, as Asterisk does.

This module is pure: no I/O, no time, no logging.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Final

from .eid import EID
from .errors import StateError
from .states import AGGREGATE_TABLE, DeviceState

__all__ = [
    "DeviceChange",
    "DeviceStore",
    "MwiChange",
    "MwiRecord",
    "MwiStore",
    "check_device_name",
    "normalize_mailbox",
]

_STATES: Final = tuple(DeviceState)
_INVALID: Final = int(DeviceState.INVALID)
EMPTY: Final = -1  # an origin with no slot for a device (slots are never negative)
_NONE: Final = 15  # "no cluster value yet" in the record's first cell
MAX_DEVICE_BYTES: Final = 79  # Asterisk cuts longer device names (AST_MAX_EXTENSION - 1)
MAX_MAILBOX_BYTES: Final = 255  # what one wire item carries


def check_device_name(device: str) -> str:
    """Validate a device name as Asterisk would accept it; returns it unchanged."""
    if not device:
        raise StateError("a device name cannot be empty")
    size = len(device.encode("utf-8", "surrogatepass"))
    if size > MAX_DEVICE_BYTES:
        raise StateError(
            f"device name {device[:20]!r}… is {size} bytes; Asterisk cuts device names at "
            f"{MAX_DEVICE_BYTES}, so use a shorter one"
        )
    if any(ord(c) < 32 or c == "\x7f" for c in device):
        raise StateError(f"device name {device!r} contains a control character")
    if "&" in device or "," in device:
        raise StateError(
            f"device name {device!r} contains '&' or ',', which hints use as separators"
        )
    return device


def normalize_mailbox(mailbox: str) -> str:
    """``mailbox[@context]`` → ``mailbox@context``; a missing or empty context is ``default``.

    The id splits at the first ``@`` as Asterisk does (``a@b@c`` is mailbox ``a``, context
    ``b@c``).
    """
    box, _, context = mailbox.strip().partition("@")
    if not box:
        raise StateError(f"mailbox {mailbox!r} has an empty mailbox part; expected MAILBOX@CONTEXT")
    if any(ord(c) < 32 or c == "\x7f" for c in mailbox):
        raise StateError(f"mailbox {mailbox!r} contains a control character")
    result = f"{box}@{context or 'default'}"
    if len(result.encode("utf-8", "surrogatepass")) > MAX_MAILBOX_BYTES:
        raise StateError(f"mailbox {mailbox[:20]!r}… is longer than {MAX_MAILBOX_BYTES} bytes")
    return result


@dataclass(frozen=True, slots=True)
class DeviceChange:
    """The cluster value of ``device`` changed from ``previous`` (None: unknown) to ``state``."""

    device: str
    state: DeviceState
    previous: DeviceState | None
    removed: bool = False


class DeviceStore:
    """Per-origin device-state slots and the cluster value of every device."""

    __slots__ = ("_devices", "_floor", "_index", "_origins")

    def __init__(self) -> None:
        # Each origin gets a small index the first time it is seen; it is never reused.
        self._index: dict[EID, int] = {}
        self._origins: list[EID] = []
        # device -> (cluster value, slot of origin 0, slot of origin 1, ...); a slot is
        # ``version << 4 | state`` or EMPTY. One dict look-up per change, one list per device.
        self._devices: dict[str, tuple[int, ...]] = {}
        # Per origin index, the version up to which its state is known in full (a complete
        # snapshot). Changes not newer than the floor are already reflected — included,
        # superseded or retracted — so they are ignored: retractions stay order-independent.
        self._floor: list[int] = []

    def _origin(self, origin: EID) -> int:
        idx = self._index.get(origin)
        if idx is None:
            idx = self._index[origin] = len(self._origins) + 1
            self._origins.append(origin)
            self._floor.append(-1)
        return idx

    # -- applying ----------------------------------------------------------------------------
    def apply(self, origin: EID, device: str, state: int, version: int) -> DeviceChange | None:
        """Apply one origin's state for a device. Returns the change of cluster value, if any.

        Guard clauses first: a version covered by a complete snapshot, an older version and a
        duplicate are ignored; a newer version with the same state only records the version.
        """
        idx = self._index.get(origin) or self._origin(origin)
        if version <= self._floor[idx - 1]:
            return None  # already covered by a complete snapshot
        packed = (version << 4) | state
        rec = self._devices.get(device)
        if rec is None:
            rec = (_NONE, *(EMPTY,) * len(self._origins))
        elif idx >= len(rec):
            rec += (EMPTY,) * (idx + 1 - len(rec))
        old = rec[idx]
        if old >= packed:
            return None  # older, or the same change again
        rec = (*rec[:idx], packed, *rec[idx + 1 :])
        if old != EMPTY and (old & 15) == state:
            self._devices[device] = rec
            return None  # same state, newer version: nothing visible changes
        return self._recompute(device, rec)

    def apply_many(
        self, origin: EID, changes: Iterable[tuple[str, int, int]]
    ) -> list[DeviceChange]:
        """Apply ``(device, state, version)`` triples from one origin; the visible changes."""
        out = []
        for device, state, version in changes:
            change = self.apply(origin, device, state, version)
            if change is not None:
                out.append(change)
        return out

    def remove(self, origin: EID, device: str) -> DeviceChange | None:
        """Remove one origin's slot for a device (it no longer has that device)."""
        idx = self._index.get(origin)
        rec = self._devices.get(device)
        if idx is None or rec is None or idx >= len(rec) or rec[idx] == EMPTY:
            return None
        return self._recompute(device, (*rec[:idx], EMPTY, *rec[idx + 1 :]))

    def drop_origin(self, origin: EID) -> list[DeviceChange]:
        """Remove every slot of ``origin`` (its node left); the changed cluster values.

        Nothing of that origin is known afterwards, its floor included: when it comes back,
        its re-announcement is taken whole, even slots it has not changed since.
        """
        idx = self._index.get(origin)
        if idx is None:
            return []
        self._floor[idx - 1] = -1
        out = []
        for device, rec in list(self._devices.items()):
            if idx < len(rec) and rec[idx] != EMPTY:
                change = self._recompute(device, (*rec[:idx], EMPTY, *rec[idx + 1 :]))
                if change is not None:
                    out.append(change)
        return out

    def merge_snapshot(
        self,
        origin: EID,
        entries: Iterable[tuple[str, int, int]],
        complete_as_of: int | None = None,
    ) -> list[DeviceChange]:
        """Merge a snapshot of one origin's slots.

        With ``complete_as_of`` = V the snapshot is the origin's whole state at version V:
        slots of that origin which it does not list and whose version is not newer than V are
        removed (the origin no longer has them).
        """
        idx = self._origin(origin)
        if complete_as_of is not None and complete_as_of <= self._floor[idx - 1]:
            return []  # an older complete snapshot than one already merged
        listed: set[str] = set()
        out = []
        for device, state, version in entries:
            listed.add(device)
            change = self.apply(origin, device, state, version)
            if change is not None:
                out.append(change)
        if complete_as_of is not None:
            stale = [
                d
                for d, rec in self._devices.items()
                if idx < len(rec)
                and rec[idx] != EMPTY
                and d not in listed
                and (rec[idx] >> 4) <= complete_as_of
            ]
            for device in stale:
                change = self.remove(origin, device)
                if change is not None:
                    out.append(change)
            self._floor[idx - 1] = complete_as_of
        return out

    def _recompute(self, device: str, rec: tuple[int, ...]) -> DeviceChange | None:
        """Store ``rec`` (new slots; ``rec[0]`` still the previous cluster value) with its
        cluster value, and say how that value changed."""
        acc = _INVALID
        present = False
        table = AGGREGATE_TABLE
        for i in range(1, len(rec)):
            packed = rec[i]
            if packed != EMPTY:
                present = True
                acc = table[acc * 9 + (packed & 15)]
        prev = rec[0]
        if not present:
            self._devices.pop(device, None)
            if prev == _NONE:
                return None
            return DeviceChange(device, DeviceState.INVALID, _STATES[prev], removed=True)
        if prev == acc:
            self._devices[device] = rec
            return None
        self._devices[device] = (acc, *rec[1:])
        return DeviceChange(device, _STATES[acc], None if prev == _NONE else _STATES[prev])

    # -- reading -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._devices)

    def __contains__(self, device: object) -> bool:
        return device in self._devices

    def cluster_state(self, device: str) -> DeviceState | None:
        """The cluster value of a device, or None if no origin has it."""
        rec = self._devices.get(device)
        return None if rec is None else _STATES[rec[0]]

    def devices(self) -> Iterator[tuple[str, DeviceState]]:
        """Every known device with its cluster value."""
        for device, rec in self._devices.items():
            yield device, _STATES[rec[0]]

    def origins(self) -> list[EID]:
        """Every origin that holds at least one slot."""
        held: set[int] = set()
        for rec in self._devices.values():
            held.update(i for i in range(1, len(rec)) if rec[i] != EMPTY)
        return [self._origins[i - 1] for i in sorted(held)]

    def slots_of(self, device: str) -> dict[EID, tuple[DeviceState, int]]:
        """Each origin's (state, version) for a device."""
        rec = self._devices.get(device)
        if rec is None:
            return {}
        return {
            self._origins[i - 1]: (_STATES[rec[i] & 15], rec[i] >> 4)
            for i in range(1, len(rec))
            if rec[i] != EMPTY
        }

    def slot_state(self, device: str, origin: EID) -> DeviceState:
        """One origin's state for a device (INVALID if it holds no slot for it)."""
        rec = self._devices.get(device)
        idx = self._index.get(origin, 0)
        if rec is None or not idx or idx >= len(rec) or rec[idx] == EMPTY:
            return _STATES[_INVALID]
        return _STATES[rec[idx] & 15]

    def state_excluding(self, device: str, origin: EID) -> DeviceState:
        """The aggregation of every *other* origin's slot for a device (INVALID if none)."""
        rec = self._devices.get(device)
        skip = self._index.get(origin, 0)
        acc = _INVALID
        if rec is not None:
            for i in range(1, len(rec)):
                if i != skip and rec[i] != EMPTY:
                    acc = AGGREGATE_TABLE[acc * 9 + (rec[i] & 15)]
        return _STATES[acc]

    def state_excluding_all(self, device: str, origins: Iterable[EID]) -> DeviceState:
        """The aggregation of the slots of every origin *not* in ``origins`` (INVALID if none)."""
        rec = self._devices.get(device)
        acc = _INVALID
        if rec is not None:
            skip = {self._index.get(o, 0) for o in origins}
            for i in range(1, len(rec)):
                if i not in skip and rec[i] != EMPTY:
                    acc = AGGREGATE_TABLE[acc * 9 + (rec[i] & 15)]
        return _STATES[acc]

    def snapshot(self, origin: EID) -> list[tuple[str, DeviceState, int]]:
        """One origin's slots as ``(device, state, version)``, to merge elsewhere."""
        idx = self._index.get(origin)
        if idx is None:
            return []
        return [
            (d, _STATES[rec[idx] & 15], rec[idx] >> 4)
            for d, rec in self._devices.items()
            if idx < len(rec) and rec[idx] != EMPTY
        ]

    def max_version(self, origin: EID) -> int:
        """The highest version held for an origin (0 if none)."""
        return max((v for _, _, v in self.snapshot(origin)), default=0)

    def canonical(self) -> tuple[dict[EID, dict[str, int]], dict[str, int]]:
        """Plain, layout-independent copies of the contents, for comparing stores."""
        slots: dict[EID, dict[str, int]] = {}
        for device, rec in self._devices.items():
            for i in range(1, len(rec)):
                if rec[i] != EMPTY:
                    slots.setdefault(self._origins[i - 1], {})[device] = rec[i]
        return slots, {d: rec[0] for d, rec in self._devices.items()}


@dataclass(frozen=True, slots=True)
class MwiRecord:
    """The message counts of one mailbox, and who wrote them when."""

    mailbox: str
    new: int
    old: int
    version: int
    origin: EID


@dataclass(frozen=True, slots=True)
class MwiChange:
    """The counts of a mailbox changed (``previous`` None: first seen)."""

    record: MwiRecord
    previous: MwiRecord | None


class MwiStore:
    """One record per ``mailbox@context``; the last writer by ``(version, origin)`` wins."""

    __slots__ = ("_records",)

    def __init__(self) -> None:
        self._records: dict[str, MwiRecord] = {}

    def apply(
        self, origin: EID, mailbox: str, new: int, old: int, version: int
    ) -> MwiChange | None:
        """Apply a write; the change of counts, if any (a newer write of equal counts is silent)."""
        current = self._records.get(mailbox)
        if current is not None and (version, origin.raw) <= (current.version, current.origin.raw):
            return None  # older, or the same write again: the current record stays
        record = MwiRecord(mailbox, new, old, version, origin)
        self._records[mailbox] = record
        if current is not None and current.new == new and current.old == old:
            return None
        return MwiChange(record, current)

    def get(self, mailbox: str) -> MwiRecord | None:
        return self._records.get(mailbox)

    def records(self) -> list[MwiRecord]:
        return list(self._records.values())

    def written_by(self, origin: EID) -> list[MwiRecord]:
        """The records whose last writer is ``origin`` (what that node re-announces)."""
        return [r for r in self._records.values() if r.origin == origin]

    def __len__(self) -> int:
        return len(self._records)

    def canonical(self) -> dict[str, MwiRecord]:
        return dict(self._records)
