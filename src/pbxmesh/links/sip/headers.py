"""Structured SIP header values: Via, CSeq, and the parameters of name-addr headers.

Each type parses strictly (:class:`~pbxmesh.errors.RemoteProtocolError` on bad input, since
what is parsed comes from a peer) and prints the canonical form; ``parse(str(x)) == x``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from ...errors import LocalProtocolError, RemoteProtocolError

__all__ = ["BRANCH_MAGIC", "CSeq", "Via", "header_param", "uri_user"]

#: RFC 3261 §8.1.1.7: branches of compliant elements start with this cookie.
BRANCH_MAGIC: Final = "z9hG4bK"
_TOKEN: Final = r"[A-Za-z0-9\-.!%*_+`'~]+"
_TOKEN_RE: Final = re.compile(rf"^{_TOKEN}$")
_HOST_RE: Final = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-.]+)$")
_VIA_RE: Final = re.compile(
    rf"^SIP[ \t]*/[ \t]*2\.0[ \t]*/[ \t]*({_TOKEN})[ \t]+(\[[^\]]+\]|[^;: \t]+)"
    r"(?:[ \t]*:[ \t]*([0-9]{1,5}))?[ \t]*((?:;.*)?)$",
    re.I,
)
_VALUE_RE: Final = re.compile(r"^\[?[0-9A-Za-z:.\-]+\]?$")
_MAX_CSEQ: Final = 2**31 - 1


def _params(text: str) -> tuple[tuple[str, str | None], ...]:
    """``;a=b;c`` → ``(("a", "b"), ("c", None))``; names lower-cased."""
    out: list[tuple[str, str | None]] = []
    for raw in text.split(";")[1:]:
        name, eq, value = raw.partition("=")
        name = name.strip().lower()
        value = value.strip()
        if not _TOKEN_RE.match(name) or (eq and not value):
            raise RemoteProtocolError(f"bad SIP parameter {raw[:40]!r}")
        if eq and not (_TOKEN_RE.match(value) or _VALUE_RE.match(value)):
            raise RemoteProtocolError(f"bad SIP parameter value {raw[:40]!r}")
        out.append((name, value if eq else None))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Via:
    """One Via value: ``SIP/2.0/UDP host:port;branch=...;rport;received=...``.

    ``params`` keeps every parameter in order; ``rport`` is absent (not in params), empty
    (``;rport``, a request asking for it) or a port number (a response filling it in).
    """

    transport: str
    host: str
    port: int | None = None
    params: tuple[tuple[str, str | None], ...] = ()

    def __post_init__(self) -> None:
        if not _TOKEN_RE.match(self.transport) or not _HOST_RE.match(self.host):
            raise LocalProtocolError(f"bad Via sent-by {self.transport} {self.host!r}")
        if self.port is not None and not 0 < self.port < 65536:
            raise LocalProtocolError(f"bad Via port {self.port}")
        object.__setattr__(self, "transport", self.transport.upper())

    @classmethod
    def parse(cls, value: str) -> Via:
        m = _VIA_RE.match(value.strip())
        if not m:
            raise RemoteProtocolError(f"bad Via {value[:80]!r}")
        try:
            port = int(m.group(3)) if m.group(3) else None
            return cls(m.group(1), m.group(2), port, _params(m.group(4)))
        except LocalProtocolError as exc:
            raise RemoteProtocolError(f"bad Via {value[:80]!r}: {exc}") from None

    def param(self, name: str) -> str | None:
        """The value of a parameter; ``""`` for one without a value; None if absent."""
        for key, value in self.params:
            if key == name:
                return "" if value is None else value
        return None

    @property
    def branch(self) -> str | None:
        return self.param("branch") or None

    def replace_params(self, **values: str | None) -> Via:
        """A copy with parameters set (``None`` value: a flag like ``;rport``), order kept."""
        params = list(self.params)
        for name, value in values.items():
            for i, (key, _) in enumerate(params):
                if key == name:
                    params[i] = (name, value)
                    break
            else:
                params.append((name, value))
        return Via(self.transport, self.host, self.port, tuple(params))

    def __str__(self) -> str:
        port = f":{self.port}" if self.port is not None else ""
        params = "".join(f";{k}" if v is None else f";{k}={v}" for k, v in self.params)
        return f"SIP/2.0/{self.transport} {self.host}{port}{params}"


@dataclass(frozen=True, slots=True)
class CSeq:
    """``CSeq: 286 PUBLISH``."""

    seq: int
    method: str

    def __post_init__(self) -> None:
        if not 0 <= self.seq <= _MAX_CSEQ or not _TOKEN_RE.match(self.method):
            raise LocalProtocolError(f"bad CSeq {self.seq} {self.method!r}")

    @classmethod
    def parse(cls, value: str) -> CSeq:
        parts = value.split()
        if len(parts) != 2 or not parts[0].isascii() or not parts[0].isdigit():
            raise RemoteProtocolError(f"bad CSeq {value[:40]!r}")
        try:
            return cls(int(parts[0]), parts[1])
        except LocalProtocolError as exc:
            raise RemoteProtocolError(str(exc)) from None

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"


def header_param(value: str, name: str) -> str | None:
    """A header parameter of a name-addr value (``<sip:a@b;x=y>;tag=1`` → tag ``1``).

    Parameters inside ``<...>`` belong to the URI and are not looked at.
    """
    close = value.rfind(">")
    tail = value[close + 1 :] if close >= 0 else value
    for raw in tail.split(";")[1:]:
        key, _, val = raw.partition("=")
        if key.strip().lower() == name:
            return val.strip()
    return None


def uri_user(uri: str) -> str | None:
    """The user part of a ``sip:user@host`` URI (inside ``<>`` or bare), or None."""
    start = uri.find("<")
    if start >= 0:
        uri = uri[start + 1 : uri.find(">", start) if ">" in uri[start:] else len(uri)]
    scheme, colon, rest = uri.partition(":")
    if not colon or scheme.lower() not in ("sip", "sips"):
        return None
    user, at, _ = rest.partition("@")
    return user.split(";")[0] if at else None
