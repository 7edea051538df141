"""What Asterisk holds from the SIP link, across pbxmesh restarts.

Asterisk never clears a remote EID's state by itself, so the link remembers each (EID as
published, device) pair it published with a state other than UNKNOWN, and keeps them in
``state_file``: a pbxmesh restarted while Asterisk kept running still neutralises the states
of servers that left meanwhile. Only a cache: without it, those states stay in Asterisk until
their servers come back or Asterisk restarts.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

from ...eid import EID
from ...files import atomic_write
from ...states import DeviceState

__all__ = ["Held"]

#: the SIP link's logger: these lines keep the name administrators filter on
log = logging.getLogger(__package__ + ".link")


class Held:
    """(EID as published, device) -> state last published that is not UNKNOWN."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.states: dict[tuple[EID, str], DeviceState] = {}
        #: changed since last written
        self.dirty = False

    def load(self) -> None:
        path = self.path
        if path is None:
            return
        try:
            rows = json.loads(path.read_text(encoding="utf-8"))
            held = {(EID.parse(e), str(d)): DeviceState[s] for e, d, s in rows}
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # Only a cache: without it, states of servers that left while pbxmesh was down
            # stay in Asterisk until those servers come back or Asterisk restarts.
            log.warning("SIP link: %s is unreadable (%s); starting without it", path, exc)
            return
        held.update(self.states)
        self.states = held
        log.info("SIP link: %d states published to Asterisk before the restart", len(held))

    def _rows(self) -> list[list[str]]:
        self.dirty = False
        return [[str(e), d, s.name] for (e, d), s in self.states.items()]

    def save(self) -> None:
        """At close: write what is held, on the loop (nothing else runs any more)."""
        if self.path is not None and self.dirty:
            _write_rows(self.path, self._rows())

    async def save_off_loop(self) -> None:
        """Each keep-alive tick: a snapshot taken on the loop, written (fsync) in a thread, so
        a slow disk never delays the answers Asterisk's one PUBLISH in flight waits for."""
        if self.path is not None and self.dirty:
            await asyncio.to_thread(_write_rows, self.path, self._rows())


def _write_rows(path: Path, rows: list[list[str]]) -> None:
    try:
        atomic_write(path, json.dumps(rows))
    except OSError as exc:
        log.warning("SIP link: cannot write %s: %s", path, exc)
