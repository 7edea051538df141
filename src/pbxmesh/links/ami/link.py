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
snapshot is never written after a newer change (``writer.py``, ``session.py``).

**No echo.** ``DeviceStateChange`` for a name matching the counterpart template is never
reported (whoever wrote it). For MWI the link remembers each count it applied with
``MWIUpdate`` and swallows the ``MessageWaiting`` that echoes it; a different count for that
mailbox is a local change and is reported, and drops a remote count still queued for that
mailbox (older than the local change, it would otherwise be written over it). (The cluster's
own echo -- our own slots coming back -- is the node's business: a link is never told its own
origin's changes.)

**Resync after every reconnect** (the client's ``on_connected`` hook, ``resync.py``): rewrite
every counterpart from :meth:`~pbxmesh.links.base.LinkPort.remote_devices`; read
``DeviceStateList``, report local devices and set to INVALID every counterpart Asterisk still
holds (from its AstDB, e.g. after a restart) that the cluster no longer has; rewrite remote
MWI, then read ``MWIGet`` and report the mailboxes that are not our own copies. A change event
seen while a list is being read wins over that list's item (it is newer).

Mailbox ids without ``@context`` are reported as ``box@default`` (Corosync does the same).

**Presence** (``Interest.PRESENCE``, ``presence.py`` beside this file): ``PresenceStateChange``
events and ``PresenceStateList`` at resync report this server's presentities; remote ones are
written with ``Setvar PRESENCE_STATE(CustomPresence:NAME)=state,B64,B64,e`` through the same
writer, after device states and MWI; echoes of those writes are swallowed. It needs
``func_presencestate`` and ``res_manager_presencestate``; without them it is said once and
skipped.

**Kept hints** (``[asterisk.hints]``, ``hints.py``): a :class:`~.hints.HintKeeper` is told every
remote aggregate and presentity the link sees, and keeps a dialplan hint for each other
server's extension over this same AMI session (also beside a SIP link, where this link shares
nothing else).
"""

from __future__ import annotations

import dataclasses
import logging

from ...eid import EID
from ...errors import AmiActionError, PbxmeshError, StateError
from ...presence import PresenceState
from ...states import DeviceState, parse_state
from ...store import normalize_mailbox
from ..base import Hint, Interest, LinkPort
from ..common import LinkBase
from .client import AmiClient, AmiConfig
from .codec import Event
from .config import AmiLinkConfig, hints_of
from .counterparts import counterpart_name
from .hints import HintKeeper
from .presence import PresenceMirror
from .resync import EVENTS, AmiResync
from .session import Session
from .writer import WRITE_RETRY_PAUSE, WRITE_WINDOW, AmiWriter

__all__ = ["EVENTS", "WRITE_RETRY_PAUSE", "WRITE_WINDOW", "AmiLink", "AmiLinkConfig", "hints_of"]

log = logging.getLogger(__name__)


class AmiLink(LinkBase):
    """Links one Asterisk to the node over AMI; see the module docstring.

    Composed of a :class:`~.session.Session` (one connection's sync state), an
    :class:`~.writer.AmiWriter` (cluster -> Asterisk) and an :class:`~.resync.AmiResync`; the
    link itself reads Asterisk's events and reports them.
    """

    kind = "ami"
    interest = Interest.REMOTE_DEVICES | Interest.MWI | Interest.PRESENCE
    log = log

    def __init__(self, ami: AmiConfig, config: AmiLinkConfig | None = None) -> None:
        self.config = config or AmiLinkConfig()
        super().__init__(self.config.selection, self.config.down_grace)
        prefix, _, suffix = self.config.template.partition("{device}")
        self._cp_prefix, self._cp_suffix = prefix, suffix
        self.client = AmiClient(
            ami,
            on_connected=self._resync,
            on_event=self._on_event,
            on_disconnected=self._on_disconnected,
        )
        self._owners: dict[str, str] = {}
        self.presence = PresenceMirror(
            self.config.presence_include,
            self.config.presence_exclude,
            self.config.share_presence,
        )
        self.session = Session()
        self.writer = AmiWriter(self.client, self.presence, self.session)
        self.resync = AmiResync(
            self,
            self.writer,
            self.session,
            self.presence,
            counterpart_prefix=prefix,
            share_mwi=self.config.share_mwi,
            share_devices=bool(self.config.include),
        )
        #: counterpart events (echoes of our own writes) swallowed, and MWI echoes
        self.echoes = 0
        #: the hints kept for the other servers' extensions ([asterisk.hints]), if configured
        self.hint_keeper = (
            HintKeeper(self.config.hints, self.client, self.session, self.hint_devices)
            if self.config.hints is not None
            else None
        )

    async def start(self, port: LinkPort) -> None:
        self.port = port
        self.writer.start()
        if self.hint_keeper is not None:
            self.hint_keeper.start()
        await self.client.start()

    async def close(self) -> None:
        self._down_timer.cancel()
        self.port = None  # nothing is reported or withdrawn after close
        await self.client.close()
        self._down_timer.cancel()
        await self.writer.close()
        if self.hint_keeper is not None:
            await self.hint_keeper.close()

    # -- status --------------------------------------------------------------------------------

    def _address(self) -> str:
        return self.client.peer

    def _connected(self) -> bool:
        return self.client.connected

    def _counts(self) -> dict[str, int]:
        client = self.client
        return {
            "reconnects": max(0, client.connections - 1),
            "published": self.published + self.presence.published,
            "queue_depth": self.queue_depth,
            "protocol_errors": client.protocol_errors,
            "dropped_events": client.dropped_events,
        }

    def _extra(self) -> dict[str, object]:
        return {
            "echoes": self.echoes + self.presence.echoes,
            "skipped": self.skipped,
            "withdrawals": self.withdrawals,
            "voicemail": self.voicemail,
            "mwi_not_shown": len(self.mwi_not_shown),
            "presence": self.presence.enabled and self.presence.available,
        }

    @property
    def voicemail(self) -> bool:
        """Asterisk runs app_voicemail (read at resync)."""
        return self.resync.voicemail

    @property
    def mwi_not_shown(self) -> list[str]:
        """Remote mailboxes this Asterisk cannot show."""
        return self.writer.mwi_not_shown

    @property
    def queue_depth(self) -> int:
        """Remote states and MWI waiting to be written to Asterisk (superseded by name)."""
        return self.writer.queue_depth

    async def hints(self) -> list[Hint]:
        """Asterisk's hints (``ExtensionStateList``) by context and extension, whatever order
        the Asterisk version lists them in; raises AmiError when not connected."""
        try:
            answer = await self.client.list_action("ExtensionStateList")
        except AmiActionError as exc:
            if "no dialplan hints" in exc.message.lower():
                return []
            raise
        keeper = self.hint_keeper
        if keeper is None:
            return hints_of(answer.items)
        return [
            dataclasses.replace(h, kept=keeper.is_kept(h.exten, h.context))
            for h in hints_of(answer.items)
        ]

    async def wait_idle(self) -> None:
        """Wait until no resync runs and every queued remote write was sent (needs a link)."""
        await self.writer.wait_idle()

    def event_filters(self) -> tuple[str, str]:
        """The AMI event filters this link asks Asterisk for (see :mod:`.resync`)."""
        return self.resync.event_filters()

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
        return not self.is_counterpart(device) and super().shares_device(device)

    def hint_devices(self, device: str) -> str:
        """What a kept hint for the remote ``device`` names: the device and its counterpart
        when this link shares it (the remote state lands on the counterpart), the device alone
        when it does not (beside a SIP link Asterisk aggregates the remote EIDs itself)."""
        if self.shares_device(device):
            return f"{device}&{self.counterpart(device)}"
        return device

    # -- cluster → local -----------------------------------------------------------------------

    def remote_device(self, device: str, state: DeviceState) -> None:
        """The other servers' aggregate for ``device`` changed (INVALID: none left)."""
        if self.hint_keeper is not None:
            self.hint_keeper.remote_device(device, state)
        if self.shares_device(device):
            self.writer.devices[self.counterpart(device)] = state
            self.writer.wake.set()

    def remote_mwi(self, mailbox: str, new: int, old: int, writer: EID) -> None:
        """Another server wrote ``mailbox@context`` last."""
        if self.shares_mailbox(mailbox):
            self.writer.mwi[mailbox] = (new, old)
            self.writer.wake.set()

    def remote_presence(
        self, presentity: str, state: PresenceState, subtype: str, message: str, writer: EID
    ) -> None:
        """Another server wrote the presence of ``presentity`` last."""
        if self.hint_keeper is not None:
            self.hint_keeper.presentity(presentity)
        if self.presence.remote(presentity, (state, subtype, message)):
            self.writer.wake.set()

    # -- local → cluster -----------------------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        if event.name == "DeviceStateChange":
            self.local_device(event.get("Device") or "", event.get("State") or "")
        elif event.name == "MessageWaiting":
            self.local_mwi(event.get("Mailbox") or "", event.get("New"), event.get("Old"))
        elif event.name == "PresenceStateChange":
            self.local_presence(event)

    def local_presence(self, event: Event, *, from_list: bool = False) -> None:
        """A ``PresenceStateChange`` (or ``PresenceStateList`` item, ``from_list``)."""
        parsed = self.presence.parse(event)
        if parsed is None:
            return
        presentity, value = parsed
        if self.hint_keeper is not None:
            self.hint_keeper.presentity(presentity)
        if not from_list and self.presence.is_echo(presentity, value):
            if self.presence.dirty:
                self.writer.wake.set()  # a change here that our writes in flight undid: redo
            return
        if not self.presence.shares(presentity):
            return
        if self.session.superseded("presence:" + presentity, from_list=from_list):
            return
        port = self.port_now()
        self.presence.report(port.presence, presentity, value)
        self.presence.dirty.pop(presentity, None)  # older than this change: see local_mwi

    def local_device(self, device: str, state_text: str, *, from_list: bool = False) -> None:
        """A ``DeviceStateChange`` (or ``DeviceStateList`` item, ``from_list``)."""
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
        if self.session.superseded(device, from_list=from_list):
            return  # an event newer than this list item was already published
        port = self.port_now()
        self._report(device, lambda: port.device(device, state))

    def local_mwi(
        self,
        mailbox: str,
        new_text: str | None,
        old_text: str | None,
        *,
        from_list: bool = False,
    ) -> None:
        """A ``MessageWaiting`` (or an item of a mailbox list, ``from_list``)."""
        try:
            counts = (int(new_text or "0"), int(old_text or "0"))
        except ValueError:
            log.warning("bad MessageWaiting dropped mailbox=%s", mailbox)
            return
        if not from_list:
            echo, restore = self.writer.mwi_echo.seen(mailbox, counts)
            if restore is not None:  # a change here that our writes in flight undid: redo
                self.writer.mwi.setdefault(mailbox, restore)
                self.writer.wake.set()
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
        if self.session.superseded("mwi:" + box, from_list=from_list):
            return
        port = self.port_now()
        if not self._report(box, lambda: port.mwi(box, *counts)):
            return
        # A remote count still queued for this mailbox is older than this change, which the
        # node has just made the cluster's: written after it, it would undo it here alone.
        self.writer.mwi.pop(box, None)

    def port_now(self) -> LinkPort:
        """The port to report through (an error before start)."""
        if self.port is None:
            raise PbxmeshError("the AMI link reports nothing before start()")
        return self.port

    # -- Asterisk gone, and back ---------------------------------------------------------------

    def _on_disconnected(self) -> None:
        self.session.lost()
        if self.port is not None and self.config.include:
            # (an AMI link that shares no device, e.g. beside SIP, withdraws nothing)
            self._went_down()

    async def _resync(self, client: AmiClient) -> None:
        self._came_up()
        await self.resync.run(client)
        if self.hint_keeper is not None:
            port = self.port_now()
            self.hint_keeper.reset(port.remote_devices(), set(port.remote_presence()))
        self._synced()
