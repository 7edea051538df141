"""Which server to be on: the operator's order is a preference, kept across failures.

Theory of operation
-------------------
``[cluster.nats] servers`` is ordered: the site's own (leaf) server first, the hub's servers
as fallbacks. nats-py's own choice rotates its pool (the server that failed goes to the back)
and never comes back to a better server by itself. :class:`ServerChoice` replaces that choice
(it is nats-py's ``reconnect_to_server_handler``) with one rule:

    *the most preferred server that is not held off*.

A server is held off for ``hold_off`` seconds after it failed us: after a connection attempt
to it did not end in a connection (the next call of :meth:`choose` comes without
:meth:`connected` in between), and after the transport abandoned it (its echo watchdog or
nats-py's pings said it is dead: :meth:`abandoned`). When every server is held off, the one
whose hold ends first is tried, after ``retry_wait``.

*Unheard.* A server whose clients are not heard by the rest of the cluster although they hear
it (a one-way path, see ``heartbeat.py``) is held off much longer (:meth:`unheard`): 30 s the
first time, doubling at each repeat up to 10 minutes, so that a server with a lasting defect
costs the other sites one short loss of this node per hold instead of one every few seconds.

*Fail back.* While connected to a server that is not the most preferred, the transport probes
the better ones (:func:`probe`: TCP connect and the server's INFO line, well within
``connect_timeout``). A better server that answered ``confirm`` probes in a row is worth the
switch (:meth:`failback_target`): a leaf server that has just restarted gets a probe interval
to build its uplink to the hub before its clients come back to it.

Pure: no nats-py and no clock of its own (times are passed in); :func:`probe` is the only I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlparse

__all__ = ["UNHEARD_HOLD", "UNHEARD_HOLD_MAX", "ServerChoice", "netloc_of", "probe"]

#: Hold-off of a server whose clients went unheard: the first time, and at most (doubling).
UNHEARD_HOLD = 30.0
UNHEARD_HOLD_MAX = 600.0


def netloc_of(url: str) -> str:
    """``host:port`` of a server URL as nats-py keys its pool (credentials left out)."""
    if "://" not in url:
        url = f"nats://{url}"
    parsed = urlparse(url)
    host = parsed.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{parsed.port or 4222}"


@dataclass(slots=True)
class ServerChoice:
    """The preference order of servers and which of them are held off (see the module doc)."""

    preferred: tuple[str, ...]  # netlocs, most preferred first
    hold_off: float = 5.0
    retry_wait: float = 0.25
    confirm: int = 2
    _held: dict[str, float] = field(default_factory=dict)
    _attempt: str | None = None
    _answered: dict[str, int] = field(default_factory=dict)
    _strikes: dict[str, tuple[int, float]] = field(default_factory=dict)  # unheard: count, when
    current: str | None = None

    def rank(self, netloc: str) -> int:
        try:
            return self.preferred.index(netloc)
        except ValueError:
            return len(self.preferred)  # a server the cluster told us about: last resort

    def choose(self, candidates: Sequence[str], now: float) -> tuple[str, float]:
        """The server to try next among ``candidates`` (nats-py's pool), and a delay."""
        if self._attempt is not None:  # the last attempt did not connect
            held = self._held.get(self._attempt, 0.0)
            self._held[self._attempt] = max(held, now + self.hold_off)
        if not candidates:
            raise ValueError("no candidate servers")
        order = sorted(candidates, key=self.rank)
        free = [s for s in order if self._held.get(s, 0.0) <= now]
        if free:
            pick, delay = free[0], 0.0
        else:
            pick = min(order, key=lambda s: (self._held[s], self.rank(s)))
            delay = self.retry_wait
        self._attempt = pick
        return pick, delay

    def connected(self, netloc: str | None) -> None:
        """A connection (initial or reconnect) is up to ``netloc``."""
        self._attempt = None
        self.current = netloc
        if netloc is not None:
            self._held.pop(netloc, None)
        self._answered.clear()

    def abandoned(self, netloc: str | None, now: float) -> None:
        """We gave up on ``netloc`` (it stopped answering): hold it off."""
        if netloc is not None:
            self._held[netloc] = max(self._held.get(netloc, 0.0), now + self.hold_off)
        self.current = None

    def unheard(self, netloc: str | None, now: float) -> float:
        """Our messages did not get out of ``netloc``: hold it off for 30 s, doubling at each
        repeat (a strike older than twice the longest hold is forgotten) up to 10 minutes.
        Returns the hold."""
        if netloc is None:
            return 0.0
        count, last = self._strikes.get(netloc, (0, now))
        if now - last > 2 * UNHEARD_HOLD_MAX:
            count = 0
        hold = min(UNHEARD_HOLD * (1 << min(count, 16)), UNHEARD_HOLD_MAX)
        self._strikes[netloc] = (count + 1, now)
        self._held[netloc] = max(self._held.get(netloc, 0.0), now + hold)
        self.current = None
        return hold

    def better(self) -> tuple[str, ...]:
        """Servers preferred to the current one (what fail-back probes)."""
        if self.current is None:
            return ()
        return self.preferred[: self.rank(self.current)]

    def probed(self, netloc: str, answered: bool) -> None:
        self._answered[netloc] = self._answered.get(netloc, 0) + 1 if answered else 0

    def failback_target(self, now: float) -> str | None:
        """The best server that answered ``confirm`` probes in a row and is not held off."""
        for s in self.better():
            if self._answered.get(s, 0) >= self.confirm and self._held.get(s, 0.0) <= now:
                return s
        return None


async def probe(netloc: str, within: float) -> bool:
    """True if a NATS server at ``netloc`` accepts a TCP connection and sends its INFO line
    within ``within`` seconds (a frozen server accepts but never speaks)."""
    host, _, port = netloc.rpartition(":")
    host = host.strip("[]")
    writer = None
    try:
        async with asyncio.timeout(within):
            reader, writer = await asyncio.open_connection(host, int(port))
            line = await reader.readline()
        return line.startswith(b"INFO ")
    except (OSError, TimeoutError, ValueError):
        return False
    finally:
        if writer is not None:
            writer.transport.abort()  # no TLS was started: nothing to shut down politely
            with contextlib.suppress(Exception):
                await writer.wait_closed()
