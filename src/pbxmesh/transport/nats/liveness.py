"""Who is alive, and whether we can judge it: the failure detector of the NATS transport.

:class:`Liveness` joins the :class:`~.heartbeat.PeerTable` (the other members and when each was
last heard), the :class:`~.heartbeat.UnheardWatch` (others' lost notices naming us) and the
echo of our own heartbeats, and says at each tick what the transport must do
(:meth:`Liveness.judge`):

* :class:`EchoLost`: our own heartbeats did not come back for ``echo_timeout``: our server is
  dead or frozen; leave it (and blame nobody else: our own path is in doubt);
* :class:`Unheard`: members whose lost notices named us for ``failure_timeout`` although we
  hear them: our server does not pass our messages on; leave it;
* a :class:`~..base.MembershipChange`: members silent for ``failure_timeout`` left;
* ``None``: nothing to do.

Time in which our event loop did not run us is forgiven (:meth:`Liveness.forgive`), and a
reconnect gives everyone a full ``failure_timeout`` again (:meth:`Liveness.reconnected`).

Pure: no I/O and no clock of its own (times are passed in). The transport decides *when* it
may judge (the link is up, no view is being gathered, no input waits unread).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from ..base import Member, MembershipChange
from .heartbeat import LostNotice, PeerTable, UnheardWatch

__all__ = ["LOST_KEEP_SECONDS", "EchoLost", "Liveness", "Unheard"]

#: How long a member we lost is named in our lost notices (unless heard again).
LOST_KEEP_SECONDS: Final = 600.0


@dataclass(frozen=True, slots=True)
class EchoLost:
    """No echo of our own heartbeats for ``age`` seconds."""

    age: float


@dataclass(frozen=True, slots=True)
class Unheard:
    """``by`` have not heard us for ``failure_timeout`` although we hear them."""

    by: tuple[str, ...]


class Liveness:
    """The failure detector's state (see the module doc). Times in seconds on one clock."""

    def __init__(
        self,
        me: Member,
        instance: int,
        *,
        failure_timeout: float,
        echo_timeout: float,
        heartbeat_interval: float,
        lost_keep: float = LOST_KEEP_SECONDS,
    ) -> None:
        self.me = me
        self.instance = instance
        self.failure_timeout = failure_timeout
        self.echo_timeout = echo_timeout
        self.heartbeat_interval = heartbeat_interval
        self.lost_keep = lost_keep
        self.peers = PeerTable(me)
        self.unheard = UnheardWatch()
        self.last_echo = 0.0

    def echoed(self, now: float) -> None:
        """One of our own heartbeats came back (or the link came up)."""
        self.last_echo = now

    def reconnected(self, now: float) -> None:
        """A new connection: everyone, ourselves included, gets a full timeout to show up
        again, and notices about our last connection say nothing of this one."""
        self.last_echo = now
        self.peers.reset(now)
        self.unheard.reset()

    def forgive(self, seconds: float) -> None:
        """Our event loop ran us ``seconds`` late: time in which we could not read does not
        count against anybody, ourselves included."""
        self.last_echo += seconds
        self.peers.forgive(seconds)

    def notice(self, sender: str, notice: LostNotice, now: float) -> MembershipChange | None:
        """A lost notice of another member. If ``sender`` has just declared us failed (we were
        frozen, starved or cut off past its failure_timeout) it dropped our states, though we
        never stopped and saw no change: the view returned reports it joined again, which makes
        our node announce its state again (``sender`` holds those frames until it hears us
        again, then applies them). None if we lost ``sender`` too: its return is a join, which
        announces anyway."""
        names_us = (self.me.member_id, self.instance) in notice.lost
        if not self.unheard.notice(sender, names_us, now):
            return None
        peer = self.peers.peers.get(sender)
        return None if peer is None else self.peers.change(joined=(peer.member,))

    def lost(self, now: float) -> tuple[tuple[str, int], ...]:
        """The members to name in our next lost notice (see :meth:`PeerTable.lost_notice`)."""
        return self.peers.lost_notice(now, self.lost_keep)

    def judge(self, now: float) -> EchoLost | Unheard | MembershipChange | None:
        """What silence says at ``now``; see the module doc. An :class:`EchoLost` is said once
        per ``echo_timeout``, an :class:`Unheard` once per episode."""
        echo_age = now - self.last_echo
        if echo_age > self.echo_timeout:
            self.last_echo = now
            return EchoLost(echo_age)
        # lost notices come every other heartbeat: three missed ones end an episode
        by = self.unheard.unheard(now, self.failure_timeout, 6 * self.heartbeat_interval)
        if by:
            self.unheard.reset()
            return Unheard(tuple(by))
        return self.peers.expire(now, self.failure_timeout)

    def next_deadline(self, after: float) -> float:
        """The earliest of ``after`` and the times at which :meth:`judge` may say something."""
        deadlines = [after, self.last_echo + self.echo_timeout + 0.001]
        deadlines += self.peers.deadlines(self.failure_timeout)
        return min(deadlines)
