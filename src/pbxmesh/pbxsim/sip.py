"""The simulator's SIP subset: res_pjsip_publish_asterisk as a real Asterisk runs it, with one
peer (what ``pbxmesh asterisk-config`` configures).

Theory of operation
-------------------
**Inbound** (``inbound-publication`` named ``resource``, ``asterisk-publication`` with
``device_state = yes`` and ``mailbox_state = yes``): a PUBLISH goes through the same RFC 3903
rules as Asterisk's res_pjsip_pubsub (the project's :class:`~pbxmesh.links.sip.publication.
PublicationServer`). Where Asterisk differs from those rules the simulator does what Asterisk
does (reference sip-publish.md §6): an unknown Request-URI user is 404; a body that does not
parse or is not JSON is **500**, not 400/415; no grace period past expiry. A ``devicestate``
body is filed under its EID in the per-EID cache (:meth:`SimPbx.publish_remote_device`) --
under the simulator's **own** EID it is taken as a local state, as Asterisk does; a
``mailboxstate`` raises ``MessageWaiting``; a ``refresh`` makes it dump its local states to
its peer (not to the sender). Publication expiry or removal clears nothing.

**Outbound** (two ``outbound-publish``, one per event package, to ``peer``): every change of a
local slot and every local mailbox update is PUBLISHed with the simulator's EID, one PUBLISH
in flight per publication (Asterisk's limit; queued states are coalesced per device here,
where Asterisk queues them all). At start it sends a ``refresh`` on both packages and dumps its
local states. ``OPTIONS`` is answered 200; other methods 405.
"""

from __future__ import annotations

import asyncio
import logging

from ..eid import EID
from ..errors import RemoteProtocolError
from ..links.sip.bodies import (
    DEVICESTATE,
    MWI,
    DeviceStateBody,
    MailboxStateBody,
    RefreshBody,
    decode_body,
)
from ..links.sip.client import PublishClient, PublishConfig
from ..links.sip.driver import PublishDriver
from ..links.sip.endpoint import SipEndpoint, Source
from ..links.sip.headers import uri_user
from ..links.sip.link import uri_hostport
from ..links.sip.message import Request, Response
from ..links.sip.publication import PublicationConfig, PublicationServer, respond
from ..links.sip.transaction import Timers, make_response
from ..states import DeviceState
from ..store import normalize_mailbox
from .pbx import SimPbx

__all__ = ["SimSip"]

log = logging.getLogger(__name__)
SERVER = "Asterisk PBX pbxmesh-sim"


class SimSip:
    """The SIP side of one simulated Asterisk."""

    def __init__(
        self,
        pbx: SimPbx,
        eid: EID,
        listen: tuple[str, int],
        peer: str,
        *,
        resource: str = "pbxmesh",
        timers: Timers | None = None,
    ) -> None:
        self.pbx, self.eid, self.resource = pbx, eid, resource
        self.endpoint = SipEndpoint(listen[0], listen[1], self._handle, timers=timers)
        # No grace: Asterisk forgets a publication at its expiry.
        self.server = PublicationServer(PublicationConfig(grace=0.0))
        self.client = PublishClient(PublishConfig(uri=peer, slots=1, user_agent=SERVER))
        self.driver = PublishDriver(self.client, self.endpoint, uri_hostport(peer))

    @property
    def port(self) -> int:
        return self.endpoint.port

    async def start(self) -> None:
        await self.endpoint.start()
        self.driver.start()
        self.pbx.local_device_listeners.append(self._local_device)
        self.pbx.local_mwi_listeners.append(self._local_mwi)
        self.driver.publish(RefreshBody(self.eid))
        self._dump()

    async def close(self) -> None:
        for listeners, cb in (
            (self.pbx.local_device_listeners, self._local_device),
            (self.pbx.local_mwi_listeners, self._local_mwi),
        ):
            if cb in listeners:
                listeners.remove(cb)  # type: ignore[arg-type]
        try:
            await self.driver.close()
        finally:
            await self.endpoint.close()

    # -- outbound ----------------------------------------------------------------------------

    def _local_device(self, device: str, state: DeviceState) -> None:
        try:
            self.driver.publish(DeviceStateBody(device, state, self.eid))
        except ValueError as exc:  # a name the body cannot carry
            log.warning("sim sip: not published: %s", exc)

    def _local_mwi(self, mailbox: str, new: int, old: int) -> None:
        try:
            self.driver.publish(MailboxStateBody(normalize_mailbox(mailbox), new, old, self.eid))
        except ValueError as exc:
            log.warning("sim sip: not published: %s", exc)

    def _dump(self) -> None:
        for device, state in list(self.pbx.local.items()):
            self._local_device(device, state)
        for box, (new, old) in list(self.pbx.mwi_db.items()):
            self._local_mwi(box, new, old)

    # -- inbound -----------------------------------------------------------------------------

    def _handle(self, request: Request, source: Source) -> Response | None:
        if request.method == "ACK":
            return None
        if request.method == "OPTIONS":
            return make_response(request, 200, "OK", source=source.address)
        if request.method != "PUBLISH":
            return make_response(request, 405, "Method Not Allowed", source=source.address)
        if uri_user(request.uri) != self.resource:
            return make_response(request, 404, "Not Found", source=source.address)
        event = (request.get("Event") or "").split(";")[0].strip().lower()
        body = None
        if event in (DEVICESTATE, MWI) and request.body:
            # Asterisk answers a body it cannot take with 500, whatever the reason.
            ctype = (request.get("Content-Type") or "").split(";")[0].strip().lower()
            try:
                if ctype != "application/json":
                    raise RemoteProtocolError(f"content type {ctype!r}")
                body = decode_body(event, request.body)
            except RemoteProtocolError:
                return make_response(request, 500, "Server Error", source=source.address)
        outcome = self.server.handle(request, asyncio.get_running_loop().time())
        if outcome.status == 200 and body is not None:
            self._apply(body)
        return respond(request, outcome, source=source.address, server=SERVER)

    def _apply(self, body: DeviceStateBody | MailboxStateBody | RefreshBody) -> None:
        match body:
            case DeviceStateBody():
                if not body.cachable:
                    return
                if body.eid == self.eid:  # Asterisk takes its own EID as a local state
                    self.pbx._publish_device(body.device, body.state)
                else:
                    self.pbx.publish_remote_device(body.device, body.state, str(body.eid))
            case MailboxStateBody():
                self.pbx.publish_remote_mwi(body.uniqueid, body.new, body.old)
            case RefreshBody():
                self._dump()
