"""The AMI server of the PBX simulator: sessions, authentication and actions.

Theory of operation
-------------------
Each TCP connection is a session using the shared sans-IO codec in the server role. It gets
the banner ``Asterisk Call Manager/13.0.0``; until it logs in only ``Login``, ``Logoff`` and
``Challenge`` are allowed (anything else: ``Permission denied``), and a session that does not
log in within ``auth_timeout`` is closed. A failed login is answered after ``login_fail_delay``
(1 s in Asterisk) and the connection is closed.

Actions mutate the :class:`~pbxmesh.pbxsim.pbx.SimPbx`; the events that raises are queued on
every logged-in session whose ``Events`` setting accepts them and flushed after the action's
response, so a client always sees a ``Setvar`` answer before the ``DeviceStateChange`` it
caused. Answers are laid out as Asterisk writes them: ``Response``, then ``ActionID`` if the
request had one, then ``EventList``/``Message``, then the action's fields. List items carry the
request's ``ActionID`` and no ``Privilege``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import RemoteProtocolError
from ..links.ami.codec import CLOSED, NEED_DATA, Action, AmiCodec, Banner, Event, Response, Role
from ..states import extension_state_text
from ..tasks import cancel_and_wait
from .dialplan import output_lines
from .pbx import SimPbx, ere_to_python
from .presence import escape_c, state_str

__all__ = ["AMI_VERSION", "SimServer"]

log = logging.getLogger(__name__)

#: seconds between writes of the simulator's state file (and one more at close)
FLUSH_INTERVAL = 0.2

AMI_VERSION = "13.0.0"
_UNAUTH_ALLOWED = frozenset({"login", "logoff", "challenge"})


@dataclass(slots=True, eq=False)
class _Session:
    writer: asyncio.StreamWriter
    codec: AmiCodec
    peer: str
    local: str = "?"
    authed: bool = False
    #: the event classes this session reads (Login's ``Events:``); None: every class
    events: frozenset[str] | None = None
    challenge: str | None = None
    #: the session's own event filters (Action: Filter): (exclude, pattern)
    filters: list[tuple[bool, re.Pattern[str]]] = field(default_factory=list)
    pending: list[Event] = field(default_factory=list)
    closing: bool = False

    def write(self, message: Response | Event | Banner) -> None:
        if not self.writer.is_closing():
            self.writer.write(self.codec.send(message))


def _event_mask(value: str | None) -> frozenset[str] | None:
    """Login's ``Events:`` as the set of classes read (None: all), as manager.c reads it:
    on/yes/true (or absent) all, off/no/false none, else a comma list of class names."""
    text = (value or "on").strip().lower()
    if text in {"on", "yes", "true", "1"}:
        return None
    if text in {"off", "no", "false", "0"}:
        return frozenset()
    return frozenset(c.strip() for c in text.split(",") if c.strip())


def _wants(mask: frozenset[str] | None, event: Event) -> bool:
    """Whether a session reading ``mask`` gets ``event``: all of the event's classes."""
    if mask is None:
        return True
    classes = {c for c in (event.get("Privilege") or "").split(",") if c and c != "all"}
    return bool(classes) and classes <= mask


def _passes(session: _Session, event: Event) -> bool:
    """The session's filters, as manager.c applies them to the event's text: with include
    filters, one must match; no exclude filter may match."""
    if not session.filters:
        return True
    text = "".join(f"{k}: {v}\r\n" for k, v in event.headers)
    includes = [p for neg, p in session.filters if not neg]
    if includes and not any(p.search(text) for p in includes):
        return False
    return not any(p.search(text) for neg, p in session.filters if neg)


def _event_tv() -> str:
    """Asterisk's EventTV: ISO 8601 with milliseconds and a numeric zone."""
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}+0000"


def _answer(action: Action, status: str, *fields: tuple[str, object]) -> Response:
    headers: list[tuple[str, object]] = [("Response", status)]
    if action.action_id is not None:
        headers.append(("ActionID", action.action_id))
    headers.extend(fields)
    return Response(tuple((k, str(v)) for k, v in headers))


