"""Sans-IO codec for the Asterisk Manager Interface (AMI), client and server side.

Theory of operation
-------------------
AMI is line oriented. On connect the server writes one banner line
``Asterisk Call Manager/X.Y.Z``; after that both directions exchange *blocks* of
``Key: Value`` lines, each ended by CRLF (a bare LF is accepted on input), a block being ended
by an empty line. Keys are looked up case-insensitively and the first match wins, but a block
keeps every header in order, duplicates included (``Output:`` lines of a ``Command``).

One :class:`AmiCodec` is one end of one connection. Its ``role`` says which end:

* ``Role.CLIENT`` sends :class:`Action` and decodes :class:`Banner`, :class:`Response`,
  :class:`Event`;
* ``Role.SERVER`` (used by the simulator) sends banner/responses/events and decodes
  :class:`Action`.

Feed bytes with :meth:`AmiCodec.receive_data` (``b""`` means end of file) and pull with
:meth:`AmiCodec.next_event`, which returns a message, :data:`NEED_DATA`, or :data:`CLOSED`
once the peer's end of file has been reached and every complete block was returned.

Errors never wedge the decoder. A block that cannot be a message (a line without ``:``, a
line longer than ``max_line`` bytes, a block with neither ``Response`` nor ``Event``) makes
:meth:`~AmiCodec.next_event` raise :class:`~pbxmesh.errors.RemoteProtocolError` **once**; the
codec then discards input up to the next empty line and carries on with the next block. The
caller logs, counts and drops; the link survives. End of file in the middle of a block raises
one error too (the partial block is lost), then :data:`CLOSED` follows.

Legacy ``Command`` output (Asterisk before 14) is a block ``Response: Follows`` whose header
lines are followed by raw CLI lines up to a ``--END COMMAND--`` marker (blank lines included).
The decoder turns it into a :class:`Response` with one ``Output`` header per raw line, the
shape modern Asterisk sends, so callers read :attr:`Response.output` either way.

Values: Asterisk's own parser skips all leading blanks of a value, which is what the server
role does. Asterisk always *writes* ``Key: Value`` with exactly one space, and ``Output:``
lines carry meaningful indentation (``Output:     -= Registered ...``), so the client role
removes exactly one space after the colon.

:class:`ListAssembler` gathers list responses (``EventList: start`` … ``XxxComplete``) into one
:class:`ListResponse`; it is sans-IO as well and is used by the asyncio client.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from ...errors import LocalProtocolError, RemoteProtocolError
from .messages import BANNER_RE, Action, AmiMessage, Banner, Event, Headers, Message, Response

__all__ = [
    "CLOSED",
    "MAX_LINE",
    "NEED_DATA",
    "Action",
    "AmiCodec",
    "AmiMessage",
    "Banner",
    "Event",
    "ListAssembler",
    "ListResponse",
    "Message",
    "Response",
    "Role",
    "Signal",
]

#: Asterisk's manager line buffer; a longer line is refused (line terminator included).
MAX_LINE: Final = 1024
#: Asterisk's limit of headers kept per inbound message (server role).
MAX_HEADERS: Final = 128
#: Upper bound of lines in one block (legacy ``Follows`` output has no other bound).
MAX_BLOCK_LINES: Final = 100_000
_END_COMMAND: Final = "--END COMMAND--"
_LEGACY_HEADERS: Final = frozenset({"actionid", "privilege", "message"})


class Role(enum.Enum):
    """Which end of the connection a codec is."""

    CLIENT = "client"
    SERVER = "server"


class Signal(enum.Enum):
    """Non-message results of :meth:`AmiCodec.next_event`."""

    NEED_DATA = "NEED_DATA"
    CLOSED = "CLOSED"


NEED_DATA: Final = Signal.NEED_DATA
CLOSED: Final = Signal.CLOSED


class AmiCodec:
    """One end of an AMI connection; see the module docstring."""

    def __init__(self, role: Role, *, max_line: int = MAX_LINE) -> None:
        self.role = role
        self.max_line = max_line
        self._buf = bytearray()
        self._eof = False
        self._closed = False
        self._banner_pending = role is Role.CLIENT
        self._headers: list[tuple[str, str]] = []
        self._skipping = False  # discarding up to the next empty line after an error
        self._long_line = False  # discarding the rest of an over-long line
        self._follows = False  # inside a legacy "Response: Follows" block
        self._follows_output = False  # past its header lines

    # -- input --------------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the peer; ``b""`` signals end of file."""
        if self._eof:
            if data:
                raise LocalProtocolError("receive_data() called after end of file")
            return
        if not data:
            self._eof = True
            return
        self._buf += data

    @property
    def in_block(self) -> bool:
        """True while part of a block has been read (a disconnect now loses it)."""
        return bool(self._headers) or self._follows or bool(self._buf)

    def next_event(self) -> AmiMessage | Signal:
        """The next decoded message, :data:`NEED_DATA`, or :data:`CLOSED`.

        Raises :class:`RemoteProtocolError` once per bad block; call again to continue.
        """
        while True:
            line = self._next_line()
            if line is None:
                if not self._eof:
                    return NEED_DATA
                if self._closed:
                    return CLOSED
                self._closed = True
                lost = self.in_block and not self._skipping
                self._reset_block()
                self._buf.clear()
                if lost:
                    raise RemoteProtocolError(
                        "AMI connection closed in the middle of a message; the partial "
                        "message was dropped"
                    )
                return CLOSED
            message = self._take_line(line)
            if message is not None:
                return message

    def _fail(self, text: str) -> RemoteProtocolError:
        self._reset_block()
        self._skipping = True
        return RemoteProtocolError(text + "; skipping to the next empty line")

    def _reset_block(self) -> None:
        self._headers = []
        self._follows = self._follows_output = False

    def _next_line(self) -> str | None:
        while True:
            idx = self._buf.find(b"\n")
            if self._long_line:
                if idx < 0:
                    self._buf.clear()
                    return None
                del self._buf[: idx + 1]
                self._long_line = False
                continue
            if idx < 0:
                if len(self._buf) > self.max_line:
                    self._buf.clear()
                    self._long_line = True
                    raise self._fail(
                        f"AMI line longer than {self.max_line} bytes (Asterisk's limit)"
                    )
                return None
            if idx + 1 > self.max_line:
                del self._buf[: idx + 1]
                raise self._fail(f"AMI line of {idx + 1} bytes exceeds {self.max_line} bytes")
            raw = bytes(self._buf[:idx])
            del self._buf[: idx + 1]
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            return raw.decode("utf-8", "surrogateescape")

    def _take_line(self, line: str) -> AmiMessage | None:
        if self._banner_pending:
            self._banner_pending = False
            if BANNER_RE.match(line) and "\r" not in line:
                return Banner(line)
            raise RemoteProtocolError(
                f"expected the AMI banner 'Asterisk Call Manager/X.Y.Z', got {line[:80]!r}; "
                "is this port an Asterisk manager?"
            )
        if self._skipping:
            if line == "":
                self._skipping = False
            return None
        if len(self._headers) >= MAX_BLOCK_LINES:
            raise self._fail(f"AMI block longer than {MAX_BLOCK_LINES} lines")
        if self._follows:
            return self._take_legacy(line)
        if line == "":
            if not self._headers:
                return None  # stray blank line between blocks
            headers = tuple(self._headers)
            self._reset_block()
            return self._build(headers)
        self._take_header(line)
        return None

    def _take_header(self, line: str) -> None:
        """One ``Key: Value`` line of the block being read."""
        key, sep, value = line.partition(":")
        if not sep or not key or key.strip() != key or "\r" in line:
            if self.role is Role.SERVER:
                return  # Asterisk keeps such a line but no header lookup can match it
            raise self._fail(f"AMI line {line[:60]!r} is not 'Key: Value'")
        if self.role is Role.SERVER:
            if len(self._headers) >= MAX_HEADERS:
                return  # Asterisk stores at most 128 headers and ignores the rest
            value = value.lstrip(" \t")
        elif value.startswith(" "):
            value = value[1:]
        if (
            self.role is Role.CLIENT
            and not self._headers
            and key.lower() == "response"
            and value.strip().lower() == "follows"
        ):
            self._follows = True
        self._headers.append((key, value))

    def _take_legacy(self, line: str) -> AmiMessage | None:
        end = line.endswith(_END_COMMAND)
        if end:
            line = line[: -len(_END_COMMAND)]
        if not self._follows_output and not end:
            key, sep, value = line.partition(":")
            if sep and key.lower() in _LEGACY_HEADERS:
                self._headers.append((key, value[1:] if value.startswith(" ") else value))
                return None
            self._follows_output = True
        if not end or line:
            if "\r" in line:
                line = line.replace("\r", "")
            self._headers.append(("Output", line))
        if not end:
            return None
        headers = tuple(self._headers)
        self._reset_block()
        return Response(headers)

    def _build(self, headers: Headers) -> AmiMessage:
        keys = {k.lower() for k, _ in headers}
        try:
            if self.role is Role.SERVER:
                return Action(headers)
            if "response" in keys:
                return Response(headers)
            if "event" in keys:
                return Event(headers)
        except LocalProtocolError as exc:  # pragma: no cover - decoded lines are checked above
            raise RemoteProtocolError(f"AMI block is not valid: {exc}") from exc
        first = headers[0][0]
        raise RemoteProtocolError(
            f"AMI block starting with {first!r} has neither a Response nor an Event header; dropped"
        )

    # -- output -------------------------------------------------------------------------------

    def send(self, message: AmiMessage) -> bytes:
        """Encode ``message``; raises :class:`LocalProtocolError` if this role cannot send it."""
        if self.role is Role.CLIENT:
            if not isinstance(message, Action):
                raise LocalProtocolError(f"an AMI client sends actions, not {message!r}")
        elif isinstance(message, Action):
            raise LocalProtocolError("an AMI server does not send actions")
        if isinstance(message, Banner):
            return self._line(message.text)
        if isinstance(message, Response) and message.status.lower() == "follows":
            return self._send_legacy(message)
        out = bytearray()
        for key, value in message.headers:
            out += self._line(f"{key}: {value}")
        out += b"\r\n"
        return bytes(out)

    def _line(self, text: str) -> bytes:
        data = text.encode("utf-8", "surrogateescape") + b"\r\n"
        if len(data) > self.max_line:
            raise LocalProtocolError(
                f"AMI line of {len(data)} bytes exceeds the {self.max_line}-byte limit: "
                f"{text[:60]!r}..."
            )
        return data

    def _send_legacy(self, message: Response) -> bytes:
        out = bytearray()
        for key, value in message.headers:
            if key.lower() != "output":
                out += self._line(f"{key}: {value}")
        for line in message.output:
            out += self._line(line)
        out += b"--END COMMAND--\r\n\r\n"
        return bytes(out)


