"""Sans-IO SIP message codec: the RFC 3261 syntax that a PUBLISH link needs, and no more.

Library or hand-written?
------------------------
The Python SIP libraries were looked at first. ``aiosip``/``asyncsip`` have had no release since
2017 (and no tests); ``aiovoip`` is its early-stage fork ("use at your own risk"); ``aiosipua``
is a months-old voice-AI library built around INVITE/SDP call handling; ``pyvoip``/``rfcvoip``
are thread-based softphones; ``pjsua2`` wheels are unofficial C++ bindings. None is sans-IO,
none implements the RFC 3903 server side (entity tags, conditional requests), and each would
bring a large I/O-bound surface we could not fuzz or type-check. The subset used here (one
method, no dialogs, no SDP, no proxying) is small enough to write and fuzz like the other
codecs of the project, so it is written here.

Theory of operation
-------------------
A message is a frozen :class:`Request` or :class:`Response`: a start line, a tuple of
``(name, value)`` header pairs in wire order (duplicates kept) and a body of bytes. Names are
stored in canonical long form (``v`` and ``VIA`` both become ``Via``); unknown names are kept
as given and still looked up case-insensitively. ``Content-Length`` is never stored: the codec
computes it when encoding and checks it when decoding, so ``decode(encode(m)) == m``.

Decoding checks what a transaction layer relies on and raises
:class:`~pbxmesh.errors.RemoteProtocolError` otherwise: a well-formed start line, ``SIP/2.0``,
header lines of ``token ":" value`` (folded lines are joined), UTF-8 text, a single valid
Content-Length, and the five headers every message must carry (Via, From, To, Call-ID, CSeq,
with a parseable top Via and CSeq whose method matches a request's). Sizes are bounded
(:data:`MAX_MESSAGE`, :data:`MAX_HEADERS`).

Framing differs by transport (RFC 3261 §18.3):

* UDP — :func:`decode_datagram`: one datagram is one message; without Content-Length the body
  runs to the end; with it, extra bytes are ignored and missing bytes are an error.
* TCP — :class:`SipStream` (h11 style): ``receive_data(b)`` (``b""`` = EOF) and
  ``next_event()`` returning a message, :data:`NEED_DATA` or :data:`CLOSED`. Content-Length is
  mandatory; CRLF keep-alives (RFC 5626) between messages are skipped. A message whose framing
  was intact but whose content is bad raises once and the stream goes on; an error in the
  framing itself (no or bad Content-Length, an oversized header block) leaves the stream
  :attr:`~SipStream.broken`: every later call raises and the connection must be closed.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Final, TypeAlias

from ...errors import LocalProtocolError, RemoteProtocolError
from .headers import CSeq, Via

__all__ = [
    "CLOSED",
    "MAX_HEADERS",
    "MAX_MESSAGE",
    "NEED_DATA",
    "Message",
    "Request",
    "Response",
    "SipStream",
    "canonical_name",
    "decode_datagram",
    "encode",
]

#: The largest message accepted (a UDP datagram cannot carry more).
MAX_MESSAGE: Final = 65_535
#: The most header lines one message may carry.
MAX_HEADERS: Final = 128

Headers: TypeAlias = tuple[tuple[str, str], ...]

# RFC 3261 §7.3.3 and the IANA registry: compact forms.
_COMPACT: Final = {
    "a": "Accept-Contact",
    "b": "Referred-By",
    "c": "Content-Type",
    "d": "Request-Disposition",
    "e": "Content-Encoding",
    "f": "From",
    "i": "Call-ID",
    "j": "Reject-Contact",
    "k": "Supported",
    "l": "Content-Length",
    "m": "Contact",
    "n": "Identity-Info",
    "o": "Event",
    "r": "Refer-To",
    "s": "Subject",
    "t": "To",
    "u": "Allow-Events",
    "v": "Via",
    "x": "Session-Expires",
    "y": "Identity",
}
_KNOWN: Final = (
    "Accept",
    "Allow",
    "Authorization",
    "CSeq",
    "Expires",
    "Max-Forwards",
    "Min-Expires",
    "Proxy-Authenticate",
    "Proxy-Authorization",
    "Retry-After",
    "Server",
    "SIP-ETag",
    "SIP-If-Match",
    "Unsupported",
    "User-Agent",
    "WWW-Authenticate",
    *_COMPACT.values(),
)
_CANONICAL: Final = {name.lower(): name for name in _KNOWN} | _COMPACT
_TOKEN_RE: Final = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~]+$")
_URI_RE: Final = re.compile(r"^[A-Za-z][A-Za-z0-9+\-.]*:[!-~]+$")
_REASON_BAD: Final = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_VALUE_BAD: Final = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_VERSION: Final = "SIP/2.0"
_MANDATORY: Final = ("Via", "From", "To", "Call-ID", "CSeq")


class Signal(enum.Enum):
    """Non-message results of :meth:`SipStream.next_event`."""

    NEED_DATA = "NEED_DATA"
    CLOSED = "CLOSED"


NEED_DATA: Final = Signal.NEED_DATA
CLOSED: Final = Signal.CLOSED


def canonical_name(name: str) -> str:
    """The long, canonical spelling of a header name (compact forms expanded)."""
    return _CANONICAL.get(name.lower(), name)


_GOOD_NAMES: dict[str, str] = {}  # header names already checked -> canonical spelling


def _check_headers(headers: Headers) -> Headers:
    out = []
    for name, value in headers:
        canon = _GOOD_NAMES.get(name) if isinstance(name, str) else None
        if canon is None:
            if not isinstance(name, str) or not _TOKEN_RE.match(name):
                raise LocalProtocolError(f"SIP header name {name!r} is not a token")
            canon = canonical_name(name)
            if len(_GOOD_NAMES) < 1024:  # bounded: hostile peers may send many names
                _GOOD_NAMES[name] = canon
        if not isinstance(value, str) or _VALUE_BAD.search(value) or value != value.strip():
            raise LocalProtocolError(
                f"SIP header {name} value {value!r} has control characters or outer blanks"
            )
        if canon == "Content-Length":
            raise LocalProtocolError("Content-Length is computed by the codec; do not set it")
        out.append((canon, value))
    if len(out) > MAX_HEADERS:
        raise LocalProtocolError(f"a SIP message carries at most {MAX_HEADERS} headers")
    return tuple(out)


class _Base:
    """Header look-up shared by requests and responses."""

    __slots__ = ()
    headers: Headers

    def get(self, name: str) -> str | None:
        """The first value of header ``name`` (any spelling), or None."""
        exact = canonical_name(name)
        canon = exact.lower()
        for key, value in self.headers:
            if key == exact or key.lower() == canon:
                return value
        return None

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name``, header lines and comma-separated lists both split."""
        canon = canonical_name(name).lower()
        values: list[str] = []
        for key, value in self.headers:
            if key.lower() == canon:
                values.extend(split_list(value))
        return values

    @property
    def vias(self) -> list[Via]:
        """Every Via, top first (raises RemoteProtocolError on a malformed one)."""
        return [Via.parse(v) for v in self.get_all("Via")]

    @property
    def top_via(self) -> Via:
        vias = self.get_all("Via")
        if not vias:
            raise RemoteProtocolError("SIP message without Via")
        return Via.parse(vias[0])

    @property
    def cseq(self) -> CSeq:
        value = self.get("CSeq")
        if value is None:
            raise RemoteProtocolError("SIP message without CSeq")
        return CSeq.parse(value)


