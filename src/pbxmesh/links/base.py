"""The link interface: one way of talking to Asterisk, as the node sees it.

Theory of operation
-------------------
A *link* joins the node to an Asterisk by one protocol: AMI today (``links/ami/``), SIP
PUBLISH and Asterisk's own res_corosync ring next. Whatever the protocol, a link does four
things and nothing else, and this module is the whole of its contract with the node:

**It reports Asterisk's own changes** through a :class:`LinkPort`, a handle the node gives it
for one *origin* (this server's EID): ``port.device(name, state)`` and ``port.mwi(box, new,
old)``. The node versions each report with its clock, applies it to the origin's slot and
sends it. (A link that speaks for several Asterisk origins, as the res_corosync ring will,
is meant to get one port per origin; :attr:`LinkPort.origin` says which. Today the node
hands out its own origin's port only.)

**It is told the rest of the cluster's changes**, one method per kind of change, chosen by
the link's :attr:`Link.interest`:

* :meth:`Link.remote_device` (``Interest.REMOTE_DEVICES``) -- the aggregate of every *other*
  origin's slot for a device changed (INVALID: no other origin has it). AMI writes it to a
  ``Custom:`` counterpart; the ring will want it too.
* :meth:`Link.origin_device` (``Interest.ORIGIN_DEVICES``) -- one other origin's slot
  changed (INVALID: the slot was removed), and :meth:`Link.origin_left` once an origin has
  gone altogether. SIP PUBLISH publishes each server's state under that server's EID.
* :meth:`Link.remote_mwi` (``Interest.MWI``) -- a mailbox's counts changed and its last
  writer is another origin.

**It resynchronises** after every (re)connect: it reads the whole picture back from the port
(:meth:`LinkPort.remote_devices`, :meth:`LinkPort.origin_devices`,
:meth:`LinkPort.remote_mwi`), writes it to Asterisk, and reports Asterisk's whole local
picture. A change it is told while resyncing is newer than what it read and must win.

**It withdraws** what it reported when Asterisk has been unreachable for longer than a short
grace period (:meth:`LinkPort.withdraw`): a dead PBX's phones are not in use anywhere, and a
peer's lamps must not say they are -- res_corosync behaves so too, since its membership dies
with Asterisk. The grace period spares the lamps a blip (a killed TCP connection, a reload).

**It says how it is** through :meth:`Link.status` (connected, resyncs, queue depth, ...),
read by ``status``, ``/metrics`` and the lamp page.

What the node does for every link, so no link repeats it: versions and ordering (changes are
told in the order the node applies them), pacing and sending, dedup (a link is told a value
only when it changed: per device for the aggregate, per slot for an origin), and the cluster's
own echo (a link is never told its own origin's slots, nor a mailbox its origin wrote last).
What stays in a link: its protocol's echoes (AMI's ``Custom:`` counterparts coming back as
``DeviceStateChange``, ``MessageWaiting`` after its own ``MWIUpdate``), naming, selection by
pattern, and everything about its connection.

Threading: every call in either direction runs on the event loop and must return at once
(queue and return; never await Asterisk inside a tell).

A new event type is one more report method on :class:`LinkPort`, one more tell method on
:class:`Link` with a default that ignores it, and one more :class:`Interest` flag; existing
links keep working untouched. Presence came so: ``port.presence(presentity, state, subtype,
message)`` reports, :meth:`Link.remote_presence` (``Interest.PRESENCE``) tells a presentity
whose last writer is another origin, and :meth:`LinkPort.remote_presence` reads them all back
at a resync. Like MWI it is last-writer-wins, never aggregated, and stays when a link
withdraws.
"""

from __future__ import annotations

import abc
import asyncio
import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ..eid import EID
from ..presence import PresenceState
from ..states import DeviceState

if TYPE_CHECKING:
    from ..members import MemberInfo

__all__ = ["BridgePort", "GraceTimer", "Hint", "Interest", "Link", "LinkPort", "LinkStatus"]


