"""Telling the rest of the process what changed: listeners and links to Asterisk.

Theory of operation
-------------------
Two kinds of audience hear about the cluster's changes:

* *listeners* (:class:`NodeListener`: the control API, the lamp page, tests) get every change
  of a cluster value, of the *remote* aggregate, of a mailbox, of a presentity (when they have
  ``on_presence``: listeners written before presence keep working), and every membership view;
* *links* to Asterisk (:class:`~pbxmesh.links.base.Link`) get only what their ``interest``
  names and never their own origin's changes (see ``links/base.py``).

After the node applied changes of one origin it calls :meth:`Fanout.touched` with the devices
that origin touched. For each device the aggregate of the *other* origins' slots is recomputed
and told only if it differs from the last one told (one cache for every link and listener);
for links that want each origin's slots, the origin's slot is compared with the last one told
in the same way. Both are skipped entirely when nobody wants them, so a node without an
Asterisk link pays nothing. Everything runs on the event loop; audiences must not block.

Every change of a mailbox or a presentity, of any origin, passes here once: this is where
``mwi_changes`` and ``presence_changes`` are counted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol, TypeVar

from ..eid import EID
from ..links.base import Interest, Link
from ..presence import PresenceChange
from ..states import DeviceState
from ..store import DeviceChange, DeviceStore, MwiChange
from .membership import MemberInfo
from .stats import NodeStats

_K = TypeVar("_K", str, tuple[EID, str])

__all__ = ["Fanout", "NodeListener", "make_listener"]


class NodeListener(Protocol):
    """Receives what changes in the cluster. Called on the event loop; must not block."""

    def on_device(self, change: DeviceChange) -> None:
        """The cluster value of a device changed (``removed``: no origin has it any more)."""

    def on_remote_device(self, device: str, state: DeviceState) -> None:
        """The aggregate of the *other* origins' slots changed (INVALID: none left)."""

    def on_mwi(self, change: MwiChange) -> None:
        """The counts of a mailbox changed."""

    def on_members(self, members: list[MemberInfo]) -> None:
        """The membership view changed."""

    # Optional: ``on_presence(change: PresenceChange)``, the presence of a presentity changed.


