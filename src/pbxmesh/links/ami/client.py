"""An asyncio AMI client that stays connected.

Theory of operation
-------------------
:class:`AmiClient` owns one TCP connection at a time and a supervisor task that keeps it up:

1. connect (``connect_timeout``), read the banner, ``Login`` (plaintext, or MD5 through
   ``Challenge`` when ``AmiConfig.md5`` is set);
2. mark itself connected, start the keep-alive (``Ping`` every ``ping_interval`` seconds; no
   answer within ``ping_timeout`` ends the connection) and run the ``on_connected`` hook as a
   task — the caller's full resynchronisation after every (re)connect;
3. when the connection ends (EOF, socket error, ping timeout, a failing hook), fail every
   pending action with :class:`~pbxmesh.errors.AmiError`, wait a backoff delay and start over.
   The delay doubles from ``reconnect_min`` up to ``reconnect_max`` and is multiplied by a
   random factor in [0.5, 1] (jitter, so a restarted Asterisk is not hit by every client at
   the same instant). It goes back to ``reconnect_min`` after a successful login.

Every action gets an ``ActionID``; its answer resolves a future keyed by that id. List actions
(``EventList: start`` … ``XxxComplete``) are gathered by a
:class:`~pbxmesh.links.ami.codec.ListAssembler` and resolve with a
:class:`~pbxmesh.links.ami.codec.ListResponse`. Other events go, in wire order, to the ``on_event``
callback (it runs on the reading task and must not block) and to every :meth:`events`
iterator (bounded queues; a full queue drops and counts).

A bad block from Asterisk is logged, counted in ``protocol_errors`` and dropped; the codec
resynchronises at the next blank line and the connection stays up.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
import random
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ...errors import AmiActionError, AmiError, ConfigError, PbxmeshError, RemoteProtocolError
from ...tasks import cancel_and_wait
from .codec import (
    CLOSED,
    NEED_DATA,
    Action,
    AmiCodec,
    Banner,
    Event,
    ListAssembler,
    ListResponse,
    Message,
    Response,
    Role,
)

__all__ = ["AmiClient", "AmiConfig", "ConnectedHook", "EventCallback"]

log = logging.getLogger(__name__)

EventCallback = Callable[[Event], None]
ConnectedHook = Callable[["AmiClient"], Awaitable[None]]
_REDACT = frozenset({"secret", "key"})


@dataclass(frozen=True, slots=True)
class AmiConfig:
    """How to reach and watch one Asterisk manager. Times are in seconds."""

    # Asterisk host name or address; AMI usually listens on localhost only.
    host: str
    # TCP port of the manager (manager.conf [general] port, 5038 by default).
    port: int = 5038
    # manager.conf user section; it needs read/write "call" and "command" (for resync reads).
    username: str = ""
    # That user's secret. Kept out of repr() and wire traces.
    secret: str = field(default="", repr=False)
    # Keep-alive period. Shorter notices a dead Asterisk sooner, at one tiny action per period.
    ping_interval: float = 20.0
    # How long a Ping may go unanswered before the connection is declared dead.
    ping_timeout: float = 5.0
    # First reconnect delay; doubled after each failed attempt...
    reconnect_min: float = 0.5
    # ...up to this cap. Jitter multiplies each delay by a random factor in [0.5, 1].
    reconnect_max: float = 30.0
    # Limit for TCP connect plus banner.
    connect_timeout: float = 5.0
    # Limit for one action's answer (a whole list for list actions).
    action_timeout: float = 10.0
    # Log in with the MD5 challenge instead of sending the secret in clear.
    md5: bool = False

    def __post_init__(self) -> None:
        if not self.host:
            raise ConfigError("AMI host is empty; set the Asterisk manager address")
        if not 0 < self.port < 65536:
            raise ConfigError(f"AMI port {self.port} is not a TCP port (1-65535)")
        for name in (
            "ping_interval",
            "ping_timeout",
            "reconnect_min",
            "reconnect_max",
            "connect_timeout",
            "action_timeout",
        ):
            if not getattr(self, name) > 0:
                raise ConfigError(f"AMI {name} must be a positive number of seconds")
        if self.reconnect_max < self.reconnect_min:
            raise ConfigError("AMI reconnect_max must be at least reconnect_min")

    @classmethod
    def local(cls, host: str, port: int, username: str, secret: str) -> AmiConfig:
        """Fast timers for tests against a simulator on the same machine."""
        return cls(
            host,
            port,
            username,
            secret,
            ping_interval=1.0,
            ping_timeout=1.0,
            reconnect_min=0.02,
            reconnect_max=0.2,
            connect_timeout=2.0,
            action_timeout=5.0,
        )


class AmiClient:
    """A self-reconnecting AMI client; see the module docstring."""

    def __init__(
        self,
        config: AmiConfig,
        *,
        on_connected: ConnectedHook | None = None,
        on_event: EventCallback | None = None,
        on_disconnected: Callable[[], None] | None = None,
        queue_size: int = 10_000,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.config = config
        self.on_connected = on_connected
        self.on_event = on_event
        #: called (on the event loop, must not block) when a logged-in connection is lost
        self.on_disconnected = on_disconnected
        self._queue_size = queue_size
        self._rng = rng
        self._ids = itertools.count(1)
        self._pending: dict[str, asyncio.Future[Response | ListResponse]] = {}
        self._assembler = ListAssembler()
        self._writer: asyncio.StreamWriter | None = None
        self._codec: AmiCodec | None = None
        self._banner: asyncio.Future[Banner] | None = None
        self._logged_in = asyncio.Event()
        self._queues: list[asyncio.Queue[Event | None]] = []
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.banner: Banner | None = None
        #: Counters for metrics: connections made, bad blocks dropped, events dropped.
        self.connections = 0
        self.protocol_errors = 0
        self.dropped_events = 0

    @property
    def peer(self) -> str:
        return f"{self.config.host}:{self.config.port}"

    @property
    def connected(self) -> bool:
        """True while logged in."""
        return self._logged_in.is_set()

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the supervisor task (returns at once; see :meth:`wait_connected`)."""
        if self._task is None:
            self._closing = False
            self._task = asyncio.create_task(self._supervise(), name=f"ami {self.peer}")

    async def wait_connected(self) -> None:
        """Wait until logged in (wrap in :func:`asyncio.timeout` to bound it)."""
        await self._logged_in.wait()

    async def close(self) -> None:
        """Log off if connected, stop reconnecting, end every :meth:`events` iterator."""
        self._closing = True
        if self.connected:
            with contextlib.suppress(AmiError, TimeoutError, OSError):
                await self._send(Action.of("Logoff"), time_limit=1.0)
        task, self._task = self._task, None
        await cancel_and_wait(task)
        for queue in self._queues:
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(None)

    async def __aenter__(self) -> AmiClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _supervise(self) -> None:
        attempt = 0
        while not self._closing:
            try:
                await self._run_connection()
            except (OSError, TimeoutError, AmiError, RemoteProtocolError) as exc:
                log.warning("AMI connection failed peer=%s error=%s", self.peer, exc)
            except PbxmeshError as exc:  # a bug or bad data in a hook: reconnect, never stop
                log.error("AMI connection ended by an error peer=%s error=%s", self.peer, exc)
            finally:
                if self._logged_in.is_set():
                    attempt = 0
                self._teardown()
            if self._closing:
                return
            delay = min(self.config.reconnect_max, self.config.reconnect_min * 2**attempt)
            delay *= 0.5 + 0.5 * self._rng()
            attempt = min(attempt + 1, 30)
            await asyncio.sleep(delay)

    def _teardown(self) -> None:
        was_up = self._logged_in.is_set()
        self._logged_in.clear()
        if self._writer is not None:
            self._writer.close()
        self._writer = self._codec = None
        self._assembler.abandon()
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(AmiError(f"AMI connection to {self.peer} was lost"))
        self._pending.clear()
        if self._banner is not None and not self._banner.done():
            self._banner.cancel()
        if was_up:
            log.info("AMI disconnected peer=%s", self.peer)
            if self.on_disconnected is not None:
                self.on_disconnected()

    async def _run_connection(self) -> None:
        cfg = self.config
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(cfg.host, cfg.port), cfg.connect_timeout
        )
        self._writer, self._codec = writer, AmiCodec(Role.CLIENT)
        self._banner = asyncio.get_running_loop().create_future()
        tasks: set[asyncio.Task[None]] = set()
        read_task = asyncio.create_task(self._read_loop(reader, self._codec))
        tasks.add(read_task)
        try:
            first: set[asyncio.Future[Any]] = {read_task, self._banner}
            done, _ = await asyncio.wait(
                first,
                timeout=cfg.connect_timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
            if self._banner not in done:
                raise AmiError(f"no AMI banner from {self.peer} within {cfg.connect_timeout}s")
            self.banner = self._banner.result()
            await self._login()
            self.connections += 1
            self._logged_in.set()
            log.info("AMI connected peer=%s version=%s", self.peer, self.banner.version)
            tasks.add(asyncio.create_task(self._ping_loop()))
            hook = None
            if self.on_connected is not None:
                hook = asyncio.create_task(self._run_hook(self.on_connected))
                tasks.add(hook)
            while True:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                if hook in done and not hook.cancelled() and hook.exception() is None:
                    tasks.discard(hook)  # resync finished; keep the connection
                    done.discard(hook)
                for task in done:
                    task.result()  # re-raise the reason the connection ends
                if done:
                    return
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _run_hook(self, hook: ConnectedHook) -> None:
        try:
            await hook(self)
        except (AmiError, TimeoutError) as exc:
            raise AmiError(f"resynchronisation after connect failed: {exc}") from exc

    async def _login(self) -> None:
        cfg = self.config
        if cfg.md5:
            challenge = await self._send(Action.of("Challenge", AuthType="MD5"))
            assert isinstance(challenge, Response)
            if not challenge.ok:
                raise AmiError(f"AMI {self.peer} refused the MD5 challenge: {challenge.message}")
            digest = hashlib.md5(
                ((challenge.get("Challenge") or "") + cfg.secret).encode(), usedforsecurity=False
            ).hexdigest()
            login = Action.of("Login", AuthType="MD5", Username=cfg.username, Key=digest)
        else:
            login = Action.of("Login", Username=cfg.username, Secret=cfg.secret)
        answer = await self._send(login)
        assert isinstance(answer, Response)
        if not answer.ok:
            raise AmiError(
                f"AMI login to {self.peer} as {cfg.username!r} refused ({answer.message}); "
                "check the user and secret in Asterisk's manager.conf"
            )

    async def _ping_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.ping_interval)
            try:
                await self._send(Action.of("Ping"), time_limit=self.config.ping_timeout)
            except TimeoutError:
                raise AmiError(
                    f"no Pong from {self.peer} within {self.config.ping_timeout}s"
                ) from None

    async def _read_loop(self, reader: asyncio.StreamReader, codec: AmiCodec) -> None:
        while True:
            data = await reader.read(65536)
            codec.receive_data(data)
            while True:
                try:
                    message = codec.next_event()
                except RemoteProtocolError as exc:
                    self.protocol_errors += 1
                    log.warning("AMI bad block dropped peer=%s error=%s", self.peer, exc)
                    continue
                if message is NEED_DATA:
                    break
                if message is CLOSED:
                    log.debug("AMI end of file peer=%s", self.peer)
                    return
                assert not isinstance(message, Action)
                self._dispatch(message)

    # -- inbound -----------------------------------------------------------------------------

    def _dispatch(self, message: Banner | Response | Event) -> None:
        if isinstance(message, Banner):
            self._trace("<<-", message.text)
            if self._banner is not None and not self._banner.done():
                self._banner.set_result(message)
            return
        self._trace_message("<<-", message)
        result = self._assembler.feed(message)
        if result is None:
            return
        if isinstance(result, Event):
            self._deliver(result)
            return
        fut = self._pending.get(result.action_id or "")
        if fut is not None and not fut.done():
            fut.set_result(result)
        else:
            log.debug("AMI unsolicited answer peer=%s action_id=%s", self.peer, result.action_id)

    def _deliver(self, event: Event) -> None:
        if self.on_event is not None:
            try:
                self.on_event(event)
            except Exception:
                log.exception("AMI event callback failed event=%s", event.name)
        for queue in self._queues:
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                self.dropped_events += 1
                if self.dropped_events == 1 or self.dropped_events % 1000 == 0:
                    log.warning("AMI event queue full, dropped=%d", self.dropped_events)

    async def events(self) -> AsyncGenerator[Event, None]:
        """Every asynchronous event from now on, across reconnects, until :meth:`close`."""
        queue: asyncio.Queue[Event | None] = asyncio.Queue(self._queue_size)
        self._queues.append(queue)
        try:
            while (event := await queue.get()) is not None:
                yield event
        finally:
            self._queues.remove(queue)

    # -- outbound ----------------------------------------------------------------------------

    async def _send(
        self, action: Action, *, time_limit: float | None = None
    ) -> Response | ListResponse:
        writer, codec = self._writer, self._codec
        if writer is None or codec is None:
            raise AmiError(f"not connected to AMI {self.peer}")
        action_id = action.action_id or f"pbxmesh-{next(self._ids)}"
        action = action.with_action_id(action_id)
        fut: asyncio.Future[Response | ListResponse] = asyncio.get_running_loop().create_future()
        self._pending[action_id] = fut
        try:
            data = codec.send(action)
            self._trace_message("->>", action)
            writer.write(data)
            await writer.drain()
            async with asyncio.timeout(time_limit or self.config.action_timeout):
                return await fut
        except (ConnectionError, OSError) as exc:
            raise AmiError(f"AMI {self.peer}: sending {action.name} failed: {exc}") from exc
        finally:
            self._pending.pop(action_id, None)

    async def send_action(self, action: Action, *, time_limit: float | None = None) -> Response:
        """Send ``action`` once logged in; return its answer even when it is an error."""
        if not self.connected:
            raise AmiError(f"not connected to AMI {self.peer}")
        answer = await self._send(action, time_limit=time_limit)
        if isinstance(answer, ListResponse):
            return answer.response
        return answer

    async def action(
        self, name: str, fields: dict[str, object] | None = None, /, **kw: object
    ) -> Response:
        """Send an action; raise :class:`AmiActionError` on ``Response: Error``."""
        answer = await self.send_action(Action.of(name, fields or {}, **kw))
        if not answer.ok:
            raise AmiActionError(name, answer.message)
        return answer

    async def list_action(
        self, name: str, fields: dict[str, object] | None = None, /, **kw: object
    ) -> ListResponse:
        """Send a list action and wait for its ``Complete`` event."""
        if not self.connected:
            raise AmiError(f"not connected to AMI {self.peer}")
        answer = await self._send(Action.of(name, fields or {}, **kw))
        if isinstance(answer, Response):
            if not answer.ok:
                raise AmiActionError(name, answer.message)
            raise AmiError(f"AMI action {name} answered without a list: {answer.headers!r}")
        return answer

    async def command(self, command: str) -> list[str]:
        """Run a CLI command and return its output lines."""
        answer = await self.send_action(Action.of("Command", Command=command))
        if not answer.ok and not answer.output:
            raise AmiActionError("Command", answer.message)
        return answer.output

    # -- tracing -----------------------------------------------------------------------------

    def _trace(self, direction: str, text: str) -> None:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s %s", direction, self.peer, text)

    def _trace_message(self, direction: str, message: Message) -> None:
        if log.isEnabledFor(logging.DEBUG):
            shown = " | ".join(
                f"{k}: {'***' if k.lower() in _REDACT else v}" for k, v in message.headers
            )
            log.debug("%s %s %s", direction, self.peer, shown)