class Interest(enum.Flag):
    """Which of the cluster's changes a link wants to be told."""

    NONE = 0
    #: the aggregate of the other origins' slots, per device (:meth:`Link.remote_device`)
    REMOTE_DEVICES = enum.auto()
    #: each other origin's slot, per device (:meth:`Link.origin_device`, ``origin_left``)
    ORIGIN_DEVICES = enum.auto()
    #: mailboxes whose last writer is another origin (:meth:`Link.remote_mwi`)
    MWI = enum.auto()
    #: presentities whose last writer is another origin (:meth:`Link.remote_presence`)
    PRESENCE = enum.auto()
    #: this node's own *direct* assertions (``pbxmesh publish``, another link's reports), for
    #: a link that bridges a ring of Asterisks on the node's behalf (:meth:`Link.own_device`,
    #: :meth:`Link.own_mwi`); what the link itself contributes is never told back to it
    OWN = enum.auto()


class LinkPort(Protocol):
    """The node as one link sees it: a handle for one origin.

    Reports raise :class:`~pbxmesh.errors.StateError` for a name or count the cluster cannot
    carry (the link skips that item and keeps going). Everything returns at once.
    """

    @property
    def origin(self) -> EID:
        """The origin this port reports for (this server's EID)."""

    def device(self, device: str, state: DeviceState) -> None:
        """Asterisk's own state for ``device`` changed (or was read in a resync)."""

    def mwi(self, mailbox: str, new: int, old: int) -> None:
        """Asterisk's own counts for ``mailbox@context``."""

    def presence(
        self, presentity: str, state: PresenceState, subtype: str = "", message: str = ""
    ) -> None:
        """Asterisk's own presence for ``CustomPresence:NAME`` (raises StateError for a name,
        subtype or message the cluster cannot carry)."""

    def remote_presence(self) -> dict[str, tuple[PresenceState, str, str, EID]]:
        """``presentity`` -> ``(state, subtype, message, writer)`` for those another origin
        wrote last."""

    def remote_devices(self) -> dict[str, DeviceState]:
        """Every device some other origin holds -> the aggregate of the other slots."""

    def origin_devices(self) -> list[tuple[str, EID, DeviceState]]:
        """Every other origin's slot as ``(device, origin, state)``."""

    def remote_mwi(self) -> dict[str, tuple[int, int, EID]]:
        """``mailbox@context`` -> ``(new, old, writer)`` for mailboxes another origin wrote."""

    def withdraw(self) -> int:
        """Asterisk has been unreachable past the link's grace period: the device states it
        reported no longer hold (its phones went with it). The node removes this origin's
        device slots, except those a person or script asserted (``pbxmesh publish``), and tells
        the cluster; MWI stays, as Asterisk keeps a departed server's MWI. The link's next
        resync reports Asterisk's states again. Returns how many slots were withdrawn."""


class BridgePort(LinkPort, Protocol):
    """The port of a link that bridges *several* Asterisk origins (the res_corosync ring).

    Such a link reports the aggregate of its Asterisks' states as a *part* of this node's own
    slot: the slot the cluster sees is the aggregation of that part and of the node's direct
    assertions (``pbxmesh publish``, other links), so neither overwrites the other.
    """

    def part_device(self, part: str, device: str, state: DeviceState) -> None:
        """The bridged Asterisks' aggregate for ``device`` (INVALID: none has it any more)."""

    def part_mwi(self, part: str, mailbox: str, new: int, old: int) -> None:
        """A bridged Asterisk wrote ``mailbox@context``: this node writes it (last writer)."""

    def own_devices(self) -> dict[str, DeviceState]:
        """This node's direct assertions (without any part), for a resync."""

    def own_mwi(self) -> dict[str, tuple[int, int]]:
        """Mailboxes this node wrote last other than through a part, for a resync."""

    def is_origin(self, eid: EID) -> bool:
        """True if ``eid`` is a pbxmesh node of the cluster (this one included)."""

    def state_excluding(self, device: str, origins: frozenset[EID]) -> DeviceState:
        """The aggregate of the slots of every origin but this node and ``origins``."""


@dataclass(frozen=True, slots=True)
class LinkStatus:
    """How a link is, for ``status``, ``/metrics`` and the lamp page."""

    kind: str  # "ami", later "sip", "ring"
    address: str  # the Asterisk end, e.g. "127.0.0.1:5038"
    connected: bool
    resyncs: int = 0  # complete resyncs done (one per connection)
    reconnects: int = 0  # connections made after the first
    published: int = 0  # Asterisk's own changes reported to the node
    queue_depth: int = 0  # cluster changes waiting to be written to Asterisk
    protocol_errors: int = 0  # malformed messages from Asterisk dropped
    dropped_events: int = 0  # Asterisk events dropped because a queue was full
    #: anything else a protocol wants to show (kept out of the generic fields)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Hint:
    """One dialplan hint as Asterisk shows it (``core show hints``)."""

    exten: str
    context: str
    hint: str  # the devices it watches, "PJSIP/100&Custom:remote-PJSIP-100"
    status: int  # Asterisk's extension state number (-1 when unknown)
    status_text: str
    kept: bool = False  # pbxmesh keeps this hint ([asterisk.hints]), Asterisk's own otherwise


