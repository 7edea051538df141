"""The node's one security hook: a :class:`FrameGuard` (``security.py`` ships the real one)."""

from __future__ import annotations

from typing import Protocol

from ..eid import EID
from ..wire.frame import Frame, Item

__all__ = ["FrameGuard"]


class FrameGuard(Protocol):
    """Origin authentication and authorisation for frames (see ``security.py``).

    ``seal`` turns an encoded, unsigned-but-flagged frame into what goes on the wire.
    ``check`` raises :class:`SecurityError` for a frame that must be rejected; it may also
    drop single items the origin may not assert by returning the items to keep.
    ``refuses`` tells what this node itself may not assert (its own grant), ``trusts`` whether
    another node's frames are accepted at all.
    Both run on the event loop and must not block.
    """

    signed: bool

    def seal(self, data: bytes) -> bytes: ...

    def check(self, frame: Frame, data: bytes) -> tuple[Item, ...]: ...

    def flush(self) -> None: ...

    def refuses(self, item: Item) -> str | None:
        """Why the other nodes would drop ``item`` from this node (None: they accept it)."""
        ...

    def trusts(self, name: str) -> bool | None:
        """Whether frames of node ``name`` are accepted (None: no list of nodes)."""
        ...

    def allows(self, origin: EID, item: Item) -> bool:
        """Whether the node whose entity id is ``origin`` may (still) assert ``item``: after
        the list of nodes or their grants changed, what it may no longer assert is dropped."""
        ...
