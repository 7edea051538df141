"""Frames of senders not (yet) in our view, held until a view has them.

A frame may arrive before its sender's first heartbeat (a join snapshot, published right after
the sender's probe), or after we declared its sender failed and before its next heartbeat. It
must never be merged ahead of the membership that would drop it, and it must not be lost either:
the sender may have announced its whole state in it, and would not again. :class:`HeldFrames`
keeps such frames per sender until a view lists the sender (they are delivered right after that
view) or for ``seconds`` (then they are dropped and counted).

Pure: no I/O and no clock of its own (times are passed in).
"""

from __future__ import annotations

from typing import Final

from ..base import MembershipChange, Message

__all__ = ["HOLD_FRAMES", "HOLD_SECONDS", "HOLD_SENDERS", "HeldFrames"]

#: How long, and how many, frames of a sender not yet in the view are held for it.
HOLD_SECONDS: Final = 5.0
HOLD_FRAMES: Final = 256
#: Most senders held for at once (each node may publish only on its own subject).
HOLD_SENDERS: Final = 1024


class HeldFrames:
    """The held frames, per sender, with the time each arrived (see the module doc)."""

    def __init__(
        self,
        seconds: float = HOLD_SECONDS,
        frames: int = HOLD_FRAMES,
        senders: int = HOLD_SENDERS,
    ) -> None:
        self.seconds = seconds
        self.frames = frames
        self.senders = senders
        self._pending: dict[str, list[tuple[float, bytes]]] = {}  # sender -> [(time, data)]
        self._told: set[str] = set()  # senders whose holding was reported (until heard)
        #: frames dropped because their sender was not (yet) a member of our view
        self.dropped = 0

    def __bool__(self) -> bool:
        return bool(self._pending)

    def hold(self, sender: str, data: bytes, now: float) -> bool:
        """Hold a frame of ``sender``; True the first time since ``sender`` was last heard
        (say once that its frames are held). The oldest frames make room (``frames`` per
        sender, none older than ``seconds``); beyond ``senders`` senders, the frame is dropped."""
        held = self._pending.get(sender)
        if held is None:
            if len(self._pending) >= self.senders:
                self.dropped += 1
                return False
            held = self._pending[sender] = []
        while held and (now - held[0][0] > self.seconds or len(held) >= self.frames):
            held.pop(0)
            self.dropped += 1
        held.append((now, data))
        if sender in self._told:
            return False
        self._told.add(sender)
        return True

    def heard(self, sender: str) -> None:
        """A heartbeat of ``sender``: its next held frame is reported again."""
        self._told.discard(sender)

    def release(self, change: MembershipChange, now: float) -> list[Message]:
        """The held frames of every member of ``change``, in arrival order per sender, to be
        delivered right after it; stale ones, and senders silent for ``seconds``, are dropped."""
        out: list[Message] = []
        for m in change.members:
            for t, data in self._pending.pop(m.member_id, ()):
                if now - t <= self.seconds:
                    out.append(Message(sender=m.member_id, data=data))
                else:
                    self.dropped += 1
        stale = [s for s, held in self._pending.items() if now - held[-1][0] > self.seconds]
        for sender in stale:
            self.dropped += len(self._pending.pop(sender))
        return out