class GraceTimer:
    """Calls ``action`` once, ``seconds`` after :meth:`start`, unless :meth:`cancel` comes
    first: how long a link lets its Asterisk (or its ring) stay gone before its states stop
    counting. ``start`` while already running keeps the first deadline. Event loop only."""

    __slots__ = ("_action", "_handle", "seconds")

    def __init__(self, seconds: float, action: Callable[[], None]) -> None:
        self.seconds = seconds
        self._action = action
        self._handle: asyncio.TimerHandle | None = None

    @property
    def running(self) -> bool:
        return self._handle is not None

    def start(self) -> None:
        if self._handle is None:
            loop = asyncio.get_running_loop()
            self._handle = loop.call_later(self.seconds, self._fire)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _fire(self) -> None:
        self._handle = None
        self._action()


class Link(abc.ABC):
    """One link to Asterisk. See the module docstring for the contract.

    Lifecycle: the node attaches the link and hands it a port (``Node.add_link``), then
    :meth:`start`; tells may arrive from then on, whether or not Asterisk is connected (queue
    them, or drop them and rely on the resync at connect). :meth:`close` stops it; it is told
    nothing afterwards.
    """

    #: short name of the protocol ("ami"), used in logs, status and metric labels
    kind: str = "link"
    #: the changes this link wants to be told (read once, when the node attaches it)
    interest: Interest = Interest.NONE

    @abc.abstractmethod
    async def start(self, port: LinkPort) -> None:
        """Start connecting (in the background: return without waiting for Asterisk)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Disconnect and stop every task. Idempotent."""

    @abc.abstractmethod
    def status(self) -> LinkStatus:
        """The link's state now."""

    @abc.abstractmethod
    async def wait_synced(self) -> None:
        """Wait until a resync has completed since the last call (wrap in asyncio.timeout)."""

    @abc.abstractmethod
    async def wait_idle(self) -> None:
        """Wait until no resync runs and everything told has been written to Asterisk."""

    async def hints(self) -> list[Hint] | None:
        """Asterisk's dialplan hints, or None if this link cannot read them.

        Raises :class:`~pbxmesh.errors.LinkError` when Asterisk cannot be asked now.
        """
        return None

    # -- told: the cluster's changes (each returns at once) ----------------------------------
    def remote_device(self, device: str, state: DeviceState) -> None:  # noqa: B027
        """The aggregate of the other origins' slots for ``device`` (INVALID: none left)."""

    def origin_device(self, device: str, origin: EID, state: DeviceState) -> None:  # noqa: B027
        """``origin``'s slot for ``device`` changed (INVALID: the slot was removed)."""

    def origin_left(self, origin: EID) -> None:  # noqa: B027
        """``origin`` left the cluster; its slots were told removed just before."""

    def remote_mwi(self, mailbox: str, new: int, old: int, writer: EID) -> None:  # noqa: B027
        """Another origin, ``writer``, wrote the counts of ``mailbox@context`` last."""

    def remote_presence(  # noqa: B027
        self, presentity: str, state: PresenceState, subtype: str, message: str, writer: EID
    ) -> None:
        """Another origin, ``writer``, wrote the presence of ``presentity`` last."""

    def own_device(self, device: str, state: DeviceState) -> None:  # noqa: B027
        """This node directly asserted ``state`` for ``device`` (``Interest.OWN``)."""

    def own_mwi(self, mailbox: str, new: int, old: int) -> None:  # noqa: B027
        """This node directly wrote ``mailbox@context`` (``Interest.OWN``)."""

    def members(self) -> list[MemberInfo]:
        """Asterisk servers this link sees as members of their own ring (none by default)."""
        return []

    def origin_slots(self, device: str) -> dict[EID, DeviceState]:
        """States of ``device`` held per Asterisk origin that only this link knows (the ring's
        servers, shown by ``pbxmesh devices`` beside the cluster's origins)."""
        return {}