def _error(action: Action, message: str) -> Response:
    return _answer(action, "Error", ("Message", message))


def _func_arg(variable: str, name: str) -> str | None:
    """The argument of ``NAME(arg)`` (name any case), or None."""
    if variable.endswith(")") and variable[: len(name) + 1].upper() == name + "(":
        return variable[len(name) + 1 : -1]
    return None


class SimServer:
    """Serves one :class:`SimPbx` over AMI."""

    def __init__(
        self,
        pbx: SimPbx,
        username: str,
        secret: str,
        *,
        login_fail_delay: float = 1.0,
        auth_timeout: float = 30.0,
        system: bool = True,
    ) -> None:
        self.pbx = pbx
        #: whether the user has manager.conf's "system" write class (Action: Filter needs it)
        self.system = system
        self.username = username
        self.secret = secret
        self.login_fail_delay = login_fail_delay
        self.auth_timeout = auth_timeout
        self._sessions: set[_Session] = set()
        self._server: asyncio.Server | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._started = time.time()
        self._closing = False
        self.host = ""
        self.port = 0
        pbx.listeners.append(self._on_event)
        self._actions: dict[str, Callable[[_Session, Action], Response | None]] = {
            "ping": self._ping,
            "getvar": self._getvar,
            "setvar": self._setvar,
            "devicestatelist": self._device_state_list,
            "extensionstatelist": self._extension_state_list,
            "extensionstate": self._extension_state,
            "mwiupdate": self._mwi_update,
            "mwiget": self._mwi_get,
            "mwidelete": self._mwi_delete,
            "mailboxcount": self._mailbox_count,
            "mailboxstatus": self._mailbox_status,
            "command": self._command,
            "filter": self._filter,
            "presencestate": self._presence_state,
        }
        if pbx.presence is not None:  # res_manager_presencestate
            self._actions["presencestatelist"] = self._presence_state_list
        # app_voicemail and res_mwi_external cannot both load: one set of actions or the other.
        mwi_external = ("mwiupdate", "mwiget", "mwidelete")
        voicemail = {
            "voicemailuserslist": self._voicemail_users_list,
            "voicemailrefresh": self._voicemail_refresh,
        }
        if pbx.voicemail is not None:
            for name in mwi_external:
                del self._actions[name]
            self._actions.update(voicemail)

    async def start(self, host: str, port: int, *, sock: socket.socket | None = None) -> None:
        """Listen; ``port`` 0 picks a free one (read it back from :attr:`port`). With ``sock``
        serve on that bound socket instead (``host`` and ``port`` are then ignored): a harness
        makes it inside another network namespace, where the daemon under test runs."""
        if sock is not None:
            self._server = await asyncio.start_server(self._serve, sock=sock)
        else:
            self._server = await asyncio.start_server(self._serve, host, port)
        name = self._server.sockets[0].getsockname()
        self.host, self.port = name[0], name[1]
        self._flusher = asyncio.create_task(self._flush_loop(), name="sim state flush")
        log.info("simulator listening on %s:%d", self.host, self.port)

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            self.pbx.flush()

    async def close(self) -> None:
        """Stop listening and drop every session (as an Asterisk that stops)."""
        self._closing = True
        await cancel_and_wait(self._flusher)
        self._flusher = None
        self.pbx.flush()
        if self._server is not None:
            self._server.close()
        # connections accepted just before close() have handler tasks that have not run yet;
        # let them start (they close at once, see _serve) so no socket is left behind
        for _ in range(3):
            await asyncio.sleep(0)
        for session in list(self._sessions):
            session.writer.close()
        await cancel_and_wait(*self._handlers)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(ValueError):
            self.pbx.listeners.remove(self._on_event)

    def flush_events(self) -> None:
        """Send the events raised since the last action; a harness that changes the PBX
        directly (not through an AMI action) calls it after its changes."""
        self._flush()

    def drop_connections(self) -> int:
        """Close every AMI session at once, as a network fault would; the listener stays, so
        clients may reconnect. Returns how many were closed."""
        sessions = list(self._sessions)
        for session in sessions:
            session.writer.transport.abort()
        return len(sessions)

    async def serve_forever(self) -> None:
        assert self._server is not None
        await self._server.serve_forever()

    # -- sessions ------------------------------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        for session in self._sessions:
            if session.authed and _wants(session.events, event) and _passes(session, event):
                session.pending.append(event)

    def _flush(self) -> None:
        for session in self._sessions:
            for event in session.pending:
                session.write(event)
            session.pending.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._closing:
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        peername = writer.get_extra_info("peername")
        peer = f"{peername[0]}:{peername[1]}" if peername else "?"
        sockname = writer.get_extra_info("sockname")
        local = f"{sockname[0]}/{sockname[1]}" if sockname else "?"
        session = _Session(writer, AmiCodec(Role.SERVER), peer, local)
        self._sessions.add(session)
        log.info("simulator AMI connection from %s", peer)
        try:
            session.write(Banner(f"Asterisk Call Manager/{AMI_VERSION}"))
            await self._session_loop(session, reader)
        except (ConnectionError, OSError, TimeoutError):
            pass
        finally:
            self._sessions.discard(session)
            self._handlers.discard(task)
            writer.close()

    async def _session_loop(self, session: _Session, reader: asyncio.StreamReader) -> None:
        deadline = asyncio.get_running_loop().time() + self.auth_timeout
        while not session.closing:
            if session.authed:
                data = await reader.read(65536)
            else:
                async with asyncio.timeout_at(deadline):
                    data = await reader.read(65536)
            session.codec.receive_data(data)
            while not session.closing:
                try:
                    message = session.codec.next_event()
                except RemoteProtocolError as exc:
                    if "exceeds" in str(exc) or "longer than" in str(exc):
                        session.write(
                            Response.of("Error", Message="Failed to parse message: line too long")
                        )
                    continue
                if message is NEED_DATA:
                    break
                if message is CLOSED:
                    return
                assert isinstance(message, Action)
                await self._handle(session, message)
                self._flush()
            await session.writer.drain()

    async def _handle(self, session: _Session, action: Action) -> None:
        name = action.name.lower()
        if not name:
            session.write(_error(action, "Missing action in request"))
            return
        if not session.authed and name not in _UNAUTH_ALLOWED:
            session.write(_error(action, "Permission denied"))
            return
        if name == "login":
            await self._login(session, action)
            return
        if name == "logoff":
            session.write(_answer(action, "Goodbye", ("Message", "Thanks for all the fish.")))
            session.closing = True
            return
        if name == "challenge":
            session.write(self._challenge(session, action))
            return
        handler = self._actions.get(name)
        if handler is None:
            session.write(
                _error(
                    action,
                    f"Invalid/unknown command: {action.name}. "
                    "Use Action: ListCommands to show available commands.",
                )
            )
            return
        answer = handler(session, action)
        if answer is not None:
            session.write(answer)

    # -- authentication ------------------------------------------------------------------------

    def _challenge(self, session: _Session, action: Action) -> Response:
        if (action.get("AuthType") or "").lower() != "md5":
            return _error(action, "Must specify AuthType")
        if session.challenge is None:
            session.challenge = str(random.randrange(10**8, 10**9))
        return _answer(action, "Success", ("Challenge", session.challenge))

    async def _login(self, session: _Session, action: Action) -> None:
        if session.authed:
            session.write(_answer(action, "Success", ("Message", "Already authenticated")))
            return
        user = action.get("Username") or ""
        if (action.get("AuthType") or "").lower() == "md5":
            expected = hashlib.md5(
                ((session.challenge or "") + self.secret).encode(), usedforsecurity=False
            ).hexdigest()
            good = session.challenge is not None and (action.get("Key") or "") == expected
        else:
            good = (action.get("Secret") or "") == self.secret
        if not good or user != self.username:
            log.info("simulator AMI login failed peer=%s user=%s", session.peer, user)
            await asyncio.sleep(self.login_fail_delay)
            session.write(_error(action, "Authentication failed"))
            session.closing = True
            return
        session.authed = True
        session.events = _event_mask(action.get("Events"))
        session.write(_answer(action, "Success", ("Message", "Authentication accepted")))
        if session.events is None or "system" in session.events:
            uptime = int(time.time() - self._started)
            session.write(
                Event.of(
                    "FullyBooted",
                    Privilege="system,all",
                    Uptime=uptime,
                    LastReload=uptime,
                    Status="Fully Booted",
                )
            )
        if session.events is None or "security" in session.events:
            # As Asterisk's security events reach a session that reads class "security".
            tv = _event_tv()
            session.write(
                Event.of(
                    "SuccessfulAuth",
                    Privilege="security,all",
                    EventTV=tv,
                    Severity="Informational",
                    Service="AMI",
                    EventVersion=1,
                    AccountID=user,
                    SessionID=f"0x{id(session):x}",
                    LocalAddress=f"IPV4/TCP/{session.local}",
                    RemoteAddress=f"IPV4/TCP/{session.peer.replace(':', '/')}",
                    UsingPassword=0,
                    SessionTV=tv,
                )
            )

    # -- actions -------------------------------------------------------------------------------

    def _ping(self, session: _Session, action: Action) -> Response:
        now = time.time()
        stamp = f"{int(now)}.{int((now % 1) * 1e6):06d}"
        return _answer(action, "Success", ("Ping", "Pong"), ("Timestamp", stamp))

    def _getvar(self, session: _Session, action: Action) -> Response:
        variable = action.get("Variable") or ""
        if not variable:
            return _error(action, "No variable specified")
        if action.get("Channel"):
            return _error(action, "No such channel")
        value = ""
        if (device := _func_arg(variable, "DEVICE_STATE")) is not None:
            value = self.pbx.device_state(device).name
        elif (args := _func_arg(variable, "PRESENCE_STATE")) is not None:
            value = self.pbx.presence.read_function(args) if self.pbx.presence else ""
        elif (hint := _func_arg(variable, "HINT")) is not None:
            exten, _, context = hint.split(",", 1)[0].partition("@")
            found, _ = self.pbx.extension_state(exten, context or "default")
            value = found.app.split(",", 1)[0] if found else ""
        elif not variable.endswith(")"):
            value = self.pbx.globals.get(variable, "")
        return _answer(action, "Success", ("Variable", variable), ("Value", value))

    def _filter(self, session: _Session, action: Action) -> Response:
        if not self.system:
            return _error(action, "Permission denied")
        if (action.get("Operation") or "").lower() != "add":
            return _error(action, "Unknown operation")
        text = action.get("Filter") or ""
        exclude = text.startswith("!")
        body = text[1:] if exclude else text
        if not body:
            return _error(
                action, "Filter was formatted incorrectly.  Check the syntax of the filter given."
            )
        pattern = ere_to_python(body)
        if pattern is None:
            return _error(action, "Filter did not compile.  Check the syntax of the filter given.")
        session.filters.append((exclude, pattern))
        return _answer(action, "Success", ("Message", "Success"))

    def _setvar(self, session: _Session, action: Action) -> Response:
        variable = action.get("Variable") or ""
        if not variable:
            return _error(action, "No variable specified")
        if action.get("Channel"):
            return _error(action, "No such channel")
        value = action.get("Value") or ""
        if (device := _func_arg(variable, "DEVICE_STATE")) is not None:
            if not self.pbx.set_custom(device, value):
                return _error(action, "Variable not set")
        elif (data := _func_arg(variable, "PRESENCE_STATE")) is not None and self.pbx.presence:
            if not self.pbx.presence.write(data, value):
                return _error(action, "Variable not set")
        elif variable.endswith(")"):
            return _error(action, "Variable not set")
        else:
            self.pbx.globals[variable] = value
        return _answer(action, "Success", ("Message", "Variable Set"))

    def _list(
        self,
        session: _Session,
        action: Action,
        message: str,
        complete: str,
        items: list[Event],
    ) -> None:
        session.write(_answer(action, "Success", ("EventList", "start"), ("Message", message)))
        for item in items:
            session.write(item)
        tail: list[tuple[str, object]] = [("Event", complete)]
        if action.action_id is not None:
            tail.append(("ActionID", action.action_id))
        tail += [("EventList", "Complete"), ("ListItems", len(items))]
        session.write(Event(tuple((k, str(v)) for k, v in tail)))

    def _item(self, action: Action, name: str, *fields: tuple[str, object]) -> Event:
        headers: list[tuple[str, object]] = [("Event", name)]
        if action.action_id is not None:
            headers.append(("ActionID", action.action_id))
        headers.extend(fields)
        return Event(tuple((k, str(v)) for k, v in headers))

    def _device_state_list(self, session: _Session, action: Action) -> None:
        items = [
            self._item(action, "DeviceStateChange", ("Device", device), ("State", state.name))
            for device, state in self.pbx.cache.items()
        ]
        self._list(
            session, action, "Device State Changes will follow", "DeviceStateListComplete", items
        )

    def _status_fields(
        self, hint_app: str, exten: str, context: str, value: int
    ) -> tuple[tuple[str, object], ...]:
        return (
            ("Exten", exten),
            ("Context", context),
            ("Hint", hint_app),
            ("Status", value),
            ("StatusText", extension_state_text(value)),
        )

    def _extension_state_list(self, session: _Session, action: Action) -> Response | None:
        if not self.pbx.hints:
            return _error(action, "No dialplan hints are available")
        items = []
        for hint in self.pbx.hints:
            _, value = self.pbx.extension_state(hint.exten, hint.context)
            fields = self._status_fields(hint.app, hint.exten, hint.context, value)
            items.append(self._item(action, "ExtensionStatus", *fields))
        self._list(
            session, action, "Extension Statuses will follow", "ExtensionStateListComplete", items
        )
        return None

    def _extension_state(self, session: _Session, action: Action) -> Response:
        exten = action.get("Exten") or ""
        if not exten:
            return _error(action, "Extension not specified")
        context = action.get("Context") or "default"
        hint, value = self.pbx.extension_state(exten, context)
        fields = self._status_fields(hint.app if hint else "", exten, context, value)
        return _answer(action, "Success", ("Message", "Extension Status"), *fields)

    def _presence_state(self, session: _Session, action: Action) -> Response:
        provider = action.get("Provider") or ""
        if not provider:
            return _error(action, "No provider specified")
        presence = self.pbx.presence
        state, subtype, message = presence.read(provider) if presence else (-1, "", "")
        if state < 0:
            return _error(action, f"Invalid provider {provider} or provider in invalid state")
        fields: list[tuple[str, object]] = [
            ("Message", "Presence State"),
            ("State", state_str(state)),
        ]
        if subtype:
            fields.append(("Subtype", subtype))
        if message:  # Asterisk repeats it: a deprecated second Message, then PresenceMessage
            fields += [("Message", message), ("PresenceMessage", message)]
        return _answer(action, "Success", *fields)

    def _presence_state_list(self, session: _Session, action: Action) -> None:
        assert self.pbx.presence is not None
        items = [
            self._item(
                action,
                "PresenceStateChange",
                ("Presentity", provider),
                ("Status", state_str(state)),
                ("Subtype", escape_c(subtype)),
                ("Message", escape_c(message)),
            )
            for provider, (state, subtype, message) in self.pbx.presence.cache.items()
        ]
        self._list(
            session,
            action,
            "Presence State Changes will follow",
            "PresenceStateListComplete",
            items,
        )

    def _mwi_update(self, session: _Session, action: Action) -> Response:
        mailbox = action.get("Mailbox") or ""
        if not mailbox:
            return _error(action, "Missing mailbox parameter in request")
        old_text, new_text = action.get("OldMessages"), action.get("NewMessages")
        old = SimPbx.parse_count(old_text)
        if old is None:
            return _error(action, f"Invalid OldMessages: {old_text}")
        new = SimPbx.parse_count(new_text)
        if new is None:
            return _error(action, f"Invalid NewMessages: {new_text}")
        self.pbx.mwi_update(mailbox, new, old)
        return _answer(action, "Success")

    def _mwi_get(self, session: _Session, action: Action) -> Response | None:
        mailbox = action.get("Mailbox") or ""
        if not mailbox:
            return _error(action, "Missing mailbox parameter in request")
        try:
            boxes = self.pbx.mwi_match(mailbox)
        except ValueError:
            return _error(action, f"Mailbox regex format invalid in: {mailbox}")
        items = []
        for box in boxes:
            new, old = self.pbx.mwi_db[box]
            fields: list[tuple[str, object]] = [
                ("Event", "MWIGet"),
                ("Mailbox", box),
                ("OldMessages", old),
                ("NewMessages", new),
            ]
            if action.action_id is not None:
                fields.append(("ActionID", action.action_id))
            items.append(Event(tuple((k, str(v)) for k, v in fields)))
        self._list(session, action, "Mailboxes will follow", "MWIGetComplete", items)
        return None

    def _mwi_delete(self, session: _Session, action: Action) -> Response:
        mailbox = action.get("Mailbox") or ""
        if not mailbox:
            return _error(action, "Missing mailbox parameter in request")
        try:
            self.pbx.mwi_delete(mailbox)
        except ValueError:
            return _error(action, f"Mailbox regex format invalid in: {mailbox}")
        return _answer(action, "Success")

    def _voicemail_users_list(self, session: _Session, action: Action) -> Response | None:
        items = []
        for box, (new, old) in sorted((self.pbx.voicemail or {}).items()):
            number, _, context = box.partition("@")
            fields: list[tuple[str, object]] = [
                ("Event", "VoicemailUserEntry"),
                *([("ActionID", action.action_id)] if action.action_id is not None else []),
                ("VMContext", context),
                ("VoiceMailbox", number),
                ("Fullname", number),
                ("Email", "(null)"),
                ("Pager", ""),
                ("ServerEmail", "asterisk"),
                ("FromString", ""),
                ("MailCommand", "/usr/sbin/sendmail -t"),
                ("Language", ""),
                ("TimeZone", ""),
                ("Callback", ""),
                ("Dialout", ""),
                ("UniqueID", ""),
                ("ExitContext", ""),
                ("SayDurationMinimum", 2),
                ("SayEnvelope", "Yes"),
                ("SayCID", "No"),
                ("AttachMessage", "Yes"),
                ("AttachmentFormat", ""),
                ("DeleteMessage", "No"),
                ("VolumeGain", "0.00"),
                ("CanReview", "No"),
                ("CanMarkUrgent", "Yes"),
                ("CallOperator", "No"),
                ("MaxMessageCount", 100),
                ("MaxMessageLength", 0),
                ("NewMessageCount", new),
                ("OldMessageCount", old),
            ]
            items.append(Event(tuple((k, str(v)) for k, v in fields)))
        self._list(
            session, action, "Voicemail user list will follow", "VoicemailUserEntryComplete", items
        )
        return None

    def _voicemail_refresh(self, session: _Session, action: Action) -> Response:
        self.pbx.voicemail_refresh(action.get("Context"), action.get("Mailbox"))
        return _answer(action, "Success", ("Message", "Refresh sent"))

    def _mailbox_count(self, session: _Session, action: Action) -> Response:
        mailbox = action.get("Mailbox") or ""
        if not mailbox:
            return _error(action, "Mailbox not specified")
        new, old = self.pbx.inbox_count(mailbox)
        return _answer(
            action,
            "Success",
            ("Message", "Mailbox Message Count"),
            ("Mailbox", mailbox),
            ("UrgMessages", 0),
            ("NewMessages", new),
            ("OldMessages", old),
        )

    def _mailbox_status(self, session: _Session, action: Action) -> Response:
        mailbox = action.get("Mailbox") or ""
        if not mailbox:
            return _error(action, "Mailbox not specified")
        waiting = int(self.pbx.has_voicemail(mailbox))
        return _answer(
            action,
            "Success",
            ("Message", "Mailbox Status"),
            ("Mailbox", mailbox),
            ("Waiting", waiting),
        )

    def _command(self, session: _Session, action: Action) -> Response:
        command = action.get("Command") or ""
        if not command:
            return _error(action, "No command provided")
        ok, text = self.pbx.command(command)
        outputs = [("Output", line) for line in output_lines(text)]
        return _answer(
            action, "Success" if ok else "Error", ("Message", "Command output follows"), *outputs
        )
