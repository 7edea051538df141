"""The link to one Asterisk over AMI (a :class:`~pbxmesh.links.base.Link`).

Theory of operation
-------------------
**Local → cluster.** Asterisk raises ``DeviceStateChange`` for every change of a device's value
and ``MessageWaiting`` for every mailbox update. The link reports them through its port
(:meth:`~pbxmesh.links.base.LinkPort.device`, :meth:`~pbxmesh.links.base.LinkPort.mwi`: this
server as origin), for names selected by the include/exclude patterns
(:func:`fnmatch.fnmatchcase`, so case-sensitive like Asterisk's device names). After every
(re)connect it reads the full local picture again: ``DeviceStateList`` (every cached device)
and, when ``res_mwi_external_ami`` is loaded, ``MWIGet`` with ``/.*/``. Without that module
Asterisk offers no way to list mailbox counts: only ``MessageWaiting`` events seen while
connected are shared, and remote counts cannot be written either (both are logged once).

**Cluster → local.** The node tells :meth:`AmiLink.remote_device` the aggregate of the
*other* servers' slots (``Interest.REMOTE_DEVICES``). The link never touches the local device:
it writes the value to a separate *counterpart* ``Custom:`` device (``Custom:remote-{device}``
by default, see :func:`~pbxmesh.links.ami.counterparts.counterpart_name`) with
``Setvar DEVICE_STATE(...)``. A hint that lists both,
``exten => 100,hint,PJSIP/100&Custom:remote-PJSIP-100``, then shows the cluster-wide state
because INVALID is the identity of aggregation: a remote INVALID (no remote slot left) is
written too and leaves the local value alone. UNKNOWN cannot be written through func_devstate;
it is written as INVALID (they differ only when every other input is INVALID as well: hint
``Unavailable`` instead of ``Idle``). Remote MWI (``Interest.MWI``) goes through ``MWIUpdate``.

Writes go through a queue that keeps only the newest value per name (a burst of changes to one
device costs one ``Setvar``) and a single writer task, paused while a resync runs so that an old
snapshot is never written after a newer change.

**No echo.** ``DeviceStateChange`` for a name matching the counterpart template is never
reported (whoever wrote it). For MWI the link remembers each count it applied with
``MWIUpdate`` and swallows the ``MessageWaiting`` that echoes it; a different count for that
mailbox is a local change and is reported, and drops a remote count still queued for that
mailbox (older than the local change, it would otherwise be written over it). (The cluster's
own echo -- our own slots coming back -- is the node's business: a link is never told its own
origin's changes.)

**Resync after every reconnect** (the client's ``on_connected`` hook): rewrite every counterpart
from :meth:`~pbxmesh.links.base.LinkPort.remote_devices`; read ``DeviceStateList``, report
local devices and set to INVALID every counterpart Asterisk still holds (from its AstDB, e.g.
after a restart) that the cluster no longer has; rewrite remote MWI, then read ``MWIGet`` and
report the mailboxes that are not our own copies. A change event seen while a list is being
read wins over that list's item (it is newer).

Mailbox ids without ``@context`` are reported as ``box@default`` (Corosync does the same).

**Presence** (``Interest.PRESENCE``, ``presence.py`` beside this file): ``PresenceStateChange``
events and ``PresenceStateList`` at resync report this server's presentities; remote ones are
written with ``Setvar PRESENCE_STATE(CustomPresence:NAME)=state,B64,B64,e`` through the same
writer, after device states and MWI; echoes of those writes are swallowed. It needs
``func_presencestate`` and ``res_manager_presencestate``; without them it is said once and
skipped.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Final, TypeVar

from ...eid import EID
from ...errors import AmiActionError, AmiError, ConfigError, PbxmeshError, StateError
from ...presence import PresenceState
from ...states import DeviceState, parse_state
from ...store import normalize_mailbox
from ...tasks import cancel_and_wait
from ..base import GraceTimer, Hint, Interest, Link, LinkPort, LinkStatus
from .client import AmiClient, AmiConfig
from .codec import Action, Event
from .counterparts import DEFAULT_TEMPLATE, MAX_DEVICE_NAME, UNSAFE, counterpart_name
from .echoes import Echoes
from .presence import PresenceMirror

__all__ = ["AmiLink", "AmiLinkConfig"]

log = logging.getLogger(__name__)

_UNKNOWN_COMMAND: Final = "invalid/unknown command"
#: The asynchronous events the link reads; Asterisk may drop every other one for us.
EVENTS: Final = ("DeviceStateChange", "MessageWaiting", "PresenceStateChange")
#: Most counterpart writes (Setvar) in flight at once.
WRITE_WINDOW: Final = 64
#: seconds before writes that failed with the connection still up (a timeout) are retried
WRITE_RETRY_PAUSE: Final = 0.5

_V = TypeVar("_V")


@dataclass(frozen=True, slots=True)
class AmiLinkConfig:
    """What one AMI link shares, and how remote states are named locally."""

    # fnmatch patterns (case-sensitive) of device names shared in both directions.
    include: tuple[str, ...] = ("*",)
    # Patterns removed from what include selected.
    exclude: tuple[str, ...] = ()
    # Counterpart device name; must start with "Custom:" and hold "{device}" once.
    template: str = DEFAULT_TEMPLATE
    # Share MWI at all (needs res_mwi_external_ami on Asterisk to write remote counts).
    share_mwi: bool = True
    # fnmatch patterns of mailbox@context ids shared in both directions, and exclusions.
    mwi_include: tuple[str, ...] = ("*",)
    mwi_exclude: tuple[str, ...] = ()
    # Share CustomPresence: presence (needs func_presencestate and res_manager_presencestate),
    # and fnmatch patterns of the presentities ("CustomPresence:alice") shared, and exclusions.
    share_presence: bool = True
    presence_include: tuple[str, ...] = ("*",)
    presence_exclude: tuple[str, ...] = ()
    # Seconds Asterisk may stay unreachable before this server's device states stop counting
    # in the cluster (LinkPort.withdraw). Longer rides out a slow Asterisk restart with the
    # old lamps lit; shorter clears a dead PBX's lamps sooner.
    down_grace: float = 5.0

    def __post_init__(self) -> None:
        if not self.down_grace >= 0:
            raise ConfigError("down_grace must be zero or a positive number of seconds")
        if not self.template.startswith("Custom:") or self.template.count("{device}") != 1:
            raise ConfigError(
                f"counterpart template {self.template!r} must start with 'Custom:' and "
                "contain '{device}' exactly once, e.g. 'Custom:remote-{device}'"
            )
        fixed = len(self.template) - len("{device}")
        if fixed > MAX_DEVICE_NAME - 16:
            raise ConfigError(f"counterpart template {self.template!r} is too long")
        prefix, _, suffix = self.template.partition("{device}")
        if UNSAFE.search(prefix[len("Custom:") :] + suffix):
            raise ConfigError(f"counterpart template {self.template!r} has unsafe characters")


def _selected(name: str, include: tuple[str, ...], exclude: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in include) and not any(
        fnmatch.fnmatchcase(name, p) for p in exclude
    )


def _count(text: str | None) -> int:
    try:
        return int(text or "0")
    except ValueError:
        return -1


def hints_of(items: Iterable[Event]) -> list[Hint]:
    """Hints from ``ExtensionStatus`` list items, by context and extension: Asterisk 22 lists
    them in the order of its hint hash table, master by name."""
    hints = []
    for e in items:
        status = e.get("Status") or "-1"
        hints.append(
            Hint(
                exten=e.get("Exten") or "",
                context=e.get("Context") or "",
                hint=e.get("Hint") or "",
                status=int(status) if status.lstrip("-").isdigit() else -1,
                status_text=e.get("StatusText") or "",
            )
        )
    return sorted(hints, key=lambda h: (h.context, h.exten))


class AmiLink(Link):
    """Links one Asterisk to the node over AMI; see the module docstring."""

    kind = "ami"
    interest = Interest.REMOTE_DEVICES | Interest.MWI | Interest.PRESENCE

    def __init__(self, ami: AmiConfig, config: AmiLinkConfig | None = None) -> None:
        self.port: LinkPort | None = None  # given by the node at start
        self.config = config or AmiLinkConfig()
        prefix, _, suffix = self.config.template.partition("{device}")
        self._cp_prefix, self._cp_suffix = prefix, suffix
        self.client = AmiClient(
            ami,
            on_connected=self._resync,
            on_event=self._on_event,
            on_disconnected=self._on_disconnected,
        )
        self._down_timer = GraceTimer(self.config.down_grace, self._withdraw)
        #: times this link withdrew its states after Asterisk stayed unreachable
        self.withdrawals = 0
        self._dirty_devices: dict[str, DeviceState] = {}
        self._dirty_mwi: dict[str, tuple[int, int]] = {}
        self._written: dict[str, DeviceState] = {}
        self._owners: dict[str, str] = {}
        self._mwi_echo: Echoes[tuple[int, int]] = Echoes()
        self.presence = PresenceMirror(
            self.config.presence_include,
            self.config.presence_exclude,
            self.config.share_presence,
        )
        self._wake = asyncio.Event()
        self._settled = asyncio.Event()
        self._writing = False
        self._sync_done = asyncio.Event()
        self._syncing = False
        #: False from a (re)connect until its resync has begun: the writer waits, since the
        #: resync forgets the echoes it expects and would take a write's echo for a change
        #: made on Asterisk (found by the chaos drill: a remote mailbox claimed at a restart)
        self._session_synced = False
        self._changed_during_sync: set[str] = set()
        self._mwiupdate_ok = True
        self._mwiget_ok = True
        self._filters_refused = False
        #: Asterisk runs app_voicemail (read at resync); remote mailboxes it cannot show
        self.voicemail = False
        self.mwi_not_shown: list[str] = []
        self._writer: asyncio.Task[None] | None = None
        #: Counters: syncs completed, local changes reported, echoes swallowed.
        self.resyncs = 0
        self.published = 0
        #: local names the cluster cannot carry (logged once each)
        self.skipped = 0
        self._warned_names: set[str] = set()
        self.echoes = 0

    async def start(self, port: LinkPort) -> None:
        self.port = port
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_loop(), name="ami link writer")
        await self.client.start()

    async def close(self) -> None:
        self._down_timer.cancel()
        self.port = None  # nothing is reported or withdrawn after close
        await self.client.close()
        self._down_timer.cancel()
        await cancel_and_wait(self._writer)
        self._writer = None

    def status(self) -> LinkStatus:
        client = self.client
        return LinkStatus(
            kind=self.kind,
            address=f"{client.config.host}:{client.config.port}",
            connected=client.connected,
            resyncs=self.resyncs,
            reconnects=max(0, client.connections - 1),
            published=self.published + self.presence.published,
            queue_depth=self.queue_depth,
            protocol_errors=client.protocol_errors,
            dropped_events=client.dropped_events,
            extra={
                "echoes": self.echoes + self.presence.echoes,
                "skipped": self.skipped,
                "withdrawals": self.withdrawals,
                "voicemail": self.voicemail,
                "mwi_not_shown": len(self.mwi_not_shown),
                "presence": self.presence.enabled and self.presence.available,
            },
        )

    async def hints(self) -> list[Hint]:
        """Asterisk's hints (``ExtensionStateList``) by context and extension, whatever order
        the Asterisk version lists them in; raises AmiError when not connected."""
        try:
            answer = await self.client.list_action("ExtensionStateList")
        except AmiActionError as exc:
            if "no dialplan hints" in exc.message.lower():
                return []
            raise
        return hints_of(answer.items)

    async def wait_synced(self) -> None:
        """Wait until a resync has completed since the last call (wrap in asyncio.timeout)."""
        await self._sync_done.wait()
        self._sync_done.clear()

    @property
    def queue_depth(self) -> int:
        """Remote states and MWI waiting to be written to Asterisk (superseded by name)."""
        return len(self._dirty_devices) + len(self._dirty_mwi) + len(self.presence.dirty)

    def _busy(self) -> bool:
        return bool(
            self._dirty_devices
            or self._dirty_mwi
            or self.presence.dirty
            or self._syncing
            or self._writing
        )

    async def wait_idle(self) -> None:
        """Wait until no resync runs and every queued remote write was sent (needs a link)."""
        while self._busy():
            self._settled.clear()
            await self._settled.wait()

    # -- naming and selection ------------------------------------------------------------------

    def is_counterpart(self, device: str) -> bool:
        """True for a name in the counterpart namespace (never published as local)."""
        return (
            len(device) > len(self._cp_prefix) + len(self._cp_suffix)
            and device.startswith(self._cp_prefix)
            and device.endswith(self._cp_suffix)
        )

    def counterpart(self, device: str) -> str:
        name = counterpart_name(device, self.config.template)
        owner = self._owners.setdefault(name, device)
        if owner != device:
            log.warning(
                "counterpart collision name=%s devices=%s,%s; rename one device",
                name,
                owner,
                device,
            )
        return name

    def shares_device(self, device: str) -> bool:
        return not self.is_counterpart(device) and _selected(
            device, self.config.include, self.config.exclude
        )

    def shares_mailbox(self, mailbox: str) -> bool:
        return self.config.share_mwi and _selected(
            mailbox, self.config.mwi_include, self.config.mwi_exclude
        )

    # -- cluster → local -----------------------------------------------------------------------

    def remote_device(self, device: str, state: DeviceState) -> None:
        """The other servers' aggregate for ``device`` changed (INVALID: none left)."""
        if self.shares_device(device):
            self._dirty_devices[self.counterpart(device)] = state
            self._wake.set()

    def remote_mwi(self, mailbox: str, new: int, old: int, writer: EID) -> None:
        """Another server wrote ``mailbox@context`` last."""
        if self.shares_mailbox(mailbox):
            self._dirty_mwi[mailbox] = (new, old)
            self._wake.set()

    def remote_presence(
        self, presentity: str, state: PresenceState, subtype: str, message: str, writer: EID
    ) -> None:
        """Another server wrote the presence of ``presentity`` last."""
        if self.presence.remote(presentity, (state, subtype, message)):
            self._wake.set()

    async def _write_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self._writable() or not self.client.connected:
                self._settled.set()
                continue  # the resync at (re)connect writes everything
            self._writing = True
            retry = False
            try:
                await self._write_round()
            except AmiError as exc:
                # The connection dropped (its resync rewrites everything) or an action timed
                # out with the connection up: what failed was queued again, retried shortly.
                log.debug("remote write interrupted error=%s", exc)
                retry = True
            except PbxmeshError as exc:  # e.g. a name AMI cannot carry: never end the writer
                log.warning("remote write refused error=%s", exc)
            finally:
                self._writing = False
                self._settled.set()
            if retry and self.client.connected:
                await asyncio.sleep(WRITE_RETRY_PAUSE)
                self._wake.set()

    async def _write_round(self) -> None:
        """Write what is queued. A write that fails is queued again unless a newer value for
        its name is queued meanwhile, and every write of a batch has ended before the next
        batch begins: a name never has two writes in flight (the later could be skipped as
        already written while the earlier, older one is still on its way)."""
        while self._dirty_devices and self._writable():
            # Up to WRITE_WINDOW Setvars in flight at once (each name at most once, so
            # per-device order holds): one round trip per batch, not per device.
            batch = []
            for _ in range(min(len(self._dirty_devices), WRITE_WINDOW)):
                name = next(iter(self._dirty_devices))
                batch.append((name, self._dirty_devices.pop(name)))
            results = await asyncio.gather(
                *(self._write_device(n, st) for n, st in batch), return_exceptions=True
            )
            failed: BaseException | None = None
            for (name, state), result in zip(batch, results, strict=True):
                if isinstance(result, BaseException):
                    self._dirty_devices.setdefault(name, state)
                    failed = failed or result
            if failed is not None:
                raise failed
        await self._drain(self._dirty_mwi, lambda box, counts: self._write_mwi(box, *counts))
        await self._drain(
            self.presence.dirty, lambda name, value: self.presence.write(self.client, name, value)
        )

    async def _drain(
        self, queue: dict[str, _V], write: Callable[[str, _V], Awaitable[None]]
    ) -> None:
        """Write a last-writer-wins queue (MWI, presence) in order, one at a time; what fails
        is queued again unless a newer value is."""
        while queue and self._writable():
            name = next(iter(queue))
            value = queue.pop(name)
            try:
                await write(name, value)
            except AmiError:
                queue.setdefault(name, value)
                raise

    def _writable(self) -> bool:
        return self._session_synced and not self._syncing

    async def _write_device(self, name: str, state: DeviceState) -> None:
        if state is DeviceState.UNKNOWN:
            state = DeviceState.INVALID  # func_devstate refuses UNKNOWN
        if self._written.get(name) is state:
            return
        try:
            await self.client.action("Setvar", Variable=f"DEVICE_STATE({name})", Value=state.name)
        except AmiActionError as exc:
            log.warning(
                "cannot write counterpart device=%s state=%s error=%s",
                name,
                state.name,
                exc.message,
            )
            return
        self._written[name] = state

    async def _write_mwi(self, mailbox: str, new: int, old: int) -> None:
        if not self._mwiupdate_ok:
            if mailbox not in self.mwi_not_shown and len(self.mwi_not_shown) < 10_000:
                self.mwi_not_shown.append(mailbox)
                log.info(
                    "remote mailbox %s cannot be shown on this server (no MWIUpdate on %s)",
                    mailbox,
                    self.client.peer,
                )
            return
        self._mwi_echo.wrote(mailbox, (new, old))
        try:
            await self.client.action("MWIUpdate", Mailbox=mailbox, NewMessages=new, OldMessages=old)
        except AmiActionError as exc:
            self._mwi_echo.failed(mailbox, (new, old))
            if _UNKNOWN_COMMAND in exc.message.lower():
                self._mwiupdate_ok = False
                log.error(
                    "Asterisk has no MWIUpdate (load res_mwi_external_ami); remote "
                    "mailbox counts will not be shown on this server"
                )
            else:
                log.warning("cannot write remote MWI mailbox=%s error=%s", mailbox, exc.message)

    # -- local → cluster -----------------------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        if event.name == "DeviceStateChange":
            self._local_device(event.get("Device") or "", event.get("State") or "")
        elif event.name == "MessageWaiting":
            self._local_mwi(event.get("Mailbox") or "", event.get("New"), event.get("Old"))
        elif event.name == "PresenceStateChange":
            self._local_presence(event)

    def _local_presence(self, event: Event, *, from_list: bool = False) -> None:
        parsed = self.presence.parse(event)
        if parsed is None:
            return
        presentity, value = parsed
        if not from_list and self.presence.is_echo(presentity, value):
            if self.presence.dirty:
                self._wake.set()  # a change here that our writes in flight undid: redo
            return
        if not self.presence.shares(presentity):
            return
        if self._syncing:
            key = "presence:" + presentity
            if from_list and key in self._changed_during_sync:
                return
            if not from_list:
                self._changed_during_sync.add(key)
        port = self._port()
        self.presence.report(port.presence, presentity, value)
        self.presence.dirty.pop(presentity, None)  # older than this change: see _local_mwi

    def _local_device(self, device: str, state_text: str, *, from_list: bool = False) -> None:
        if not device:
            return
        if self.is_counterpart(device):
            self.echoes += 1
            return
        if not self.shares_device(device):
            return
        try:
            state = parse_state(state_text)
        except StateError as exc:
            log.warning("bad DeviceStateChange dropped device=%s error=%s", device, exc)
            return
        if self._syncing:
            if from_list and device in self._changed_during_sync:
                return  # an event newer than this list item was already published
            if not from_list:
                self._changed_during_sync.add(device)
        try:
            self._port().device(device, state)
        except StateError as exc:  # a name the cluster cannot carry: skip it, keep the link
            self._skip(device, exc)
            return
        self.published += 1

    def _local_mwi(
        self,
        mailbox: str,
        new_text: str | None,
        old_text: str | None,
        *,
        from_list: bool = False,
    ) -> None:
        try:
            counts = (int(new_text or "0"), int(old_text or "0"))
        except ValueError:
            log.warning("bad MessageWaiting dropped mailbox=%s", mailbox)
            return
        if not from_list:
            echo, restore = self._mwi_echo.seen(mailbox, counts)
            if restore is not None:  # a change here that our writes in flight undid: redo
                self._dirty_mwi.setdefault(mailbox, restore)
                self._wake.set()
            if echo:
                self.echoes += 1
                return
        try:
            box = normalize_mailbox(mailbox)
        except StateError as exc:
            self._skip(mailbox, exc)
            return
        if not mailbox or not self.shares_mailbox(box):
            return
        if self._syncing:
            key = "mwi:" + box
            if from_list and key in self._changed_during_sync:
                return
            if not from_list:
                self._changed_during_sync.add(key)
        try:
            self._port().mwi(box, *counts)
        except StateError as exc:
            self._skip(box, exc)
            return
        # A remote count still queued for this mailbox is older than this change, which the
        # node has just made the cluster's: written after it, it would undo it here alone.
        self._dirty_mwi.pop(box, None)
        self.published += 1

    def _port(self) -> LinkPort:
        if self.port is None:
            raise PbxmeshError("the AMI link reports nothing before start()")
        return self.port

    def _skip(self, name: str, exc: StateError) -> None:
        self.skipped += 1
        if name not in self._warned_names and len(self._warned_names) < 1000:
            self._warned_names.add(name)
            log.warning("not shared: %s", exc)

    # -- Asterisk gone -------------------------------------------------------------------------

    def _on_disconnected(self) -> None:
        self._session_synced = False
        if self.port is not None and self.config.include:
            # (an AMI link that shares no device, e.g. beside SIP, withdraws nothing)
            self._down_timer.start()

    def _withdraw(self) -> None:
        if self.port is None or self.client.connected:
            return
        self.withdrawals += 1
        withdrawn = self.port.withdraw()
        log.warning(
            "Asterisk at %s unreachable for %.1f s: %d device state(s) of this server "
            "withdrawn from the cluster until it is back",
            self.client.peer,
            self.config.down_grace,
            withdrawn,
        )

    # -- resync --------------------------------------------------------------------------------

    def event_filters(self) -> tuple[str, str]:
        """The two AMI event filters (POSIX ERE) that spare the link every event it does not
        read: only :data:`EVENTS`, and none about a counterpart (the echo of our own writes).
        List answers (DeviceStateList, ExtensionStateList, MWIGet) are not filtered."""
        include = "Event: (" + "|".join(EVENTS) + ")"
        prefix = re.sub(r"([.^$*+?()\[\]{}|\\])", r"\\\1", self._cp_prefix)
        return include, f"!Device: {prefix}"

    async def _set_filters(self, client: AmiClient) -> None:
        """Ask Asterisk to filter this session's events (``Action: Filter``, which needs the
        ``system`` write class). Without it the link filters events itself, at some CPU cost:
        said once, with the manager.conf lines that do the same without that class."""
        if self._filters_refused:
            return
        for text in self.event_filters():
            answer = await client.send_action(Action.of("Filter", Operation="Add", Filter=text))
            if not answer.ok:
                self._filters_refused = True
                include, exclude = self.event_filters()
                log.info(
                    "Asterisk at %s refused the AMI event filter (%s); every event comes "
                    "through and pbxmesh drops what it does not need. To spare that work, add "
                    "to the pbxmesh user in manager.conf: eventfilter = %s / eventfilter = %s",
                    client.peer,
                    answer.message or "no reason given",
                    include,
                    exclude,
                )
                return

    async def _resync(self, client: AmiClient) -> None:
        self._down_timer.cancel()
        self._syncing = True
        self._session_synced = True
        self._changed_during_sync = set()
        self._written.clear()
        self._mwi_echo.clear()
        try:
            await self._set_filters(client)
            expected: dict[str, DeviceState] = {}
            for device, state in self._port().remote_devices().items():
                if self.shares_device(device):
                    expected[self.counterpart(device)] = state
            for name, state in expected.items():
                await self._write_device(name, state)
            # A link that shares no device (beside a SIP link) reads none: DeviceStateList
            # needs res_manager_devicestate, which such an Asterisk need not load.
            items = (
                (await client.list_action("DeviceStateList")).items if self.config.include else ()
            )
            stale = 0
            for item in items:
                device = item.get("Device") or ""
                if self.is_counterpart(device):
                    if device not in expected and item.get("State") != "INVALID":
                        stale += 1
                        await self._write_device(device, DeviceState.INVALID)
                    continue
                self._local_device(device, item.get("State") or "", from_list=True)
            mailboxes = await self._resync_mwi(client) if self.config.share_mwi else 0
            presentities = await self._resync_presence(client)
        finally:
            self._syncing = False
            self._wake.set()
        self.resyncs += 1
        self._sync_done.set()
        log.info(
            "AMI resync done peer=%s remote_devices=%d local_devices=%d stale=%d mailboxes=%d "
            "presentities=%d",
            client.peer,
            len(expected),
            len(items),
            stale,
            mailboxes,
            presentities,
        )

    async def _resync_presence(self, client: AmiClient) -> int:
        """Remote presence written, then ``PresenceStateList`` read: what is not our own copy
        of a remote value is this server's."""
        if not self.presence.enabled:
            return 0
        remote = {p: (s, t, m) for p, (s, t, m, _) in self._port().remote_presence().items()}
        written = await self.presence.resync_remote(
            client, remote, skip=lambda p: "presence:" + p in self._changed_during_sync
        )
        items = await self.presence.read_local(client)
        for item in items or ():
            parsed = self.presence.parse(item)
            if parsed is not None and written.get(parsed[0]) == parsed[1]:
                continue  # our own copy of a remote presence
            self._local_presence(item, from_list=True)
        return len(items or ())

    async def _resync_mwi(self, client: AmiClient) -> int:
        """Remote counts written, then the local mailboxes read: through res_mwi_external_ami
        (MWIUpdate, MWIGet) where it is loaded, else through app_voicemail's own list."""
        remote = {
            m: (new, old)
            for m, (new, old, _) in self._port().remote_mwi().items()
            if self.shares_mailbox(m)
        }
        listing = None
        self._mwiget_ok = self._mwiupdate_ok = True  # this Asterisk may differ from the last
        self.mwi_not_shown = []
        if self._mwiget_ok:
            try:
                listing = await client.list_action("MWIGet", Mailbox="/.*/")
            except AmiActionError as exc:
                if _UNKNOWN_COMMAND not in exc.message.lower():
                    raise
                self._mwiget_ok = self._mwiupdate_ok = False
        if listing is None:
            return await self._resync_voicemail(client, remote)
        for box, (new, old) in remote.items():
            if "mwi:" + box in self._changed_during_sync:
                continue  # changed on this Asterisk meanwhile, so the cluster's now: keep it
            await self._write_mwi(box, new, old)
        if remote:
            # Read again, now that Asterisk holds the cluster's counts: the first list shows
            # copies written before the link went down, and a copy that the cluster has changed
            # since would pass for a local change and bring the stale counts back everywhere.
            listing = await client.list_action("MWIGet", Mailbox="/.*/")
        for item in listing.items:
            box = item.get("Mailbox") or ""
            counts = (item.get("NewMessages"), item.get("OldMessages"))
            if remote.get(box) == (_count(counts[0]), _count(counts[1])):
                continue  # our own copy of a remote mailbox
            self._local_mwi(box, counts[0], counts[1], from_list=True)
        return len(listing.items)

    async def _resync_voicemail(self, client: AmiClient, remote: dict[str, tuple[int, int]]) -> int:
        """No res_mwi_external_ami. With app_voicemail (which res_mwi_external cannot load
        beside: both would be Asterisk's voicemail provider), read its mailboxes' counts; remote
        counts cannot be written over AMI at all: say which mailboxes that leaves dark."""
        try:
            users = await client.list_action("VoicemailUsersList")
        except AmiActionError as exc:
            if _UNKNOWN_COMMAND not in exc.message.lower():
                raise
            users = None
        self.voicemail = users is not None
        self.mwi_not_shown = sorted(remote)
        shown = ", ".join(self.mwi_not_shown[:20]) + (
            f" and {len(remote) - 20} more" if len(remote) > 20 else ""
        )
        if users is None:
            log.error(
                "Asterisk at %s has neither res_mwi_external_ami nor app_voicemail: mailbox "
                "counts are shared only from MessageWaiting events seen while connected, and "
                "the %d remote mailbox(es) cannot be shown on this server (%s). Load "
                "res_mwi_external and res_mwi_external_ami (docs/asterisk.md §1)",
                client.peer,
                len(remote),
                shown or "none yet",
            )
            return 0
        log.warning(
            "Asterisk at %s runs app_voicemail, so res_mwi_external (AMI MWIUpdate) cannot load "
            "beside it: the %d remote mailbox(es) cannot be shown on this server's phones over "
            "AMI (%s). Its own mailboxes are shared. Link it over SIP as well ([asterisk.sip]) "
            "to show remote mailboxes; see docs/asterisk.md, 'Voicemail on the receiving server'",
            client.peer,
            len(remote),
            shown or "none yet",
        )
        for item in users.items:
            number, context = item.get("VoiceMailbox") or "", item.get("VMContext") or ""
            if number:
                self._local_mwi(
                    f"{number}@{context or 'default'}",
                    item.get("NewMessageCount"),
                    item.get("OldMessageCount"),
                    from_list=True,
                )
        return len(users.items)