@dataclass(frozen=True, slots=True)
class ListResponse:
    """A whole list answer: the ack, its items, and the ``XxxComplete`` event."""

    response: Response
    items: tuple[Event, ...]
    complete: Event

    def __post_init__(self) -> None:
        if not self.complete.completes_list:
            raise LocalProtocolError("a list must end with an 'EventList: Complete' event")

    @property
    def action_id(self) -> str | None:
        return self.response.action_id


class ListAssembler:
    """Gathers list responses by ``ActionID``.

    :meth:`feed` returns the message unchanged when it is not part of a list, ``None`` when it
    was absorbed (the ``EventList: start`` ack or an item), and a :class:`ListResponse` when
    the ``Complete`` event arrives. Items of a list whose start was never seen pass through.
    """

    def __init__(self) -> None:
        self._open: dict[str, tuple[Response, list[Event]]] = {}

    def feed(self, message: Response | Event) -> Response | Event | ListResponse | None:
        action_id = message.action_id
        if isinstance(message, Response):
            if message.ok and message.starts_list and action_id is not None:
                self._open[action_id] = (message, [])
                return None
            return message
        if action_id is None or action_id not in self._open:
            return message
        if message.completes_list:
            response, items = self._open.pop(action_id)
            return ListResponse(response, tuple(items), message)
        self._open[action_id][1].append(message)
        return None

    def abandon(self) -> None:
        """Forget every open list (the connection was lost)."""
        self._open.clear()
