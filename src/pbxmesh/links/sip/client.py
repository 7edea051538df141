"""The PUBLISH client (RFC 3903 event publication agent), sans-IO with time passed in.

Theory of operation
-------------------
States go to Asterisk as res_pjsip_publish_asterisk bodies, each under the EID of the server
that owns it. Asterisk's own publisher keeps one PUBLISH in flight per publication, which
caps it near 2,500/s. Here each (event package, EID) has ``slots`` publications, and a device
(or mailbox) always maps to the same slot by a stable hash. So up to ``slots`` PUBLISHes per
EID are in flight at once, while two states of one device never overlap: a device's newer
state cannot be overtaken by an older one retransmitted late (the ordering pitfall of the
reference). While a publication is busy, states queue per device and a newer one replaces
the older (nothing stale is ever sent).

Each :class:`_Publication` follows RFC 3903: its first PUBLISH is *initial* (no
``SIP-If-Match``); after a 2xx it keeps the ``SIP-ETag`` and sends later states as *modify*;
before the granted expiry runs out (at ``refresh_ratio`` of it) it sends a body-less
*refresh*. A ``412`` forgets the tag and sends the last state again as an initial PUBLISH
(on a new Call-ID, as Asterisk does). ``401``/``407`` are answered once per challenge with
digest credentials; ``423`` takes ``Min-Expires``. A timeout (408, reported by the transaction
layer after Timer F), a 5xx or a 6xx keeps the state and retries after a back-off doubling
from ``retry_min`` to ``retry_max``; another 4xx drops that one state (the caller gets a note
to log). Retransmission over UDP is the transaction layer's work, not this one's.

API: :meth:`PublishClient.publish` queues a body; :meth:`~PublishClient.outgoing` returns the
requests ready to go (without Via: the transaction layer adds it with a fresh branch), each
with a :class:`Handle`; the answer goes back through :meth:`~PublishClient.on_response`;
:meth:`~PublishClient.next_deadline` tells when to call :meth:`~PublishClient.outgoing` again
for refreshes and retries.
"""

from __future__ import annotations

import secrets
import zlib
from dataclasses import dataclass, field, replace
from typing import Final

from ...eid import EID
from .auth import authorization
from .bodies import (
    CONTENT_TYPE,
    DEVICESTATE,
    MWI,
    Body,
    DeviceStateBody,
    MailboxStateBody,
    RefreshBody,
    encode_body,
    package_of,
)
from .message import Request, Response
from .transaction import new_tag

__all__ = ["Handle", "PublishClient", "PublishConfig", "PublishFailure"]

_MAX_CSEQ: Final = 2**31 - 1


@dataclass(frozen=True, slots=True)
class PublishConfig:
    """Where and how to publish; times in seconds."""

    # Request-URI, e.g. sip:pbxmesh@127.0.0.1:5060; its user names Asterisk's inbound-publication.
    uri: str
    expires: int = 3600  # asked for; Asterisk's outbound-publish default
    slots: int = 4  # publications per (package, EID): PUBLISHes in flight at once per EID
    username: str | None = None  # digest credentials for Asterisk's challenge, if it has auth=
    secret: str | None = None
    refresh_ratio: float = 0.9  # refresh at this fraction of the granted expiry
    retry_min: float = 1.0  # first back-off after a timeout or 5xx
    retry_max: float = 32.0
    user_agent: str = "pbxmesh"

    def __post_init__(self) -> None:
        if not self.uri.startswith(("sip:", "sips:")):
            raise ValueError(f"uri {self.uri!r} is not a sip: URI")
        if self.slots < 1 or self.expires < 1 or not 0 < self.refresh_ratio < 1:
            raise ValueError("slots and expires must be >= 1, refresh_ratio in (0, 1)")
        if (self.username is None) != (self.secret is None):
            raise ValueError("give both username and secret, or neither")

    @property
    def aor(self) -> str:
        """From/To: the URI without its port, as Asterisk writes them."""
        scheme, _, rest = self.uri.partition(":")
        user, at, host = rest.rpartition("@")
        host = host.split(";")[0]
        host = host[: host.find("]") + 1] if host.startswith("[") else host.split(":")[0]
        return f"<{scheme}:{user}{at}{host}>"


@dataclass(frozen=True, slots=True)
class Handle:
    """Identifies the request an answer belongs to."""

    key: tuple[str, EID, int]
    cseq: int