@dataclass(frozen=True, slots=True)
class Request(_Base):
    """A SIP request, e.g. ``PUBLISH sip:pbxmesh@127.0.0.1 SIP/2.0``."""

    method: str
    uri: str
    headers: Headers = ()
    body: bytes = b""

    def __post_init__(self) -> None:
        if not isinstance(self.method, str) or not _TOKEN_RE.match(self.method):
            raise LocalProtocolError(f"SIP method {self.method!r} is not a token")
        if not isinstance(self.uri, str) or not _URI_RE.match(self.uri):
            raise LocalProtocolError(f"SIP Request-URI {self.uri!r} is not a URI")
        object.__setattr__(self, "headers", _check_headers(tuple(self.headers)))
        if not isinstance(self.body, bytes):
            raise LocalProtocolError("a SIP body is bytes")


@dataclass(frozen=True, slots=True)
class Response(_Base):
    """A SIP response, e.g. ``SIP/2.0 200 OK``."""

    status: int
    reason: str
    headers: Headers = ()
    body: bytes = b""

    def __post_init__(self) -> None:
        if not isinstance(self.status, int) or not 100 <= self.status <= 699:
            raise LocalProtocolError(f"SIP status {self.status!r} is not in 100..699")
        if (
            not isinstance(self.reason, str)
            or _REASON_BAD.search(self.reason)
            or self.reason != self.reason.strip()
        ):
            raise LocalProtocolError(f"SIP reason phrase {self.reason!r} is not valid")
        object.__setattr__(self, "headers", _check_headers(tuple(self.headers)))
        if not isinstance(self.body, bytes):
            raise LocalProtocolError("a SIP body is bytes")


