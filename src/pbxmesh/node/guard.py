"""The node's one security hook: a :class:`FrameGuard` (``security.py`` ships the real one)."""

from __future__ import annotations

from typing import Protocol

from ..wire.frame import DeviceItem, Frame, MwiItem, PresenceItem

__all__ = ["FrameGuard"]


class FrameGuard(Protocol):
    """Origin authentication and authorisation for frames (see ``security.py``).

    ``seal`` turns an encoded, unsigned-but-flagged frame into what goes on the wire.
    ``check`` raises :class:`SecurityError` for a frame that must be rejected; it may also
    drop single items the origin may not assert by returning the items to keep.
    Both run on the event loop and must not block.
    """

    signed: bool

    def seal(self, data: bytes) -> bytes: ...

    def check(
        self, frame: Frame, data: bytes
    ) -> tuple[DeviceItem | MwiItem | PresenceItem, ...]: ...

    def flush(self) -> None: ...
