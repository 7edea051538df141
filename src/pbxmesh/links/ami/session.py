"""One AMI connection's sync state, shared by the AMI link's reader, writer and resync.

A *session* is one connection. From the (re)connect until its resync has begun, nothing is
written: the resync forgets the echoes the writer expects, and would take a write's echo for a
change made on Asterisk (found by the chaos drill: a remote mailbox claimed at a restart).
While the resync runs, nothing is written either (an old snapshot must never be written after
a newer change), and a change event seen meanwhile wins over the list item for that name: the
list is older.
"""

from __future__ import annotations

__all__ = ["Session"]


class Session:
    """Whether the writer may write, and what changed during the running resync."""

    __slots__ = ("changed", "synced", "syncing")

    def __init__(self) -> None:
        #: False from a (re)connect until its resync has begun: the writer waits
        self.synced = False
        #: a resync runs: the writer waits, and change events are noted in ``changed``
        self.syncing = False
        #: keys (a device, "mwi:" + mailbox, "presence:" + presentity) changed on Asterisk
        #: while the resync ran
        self.changed: set[str] = set()

    def begin(self) -> None:
        """A resync begins on this connection."""
        self.syncing = True
        self.synced = True
        self.changed = set()

    def lost(self) -> None:
        """The connection is gone: nothing is written until the next resync begins."""
        self.synced = False

    def writable(self) -> bool:
        return self.synced and not self.syncing

    def superseded(self, key: str, *, from_list: bool) -> bool:
        """While a resync runs: True for a list item whose name a change event has already
        reported (newer than the list); a change event's name is noted."""
        if self.syncing:
            if from_list and key in self.changed:
                return True
            if not from_list:
                self.changed.add(key)
        return False