Message: TypeAlias = Request | Response


def split_list(value: str) -> list[str]:
    """Split a comma-separated header value, ignoring commas inside quotes and ``<...>``."""
    if "," not in value:  # the common case: one value
        value = value.strip()
        return [value] if value else []
    if '"' not in value and "<" not in value:
        return [p for p in (part.strip() for part in value.split(",")) if p]
    parts: list[str] = []
    start = 0
    quoted = escaped = False
    angle = 0
    for i, ch in enumerate(value):
        if escaped:
            escaped = False
        elif quoted:
            if ch == "\\":
                escaped = True
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == "<":
            angle += 1
        elif ch == ">" and angle:
            angle -= 1
        elif ch == "," and not angle:
            parts.append(value[start:i].strip())
            start = i + 1
    parts.append(value[start:].strip())
    return [p for p in parts if p]


def encode(message: Message) -> bytes:
    """The wire form: start line, headers in order, a computed Content-Length, the body."""
    if isinstance(message, Request):
        lines = [f"{message.method} {message.uri} {_VERSION}"]
    else:
        lines = [f"{_VERSION} {message.status} {message.reason}".rstrip()]
    lines.extend(f"{name}: {value}" for name, value in message.headers)
    lines.append(f"Content-Length: {len(message.body)}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")
    data = head + message.body
    if len(data) > MAX_MESSAGE:
        raise LocalProtocolError(f"a SIP message of {len(data)} bytes exceeds {MAX_MESSAGE}")
    return data


def _parse_head(head: bytes) -> tuple[Message, int | None]:
    """Parse the start line and header block (no terminating blank line).

    Returns the message without body and the Content-Length if one was given.
    """
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RemoteProtocolError(f"SIP header block is not UTF-8: {exc}") from None
    lines = text.replace("\r\n", "\n").split("\n")
    start, raw = lines[0], lines[1:]
    # Unfold continuation lines (RFC 3261 §7.3.1).
    joined: list[str] = []
    for line in raw:
        if line[:1] in (" ", "\t") and joined:
            joined[-1] = f"{joined[-1]} {line.strip()}"
        elif line:
            joined.append(line)
        else:
            raise RemoteProtocolError("empty line inside a SIP header block")
    if len(joined) > MAX_HEADERS:
        raise RemoteProtocolError(f"SIP message with more than {MAX_HEADERS} headers")
    headers: list[tuple[str, str]] = []
    length: int | None = None
    for line in joined:
        name, colon, value = line.partition(":")
        name = name.rstrip(" \t")
        if not colon or not _TOKEN_RE.match(name):
            raise RemoteProtocolError(f"SIP header line {line[:60]!r} is not 'Name: value'")
        value = value.strip(" \t")
        if _VALUE_BAD.search(value):
            raise RemoteProtocolError(f"SIP header {name} has control characters")
        canon = canonical_name(name)
        if canon == "Content-Length":
            if length is not None or not value.isascii() or not value.isdigit():
                raise RemoteProtocolError(f"bad or repeated Content-Length {value[:20]!r}")
            length = int(value)
            if length > MAX_MESSAGE:
                raise RemoteProtocolError(f"Content-Length {length} exceeds {MAX_MESSAGE}")
            continue
        headers.append((canon, value))
    message = _parse_start(start, tuple(headers))
    _check_mandatory(message)
    return message, length


def _parse_start(start: str, headers: Headers) -> Message:
    parts = start.split(" ", 2)
    try:
        if start.startswith(_VERSION + " "):
            if len(parts) < 2 or len(parts[1]) != 3 or not parts[1].isdigit():
                raise RemoteProtocolError(f"bad SIP status line {start[:60]!r}")
            reason = parts[2].strip() if len(parts) == 3 else ""
            return Response(int(parts[1]), reason, headers)
        if len(parts) != 3 or parts[2] != _VERSION:
            raise RemoteProtocolError(f"bad SIP request line {start[:60]!r}")
        return Request(parts[0], parts[1], headers)
    except LocalProtocolError as exc:
        raise RemoteProtocolError(f"bad SIP start line {start[:60]!r}: {exc}") from None


