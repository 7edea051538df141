"""The AMI link's resync after every (re)connect (the client's ``on_connected`` hook).

Theory of operation
-------------------
Rewrite every counterpart from :meth:`~pbxmesh.links.base.LinkPort.remote_devices`; read
``DeviceStateList``, report local devices and set to INVALID every counterpart Asterisk still
holds (from its AstDB, e.g. after a restart) that the cluster no longer has; rewrite remote
MWI, then read ``MWIGet`` and report the mailboxes that are not our own copies (without
res_mwi_external_ami: app_voicemail's list, and say which remote mailboxes stay dark); the
same for presence. A change event seen while a list is being read wins over that list's item
(it is newer: :meth:`~.session.Session.superseded`).

Before all that, the session's AMI event filters are set (``Action: Filter``) so that Asterisk
sends only the events the link reads, and none about a counterpart.
"""

from __future__ import annotations

import logging
import re
from typing import Final, Protocol

from ...errors import AmiActionError
from ...states import DeviceState
from ..base import LinkPort
from .client import AmiClient
from .codec import Action, Event
from .presence import PresenceMirror
from .session import Session
from .writer import UNKNOWN_COMMAND, AmiWriter

__all__ = ["EVENTS", "AmiResync", "LocalSide"]

#: the AMI link's logger: its resync's lines keep the name administrators filter on
log = logging.getLogger(__package__ + ".link")

#: The asynchronous events the link reads; Asterisk may drop every other one for us.
EVENTS: Final = ("DeviceStateChange", "MessageWaiting", "PresenceStateChange")


def _count(text: str | None) -> int:
    try:
        return int(text or "0")
    except ValueError:
        return -1


class LocalSide(Protocol):
    """What the resync needs of the link: its naming, selection and local reports."""

    def port_now(self) -> LinkPort: ...
    def shares_device(self, device: str) -> bool: ...
    def shares_mailbox(self, mailbox: str) -> bool: ...
    def counterpart(self, device: str) -> str: ...
    def is_counterpart(self, device: str) -> bool: ...
    def local_device(self, device: str, state_text: str, *, from_list: bool = False) -> None: ...
    def local_mwi(
        self, mailbox: str, new_text: str | None, old_text: str | None, *, from_list: bool = False
    ) -> None: ...
    def local_presence(self, event: Event, *, from_list: bool = False) -> None: ...


class AmiResync:
    """One resync per connection; see the module docstring."""

    def __init__(
        self,
        local: LocalSide,
        writer: AmiWriter,
        session: Session,
        presence: PresenceMirror,
        *,
        counterpart_prefix: str,
        share_mwi: bool,
        share_devices: bool = True,
    ) -> None:
        self.local = local
        self.writer = writer
        self.session = session
        self.presence = presence
        self._cp_prefix = counterpart_prefix
        self._share_mwi = share_mwi
        self._share_devices = share_devices
        self._filters_refused = False
        self._mwiget_ok = True
        #: Asterisk runs app_voicemail (read at resync); remote mailboxes it cannot show
        self.voicemail = False

    def event_filters(self) -> tuple[str, str]:
        """The two AMI event filters (POSIX ERE) that spare the link every event it does not
        read: only :data:`EVENTS`, and none about a counterpart (the echo of our own writes).
        List answers (DeviceStateList, ExtensionStateList, MWIGet) are not filtered."""
        include = "Event: (" + "|".join(EVENTS) + ")"
        prefix = re.sub(r"([.^$*+?()\[\]{}|\\])", r"\\\1", self._cp_prefix)
        return include, f"!Device: {prefix}"

    async def set_filters(self, client: AmiClient) -> None:
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

    async def run(self, client: AmiClient) -> None:
        """The whole resync; the writer waits meanwhile and is woken at the end."""
        local, writer = self.local, self.writer
        self.session.begin()
        writer.forget()
        try:
            await self.set_filters(client)
            expected: dict[str, DeviceState] = {}
            for device, state in local.port_now().remote_devices().items():
                if local.shares_device(device):
                    expected[local.counterpart(device)] = state
            for name, state in expected.items():
                await writer.write_device(name, state)
            # A link that shares no device (beside a SIP link) reads none: DeviceStateList
            # needs res_manager_devicestate, which such an Asterisk need not load.
            items = (
                (await client.list_action("DeviceStateList")).items if self._share_devices else ()
            )
            stale = 0
            for item in items:
                device = item.get("Device") or ""
                if local.is_counterpart(device):
                    if device not in expected and item.get("State") != "INVALID":
                        stale += 1
                        await writer.write_device(device, DeviceState.INVALID)
                    continue
                local.local_device(device, item.get("State") or "", from_list=True)
            mailboxes = await self._resync_mwi(client) if self._share_mwi else 0
            presentities = await self._resync_presence(client)
        finally:
            self.session.syncing = False
            writer.wake.set()
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
        remote = {
            p: (s, t, m) for p, (s, t, m, _) in self.local.port_now().remote_presence().items()
        }
        written = await self.presence.resync_remote(
            client, remote, skip=lambda p: "presence:" + p in self.session.changed
        )
        items = await self.presence.read_local(client)
        for item in items or ():
            parsed = self.presence.parse(item)
            if parsed is not None and written.get(parsed[0]) == parsed[1]:
                continue  # our own copy of a remote presence
            self.local.local_presence(item, from_list=True)
        return len(items or ())

    async def _resync_mwi(self, client: AmiClient) -> int:
        """Remote counts written, then the local mailboxes read: through res_mwi_external_ami
        (MWIUpdate, MWIGet) where it is loaded, else through app_voicemail's own list."""
        local, writer = self.local, self.writer
        remote = {
            m: (new, old)
            for m, (new, old, _) in local.port_now().remote_mwi().items()
            if local.shares_mailbox(m)
        }
        listing = None
        self._mwiget_ok = writer.mwiupdate_ok = True  # this Asterisk may differ from the last
        writer.mwi_not_shown = []
        if self._mwiget_ok:
            try:
                listing = await client.list_action("MWIGet", Mailbox="/.*/")
            except AmiActionError as exc:
                if UNKNOWN_COMMAND not in exc.message.lower():
                    raise
                self._mwiget_ok = writer.mwiupdate_ok = False
        if listing is None:
            return await self._resync_voicemail(client, remote)
        for box, (new, old) in remote.items():
            if "mwi:" + box in self.session.changed:
                continue  # changed on this Asterisk meanwhile, so the cluster's now: keep it
            await writer.write_mwi(box, new, old)
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
            local.local_mwi(box, counts[0], counts[1], from_list=True)
        return len(listing.items)

    async def _resync_voicemail(self, client: AmiClient, remote: dict[str, tuple[int, int]]) -> int:
        """No res_mwi_external_ami. With app_voicemail (which res_mwi_external cannot load
        beside: both would be Asterisk's voicemail provider), read its mailboxes' counts; remote
        counts cannot be written over AMI at all: say which mailboxes that leaves dark."""
        try:
            users = await client.list_action("VoicemailUsersList")
        except AmiActionError as exc:
            if UNKNOWN_COMMAND not in exc.message.lower():
                raise
            users = None
        self.voicemail = users is not None
        self.writer.mwi_not_shown = sorted(remote)
        shown = ", ".join(self.writer.mwi_not_shown[:20]) + (
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
                self.local.local_mwi(
                    f"{number}@{context or 'default'}",
                    item.get("NewMessageCount"),
                    item.get("OldMessageCount"),
                    from_list=True,
                )
        return len(users.items)