class Fanout:
    """The listeners and links of one node, and what each was last told."""

    def __init__(self, devices: DeviceStore, eid: EID, stats: NodeStats) -> None:
        self.devices = devices
        self.eid = eid
        self._stats = stats
        self.listeners: list[NodeListener] = []
        self.links: list[Link] = []
        self._aggregate: list[Link] = []  # links wanting Interest.REMOTE_DEVICES
        self._slots: list[Link] = []  # links wanting Interest.ORIGIN_DEVICES
        self._mwi: list[Link] = []  # links wanting Interest.MWI
        self._presence: list[Link] = []  # links wanting Interest.PRESENCE
        self._own: list[Link] = []  # links wanting Interest.OWN
        self._remote_cache: dict[str, DeviceState] = {}
        self._slot_cache: dict[tuple[EID, str], DeviceState] = {}

    # -- links -------------------------------------------------------------------------------
    def add_link(self, link: Link) -> None:
        self.links.append(link)
        self._sort_links()

    def remove_link(self, link: Link) -> None:
        if link in self.links:
            self.links.remove(link)
        self._sort_links()

    def _sort_links(self) -> None:
        self._aggregate = [x for x in self.links if Interest.REMOTE_DEVICES in x.interest]
        self._slots = [x for x in self.links if Interest.ORIGIN_DEVICES in x.interest]
        self._mwi = [x for x in self.links if Interest.MWI in x.interest]
        self._presence = [x for x in self.links if Interest.PRESENCE in x.interest]
        self._own = [x for x in self.links if Interest.OWN in x.interest]
        if not self._slots:
            self._slot_cache.clear()

    # -- telling -----------------------------------------------------------------------------
    def device(self, change: DeviceChange) -> None:
        for listener in self.listeners:
            listener.on_device(change)

    def mwi(self, change: MwiChange) -> None:
        self._stats.mwi_changes += 1
        for listener in self.listeners:
            listener.on_mwi(change)
        r = change.record
        if self._mwi and r.origin != self.eid:
            for link in self._mwi:
                link.remote_mwi(r.mailbox, r.new, r.old, r.origin)

    def presence(self, change: PresenceChange) -> None:
        self._stats.presence_changes += 1
        for listener in self.listeners:
            told = getattr(listener, "on_presence", None)
            if told is not None:
                told(change)
        r = change.record
        if self._presence and r.origin != self.eid:
            for link in self._presence:
                link.remote_presence(r.presentity, r.state, r.subtype, r.message, r.origin)

    def own_device(self, device: str, state: DeviceState, part: str | None) -> None:
        """This node asserted ``state`` directly (``part`` None) or through a link's part."""
        if part is None:
            for link in self._own:
                link.own_device(device, state)

    def own_mwi(self, mailbox: str, new: int, old: int, part: str | None) -> None:
        if part is None:
            for link in self._own:
                link.own_mwi(mailbox, new, old)

    def members(self, members: list[MemberInfo]) -> None:
        for listener in self.listeners:
            listener.on_members(members)

    def touched(self, origin: EID, devices: Iterable[str]) -> None:
        """``origin``'s slots of ``devices`` may have changed: tell what did."""
        aggregate = self._aggregate
        # Only the links and listeners that ask for the other origins' aggregate get it; skip
        # the work otherwise.
        listeners = [x for x in self.listeners if getattr(x, "wants_remote", True)]
        if not (aggregate or listeners or self._slots):
            return
        devices = dict.fromkeys(devices)
        if aggregate or listeners:
            cache = self._remote_cache
            state_excluding = self.devices.state_excluding
            eid = self.eid
            for device in devices:
                state = state_excluding(device, eid)
                if not _remember(cache, device, state):
                    continue
                for link in aggregate:
                    link.remote_device(device, state)
                for listener in listeners:
                    listener.on_remote_device(device, state)
        if self._slots and origin != self.eid:
            self._tell_slots(origin, devices)

    def _tell_slots(self, origin: EID, devices: Iterable[str]) -> None:
        cache = self._slot_cache
        slot_state = self.devices.slot_state
        for device in devices:
            state = slot_state(device, origin)
            if not _remember(cache, (origin, device), state):
                continue
            for link in self._slots:
                link.origin_device(device, origin, state)

    def origin_left(self, origin: EID) -> None:
        """``origin`` was dropped (its slots were told removed by :meth:`touched`)."""
        for link in self._slots:
            link.origin_left(origin)


def make_listener(
    on_device: Callable[[DeviceChange], None] | None = None,
    on_remote_device: Callable[[str, DeviceState], None] | None = None,
    on_mwi: Callable[[MwiChange], None] | None = None,
    on_members: Callable[[list[MemberInfo]], None] | None = None,
    on_presence: Callable[[PresenceChange], None] | None = None,
) -> NodeListener:
    """A listener from plain callables (any may be omitted)."""

    remote_wanted = on_remote_device is not None

    class _Listener:
        wants_remote = remote_wanted

        def on_device(self, change: DeviceChange) -> None:
            if on_device:
                on_device(change)

        def on_remote_device(self, device: str, state: DeviceState) -> None:
            if on_remote_device:
                on_remote_device(device, state)

        def on_mwi(self, change: MwiChange) -> None:
            if on_mwi:
                on_mwi(change)

        def on_members(self, members: list[MemberInfo]) -> None:
            if on_members:
                on_members(members)

        def on_presence(self, change: PresenceChange) -> None:
            if on_presence:
                on_presence(change)

    return _Listener()


def _remember(cache: dict[_K, DeviceState], key: _K, state: DeviceState) -> bool:
    """Whether ``state`` is news for ``key`` (each value is told once); ``cache`` then holds
    it (INVALID, the absence of a state, is not held)."""
    if cache.get(key, DeviceState.INVALID) is state:
        return False
    if state is DeviceState.INVALID:
        cache.pop(key, None)
    else:
        cache[key] = state
    return True