@dataclass(frozen=True, slots=True)
class PublishFailure:
    """A final answer other than success to one PUBLISH, for the caller to log or act on."""

    status: int
    reason: str  # the reason phrase, as the server sent it
    package: str  # the event package of the publication
    what: str  # what the request carried, in words: a device, a mailbox, a refresh ...
    retry_in: float | None  # seconds until it is sent again; None: that one state is dropped

    def __str__(self) -> str:
        outcome = "dropped" if self.retry_in is None else f"retrying in {self.retry_in:g} s"
        return f"{self.status} {self.reason} on {self.package} for {self.what}; {outcome}"


def _describe(body: Body | None, remove: bool) -> str:
    match body:
        case DeviceStateBody():
            return f"{body.device} {body.state.name} (EID {body.eid})"
        case MailboxStateBody():
            return f"mailbox {body.uniqueid} {body.new}/{body.old} (EID {body.eid})"
        case RefreshBody():
            return "a refresh request"
    return "a removal" if remove else "a refresh of the publication"


def _item_key(body: Body) -> str:
    match body:
        case DeviceStateBody():
            return body.device
        case MailboxStateBody():
            return body.uniqueid
        case RefreshBody():
            return ""


@dataclass(slots=True)
class _Publication:
    key: tuple[str, EID, int]
    call_id: str = field(default_factory=lambda: secrets.token_hex(16))
    cseq: int = 0
    etag: str | None = None
    expires_at: float = 0.0
    refresh_at: float | None = None
    retry_at: float | None = None
    backoff: float = 0.0
    pending: dict[str, Body] = field(default_factory=dict)
    last: Body | None = None  # the last body the server accepted (re-sent after a 412)
    remove: bool = False  # an unpublish is wanted
    # The request in flight: its cseq, body (None: refresh) and whether it removes.
    flight: tuple[int, Body | None, bool] | None = None
    auth_tried: bool = False  # the request in flight answers a challenge


