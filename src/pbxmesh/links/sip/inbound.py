"""Asterisk's PUBLISHes to pbxmesh's listener: OPTIONS answered, only Asterisk's address
and the ``[asterisk.sip] uri`` user accepted, digest checked when configured; the RFC 3903
server (:mod:`.publication`) decides the rest, and each accepted body goes to the link."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Callable
from typing import Final

from .auth import DigestServer
from .bodies import CONTENT_TYPE, PACKAGES, Body
from .config import SipLinkConfig
from .endpoint import SecondlyWarning, Source
from .headers import uri_user
from .message import Request, Response
from .publication import PublicationConfig, PublicationServer, respond
from .transaction import make_response

__all__ = ["ALLOW", "SERVER", "Inbound"]

log = logging.getLogger("pbxmesh.links.sip.link")  # the link's lines, on the link's logger

ALLOW: Final = "PUBLISH, OPTIONS"
SERVER: Final = "pbxmesh"


class Inbound:
    """What Asterisk publishes to pbxmesh (the link owns the endpoint that calls it)."""

    def __init__(
        self,
        config: SipLinkConfig,
        listen_port: Callable[[], int],
        apply: Callable[[Body], None],
    ) -> None:
        self._config = config
        self._listen_port = listen_port
        self._apply = apply
        self.server = PublicationServer(PublicationConfig(grace=config.grace))
        self._digest = (
            DigestServer(config.username, config.secret)
            if config.username is not None and config.secret is not None
            else None
        )
        # Only Asterisk may publish: its address when the uri names one (a host name: any).
        self._peer_ip = _ip_literal(config.dest[0])
        self.protocol_errors = 0  # PUBLISHes answered with an error
        self._warnings = SecondlyWarning(log)

    def _warn(self, text: str, *args: object) -> None:
        self._warnings(text, *args)

    def handle(self, request: Request, source: Source) -> Response | None:
        method = request.method
        if method == "ACK":
            return None
        if method == "OPTIONS":
            headers = (
                ("Allow", ALLOW),
                ("Accept", CONTENT_TYPE),
                ("Allow-Events", ", ".join(PACKAGES)),
            )
            return make_response(request, 200, "OK", headers, source=source.address)
        if method != "PUBLISH":
            self._warn("SIP %s from %s:%d answered 405", method, *source.address)
            return make_response(
                request, 405, "Method Not Allowed", (("Allow", ALLOW),), source=source.address
            )
        if self._peer_ip is not None and source.address[0] != self._peer_ip:
            self.protocol_errors += 1
            self._warn(
                "SIP PUBLISH from %s:%d refused (403): only Asterisk at %s may publish here",
                *source.address,
                self._peer_ip,
            )
            return make_response(request, 403, "Forbidden", source=source.address)
        user = uri_user(request.uri)
        if user != self._config.resource:
            self.protocol_errors += 1
            self._warn(
                "SIP PUBLISH from %s:%d for user %s refused (404): Asterisk's outbound-publish "
                "server_uri must be sip:%s@%s:%d",
                *source.address,
                user or "(none)",
                self._config.resource,
                self._config.listen[0],
                self._listen_port(),
            )
            return make_response(request, 404, "Not Found", source=source.address)
        now = asyncio.get_running_loop().time()
        if self._digest is not None:
            verdict = self._digest.check(request.get("Authorization"), "PUBLISH", now)
            if not verdict.ok:
                if request.get("Authorization") is not None:
                    self._warn(
                        "SIP PUBLISH from %s:%d refused: %s", *source.address, verdict.reason
                    )
                challenge = (("WWW-Authenticate", verdict.challenge or ""),)
                return make_response(request, 401, "Unauthorized", challenge, source=source.address)
        outcome = self.server.handle(request, now)
        if outcome.status != 200:
            self.protocol_errors += 1
            self._warn(
                "SIP PUBLISH from %s:%d answered %d: %s",
                *source.address,
                outcome.status,
                outcome.detail,
            )
        elif outcome.body is not None:
            self._apply(outcome.body)
        return respond(request, outcome, source=source.address, server=SERVER)


def _ip_literal(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None
