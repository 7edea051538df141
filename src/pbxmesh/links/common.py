"""What every link does the same way, written once: :class:`LinkBase`.

Theory of operation
-------------------
Each link (AMI, SIP PUBLISH, the res_corosync ring) keeps only its protocol. The rest is here:

* **Selection** (:class:`Selection`): which device names and which ``mailbox@context`` ids a
  link shares, by include/exclude :func:`fnmatch.fnmatchcase` patterns (case-sensitive, like
  Asterisk's names), MWI switchable as a whole.
* **Report or skip** (:meth:`LinkBase._report`): a report the cluster cannot carry (the port
  raises :class:`~pbxmesh.errors.StateError`) is skipped and counted; the link keeps going and
  says so once per name.
* **Down/up grace** (:meth:`LinkBase._went_down`, :meth:`LinkBase._came_up`): when Asterisk
  (or the ring) has been gone past ``down_grace`` seconds, :meth:`LinkBase._grace_over` runs
  once: by default this server's device states are withdrawn from the cluster
  (:meth:`~pbxmesh.links.base.LinkPort.withdraw`), and the link's next resync reports them
  again.
* **Resync bookkeeping** (:meth:`LinkBase._synced`, :meth:`LinkBase.wait_synced`) and the
  generic fields of :meth:`LinkBase.status`.

A link logs through its own module's logger (:attr:`LinkBase.log`), so the lines written here
keep the logger name administrators filter on.
"""

from __future__ import annotations

import abc
import asyncio
import fnmatch
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from ..errors import StateError
from .base import GraceTimer, Link, LinkPort, LinkStatus

__all__ = ["LinkBase", "Selection", "selected"]

#: names remembered for warn-once; past that, further ones are counted but not said
_WARN_LIMIT = 1000


def selected(name: str, include: tuple[str, ...], exclude: tuple[str, ...]) -> bool:
    """True when ``name`` matches one ``include`` pattern and no ``exclude`` pattern."""
    return any(fnmatch.fnmatchcase(name, p) for p in include) and not any(
        fnmatch.fnmatchcase(name, p) for p in exclude
    )


@dataclass(frozen=True, slots=True)
class Selection:
    """Which names a link shares, in both directions."""

    # fnmatch patterns (case-sensitive) of device names shared, and those removed from them.
    include: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()
    # Share MWI at all, and the patterns of the mailbox@context ids shared, and exclusions.
    mwi: bool = True
    mwi_include: tuple[str, ...] = ("*",)
    mwi_exclude: tuple[str, ...] = ()

    def device(self, device: str) -> bool:
        return selected(device, self.include, self.exclude)

    def mailbox(self, mailbox: str) -> bool:
        return self.mwi and selected(mailbox, self.mwi_include, self.mwi_exclude)


class LinkBase(Link):
    """A link with selection, report-or-skip, the down grace and the generic status.

    A subclass gives :meth:`_address`, :meth:`_connected` and, where they differ from the
    defaults, :meth:`_counts` and :meth:`_extra`; it calls :meth:`_went_down`,
    :meth:`_came_up` and :meth:`_synced` from its protocol.
    """

    #: the link's logger (its own module's, so the lines said here keep their logger name)
    log: ClassVar[logging.Logger] = logging.getLogger(__name__)
    #: how the withdrawal line words the outage: what Asterisk was, and until when
    gone_words: ClassVar[tuple[str, str]] = ("unreachable", "it is back")

    def __init__(self, selection: Selection, down_grace: float) -> None:
        self.port: LinkPort | None = None  # given by the node at start
        self.selection = selection
        self.down_grace = down_grace
        self._down_timer = GraceTimer(down_grace, self._grace_over)
        self._sync_done = asyncio.Event()
        self._warned: set[str] = set()
        #: complete resyncs, Asterisk's own changes reported, reports the cluster refused
        self.resyncs = 0
        self.published = 0
        self.skipped = 0
        #: times this link withdrew its states after Asterisk stayed unreachable
        self.withdrawals = 0

    # -- selection -----------------------------------------------------------------------------
    def shares_device(self, device: str) -> bool:
        return self.selection.device(device)

    def shares_mailbox(self, mailbox: str) -> bool:
        return self.selection.mailbox(mailbox)

    # -- report or skip ------------------------------------------------------------------------
    def _report(self, name: str, report: Callable[[], object]) -> bool:
        """Call ``report`` (one report through the port); a name the cluster cannot carry is
        skipped, counted and said once. True when it was reported."""
        try:
            report()
        except StateError as exc:
            self._skip(name, exc)
            return False
        self.published += 1
        return True

    def _skip(self, name: str, exc: StateError) -> None:
        self.skipped += 1
        self._warn_once(name, "not shared: %s", exc)

    def _warn_once(self, key: str, text: str, *args: object) -> None:
        if key not in self._warned and len(self._warned) < _WARN_LIMIT:
            self._warned.add(key)
            self.log.warning(text, *args)

    # -- Asterisk gone, and back ---------------------------------------------------------------
    def _went_down(self) -> None:
        """Asterisk (or the ring) is gone: the grace period starts (unless running)."""
        self._down_timer.start()

    def _came_up(self) -> None:
        self._down_timer.cancel()

    def _grace_over(self) -> None:
        """Gone past the grace: withdraw this server's device states (once per outage)."""
        if self.port is None or self._reachable():
            return
        self.withdrawals += 1
        withdrawn = self.port.withdraw()
        what, until = self.gone_words
        self.log.warning(
            "Asterisk at %s %s for %.1f s: %d device state(s) of this server withdrawn from "
            "the cluster until %s",
            self._address(),
            what,
            self.down_grace,
            withdrawn,
            until,
        )

    # -- resync and status ---------------------------------------------------------------------
    def _synced(self) -> None:
        """A resync completed."""
        self.resyncs += 1
        self._sync_done.set()

    async def wait_synced(self) -> None:
        """Wait until a resync has completed since the last call (wrap in asyncio.timeout)."""
        await self._sync_done.wait()
        self._sync_done.clear()

    @abc.abstractmethod
    def _address(self) -> str:
        """The Asterisk end, as status and the logs show it."""

    @abc.abstractmethod
    def _connected(self) -> bool:
        """True while Asterisk (or the ring) is there."""

    def _reachable(self) -> bool:
        """True while Asterisk answers (connected or not): no withdrawal then."""
        return self._connected()

    def _counts(self) -> dict[str, int]:
        """The protocol's values of LinkStatus's counters (reconnects, published,
        queue_depth, protocol_errors, dropped_events) that differ from the defaults."""
        return {}

    def _extra(self) -> dict[str, Any]:
        """What else this protocol shows in status (LinkStatus.extra)."""
        return {}

    def status(self) -> LinkStatus:
        counts: dict[str, int] = {"published": self.published, **self._counts()}
        return LinkStatus(
            kind=self.kind,
            address=self._address(),
            connected=self._connected(),
            resyncs=self.resyncs,
            reconnects=counts.get("reconnects", 0),
            published=counts["published"],
            queue_depth=counts.get("queue_depth", 0),
            protocol_errors=counts.get("protocol_errors", 0),
            dropped_events=counts.get("dropped_events", 0),
            extra=self._extra(),
        )
