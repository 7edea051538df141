"""The values the AMI link wrote to Asterisk and has not seen echoed yet (pure, no I/O).

MWI and presence are last-writer-wins on one name, so the link writes the cluster's value to
the very name Asterisk's own changes use, and must tell the echo of its write (swallowed) from
a change made on Asterisk (reported). Asterisk applies actions and its own changes in one
order and reports each in that order on the session, so:

* a value seen that a write of ours is waiting for is that write's echo;
* any other value is a change made on Asterisk. If a write of ours was in flight meanwhile,
  Asterisk applied that change *before* our write (its event came first), and our write, older
  than the change (which the node has just made the cluster's value), then replaced it on
  Asterisk alone. So when the last write in flight is echoed, the link writes that change
  back: :meth:`Echoes.seen` returns it. A newer write (a newer cluster value) cancels that.
"""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar

__all__ = ["Echoes"]

V = TypeVar("V")

#: writes remembered per name at most (a write whose echo never comes is forgotten in time)
DEPTH = 64


class Echoes(Generic[V]):
    def __init__(self) -> None:
        self._pending: dict[str, deque[V]] = {}
        #: name -> the change on Asterisk that one of our writes in flight overtook
        self._overtaken: dict[str, V] = {}

    def wrote(self, name: str, value: V) -> None:
        """A write of ``value`` is being sent: newer than any change it would overtake."""
        self._pending.setdefault(name, deque(maxlen=DEPTH)).append(value)
        self._overtaken.pop(name, None)

    def failed(self, name: str, value: V) -> None:
        """That write was refused: no echo will come."""
        pending = self._pending.get(name)
        if pending is not None and value in pending:
            pending.remove(value)

    def seen(self, name: str, value: V) -> tuple[bool, V | None]:
        """Asterisk reports ``name`` = ``value``: (is it our echo, a value to write back)."""
        pending = self._pending.get(name)
        if pending and value in pending:
            while pending.popleft() != value:
                pass  # writes whose echo never came (Asterisk skipped an unchanged value)
            if not pending:
                del self._pending[name]
                return True, self._overtaken.pop(name, None)
            return True, None
        if pending:
            self._overtaken[name] = value  # our writes in flight will land after it
        return False, None

    def clear(self) -> None:
        """A new session: nothing of the last one will be echoed."""
        self._pending.clear()
        self._overtaken.clear()

    def __len__(self) -> int:
        return len(self._pending)
