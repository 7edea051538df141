"""The link to one Asterisk over SIP PUBLISH (a :class:`~pbxmesh.links.base.Link`).

Theory of operation
-------------------
pbxmesh becomes the local Asterisk's one ``res_pjsip_publish_asterisk`` peer. Asterisk then
does the aggregation itself, in its own per-EID cache, so a hint such as
``exten => 1234,hint,Custom:mystate`` shows the cluster value unchanged, and remote MWI
reaches phones through res_pjsip_mwi without res_mwi_external (so app_voicemail may stay).

**Local → cluster.** Asterisk's ``outbound-publish`` objects send every change of its own
(local-EID) device states and mailboxes to :attr:`SipLinkConfig.listen`, Request-URI user
:attr:`SipLinkConfig.resource`. Each PUBLISH goes through the RFC 3903 server
(:class:`~.publication.PublicationServer`: 200 with a fresh ``SIP-ETag``, refresh and removal
by ``SIP-If-Match``/``Expires``, 412/489/415/400 for the bad cases, a grace period past
expiry for Asterisk's late refresh). A ``devicestate`` body becomes this server's own state
(:meth:`~pbxmesh.links.base.LinkPort.device`), a ``mailboxstate`` body its own counts. The
EID in Asterisk's bodies is remembered: it is the one EID never to send back.

**Cluster → local.** The node tells the link every *other* origin's slot
(``Interest.ORIGIN_DEVICES``) and remote mailboxes (``Interest.MWI``). Each goes to Asterisk
as a ``devicestate``/``mailboxstate`` body under that origin's EID, through a
:class:`~.client.PublishClient` with several publications per EID (a device always on the
same one, so its states never overtake each other) -- Asterisk's own publisher keeps one
PUBLISH in flight per publication. Asterisk aggregates each EID's slot with its own.

**A departed server stops counting at once.** Asterisk never clears a remote EID's state (not
on unpublish, expiry or the publisher's death). So when a slot is removed (its server left,
or the device was dropped) the link publishes a value that never wins under that EID
(:func:`neutral`): in Asterisk's aggregation INVALID is the identity and UNKNOWN beats only
INVALID, so against any real state of another server both vanish. Where nothing else holds
the device they differ, and the link picks what Asterisk would show had that server never
published: UNKNOWN (``Idle``) for ``Custom:`` devices, which func_devstate reads UNKNOWN
when unset; INVALID (``Unavailable``) for the rest, a device this server does not have.
The node does not tell a removed slot from one whose state is INVALID, so an INVALID
``Custom:`` state of another server is published UNKNOWN as well: the one cell of the
aggregation table that differs is ``Custom:`` INVALID on every server (``Idle``, natively
``Unavailable``).

**Never Asterisk's own EID.** Asterisk takes a body under its own EID as its local state and
re-publishes it as its own. An origin whose EID equals the Asterisk's (two servers configured
with one EID) is published under a stand-in EID (:func:`stand_in`) and logged as an error.

What Asterisk holds from the link, (EID, device) pairs, is kept in
:attr:`SipLinkConfig.state_file` (written each keep-alive tick when changed, and at close): a
pbxmesh restarted while Asterisk kept running still neutralises the states of servers that
left meanwhile.

**Link up and resync.** The link is *connected* while Asterisk answers an ``OPTIONS`` probe
every :attr:`SipLinkConfig.keepalive` seconds.
While it does not, the link is *disconnected*, and says why at once (no answer at that
address, a refused TCP connection) and again now and then with a count (:mod:`.diagnosis`),
whether it was ever up or not. While Asterisk answers but refuses our PUBLISHes (a missing
module, a pjsip.conf object that does not match), the link is *degraded*: each distinct
refusal is logged once, translated into what to fix, with reminders at a doubling interval;
a ``refresh`` is re-sent now and then, and the first PUBLISH Asterisk accepts again makes the
link connected and re-publishes everything. ``status`` shows the state and its reason.

On every link-up the link resyncs: a ``refresh`` body, so Asterisk dumps its own states back;
every other origin's slot and remote mailbox again; ``UNKNOWN`` for every (EID, device) it
published earlier that the cluster no longer holds. A ``refresh`` from Asterisk (sent when
it loads or reloads the module, i.e. after a restart) starts the same re-publication without
the refresh of our own.

Both directions may use digest (``username``/``secret``): Asterisk's PUBLISH is challenged
(401) and Asterisk's challenge to ours is answered. Methods other than PUBLISH/OPTIONS get
405, a Request-URI user other than :attr:`SipLinkConfig.resource` 404, a PUBLISH from an
address other than Asterisk's (the host of ``uri``, when it is an IP address) 403; nothing a
peer sends stops the link (see :mod:`.endpoint`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Literal

from ...eid import EID
from ...errors import LinkError, PbxmeshError
from ...states import DeviceState
from ...tasks import cancel_and_wait
from ..base import Interest, LinkPort
from ..common import LinkBase, Selection
from .bodies import (
    Body,
    DeviceStateBody,
    MailboxStateBody,
    RefreshBody,
)
from .client import PublishClient, PublishConfig, PublishFailure
from .config import SipLinkConfig, neutral, stand_in, uri_hostport
from .diagnosis import no_answer, refused
from .driver import PublishDriver
from .endpoint import SipEndpoint, Source
from .health import LOCAL_FAILURES, Health
from .held import Held
from .inbound import SERVER, Inbound
from .message import Request, Response
from .transaction import Timers

__all__ = ["SipLink", "SipLinkConfig", "stand_in", "uri_hostport"]

log = logging.getLogger(__name__)


class SipLink(LinkBase):
    """Links one Asterisk to the node over SIP PUBLISH; see the module docstring."""

    kind = "sip"
    interest = Interest.ORIGIN_DEVICES | Interest.MWI
    log = log
    gone_words = ("down", "it answers again")

    def __init__(self, config: SipLinkConfig, *, timers: Timers | None = None) -> None:
        self.config = config
        super().__init__(
            Selection(
                config.include,
                config.exclude,
                config.share_mwi,
                config.mwi_include,
                config.mwi_exclude,
            ),
            config.down_grace,
        )
        host, lport = config.listen
        self.endpoint = SipEndpoint(host, lport, self._handle, timers=timers)
        self.inbound = Inbound(config, lambda: self.endpoint.port, self._apply)
        self.server = self.inbound.server
        self.client = PublishClient(
            PublishConfig(
                uri=config.uri,
                expires=config.expires,
                slots=config.slots,
                username=config.username,
                secret=config.secret,
            )
        )
        self.driver = PublishDriver(
            self.client, self.endpoint, config.dest, config.transport, on_answer=self._answered
        )
        self.asterisk_eid: EID | None = config.asterisk_eid
        #: (EID as published, device) -> state last published that is not UNKNOWN
        self.held = Held(config.state_file)
        self._alive = False
        self._started = False
        self._tasks: list[asyncio.Task[None]] = []
        self._resync_wanted = asyncio.Event()
        self._resync_refresh = False
        self._syncing = False
        self.refreshes_answered = 0  # re-publications Asterisk asked for with a refresh
        self.reconnects = 0
        self.collisions = 0
        self.health = Health(f"{config.dest[0]}:{config.dest[1]}")

    # -- life cycle ------------------------------------------------------------------------

    async def start(self, port: LinkPort) -> None:
        self.port = port
        if self._started:
            return
        try:
            await self.endpoint.start()
        except OSError as exc:
            host, lport = self.config.listen
            raise LinkError(f"cannot listen for SIP on {host}:{lport}: {exc}") from exc
        self.held.load()
        self._started = True
        self.driver.start()
        self._tasks = [
            asyncio.create_task(self._keepalive(), name="sip link keepalive"),
            asyncio.create_task(self._resync_loop(), name="sip link resync"),
        ]

    async def close(self) -> None:
        self._down_timer.cancel()
        if not self._started:
            return
        self._started = False
        self._alive = False
        await cancel_and_wait(*self._tasks)
        self._tasks = []
        await self.driver.close()
        await self.endpoint.close()
        self.held.save()

    @property
    def state(self) -> Literal["connected", "degraded", "disconnected"]:
        """Connected: Asterisk answers and takes our PUBLISHes; degraded: it answers and
        refuses them; disconnected: it does not answer."""
        return self.health.state(self._alive)

    @property
    def reason(self) -> str | None:
        """Why the link is not connected, in words an administrator acts on."""
        return self.health.reason(self._alive)

    @property
    def probes_failed(self) -> int:
        return self.health.probes_failed

    @property
    def publishes_refused(self) -> int:
        return self.health.publishes_refused

    def _address(self) -> str:
        host, port = self.config.dest
        return f"{host}:{port}"

    def _connected(self) -> bool:
        return self.state == "connected"

    def _reachable(self) -> bool:
        return self._alive

    def _counts(self) -> dict[str, int]:
        return {
            "reconnects": self.reconnects,
            "queue_depth": self.client.queued if self._started else 0,
            "protocol_errors": self.inbound.protocol_errors + self.endpoint.stats["malformed"],
        }

    def _extra(self) -> dict[str, object]:
        lhost, lport = self.config.listen
        return {
            "state": self.state,
            "reason": self.reason,
            "listen": f"{lhost}:{self.endpoint.port or lport}",
            "asterisk_eid": str(self.asterisk_eid) if self.asterisk_eid else None,
            "publications_in": len(self.server),
            "in_flight": self.client.in_flight,
            "publish_failures": self.driver.failures,
            "eid_collisions": self.collisions,
            "refreshes_answered": self.refreshes_answered,
            "probes_failed": self.probes_failed,
            "publishes_refused": self.publishes_refused,
            "withdrawals": self.withdrawals,
            "skipped": self.skipped,
            "retransmissions_absorbed": self.endpoint.stats["retransmissions_absorbed"],
            "timeouts": self.endpoint.stats["timeouts"],
        }

    async def wait_idle(self) -> None:
        while True:
            await self.driver.wait_idle()
            if not self._syncing and not self._resync_wanted.is_set() and self.client.idle:
                return
            await asyncio.sleep(0.01)

    # -- naming ----------------------------------------------------------------------------

    def wire_eid(self, origin: EID) -> EID:
        """The EID ``origin``'s states are published under to this Asterisk."""
        if origin == self.asterisk_eid:
            return stand_in(origin)
        return origin

    def _learn_eid(self, eid: EID) -> None:
        if eid == self.asterisk_eid:
            return
        previous, self.asterisk_eid = self.asterisk_eid, eid
        log.info("SIP link: Asterisk's entity id is %s (was %s)", eid, previous or "unknown")
        if self.port is None:
            return
        origins = {o for _, o, _ in self.port.origin_devices()}
        origins |= {w for _, _, w in self.port.remote_mwi().values()}
        if eid in origins or previous in origins:
            self.collisions += 1
            log.error(
                "another server uses this Asterisk's entity id %s: its states are published "
                "here under %s; give every server its own entityid (asterisk.conf)",
                eid,
                stand_in(eid),
            )
            self._want_resync(refresh=False)

    # -- cluster → Asterisk ----------------------------------------------------------------

    def origin_device(self, device: str, origin: EID, state: DeviceState) -> None:
        if self._started and self.shares_device(device):
            self._send_device(device, self.wire_eid(origin), state)

    def origin_left(self, origin: EID) -> None:
        log.info("SIP link: server %s left; its states were neutralised here", origin)

    def remote_mwi(self, mailbox: str, new: int, old: int, writer: EID) -> None:
        if self._started and self.shares_mailbox(mailbox):
            self._send(MailboxStateBody(mailbox, new, old, self.wire_eid(writer)))

    def _send_device(self, device: str, eid: EID, state: DeviceState) -> None:
        if state is DeviceState.INVALID:
            state = neutral(device)  # removed: a value that never wins (module docstring)
        key = (eid, device)
        if state is DeviceState.UNKNOWN or state is DeviceState.INVALID:
            if self.held.states.pop(key, None) is None:
                return  # Asterisk holds nothing there (and would swallow UNKNOWN anyway)
        elif self.held.states.get(key) is not state:
            self.held.states[key] = state
        self.held.dirty = True
        self._send(DeviceStateBody(device, state, eid))

    def _send(self, body: Body) -> None:
        try:
            self.driver.publish(body)
        except PbxmeshError as exc:  # pragma: no cover - bodies are validated on creation
            log.warning("SIP link: not published: %s", exc)

    # -- Asterisk → cluster ----------------------------------------------------------------

    def _handle(self, request: Request, source: Source) -> Response | None:
        return self.inbound.handle(request, source)

    def _apply(self, body: Body) -> None:
        self._learn_eid(body.eid)
        port = self.port
        if port is None:
            return
        match body:
            case RefreshBody():
                # Asterisk (re)loaded the module. While it boots it answers nothing, so the
                # keep-alive sees it down, then up, and that resync re-publishes everything;
                # a refresh while the link is up (a reload, a restart quicker than the probe)
                # is answered here.
                log.info("SIP link: Asterisk %s asked for a refresh", body.eid)
                if self._alive:
                    self._want_resync(refresh=False)
            case DeviceStateBody():
                if self.shares_device(body.device):
                    self._report(body.device, lambda: port.device(body.device, body.state))
            case MailboxStateBody():
                if self.shares_mailbox(body.uniqueid):
                    self._report(body.uniqueid, lambda: port.mwi(body.uniqueid, body.new, body.old))

    # -- liveness and resync ---------------------------------------------------------------

    def _set_alive(self, alive: bool) -> None:
        if alive == self._alive:
            return
        self._alive = alive
        host, port = self.config.dest
        self._came_up()
        if not alive and self.port is not None:
            self._went_down()
        if alive:
            self.health.up()
            log.info("SIP link up: Asterisk answers at %s:%d", host, port)
            self._want_resync(refresh=True)
            self.driver.retry_now()
            self.endpoint.retransmit_now()
        else:
            self.reconnects += 1
            self.health.down()

    def _no_answer(self, *, refused_tcp: bool) -> None:
        reason = no_answer(self.config.dest, self.config.transport, refused=refused_tcp)
        self.health.no_answer(reason, asyncio.get_running_loop().time())

    def _answered(self, package: str, status: int, failure: PublishFailure | None) -> None:
        """Every final answer to our PUBLISHes (from the driver)."""
        now = asyncio.get_running_loop().time()
        if self.health.answered(package, status, failure, now, self._explain):
            self._want_resync(refresh=False)  # what it refused meanwhile was dropped

    def _explain(self, failure: PublishFailure) -> str:
        return refused(
            failure,
            dest=self.config.dest,
            resource=self.config.resource,
            listen_host=self.config.listen[0],
            credentials=self.config.username is not None,
        )

    async def _probe(self) -> bool:
        host, port = self.config.dest
        request = Request(
            "OPTIONS",
            f"sip:{host}:{port}" if ":" not in host else f"sip:[{host}]:{port}",
            (
                ("From", f"<sip:{self.config.resource}@{self.config.listen[0]}>;tag=probe"),
                ("To", f"<sip:{host}>"),
                ("Call-ID", f"probe-{id(self):x}-{self.endpoint.port}"),
                ("CSeq", "1 OPTIONS"),
                ("Max-Forwards", "70"),
                ("User-Agent", SERVER),
            ),
        )
        try:
            async with asyncio.timeout(self.config.keepalive_timeout):
                answer = await self.endpoint.request(request, (host, port), self.config.transport)
        except TimeoutError:
            self._no_answer(refused_tcp=False)
            return False
        if answer.status in LOCAL_FAILURES:
            self._no_answer(refused_tcp=answer.status == 503)
            return False
        return True

    async def _keepalive(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            up = await self._probe()
            if up != self._alive:
                self._set_alive(up)
            if up and self.port is not None and self.health.retry_due(loop.time()):
                # While degraded, a refresh now and then tells when Asterisk accepts again.
                self._send(RefreshBody(self.wire_eid(self.port.origin)))
            self.server.expire(loop.time())
            await self.held.save_off_loop()
            await asyncio.sleep(self.config.keepalive)

    def _want_resync(self, *, refresh: bool) -> None:
        self._resync_refresh = self._resync_refresh or refresh
        self._resync_wanted.set()

    async def _resync_loop(self) -> None:
        while True:
            await self._resync_wanted.wait()
            self._resync_wanted.clear()
            refresh, self._resync_refresh = self._resync_refresh, False
            self._syncing = True
            try:
                await self._resync(refresh)
            except PbxmeshError as exc:
                log.warning("SIP link resync failed: %s", exc)
            finally:
                self._syncing = False

    async def _resync(self, refresh: bool) -> None:
        port = self.port
        if port is None:
            return
        if refresh:
            self._send(RefreshBody(self.wire_eid(port.origin)))
        current: dict[tuple[EID, str], DeviceState] = {}
        for device, origin, state in port.origin_devices():
            if self.shares_device(device) and state not in (DeviceState.INVALID,):
                current[(self.wire_eid(origin), device)] = state
        stale = [key for key in self.held.states if key not in current]
        for eid, device in stale:
            self._send(DeviceStateBody(device, neutral(device), eid))
            del self.held.states[(eid, device)]
        for (eid, device), state in current.items():
            self.held.states[(eid, device)] = state
            self._send(DeviceStateBody(device, state, eid))
        self.held.dirty = True
        mailboxes = 0
        for box, (new, old, writer) in port.remote_mwi().items():
            if self.shares_mailbox(box):
                mailboxes += 1
                self._send(MailboxStateBody(box, new, old, self.wire_eid(writer)))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(60):
                await self.driver.wait_idle()
        if refresh:  # one per link-up ("connection"); Asterisk's own refreshes are counted apart
            self._synced()
        else:
            self.refreshes_answered += 1
        log.info(
            "SIP resync done peer=%s:%d remote_devices=%d cleared=%d mailboxes=%d refresh=%s",
            *self.config.dest,
            len(current),
            len(stale),
            mailboxes,
            refresh,
        )
