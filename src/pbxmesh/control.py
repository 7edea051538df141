"""The control API: JSON over HTTP on the node's control listener (127.0.0.1:8765 by default).

Theory of operation
-------------------
One aiohttp application serves, under versioned paths:

* ``GET  /api/v1/status``, ``/members``, ``/channels``, ``/devices?pattern=``, ``/mwi?pattern=``,
  ``/presence?pattern=``, ``/hints`` — what the CLI prints (shapes fixed, see ``openapi.json``);
* ``POST /api/v1/publish/device_state`` ``{"device", "state"}``, ``/publish/mwi``
  ``{"mailbox", "new", "old"}`` and ``/publish/presence_state`` ``{"presentity", "state",
  "subtype", "message"}`` — assert a state as this node's origin;
* ``GET  /api/v1/events`` — Server-Sent Events: a ``snapshot``, then every change (coalesced
  per device/mailbox) and a ``tick`` each second (rate, link, quorum) — the lamp page;
* ``GET  /api/v1/openapi.json``, ``GET /metrics`` (Prometheus), ``GET /`` (the lamp page).

When a token is configured every request but ``/`` and the page's static text needs
``Authorization: Bearer <token>`` (or ``?token=`` for the browser's EventSource); the
listener refuses to bind anything but loopback without one (config.py). Errors are JSON
``{"error": "..."}`` with a 4xx status and a message a person can act on.
"""

from __future__ import annotations

import dataclasses
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

from aiohttp import web

from .control_http import (
    LOOPBACK_NAMES,
    error_response,
    host_name,
    json_body,
    no_hints_reason,
)
from .control_stream import Rate, Subscriber, sse, stream_events
from .errors import LinkError, LinkRefused, PbxmeshError, SecurityError, StateError
from .links.base import Link
from .node import MemberInfo, Node, make_listener
from .presence import PresenceChange, PresenceRecord, check_presentity, parse_presence
from .states import DeviceState, parse_state
from .store import DeviceChange, MwiChange, normalize_mailbox
from .wire.frame import DeviceItem, MwiItem, PresenceItem

__all__ = ["API_PREFIX", "ControlServer", "device_json", "member_json"]

log = logging.getLogger(__name__)

API_PREFIX: Final = "/api/v1"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def member_json(m: MemberInfo, node: Node) -> dict[str, Any]:
    return {
        "name": m.name or (node.origin_name(m.eids[0]) if m.eids else ""),
        "nodeid": f"0x{m.nodeid:08x}" if m.nodeid is not None else None,
        "nodeid_decimal": m.nodeid,
        "address": m.address,
        "eid": str(m.eids[0]) if m.eids else None,
        "eids": [str(e) for e in m.eids],
        "member": m.member,
        "self": m.is_self,
        "member_id": m.member_id,
        "host": m.host,
        "joined_at": m.joined_at,
        # "pbxmesh": a node of the mesh; "asterisk": a res_corosync server a ring link sees
        "kind": m.kind,
        # False: its frames are rejected (not in [security.peers]); None: no list of nodes
        "trusted": _trusted(m, node),
    }


def _trusted(m: MemberInfo, node: Node) -> bool | None:
    guard = node.guard
    if guard is None or m.kind != "pbxmesh":
        return None
    if m.is_self:
        return guard.trusts(node.config.name)
    name = m.name or (node.origin_name(m.eids[0]) if m.eids else "")
    return guard.trusts(name) if name else False


def device_json(device: str, state: DeviceState, origins: dict[Any, DeviceState]) -> dict[str, Any]:
    return {
        "device": device,
        "state": state.name,
        "origins": {str(o): s.name for o, s in origins.items()},
    }


