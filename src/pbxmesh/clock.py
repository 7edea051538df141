"""Versions: a hybrid logical clock (HLC) per node, persisted so restarts never go back.

Theory of operation
-------------------
Every change a node originates carries a version, a 64-bit integer: wall-clock milliseconds
shifted left by 16 bits, plus a 16-bit counter. Versions from one origin strictly increase:

* ``tick()`` returns ``max(last + 1, now_ms << 16)``;
* ``observe(v)`` moves ``last`` up to a version seen from another node (Lamport rule), so a
  node's next write is "later" than anything it has seen — which is what makes MWI's
  last-writer-wins meaningful across nodes even when clocks drift;
* the clock reserves versions ahead in its state file (``reserve_ms`` of wall time). After a
  restart, even with the wall clock set back or the state file lost while the clock is right,
  the first version is above every version used before, so a restarted node's fresh states are
  never mistaken for old ones.

The class is sans-IO apart from its optional persistence callback; the caller injects time.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Final

from .files import atomic_write

__all__ = ["HybridClock", "VersionFile", "version_millis"]

SHIFT: Final = 16
MAX_VERSION: Final = (1 << 63) - 1


def version_millis(version: int) -> int:
    """The wall-clock milliseconds part of a version."""
    return version >> SHIFT


class HybridClock:
    """A hybrid logical clock. ``now_ms`` is injected; ``persist`` saves a reservation."""

    def __init__(
        self,
        now_ms: Callable[[], int],
        start_after: int = 0,
        persist: Callable[[int], None] | None = None,
        reserve_ms: int = 10_000,
    ) -> None:
        self._now_ms = now_ms
        self._last = start_after
        self._persist = persist
        self._reserve = reserve_ms << SHIFT
        self._reserved_until = start_after
        self._maybe_reserve()

    @property
    def last(self) -> int:
        """The latest version issued or observed."""
        return self._last

    def tick(self) -> int:
        """A new version, greater than every version issued or observed before."""
        now = self._now_ms() << SHIFT
        self._last = now if now > self._last else self._last + 1
        if self._last >= self._reserved_until:
            self._maybe_reserve()
        return self._last

    def observe(self, version: int) -> None:
        """Take note of a version seen from elsewhere (ignored if absurdly far ahead)."""
        if self._last < version <= MAX_VERSION:
            # Refuse to be dragged more than a day ahead of our own clock by a bad peer.
            limit = (self._now_ms() + 86_400_000) << SHIFT
            if version <= limit:
                self._last = version

    def _maybe_reserve(self) -> None:
        if self._persist is None:
            return
        target = max(self._last, self._now_ms() << SHIFT) + self._reserve
        self._persist(target)
        self._reserved_until = target


class VersionFile:
    """Persists the clock's reservation in a small file, written atomically with fsync."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> int:
        try:
            return int(self.path.read_text(encoding="ascii").strip() or "0")
        except FileNotFoundError:
            return 0
        except ValueError:
            return 0

    def save(self, version: int) -> None:
        atomic_write(self.path, f"{version}\n")