def _check_mandatory(message: Message) -> None:
    for name in _MANDATORY:
        if message.get(name) is None:
            raise RemoteProtocolError(f"SIP message without {name}")
    message.top_via  # noqa: B018 - parses, raises on a bad one
    cseq = message.cseq
    if isinstance(message, Request) and cseq.method != message.method:
        raise RemoteProtocolError(
            f"CSeq method {cseq.method} does not match request method {message.method}"
        )


def _with_body(message: Message, body: bytes) -> Message:
    # The message was built (and its headers checked) a moment ago by the decoder and nobody
    # else holds it: set its body in place rather than checking every header again.
    if body:
        object.__setattr__(message, "body", bytes(body))
    return message


def decode_datagram(data: bytes) -> Message:
    """Decode one UDP datagram holding exactly one message."""
    if len(data) > MAX_MESSAGE:
        raise RemoteProtocolError(f"SIP datagram of {len(data)} bytes exceeds {MAX_MESSAGE}")
    data = data.lstrip(b"\r\n")
    end = data.find(b"\r\n\r\n")
    if end >= 0:
        head, rest = data[:end], data[end + 4 :]
    else:
        end = data.find(b"\n\n")
        if end < 0:
            raise RemoteProtocolError("SIP datagram without the blank line ending its headers")
        head, rest = data[:end], data[end + 2 :]
    message, length = _parse_head(head)
    if length is not None:
        if length > len(rest):
            raise RemoteProtocolError(
                f"Content-Length {length} but only {len(rest)} body bytes in the datagram"
            )
        rest = rest[:length]
    return _with_body(message, rest)


class SipStream:
    """Framing of SIP messages on one TCP connection (receive side)."""

    def __init__(self, max_message: int = MAX_MESSAGE) -> None:
        self._buf = bytearray()
        self._eof = False
        self._max = max_message
        self.broken: RemoteProtocolError | None = None
        """The framing error that ended this stream, if one did."""

    def receive_data(self, data: bytes) -> None:
        """Add received bytes; ``b""`` means the peer closed its side."""
        if data:
            self._buf += data
        else:
            self._eof = True

    def next_event(self) -> Message | Signal:
        """The next complete message, :data:`NEED_DATA` or :data:`CLOSED`."""
        if self.broken is not None:
            raise RemoteProtocolError(f"SIP stream is broken: {self.broken}")
        # Skip CRLF keep-alives between messages (RFC 5626 §3.5.1).
        skip = len(self._buf) - len(self._buf.lstrip(b"\r\n"))
        if skip:
            del self._buf[:skip]
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buf) > self._max:
                return self._break(f"SIP header block longer than {self._max} bytes")
            if self._eof:
                if self._buf:
                    return self._break("connection closed in the middle of a SIP message")
                return CLOSED
            return NEED_DATA
        if end > self._max:
            return self._break(f"SIP header block longer than {self._max} bytes")
        head = bytes(self._buf[:end])
        length = _stream_length(head)
        if isinstance(length, str):
            return self._break(length)
        total = end + 4 + length
        if total > self._max:
            return self._break(f"SIP message of {total} bytes exceeds {self._max}")
        if len(self._buf) < total:
            if self._eof:
                return self._break("connection closed in the middle of a SIP body")
            return NEED_DATA
        body = bytes(self._buf[end + 4 : total])
        del self._buf[:total]
        message, _ = _parse_head(head)  # framing is intact: an error here is per message
        return _with_body(message, body)

    def _break(self, why: str) -> Signal:
        self.broken = RemoteProtocolError(why)
        self._buf.clear()
        raise self.broken


_CL_RE: Final = re.compile(rb"^(?:content-length|l)[ \t]*:[ \t]*(.*?)[ \t]*$", re.I | re.M)


def _stream_length(head: bytes) -> int | str:
    """The Content-Length of a header block, or the reason the framing cannot be trusted."""
    found = [m.group(1) for m in _CL_RE.finditer(head.replace(b"\r\n", b"\n"))]
    if len(found) != 1:
        return "SIP message on a stream needs exactly one Content-Length"
    if not found[0].isdigit():
        return f"bad Content-Length {found[0][:20]!r}"
    return int(found[0])
