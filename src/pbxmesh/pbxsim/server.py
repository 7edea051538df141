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
import socket
import time
from collections.abc import Callable

from ..errors import RemoteProtocolError
from ..links.ami.codec import CLOSED, NEED_DATA, Action, AmiCodec, Banner, Event, Response, Role
from ..tasks import cancel_and_wait
from .actions_dialplan import DialplanActions
from .actions_mwi import MailboxActions
from .actions_state import StateActions
from .pbx import SimPbx
from .session import Session, answer, error, event_mask, event_tv, passes, wants

__all__ = ["AMI_VERSION", "SimServer"]

log = logging.getLogger(__name__)

#: seconds between writes of the simulator's state file (and one more at close)
FLUSH_INTERVAL = 0.2

AMI_VERSION = "13.0.0"
_UNAUTH_ALLOWED = frozenset({"login", "logoff", "challenge"})


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
        self._sessions: set[Session] = set()
        self._server: asyncio.Server | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._started = time.time()
        self._closing = False
        self.host = ""
        self.port = 0
        pbx.listeners.append(self._on_event)
        state = StateActions(pbx, system=system)
        mail = MailboxActions(pbx)
        dialplan = DialplanActions(pbx, system=system)
        self._actions: dict[str, Callable[[Session, Action], Response | None]] = {
            "ping": state.ping,
            "getvar": state.getvar,
            "setvar": state.setvar,
            "devicestatelist": state.device_state_list,
            "extensionstatelist": state.extension_state_list,
            "extensionstate": state.extension_state,
            "mwiupdate": mail.mwi_update,
            "mwiget": mail.mwi_get,
            "mwidelete": mail.mwi_delete,
            "mailboxcount": mail.mailbox_count,
            "mailboxstatus": mail.mailbox_status,
            "command": mail.command,
            "filter": state.filter,
            "presencestate": state.presence_state,
            "dialplanextensionadd": dialplan.add,
            "dialplanextensionremove": dialplan.remove,
        }
        if pbx.presence is not None:  # res_manager_presencestate
            self._actions["presencestatelist"] = state.presence_state_list
        # app_voicemail and res_mwi_external cannot both load: one set of actions or the other.
        mwi_external = ("mwiupdate", "mwiget", "mwidelete")
        voicemail = {
            "voicemailuserslist": mail.voicemail_users_list,
            "voicemailrefresh": mail.voicemail_refresh,
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
            if session.authed and wants(session.events, event) and passes(session, event):
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
        session = Session(writer, AmiCodec(Role.SERVER), peer, local)
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

    async def _session_loop(self, session: Session, reader: asyncio.StreamReader) -> None:
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

    async def _handle(self, session: Session, action: Action) -> None:
        name = action.name.lower()
        if not name:
            session.write(error(action, "Missing action in request"))
            return
        if not session.authed and name not in _UNAUTH_ALLOWED:
            session.write(error(action, "Permission denied"))
            return
        if name == "login":
            await self._login(session, action)
            return
        if name == "logoff":
            session.write(answer(action, "Goodbye", ("Message", "Thanks for all the fish.")))
            session.closing = True
            return
        if name == "challenge":
            session.write(self._challenge(session, action))
            return
        handler = self._actions.get(name)
        if handler is None:
            session.write(
                error(
                    action,
                    f"Invalid/unknown command: {action.name}. "
                    "Use Action: ListCommands to show available commands.",
                )
            )
            return
        reply = handler(session, action)
        if reply is not None:
            session.write(reply)

    # -- authentication ------------------------------------------------------------------------

    def _challenge(self, session: Session, action: Action) -> Response:
        if (action.get("AuthType") or "").lower() != "md5":
            return error(action, "Must specify AuthType")
        if session.challenge is None:
            session.challenge = str(random.randrange(10**8, 10**9))
        return answer(action, "Success", ("Challenge", session.challenge))

    async def _login(self, session: Session, action: Action) -> None:
        if session.authed:
            session.write(answer(action, "Success", ("Message", "Already authenticated")))
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
            session.write(error(action, "Authentication failed"))
            session.closing = True
            return
        session.authed = True
        session.events = event_mask(action.get("Events"))
        session.write(answer(action, "Success", ("Message", "Authentication accepted")))
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
            tv = event_tv()
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
