"""Entity ids (EIDs): the 6-byte identity of each server, as Asterisk uses them.

Every origin of state in the cluster is named by its EID, printed ``xx:xx:xx:xx:xx:xx`` in
lower case. The all-zero EID is refused, as res_corosync refuses to load with it. A node's EID
is generated once and kept in its state directory so that it is stable across restarts; it is
*not* taken from a MAC address, because cloned virtual machines and containers share MACs and
two nodes with one EID silently ignore each other.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import StateError
from .files import atomic_write

__all__ = ["EID", "load_or_create_eid"]

_EID_RE = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")


@dataclass(frozen=True, slots=True, order=True)
class EID:
    """A 6-byte entity id; never all-zero."""

    raw: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.raw, bytes) or len(self.raw) != 6:
            raise StateError(f"an entity id is 6 bytes, got {self.raw!r}")
        if self.raw == b"\x00" * 6:
            raise StateError("the entity id 00:00:00:00:00:00 is not allowed")

    @classmethod
    def parse(cls, text: str) -> EID:
        """Parse ``xx:xx:xx:xx:xx:xx`` (either case)."""
        if not _EID_RE.match(text.strip()):
            raise StateError(
                f"{text!r} is not an entity id; expected six hex pairs like 02:00:5e:10:00:01"
            )
        return cls(bytes.fromhex(text.strip().replace(":", "")))

    @classmethod
    def generate(cls) -> EID:
        """A random, locally administered, unicast EID (like a MAC with bit 0x02 set)."""
        raw = bytearray(os.urandom(6))
        raw[0] = (raw[0] | 0x02) & 0xFE
        return cls(bytes(raw))

    def __str__(self) -> str:
        return ":".join(f"{b:02x}" for b in self.raw)

    def __repr__(self) -> str:
        return f"EID({self})"


def load_or_create_eid(state_dir: Path, override: str | None = None) -> EID:
    """The node's EID: ``override`` if given, else the one saved in ``state_dir/eid``, else a new
    one written there atomically (so it is stable across restarts)."""
    if override:
        return EID.parse(override)
    path = state_dir / "eid"
    if path.exists():
        text = path.read_text(encoding="ascii", errors="replace").strip()
        try:
            return EID.parse(text)
        except StateError as exc:
            raise StateError(f"{path}: {exc}; delete the file to generate a new entity id") from exc
    eid = EID.generate()
    atomic_write(path, f"{eid}\n")
    return eid