class ControlServer:
    """Serves the control API, metrics and the lamp page for one node."""

    def __init__(
        self,
        node: Node,
        host: str,
        port: int,
        token: str | None = None,
        links: Callable[[], list[Link]] | None = None,
        metrics: Callable[[], bytes] | None = None,
        page: Callable[[], str] | None = None,
    ) -> None:
        self.node = node
        self.host = host
        self.port = port
        self.token = token
        #: the node's links to Asterisk, read at each request (a reload replaces them)
        self.links: Callable[[], list[Link]] = links or (lambda: [])
        self._metrics = metrics
        self._page = page
        self._runner: web.AppRunner | None = None
        self._subscribers: set[Subscriber] = set()
        self._started = time.time()
        self.rate = Rate()
        node.listeners.append(
            make_listener(
                on_device=self._on_device,
                on_remote_device=self._on_remote_device,
                on_mwi=self._on_mwi,
                on_members=self._on_members,
                on_presence=self._on_presence,
            )
        )

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        app = web.Application(middlewares=[self._auth, self._errors])
        p = API_PREFIX
        app.router.add_get(f"{p}/status", self.status)
        app.router.add_get(f"{p}/members", self.members)
        app.router.add_get(f"{p}/channels", self.channels)
        app.router.add_get(f"{p}/devices", self.devices)
        app.router.add_get(f"{p}/mwi", self.mwi)
        app.router.add_get(f"{p}/presence", self.presence)
        app.router.add_get(f"{p}/hints", self.hints)
        app.router.add_post(f"{p}/publish/device_state", self.publish_device)
        app.router.add_post(f"{p}/publish/mwi", self.publish_mwi)
        app.router.add_post(f"{p}/publish/presence_state", self.publish_presence)
        app.router.add_get(f"{p}/events", self.events)
        app.router.add_get(f"{p}/openapi.json", self.openapi)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/", self.page)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        log.info("control API listening on http://%s:%d%s", self.host, self.port, API_PREFIX)

    async def close(self) -> None:
        for sub in list(self._subscribers):
            sub.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- middlewares -------------------------------------------------------------------------
    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        # A web page the operator visits must not drive this API: POSTs need a JSON body
        # (a cross-site form or no-cors fetch cannot send one without a preflight, which we
        # never answer), and without a token only loopback host names are served (no DNS
        # rebinding).
        if request.method == "POST" and request.content_type != "application/json":
            return error_response(415, "send the request body as Content-Type: application/json")
        if not self.token and host_name(request.host) not in LOOPBACK_NAMES:
            return error_response(
                403, f"host {request.host!r} refused: use 127.0.0.1 or set a token"
            )
        if self.token and request.path != "/":
            given = request.headers.get("Authorization", "")
            supplied = given[7:] if given.startswith("Bearer ") else request.query.get("token", "")
            if not hmac.compare_digest(supplied.encode(), self.token.encode()):
                return error_response(
                    401, "missing or wrong token: send Authorization: Bearer <token>"
                )
        return await handler(request)

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status >= 400:
                return error_response(exc.status, exc.reason or "error")
            raise
        except SecurityError as exc:
            return error_response(403, str(exc))
        except (PbxmeshError, ValueError) as exc:
            return error_response(400, str(exc))

    # -- read -------------------------------------------------------------------------------
    async def status(self, request: web.Request) -> web.Response:
        return web.json_response(self._status_body())

    def _status_body(self) -> dict[str, Any]:
        node = self.node
        body: dict[str, Any] = {
            "name": node.config.name,
            "eid": str(node.eid),
            "transport": node.transport.kind,
            "link_up": node.reads.stats.link_up,
            "quorate": node.quorate,
            "view": node.view,
            "members": len(node.members()),
            "devices": node.reads.device_count,
            "mailboxes": node.reads.mailbox_count,
            "presentities": node.reads.presentity_count,
            "queue_depth": node.queue_depth,
            "resyncs": node.reads.stats.resyncs,
            "rejected": dict(node.reads.stats.rejected),
            "uptime_seconds": round(time.time() - self._started, 1),
            "asterisk": self._asterisk_json(),
            "links": [dataclasses.asdict(link.status()) for link in self.links()],
        }
        return body

    def _asterisk_json(self) -> dict[str, Any] | None:
        """The link to Asterisk as ``status`` and the lamp page show it (None without one)."""
        links = self.links()
        if not links:
            return None
        st = links[0].status()
        # A link that tells more than up/down (SIP: degraded while Asterisk refuses) says so
        # in its extra fields, with the reason in words an administrator acts on.
        return {
            "connected": st.connected,
            "state": st.extra.get("state") or ("connected" if st.connected else "disconnected"),
            "reason": st.extra.get("reason"),
            "address": st.address,
            "resyncs": st.resyncs,
            "published": st.published,
        }

    async def members(self, request: web.Request) -> web.Response:
        members = self.node.members() + self.node.link_members()
        body = [member_json(m, self.node) for m in members]
        return web.json_response(
            {"quorate": self.node.quorate, "view": self.node.view, "members": body}
            if request.query.get("full")
            else body
        )

    async def channels(self, request: web.Request) -> web.Response:
        return web.json_response(self._channels_body())

    def _channels_body(self) -> list[dict[str, Any]]:
        return [
            {"name": c.name, "publish": sorted(c.publish), "subscribe": sorted(c.subscribe)}
            for c in self.node.channels()
        ]

    async def devices(self, request: web.Request) -> web.Response:
        rows = self.node.device_rows(request.query.get("pattern") or None)
        limit = int(request.query.get("limit", "0") or 0)
        if limit > 0:
            rows = rows[:limit]
        return web.json_response([device_json(d, s, o) for d, s, o in rows])

    async def mwi(self, request: web.Request) -> web.Response:
        return web.json_response(
            [
                {
                    "mailbox": r.mailbox,
                    "new": r.new,
                    "old": r.old,
                    "origin": str(r.origin),
                    "origin_name": self.node.origin_name(r.origin),
                }
                for r in self.node.mwi_rows(request.query.get("pattern") or None)
            ]
        )

    async def presence(self, request: web.Request) -> web.Response:
        rows = self.node.presence_rows(request.query.get("pattern") or None)
        return web.json_response([self._presence_json(r) for r in rows])

    def _presence_json(self, r: PresenceRecord) -> dict[str, Any]:
        return {
            "presentity": r.presentity,
            "state": r.state.text,
            "subtype": r.subtype,
            "message": r.message,
            "origin": str(r.origin),
            "origin_name": self.node.origin_name(r.origin),
        }

    async def hints(self, request: web.Request) -> web.Response:
        for link in self.links():
            try:
                hints = await link.hints()
            except LinkRefused as exc:
                return error_response(502, str(exc))
            except LinkError as exc:
                return error_response(503, f"the Asterisk link is down: {exc}")
            if hints is not None:
                return web.json_response(
                    [
                        {
                            "exten": h.exten,
                            "context": h.context,
                            "hint": h.hint,
                            "status": h.status,
                            "status_text": h.status_text,
                            "kept": h.kept,
                        }
                        for h in hints
                    ]
                )
        return error_response(404, no_hints_reason({link.kind for link in self.links()}))

    # -- write ------------------------------------------------------------------------------
    async def publish_device(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        device, state_text = body.get("device"), body.get("state")
        if not isinstance(device, str) or not isinstance(state_text, str):
            raise StateError('send {"device": "Custom:name", "state": "INUSE"}')
        state = parse_state(state_text)
        self._check_grant(DeviceItem(device, int(state), 0))
        self.node.publish_device(device, state, keep=True)
        return web.json_response({"device": device, "state": state.name}, status=202)

    async def publish_mwi(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        mailbox, new, old = body.get("mailbox"), body.get("new"), body.get("old")
        if not isinstance(mailbox, str) or type(new) is not int or type(old) is not int:
            raise StateError('send {"mailbox": "1000@default", "new": 1, "old": 0}')
        self._check_grant(MwiItem(normalize_mailbox(mailbox), new, old, 0))
        self.node.publish_mwi(mailbox, new, old, keep=True)
        return web.json_response({"mailbox": mailbox, "new": new, "old": old}, status=202)

    def _check_grant(self, item: DeviceItem | MwiItem | PresenceItem) -> None:
        guard = self.node.guard
        reason = guard.refuses(item) if guard is not None else None
        if reason is not None:
            raise SecurityError("unauthorised", f"refused: {reason}")

    async def publish_presence(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        name, state_text = body.get("presentity"), body.get("state")
        subtype, message = body.get("subtype", ""), body.get("message", "")
        if not all(isinstance(v, str) for v in (name, state_text, subtype, message)):
            raise StateError(
                'send {"presentity": "CustomPresence:alice", "state": "dnd", '
                '"subtype": "", "message": "back at 3"}'
            )
        assert isinstance(name, str) and isinstance(state_text, str)
        state = parse_presence(state_text)
        self._check_grant(PresenceItem(check_presentity(name), int(state), subtype, message, 0))
        self.node.publish_presence(name, state, subtype, message, keep=True)
        record = self.node.reads.presentity(check_presentity(name))
        assert record is not None  # just written (or older than what is there, then that)
        return web.json_response(self._presence_json(record), status=202)

    # -- live -------------------------------------------------------------------------------
    # Each /events client has a Subscriber: a set of *keys* ("device", name), ("mwi", box),
    # ("members", "") waiting to be sent, in arrival order. A key is rendered from the store
    # when it is written, so a burst of changes to one device costs one event carrying the
    # newest state (supersede by key), memory per client is bounded by the number of devices,
    # and a slow browser can never miss the last state of a lamp.
    def event_clients(self) -> int:
        """Open ``/events`` streams."""
        return len(self._subscribers)

    def events_backlog(self) -> int:
        """Events waiting to be written, summed over the streams (a slow page shows here)."""
        return sum(len(sub.pending) for sub in self._subscribers)

    def _mark(self, key: tuple[str, str]) -> None:
        for sub in self._subscribers:
            sub.mark(key)

    def _on_device(self, change: DeviceChange) -> None:
        self.rate.hit()
        if self._subscribers:
            self._mark(("device", change.device))

    def _on_remote_device(self, device: str, state: DeviceState) -> None:
        # The other servers' value changed but perhaps not the cluster value: the page's
        # per-origin detail wants it all the same (the page also re-reads it on demand).
        if self._subscribers:
            self._mark(("device", device))

    def _on_mwi(self, change: MwiChange) -> None:
        self.rate.hit()
        if self._subscribers:
            self._mark(("mwi", change.record.mailbox))

    def _on_presence(self, change: PresenceChange) -> None:
        self.rate.hit()
        if self._subscribers:
            self._mark(("presence", change.record.presentity))

    def _on_members(self, members: list[MemberInfo]) -> None:
        if self._subscribers:
            self._mark(("members", ""))

    def _device_event(self, device: str) -> dict[str, Any]:
        state = self.node.reads.cluster_state(device)
        if state is None:
            return {"device": device, "state": "UNKNOWN", "origins": {}, "removed": True}
        body = device_json(device, state, self.node.device_origins(device))
        body["removed"] = False
        return body

    def _mwi_event(self, mailbox: str) -> dict[str, Any]:
        r = self.node.reads.mailbox(mailbox)
        if r is None:
            return {"mailbox": mailbox, "removed": True}
        return {
            "mailbox": r.mailbox,
            "new": r.new,
            "old": r.old,
            "origin": str(r.origin),
            "origin_name": self.node.origin_name(r.origin),
        }

    def _members_event(self) -> dict[str, Any]:
        return {
            "members": [member_json(m, self.node) for m in self.node.members()],
            "quorate": self.node.quorate,
            "view": self.node.view,
        }

    def _render(self, key: tuple[str, str]) -> str:
        kind, name = key
        if kind == "device":
            return sse(kind, self._device_event(name))
        if kind == "mwi":
            return sse(kind, self._mwi_event(name))
        if kind == "presence":
            record = self.node.reads.presentity(name)
            body = self._presence_json(record) if record else {"presentity": name, "removed": True}
            return sse(kind, body)
        return sse("members", self._members_event())

    def _snapshot(self) -> dict[str, Any]:
        """Everything the page shows, as one event: no race between a fetch and the stream."""
        return {
            "status": self._status_body(),
            "channels": self._channels_body(),
            **self._members_event(),
            "devices": [device_json(d, s, o) for d, s, o in self.node.device_rows(None)],
            "mwi": [self._mwi_event(r.mailbox) for r in self.node.mwi_rows(None)],
            "presence": [self._presence_json(r) for r in self.node.presence_rows(None)],
        }

    def _tick(self) -> dict[str, Any]:
        node = self.node
        return {
            "rate": self.rate.value(),
            "last_second": self.rate.last_second(),
            "link_up": node.reads.stats.link_up,
            "quorate": node.quorate,
            "view": node.view,
            "devices": node.reads.device_count,
            "mailboxes": node.reads.mailbox_count,
            "presentities": node.reads.presentity_count,
            "queue_depth": node.queue_depth,
            "asterisk": self._asterisk_json(),
        }

    async def events(self, request: web.Request) -> web.StreamResponse:
        """``snapshot`` first, then ``device``/``mwi``/``members`` changes and a ``tick`` a second
        (the stream itself: :func:`~pbxmesh.control_stream.stream_events`)."""
        return await stream_events(
            request, self._subscribers, self._snapshot, self._render, self._tick
        )

    async def metrics(self, request: web.Request) -> web.Response:
        if self._metrics is None:
            return error_response(404, "metrics are not enabled")
        return web.Response(
            body=self._metrics(), headers={"Content-Type": "text/plain; version=0.0.4"}
        )

    async def page(self, request: web.Request) -> web.Response:
        if self._page is None:
            return web.Response(text="pbxmesh control API: see /api/v1/openapi.json\n")
        return web.Response(text=self._page(), content_type="text/html")

    async def openapi(self, request: web.Request) -> web.Response:
        from .openapi import OPENAPI

        return web.json_response(OPENAPI)
