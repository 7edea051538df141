"""This node's own assertions: published, restored and saved across restarts, withdrawn.

:class:`OwnAssertions` is the one writer of this node's own slots: what a link or the CLI
asserts as this server (``publish_device``/``publish_mwi``/``publish_presence``), the parts a
bridged ring contributes to this node's own slot, the kept assertions saved in the state
directory, the withdrawal of a down Asterisk's states, and the warnings about this node's own
grant. It is built from the stores, the clock, the fanout and the outbound queue it writes to;
:class:`~pbxmesh.node.core.Node` delegates its public methods to it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from ..clock import HybridClock
from ..eid import EID
from ..errors import StateError
from ..presence import (
    PresenceChange,
    PresenceState,
    PresenceStore,
    check_presence_text,
    check_presentity,
)
from ..states import DeviceState
from ..store import (
    DeviceChange,
    DeviceStore,
    MwiChange,
    MwiStore,
    check_device_name,
    normalize_mailbox,
)
from ..wire.frame import DeviceItem, Item, MwiItem, PresenceItem
from .fanout import Fanout
from .guard import FrameGuard
from .outbound import Outbound
from .parts import OwnParts

__all__ = ["OwnAssertions"]

log = logging.getLogger(__name__)


class OwnAssertions:
    """This node's own assertions, and what is saved of them across restarts."""

    def __init__(
        self,
        eid: EID,
        clock: HybridClock,
        devices: DeviceStore,
        mwi: MwiStore,
        presence: PresenceStore,
        fanout: Fanout,
        out: Outbound,
        guard: FrameGuard | None,
        announce: Callable[[], None],
    ) -> None:
        self.eid = eid
        self.clock = clock
        self.devices = devices
        self.mwi = mwi
        self.presence = presence
        self._fanout = fanout
        self._out = out
        self._guard = guard
        #: queues a complete snapshot of this origin (after a withdrawal)
        self._announce = announce
        #: counts this node's own assertions, so a saver knows when to write them
        self.own_changes = 0
        #: (kind, name) of the device states saved across restarts (kind 1; every mailbox
        #: and presentity this node wrote last is saved anyway: see own_state)
        self.kept: set[tuple[int, str]] = set()
        #: set when a kept assertion is made, so it is saved at once
        self.kept_changed = asyncio.Event()
        #: this node's own slot as direct assertions plus bridged parts (``parts.py``)
        self._parts = OwnParts()
        #: mailboxes this node wrote last through a part (a bridged ring), not directly
        self._mwi_parts: dict[str, str] = {}
        #: items offered that our grant refuses, each warned about once
        self._refused: set[tuple[int, str]] = set()

    def restore(
        self,
        devices: Iterable[tuple[str, int, int]],
        mwi: Iterable[tuple[str, int, int, int]],
        presence: Iterable[tuple[str, int, str, str, int]] = (),
    ) -> None:
        """Take back this node's own assertions saved before a restart (call before start()).

        They keep their versions; the clock is moved past them, and the snapshot sent at join
        announces them. Newer assertions (a link's resync) supersede them.
        """
        for device, state, version in devices:
            try:
                item = DeviceItem(check_device_name(device), state, version)
            except StateError as exc:
                log.warning("saved state skipped: %s", exc)
                continue
            self.clock.observe(version)
            self.devices.apply(self.eid, item.device, item.state, version)
            self._parts.set_direct(item.device, DeviceState(item.state))
            self.kept.add((1, item.device))
        for mailbox, new, old, version in mwi:
            self._restore_mwi(self.eid, mailbox, new, old, version)
        for presentity, state, subtype, message, version in presence:
            self._restore_presence(self.eid, presentity, state, subtype, message, version)
        self.own_changes += 1

    def restore_cluster(
        self,
        mwi: Iterable[tuple[str, int, int, int, str]],
        presence: Iterable[tuple[str, int, str, str, int, str]] = (),
    ) -> None:
        """Take back the other writers' mailboxes and presence saved before a restart (call
        before start()), with their origins and versions; they are not this node's and are
        not announced. Why: see :meth:`cluster_records`."""
        for mailbox, new, old, version, origin in mwi:
            if (eid := self._saved_origin(origin)) is not None:
                self._restore_mwi(eid, mailbox, new, old, version)
        for presentity, state, subtype, message, version, origin in presence:
            if (eid := self._saved_origin(origin)) is not None:
                self._restore_presence(eid, presentity, state, subtype, message, version)

    def _saved_origin(self, text: str) -> EID | None:
        """The writer of a saved cluster record; None for ours (restored as our own) or bad."""
        try:
            eid = EID.parse(text)
        except StateError as exc:
            log.warning("saved state skipped: %s", exc)
            return None
        return None if eid == self.eid else eid

    def _restore_mwi(self, origin: EID, mailbox: str, new: int, old: int, version: int) -> None:
        try:
            box = MwiItem(normalize_mailbox(mailbox), new, old, version)
        except StateError as exc:
            log.warning("saved state skipped: %s", exc)
            return
        self.clock.observe(version)
        self.mwi.apply(origin, box.mailbox, new, old, version)

    def _restore_presence(
        self, origin: EID, presentity: str, state: int, subtype: str, message: str, version: int
    ) -> None:
        try:
            p = PresenceItem(check_presentity(presentity), state, subtype, message, version)
        except StateError as exc:
            log.warning("saved state skipped: %s", exc)
            return
        self.clock.observe(version)
        self.presence.apply(
            origin, p.presentity, PresenceState(p.state), p.subtype, p.message, version
        )

    def cluster_records(
        self,
    ) -> tuple[list[tuple[str, int, int, int, str]], list[tuple[str, int, str, str, int, str]]]:
        """The mailboxes and presence other nodes wrote last, saved across restarts.

        A snapshot carries only its sender's own records, so a restarted node would not learn
        those of a writer that is down or gone; its link would then read its own PBX's copies
        of them as this server's and claim them (the chaos drill's seed 2). Restored, they
        are known for copies; values that changed meanwhile arrive from their live writers
        and win by version.
        """
        mwi = [
            (r.mailbox, r.new, r.old, r.version, str(r.origin))
            for r in self.mwi.records()
            if r.origin != self.eid
        ]
        presence = [
            (r.presentity, int(r.state), r.subtype, r.message, r.version, str(r.origin))
            for r in self.presence.records()
            if r.origin != self.eid
        ]
        return mwi, presence

    def own_state(self) -> tuple[list[tuple[str, int, int]], list[tuple[str, int, int, int]]]:
        """What this node saves across restarts: its kept device slots (published with
        ``keep=True``, e.g. by the CLI) and every mailbox it wrote last, kept or reported by a
        link (not those a bridged ring wrote through it).

        Device states learned from Asterisk are not saved: Asterisk is their source, its link
        re-reads them, and an old one would light a lamp wrongly until then. Message counts
        are: a restarted node must announce its mailboxes in the snapshot it sends at join,
        before its link has re-read Asterisk, or a node restarting at the same moment reads
        its own copy of them, finds them unknown to the cluster and claims them (the chaos
        drill's defect 4, docs/reliability.md). The link's re-read then supersedes any that
        changed while this node was down.
        """
        devices = [
            (d, int(self._parts.direct(d) or s), v)
            for d, s, v in self.devices.snapshot(self.eid)
            if (1, d) in self.kept
        ]
        mwi = [
            (r.mailbox, r.new, r.old, r.version)
            for r in self.mwi.written_by(self.eid)
            if r.mailbox not in self._mwi_parts
        ]
        return devices, mwi

    def own_presence(self) -> list[tuple[str, int, str, str, int]]:
        """Every presentity this node wrote last, kept or reported by a link, saved across
        restarts for the reason :meth:`own_state` gives for mailboxes:
        ``(presentity, state, subtype, message, version)``."""
        return [
            (r.presentity, int(r.state), r.subtype, r.message, r.version)
            for r in self.presence.written_by(self.eid)
        ]

    def publish_device(
        self, device: str, state: DeviceState, keep: bool = False
    ) -> DeviceChange | None:
        """Assert this node's own state for a device; returns the change of cluster value.

        ``keep``: the state has no other source (the CLI, a script) and is saved across
        restarts (see :meth:`own_state`).
        """
        check_device_name(device)
        if keep:
            self.kept.add((1, device))
            self.kept_changed.set()
        state = DeviceState(state)
        value = self._parts.set_direct(device, state)
        self._fanout.own_device(device, state, None)
        return self._set_own(device, value)

    def publish_part(self, part: str, device: str, state: DeviceState) -> DeviceChange | None:
        """A bridge's ``part`` of this node's own slot for ``device`` (INVALID: no part any
        more); the slot becomes the aggregation of every part and the direct assertion
        (``parts.py``). Returns the change of cluster value."""
        check_device_name(device)
        state = DeviceState(state)
        value = self._parts.set_part(part, device, state)
        current = self.devices.slots_of(device).get(self.eid)
        if current is not None and current[0] is value:
            return None  # the slot the cluster sees is unchanged
        if current is None and value is DeviceState.INVALID:
            return None  # nothing to retract
        return self._set_own(device, value)

    def _set_own(self, device: str, value: DeviceState) -> DeviceChange | None:
        version = self.clock.tick()
        change = self.devices.apply(self.eid, device, int(value), version)
        self.own_changes += 1
        self._out.enqueue(DeviceItem(device, int(value), version))
        if change is not None:
            self._fanout.device(change)
        return change

    def own_devices(self) -> dict[str, DeviceState]:
        """This node's direct assertions (what it says without any bridged part)."""
        held = {d for d, _, _ in self.devices.snapshot(self.eid)}
        return {d: s for d, s in self._parts.directs().items() if d in held}

    def own_mwi(self) -> dict[str, tuple[int, int]]:
        """Mailboxes this node wrote last directly (not through a bridged part)."""
        return {
            r.mailbox: (r.new, r.old)
            for r in self.mwi.written_by(self.eid)
            if r.mailbox not in self._mwi_parts
        }

    def publish_mwi(
        self, mailbox: str, new: int, old: int, keep: bool = False, part: str | None = None
    ) -> MwiChange | None:
        """Assert message counts for ``mailbox[@context]`` as this node (``keep``: as above;
        ``part``: written on behalf of a bridged ring, see :meth:`publish_part`)."""
        mailbox = normalize_mailbox(mailbox)
        if part is None:
            self._mwi_parts.pop(mailbox, None)
        else:
            self._mwi_parts[mailbox] = part
        if keep:
            self.kept_changed.set()  # saved at once (every mailbox we wrote is saved)
        if not (0 <= new <= 0x7FFFFFFF and 0 <= old <= 0x7FFFFFFF):
            raise StateError(f"message counts {new}/{old} must be between 0 and 2147483647")
        version = self.clock.tick()
        change = self.mwi.apply(self.eid, mailbox, new, old, version)
        self.own_changes += 1
        self._out.enqueue(MwiItem(mailbox, new, old, version))
        self._fanout.own_mwi(mailbox, new, old, part)
        if change is not None:
            self._fanout.mwi(change)
        return change

    def publish_presence(
        self,
        presentity: str,
        state: PresenceState,
        subtype: str = "",
        message: str = "",
        keep: bool = False,
    ) -> PresenceChange | None:
        """Assert the presence of ``CustomPresence:NAME`` as this node (``keep``: as above).

        Raises :class:`StateError` for a name, subtype or message Asterisk could not carry.
        """
        presentity = check_presentity(presentity)
        check_presence_text("subtype", subtype)
        check_presence_text("message", message)
        state = PresenceState(state)
        if keep:
            self.kept_changed.set()  # saved at once (every presentity we wrote is saved)
        version = self.clock.tick()
        change = self.presence.apply(self.eid, presentity, state, subtype, message, version)
        self.own_changes += 1
        self._out.enqueue(PresenceItem(presentity, int(state), subtype, message, version))
        if change is not None:
            self._fanout.presence(change)
        return change

    def withdraw_reported(self) -> int:
        """Remove this origin's device slots except the kept ones (see ``LinkPort.withdraw``)
        and announce a complete snapshot, so that every peer removes them too."""
        kept = []
        held = self.devices.snapshot(self.eid)
        bridged = self.clock.tick()
        for d, s, v in held:
            if (1, d) in self.kept:
                kept.append((d, int(s), v))
                continue
            rest = self._parts.drop_direct(d)
            if rest is not None and rest is not DeviceState.INVALID:
                kept.append((d, int(rest), bridged))  # a bridged ring's part stays
        for change in self.devices.merge_snapshot(self.eid, kept, complete_as_of=self.clock.tick()):
            self._fanout.device(change)
        self.own_changes += 1
        self._announce()
        withdrawn = len(held) - len(kept)
        log.info("reported device states withdrawn count=%d kept=%d", withdrawn, len(kept))
        return withdrawn

    def refused_by_grant(self, item: Item) -> str | None:
        """Why the others would drop ``item`` from us (our grant in [security.peers]); a link
        that offers it is told once per device or mailbox in the log, and it is not sent."""
        reason = self._guard.refuses(item) if self._guard is not None else None
        if reason is not None and item.key not in self._refused:
            self._refused.add(item.key)
            log.warning("not shared: %s", reason)
        return reason