class PublishClient:
    """Every publication this node sends to one Asterisk."""

    def __init__(self, config: PublishConfig) -> None:
        self.config = config
        self._pubs: dict[tuple[str, EID, int], _Publication] = {}
        self._challenge: Response | None = None  # the last 401/407, answered on every request
        self._nc = 0

    def _slot(self, body: Body) -> int:
        key = _item_key(body)
        return zlib.crc32(key.encode("utf-8", "surrogatepass")) % self.config.slots if key else 0

    def _pub(self, key: tuple[str, EID, int]) -> _Publication:
        pub = self._pubs.get(key)
        if pub is None:
            pub = self._pubs[key] = _Publication(key)
        return pub

    def publish(self, body: Body) -> None:
        """Queue ``body`` (a refresh request goes on both packages)."""
        packages = (DEVICESTATE, MWI) if isinstance(body, RefreshBody) else (package_of(body),)
        for package in packages:
            pub = self._pub((package, body.eid, self._slot(body)))
            item = _item_key(body)
            pub.pending.pop(item, None)  # a newer state goes to the back of the queue
            pub.pending[item] = body
            pub.remove = False

    def unpublish(self) -> None:
        """End every established publication (``Expires: 0``), e.g. at shutdown."""
        for pub in self._pubs.values():
            if pub.etag is not None:
                pub.remove = True

    def retry_now(self) -> None:
        """Forget every back-off (the server is back): queued states go at the next call."""
        for pub in self._pubs.values():
            pub.retry_at = None
            pub.backoff = 0.0

    @property
    def queued(self) -> int:
        """States waiting to be sent (newest per device)."""
        return sum(len(p.pending) for p in self._pubs.values())

    @property
    def in_flight(self) -> int:
        return sum(1 for p in self._pubs.values() if p.flight is not None)

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing in flight (refresh timers aside)."""
        return all(p.flight is None and not p.pending and not p.remove for p in self._pubs.values())

    def next_deadline(self) -> float | None:
        times = [
            t
            for p in self._pubs.values()
            if p.flight is None
            for t in (p.retry_at, p.refresh_at)
            if t is not None
        ]
        return min(times) if times else None

    def outgoing(self, now: float) -> list[tuple[Handle, Request]]:
        """Requests to send now: at most one per idle publication."""
        out: list[tuple[Handle, Request]] = []
        for pub in self._pubs.values():
            if pub.flight is not None or (pub.retry_at is not None and now < pub.retry_at):
                continue
            pub.retry_at = None
            if pub.etag is not None and now >= pub.expires_at:
                pub.etag = None  # expired at the server: start again
            body: Body | None = None
            remove = False
            if pub.remove and pub.etag is not None:
                remove = True
            elif pub.pending:
                item = next(iter(pub.pending))
                body = pub.pending.pop(item)
            elif pub.etag is not None and pub.refresh_at is not None and now >= pub.refresh_at:
                pass  # a body-less refresh
            else:
                pub.remove = False
                continue
            out.append(self._request(pub, body, remove))
        return out

    def _request(
        self, pub: _Publication, body: Body | None, remove: bool
    ) -> tuple[Handle, Request]:
        cfg = self.config
        pub.cseq = pub.cseq + 1 if pub.cseq < _MAX_CSEQ else 1
        pub.flight = (pub.cseq, body, remove)
        headers: list[tuple[str, str]] = [
            ("From", f"{cfg.aor};tag={new_tag()}"),
            ("To", cfg.aor),
            ("Call-ID", pub.call_id),
            ("CSeq", f"{pub.cseq} PUBLISH"),
            ("Event", pub.key[0]),
        ]
        if pub.etag is not None:
            headers.append(("SIP-If-Match", pub.etag))
        headers += [
            ("Expires", "0" if remove else str(cfg.expires)),
            ("Max-Forwards", "70"),
            ("User-Agent", cfg.user_agent),
        ]
        challenge = self._challenge
        if challenge is not None and cfg.username is not None and cfg.secret is not None:
            proxy = challenge.status == 407
            value = challenge.get("Proxy-Authenticate" if proxy else "WWW-Authenticate") or ""
            self._nc += 1
            cred = authorization(
                value,
                username=cfg.username,
                secret=cfg.secret,
                method="PUBLISH",
                uri=cfg.uri,
                nc=self._nc,
            )
            if cred is not None:
                headers.append(("Proxy-Authorization" if proxy else "Authorization", cred))
        data = b""
        if body is not None and not remove:
            headers.append(("Content-Type", CONTENT_TYPE))
            data = encode_body(body)
        return Handle(pub.key, pub.cseq), Request("PUBLISH", cfg.uri, tuple(headers), data)

    def on_response(self, handle: Handle, response: Response, now: float) -> PublishFailure | None:
        """Take the final answer to a request; what failed, if it did."""
        pub = self._pubs.get(handle.key)
        if pub is None or pub.flight is None or pub.flight[0] != handle.cseq:
            return None  # a stale answer
        if response.status < 200:
            return None
        _, body, remove = pub.flight
        pub.flight = None
        status = response.status
        auth_status = status in (401, 407)
        if not auth_status:
            pub.auth_tried = False
        if 200 <= status < 300:
            pub.backoff = 0.0
            if remove:
                pub.etag, pub.refresh_at, pub.remove = None, None, False
                return None
            pub.etag = response.get("SIP-ETag") or pub.etag
            granted = _int(response.get("Expires"), self.config.expires)
            pub.expires_at = now + granted
            pub.refresh_at = now + granted * self.config.refresh_ratio
            if body is not None and not isinstance(body, RefreshBody):
                pub.last = body
            return None
        if status == 412:
            pub.etag, pub.refresh_at = None, None
            pub.call_id = secrets.token_hex(16)
            again = body if body is not None else pub.last
            if again is not None and not remove:
                self._requeue(pub, again)
            return None
        if auth_status and self.config.username is not None and not pub.auth_tried:
            pub.auth_tried = True
            self._challenge, self._nc = response, 0
            self._retry_same(pub, body, remove, now, delay=0.0)
            return None
        if status == 423:
            minimum = _int(response.get("Min-Expires"), 0)
            if minimum > self.config.expires:
                self.config = replace(self.config, expires=minimum)
                self._retry_same(pub, body, remove, now, delay=0.0)
                return None
        if status == 408 or status >= 500:
            pub.backoff = min(max(pub.backoff * 2, self.config.retry_min), self.config.retry_max)
            self._retry_same(pub, body, remove, now, delay=pub.backoff)
            what = _describe(body, remove)
            return PublishFailure(status, response.reason, pub.key[0], what, pub.backoff)
        pub.auth_tried = False
        return PublishFailure(status, response.reason, pub.key[0], _describe(body, remove), None)

    def _retry_same(
        self, pub: _Publication, body: Body | None, remove: bool, now: float, delay: float
    ) -> None:
        if body is not None:
            self._requeue(pub, body)
        elif remove:
            pub.remove = True
        elif pub.etag is not None:
            pub.refresh_at = now  # the refresh is still due
        pub.retry_at = now + delay if delay else None

    @staticmethod
    def _requeue(pub: _Publication, body: Body) -> None:
        """Put a body back at the front unless a newer one for its item is queued."""
        item = _item_key(body)
        if item not in pub.pending:
            pub.pending = {item: body, **pub.pending}


def _int(value: str | None, default: int) -> int:
    if value is not None and value.isascii() and value.isdigit() and len(value) < 10:
        return int(value)
    return default
