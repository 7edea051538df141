"""The RFC 3903 server side (an event state compositor) for Asterisk's PUBLISH, as a pure
state machine with time passed in.

Theory of operation
-------------------
Asterisk's ``res_pjsip_outbound_publish`` keeps one publication per event package and sends
each state change as a PUBLISH on it: the first without ``SIP-If-Match`` (*initial*), later
ones with the entity tag of the previous answer (*modify*, with a body), a body-less one to
keep it alive (*refresh*), and ``Expires: 0`` to end it (*remove*). Each publication is one
entity tag here, scoped by (Request-URI user, event package). :meth:`PublicationServer.handle`
takes a PUBLISH and ``now`` and returns an :class:`Outcome`: the status to answer, the new
entity tag and granted expiry, and the decoded body for the link to apply. It decides in the
order RFC 3903 §6 gives, so each bad case has exactly one answer:

==============================================  ======================================
case                                            answer
==============================================  ======================================
no ``Event``, or a package other than ours      489 Bad Event (with ``Allow-Events``)
``Expires`` not a number                        400
``SIP-If-Match`` naming no live publication     412 Conditional Request Failed
``Expires`` > 0 and below ``min_expires``       423 Interval Too Brief (``Min-Expires``)
no ``SIP-If-Match`` and no body                 400
a body that is not ``application/json``         415 Unsupported Media Type (``Accept``)
a body that does not parse / wrong type         400
too many live publications                      503 (``Retry-After``)
==============================================  ======================================

Success is 200 with a fresh ``SIP-ETag`` every time (RFC 3903 §6, step 7) and the granted
``Expires`` (the asked one, capped at ``max_expires``; ``default_expires`` if absent).
``Expires: 0`` with a valid tag removes the publication (200, ``Expires: 0``; a body is
ignored). A bad body on a valid modify is answered 400 and leaves the publication as it was
(Asterisk itself would silently drop it). Removal and expiry never clear states: Asterisk
keeps remote states after a publication ends, and the link decides what to do.

Grace period: Asterisk schedules its body-less refresh at the full expiry rather than before
it, so it arrives just after the publication expired. Answering 412 makes Asterisk re-send
the body-less PUBLISH as an initial one, which must get 400, every period. So a publication is
kept ``grace`` seconds past its expiry and a refresh in that window is taken as on time.

Entity tags are unpredictable (an injected factory, random by default), so a hostile peer
cannot guess another publisher's tag.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Literal

from ...errors import RemoteProtocolError
from .bodies import CONTENT_TYPE, PACKAGES, Body, decode_body
from .headers import uri_user
from .message import Request, Response
from .transaction import make_response

__all__ = ["Outcome", "Publication", "PublicationConfig", "PublicationServer", "respond"]

Kind = Literal["initial", "refresh", "modify", "remove"]
_REASONS: Final = {
    200: "OK",
    400: "Bad Request",
    412: "Conditional Request Failed",
    415: "Unsupported Media Type",
    423: "Interval Too Brief",
    489: "Bad Event",
    503: "Service Unavailable",
}


@dataclass(frozen=True, slots=True)
class PublicationConfig:
    """Limits of the server side; all times in seconds."""

    # Shortest Expires accepted (423 below it). Asterisk sends 3600 unless configured.
    min_expires: int = 60
    # Longest Expires granted; a longer one is cut to this (no error).
    max_expires: int = 7200
    # Granted when the request has no Expires (RFC 3903 leaves it to the package).
    default_expires: int = 3600
    # Kept past expiry, so Asterisk's late body-less refresh does not start a 412/400 loop.
    grace: float = 60.0
    # Live publications at most; more is a flood, answered 503.
    max_publications: int = 1024

    def __post_init__(self) -> None:
        if not 0 < self.min_expires <= self.default_expires <= self.max_expires:
            raise ValueError(
                "need 0 < min_expires <= default_expires <= max_expires, got "
                f"{self.min_expires}, {self.default_expires}, {self.max_expires}"
            )
        if self.grace < 0 or self.max_publications < 1:
            raise ValueError("grace must be >= 0 and max_publications >= 1")


@dataclass(slots=True)
class Publication:
    """One live publication."""

    resource: str
    event: str
    etag: str
    expires_at: float
    publisher: str | None = None  # the EID of the last body, as text


@dataclass(frozen=True, slots=True)
class Outcome:
    """What to answer to one PUBLISH, and what it carried."""

    status: int
    detail: str = ""  # why, for the log line of an error
    kind: Kind | None = None
    etag: str | None = None
    expires: int | None = None
    body: Body | None = None  # the state to apply (200 with a body only)
    headers: tuple[tuple[str, str], ...] = field(default=())

    @property
    def reason(self) -> str:
        return _REASONS.get(self.status, "Error")


def _bad(status: int, detail: str, *headers: tuple[str, str]) -> Outcome:
    return Outcome(status, detail, headers=tuple(headers))


class PublicationServer:
    """The publications of one listening link."""

    def __init__(
        self,
        config: PublicationConfig | None = None,
        *,
        packages: tuple[str, ...] = PACKAGES,
        new_etag: Callable[[], str] | None = None,
    ) -> None:
        self.config = config or PublicationConfig()
        self.packages = packages
        self._new_etag = new_etag or (lambda: secrets.token_urlsafe(12))
        self._live: dict[tuple[str, str, str], Publication] = {}

    def __len__(self) -> int:
        return len(self._live)

    def get(self, resource: str, event: str, etag: str) -> Publication | None:
        return self._live.get((resource, event, etag))

    def _find(self, resource: str, event: str, etag: str, now: float) -> Publication | None:
        pub = self._live.get((resource, event, etag))
        if pub is not None and now >= pub.expires_at + self.config.grace:
            del self._live[(resource, event, etag)]
            return None
        return pub

    def expire(self, now: float) -> list[Publication]:
        """Forget publications past expiry plus grace; returns them (for a log line)."""
        gone = [p for p in self._live.values() if now >= p.expires_at + self.config.grace]
        for pub in gone:
            del self._live[(pub.resource, pub.event, pub.etag)]
        return gone

    def _full(self, now: float) -> bool:
        """Whether no new publication fits, once the expired ones are gone."""
        if len(self._live) < self.config.max_publications:
            return False
        self.expire(now)
        return len(self._live) >= self.config.max_publications

    def handle(self, request: Request, now: float) -> Outcome:
        """Decide the answer to a PUBLISH (the caller has checked method and authentication)."""
        cfg = self.config
        event = (request.get("Event") or "").split(";")[0].strip().lower()
        if event not in self.packages:
            allow = ("Allow-Events", ", ".join(self.packages))
            return _bad(489, f"event package {event or '(none)'!r:.40} is not served", allow)
        expires = _expires(request.get("Expires"))
        if isinstance(expires, Outcome):
            return expires
        resource = uri_user(request.uri) or ""
        if_match = request.get("SIP-If-Match")
        pub: Publication | None = None
        if if_match is not None:
            pub = self._find(resource, event, if_match, now)
            if pub is None:
                return _bad(412, f"no publication with entity tag {if_match!r:.40}")
        if expires is not None and 0 < expires < cfg.min_expires:
            minimum = ("Min-Expires", str(cfg.min_expires))
            return _bad(423, f"Expires {expires} is too brief", minimum)
        if pub is not None and expires == 0:
            del self._live[(resource, event, pub.etag)]
            return Outcome(200, kind="remove", etag=pub.etag, expires=0)
        body: Body | None = None
        if request.body:
            decoded = _decode(request, event)
            if isinstance(decoded, Outcome):
                return decoded
            body = decoded
        elif pub is None:
            return _bad(400, "an initial PUBLISH needs a body")
        granted = cfg.default_expires if expires is None else min(expires, cfg.max_expires)
        if pub is None and granted > 0 and self._full(now):
            return _bad(503, "too many publications", ("Retry-After", "60"))
        etag = self._new_etag()
        kind: Kind = "initial" if pub is None else ("modify" if body is not None else "refresh")
        publisher = str(body.eid) if body is not None else (pub.publisher if pub else None)
        if pub is not None:
            del self._live[(resource, event, pub.etag)]
        if granted > 0:
            self._live[(resource, event, etag)] = Publication(
                resource, event, etag, now + granted, publisher
            )
        return Outcome(200, kind=kind, etag=etag, expires=granted, body=body)


def _expires(raw: str | None) -> int | Outcome | None:
    """The Expires header's seconds, None when absent, or the 400 for a bad one."""
    if raw is None:
        return None
    if not raw.isascii() or not raw.isdigit() or len(raw) > 10:
        return _bad(400, f"Expires {raw!r:.20} is not a number of seconds")
    return int(raw)


def _decode(request: Request, event: str) -> Body | Outcome:
    """The PUBLISH body, or the 415/400 that refuses it."""
    ctype = (request.get("Content-Type") or "").split(";")[0].strip().lower()
    if ctype != CONTENT_TYPE:
        detail = f"content type {ctype or '(none)'!r:.40} is not {CONTENT_TYPE}"
        return _bad(415, detail, ("Accept", CONTENT_TYPE))
    try:
        return decode_body(event, request.body)
    except RemoteProtocolError as exc:
        return _bad(400, str(exc))


def respond(
    request: Request,
    outcome: Outcome,
    *,
    source: tuple[str, int] | None = None,
    server: str | None = None,
) -> Response:
    """The SIP response carrying ``outcome``."""
    headers: list[tuple[str, str]] = list(outcome.headers)
    if outcome.etag is not None and outcome.status == 200:
        headers.append(("SIP-ETag", outcome.etag))
    if outcome.expires is not None:
        headers.append(("Expires", str(outcome.expires)))
    if server:
        headers.append(("Server", server))
    return make_response(request, outcome.status, outcome.reason, tuple(headers), source=source)
