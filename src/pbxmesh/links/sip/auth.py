"""HTTP digest authentication for SIP (RFC 2617, RFC 8760), both directions, sans-IO.

Client: :func:`authorization` answers a ``401``/``407`` challenge (``WWW-Authenticate`` /
``Proxy-Authenticate``) with MD5 or SHA-256, ``qop=auth`` when offered (RFC 2069 style
otherwise), a fresh cnonce and ``nc=00000001`` (one answer per nonce).

Server: :class:`DigestServer` challenges requests and checks their answers. Its nonces are
stateless: ``<time>.<hmac(key, time)>``, so any nonce it issued can be checked without a table,
and one older than ``nonce_lifetime`` is answered with a new challenge marked ``stale=true``
(the client retries without asking its user). Within that lifetime a captured request could be
replayed byte for byte; PUBLISH bodies are idempotent states and a replayed one can only set
a state its sender already set, which we accept rather than keep per-nonce counters.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Final

from ...errors import RemoteProtocolError

__all__ = ["DigestServer", "authorization", "parse_digest"]

_ALGORITHMS: Final = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}
_PARAM_RE: Final = re.compile(r'\s*([A-Za-z0-9_\-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,]*)\s*(?:,|$)')


def parse_digest(value: str) -> dict[str, str]:
    """The parameters of a ``Digest`` challenge or credentials, keys lower-cased."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest" or not rest.strip():
        raise RemoteProtocolError(f"not a Digest header: {value[:60]!r}")
    params: dict[str, str] = {}
    pos = 0
    rest = rest.strip()
    while pos < len(rest):
        m = _PARAM_RE.match(rest, pos)
        if not m or m.end() == pos:
            raise RemoteProtocolError(f"bad Digest parameters {rest[pos : pos + 40]!r}")
        raw = m.group(2)
        if raw.startswith('"'):
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        params[m.group(1).lower()] = raw
        pos = m.end()
    return params


def _h(algorithm: str, text: str) -> str:
    return _ALGORITHMS[algorithm](text.encode("utf-8")).hexdigest()


def _response(
    algorithm: str,
    username: str,
    realm: str,
    secret: str,
    method: str,
    uri: str,
    nonce: str,
    qop: str | None,
    nc: str,
    cnonce: str,
) -> str:
    ha1 = _h(algorithm, f"{username}:{realm}:{secret}")
    ha2 = _h(algorithm, f"{method}:{uri}")
    if qop:
        return _h(algorithm, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
    return _h(algorithm, f"{ha1}:{nonce}:{ha2}")


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def authorization(
    challenge: str, *, username: str, secret: str, method: str, uri: str, nc: int = 1
) -> str | None:
    """The ``Authorization`` value answering ``challenge``, or None if we cannot answer it
    (another scheme, an unknown algorithm, a qop other than ``auth``)."""
    try:
        params = parse_digest(challenge)
    except RemoteProtocolError:
        return None
    algorithm = params.get("algorithm", "MD5").upper()
    if algorithm not in _ALGORITHMS or "nonce" not in params:
        return None
    realm, nonce = params.get("realm", ""), params["nonce"]
    offered = [q.strip() for q in params.get("qop", "").split(",") if q.strip()]
    if offered and "auth" not in offered:
        return None
    qop = "auth" if offered else None
    cnonce = secrets.token_hex(8)
    nc_text = f"{nc:08x}"
    digest = _response(algorithm, username, realm, secret, method, uri, nonce, qop, nc_text, cnonce)
    parts = [
        f"username={_quote(username)}",
        f"realm={_quote(realm)}",
        f"nonce={_quote(nonce)}",
        f"uri={_quote(uri)}",
        f"response={_quote(digest)}",
        f"algorithm={algorithm}",
    ]
    if qop:
        parts += [f"cnonce={_quote(cnonce)}", f"qop={qop}", f"nc={nc_text}"]
    if "opaque" in params:
        parts.append(f"opaque={_quote(params['opaque'])}")
    return "Digest " + ", ".join(parts)


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of :meth:`DigestServer.check`: ``ok``, or the challenge to send."""

    ok: bool
    challenge: str | None = None
    reason: str = ""


class DigestServer:
    """Challenges and verifies requests for one username/secret pair."""

    def __init__(
        self,
        username: str,
        secret: str,
        *,
        realm: str = "pbxmesh",
        nonce_lifetime: float = 300.0,
        key: bytes | None = None,
    ) -> None:
        self.username, self.secret, self.realm = username, secret, realm
        self.nonce_lifetime = nonce_lifetime
        self._key = key or secrets.token_bytes(32)

    def _nonce(self, now: float) -> str:
        stamp = f"{now:.3f}"
        mac = hmac.new(self._key, stamp.encode(), hashlib.sha256).hexdigest()[:32]
        return f"{stamp}.{mac}"

    def challenge(self, now: float, *, stale: bool = False) -> str:
        """A ``WWW-Authenticate`` value."""
        text = f'Digest realm="{self.realm}", nonce="{self._nonce(now)}", algorithm=MD5, qop="auth"'
        return text + (", stale=true" if stale else "")

    def _nonce_age(self, nonce: str, now: float) -> float | None:
        stamp, _, mac = nonce.rpartition(".")
        try:
            issued = float(stamp)
        except ValueError:
            return None
        good = hmac.new(self._key, stamp.encode(), hashlib.sha256).hexdigest()[:32]
        if not hmac.compare_digest(good, mac):
            return None
        return now - issued

    def check(self, credentials: str | None, method: str, now: float) -> Verdict:
        """Verify an ``Authorization`` value for a request of ``method``."""
        if credentials is None:
            return Verdict(False, self.challenge(now), "no credentials")
        try:
            p = parse_digest(credentials)
        except RemoteProtocolError as exc:
            return Verdict(False, self.challenge(now), str(exc))
        algorithm = p.get("algorithm", "MD5").upper()
        needed = ("username", "realm", "nonce", "uri", "response")
        if algorithm not in _ALGORITHMS or any(k not in p for k in needed):
            return Verdict(False, self.challenge(now), "incomplete credentials")
        if p["username"] != self.username or p["realm"] != self.realm:
            return Verdict(False, self.challenge(now), f"unknown user {p['username']!r:.40}")
        age = self._nonce_age(p["nonce"], now)
        if age is None or age < -1.0:
            return Verdict(False, self.challenge(now), "a nonce we did not issue")
        qop = p.get("qop")
        if qop not in (None, "auth") or (qop and ("nc" not in p or "cnonce" not in p)):
            return Verdict(False, self.challenge(now), f"unsupported qop {qop!r:.20}")
        expected = _response(
            algorithm,
            self.username,
            self.realm,
            self.secret,
            method,
            p["uri"],
            p["nonce"],
            qop,
            p.get("nc", ""),
            p.get("cnonce", ""),
        )
        if not hmac.compare_digest(expected, p["response"].lower()):
            return Verdict(False, self.challenge(now), "wrong password")
        if age > self.nonce_lifetime:
            return Verdict(False, self.challenge(now, stale=True), "stale nonce")
        return Verdict(True)
