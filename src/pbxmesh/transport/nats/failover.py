"""The NATS client's connection: the first connect, its errors, and which server to be on.

:class:`Failover` is the transport's half that talks to nats-py about servers. It connects in
the order of ``[cluster.nats] servers`` and fails fast with one line per server when none will
take us; it turns nats-py's error callbacks into one log line per server and reason, and gives
up (through the transport's ``fail``) when every server refused our credentials or too many
operations were denied; it is nats-py's ``reconnect_to_server_handler`` (the choice itself is
the pure :class:`~.servers.ServerChoice`); it leaves a server that is dead, frozen or does not
pass our messages on (:meth:`Failover.abandon`, :meth:`Failover.leave_unheard`), and returns
to a more preferred one once it answers again (:meth:`Failover.failback_loop`).

The transport keeps the group's side: heartbeats, views, frames (``transport.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from ...errors import ConfigError, TransportError
from ...tasks import cancel_and_wait
from .config import NatsConfig, group_subjects, member_token
from .errors import describe
from .servers import ServerChoice, netloc_of, probe

__all__ = ["Failover", "abort_sockets", "close_client"]

# the transport's logger: the lines administrators read and filter stay as they were
log = logging.getLogger("pbxmesh.transport.nats.transport")

Callback = Callable[[], Awaitable[None]]


class Failover:
    """Servers and failover of one NATS client (see the module doc).

    ``fail`` gives up for good (the transport's); ``closed`` says whether the transport is
    closed; ``link`` is set while connected (and for good on close). ``nc`` is the nats-py
    client, set by the transport before :meth:`connect`.
    """

    def __init__(
        self,
        config: NatsConfig,
        *,
        fail: Callable[[TransportError], None],
        closed: Callable[[], bool],
        link: asyncio.Event,
    ) -> None:
        self.config = config
        self._fail = fail
        self._closed = closed
        self._link = link
        self.nc: Any = None
        self.choice = ServerChoice(
            tuple(netloc_of(u) for u in config.servers),
            hold_off=config.hold_off,
            retry_wait=config.reconnect_time_wait,
        )
        self._connected_once = False
        self._start_errors: dict[str, tuple[str, str]] = {}  # server -> (kind, line)
        self._start_verdict: asyncio.Future[TransportError] | None = None
        self._denials = 0
        self._refused: set[str] = set()  # servers that refused our credentials since connected
        self._unheard_told = False  # "no other server to move to" said for this episode
        self._failback: asyncio.Task[None] | None = None

    # -- connection ------------------------------------------------------------------------------
    def connect_options(
        self, *, disconnected_cb: Callback, reconnected_cb: Callback, closed_cb: Callback
    ) -> dict[str, Any]:
        """nats-py's ``connect`` arguments for our config; the callbacks are the transport's."""
        c = self.config
        opts: dict[str, Any] = {
            "servers": list(c.servers),
            "name": f"pbxmesh {c.name}",
            "allow_reconnect": True,
            "max_reconnect_attempts": -1,
            "reconnect_time_wait": c.reconnect_time_wait,
            "connect_timeout": c.connect_timeout,
            "ping_interval": c.ping_interval,
            "max_outstanding_pings": c.max_outstanding_pings,
            "dont_randomize": not c.randomize,
            "pending_size": c.pending_size,
            "error_cb": self.on_error,
            "disconnected_cb": disconnected_cb,
            "reconnected_cb": reconnected_cb,
            "closed_cb": closed_cb,
            "reconnect_to_server_handler": self.choose_server,
        }
        if c.user is not None:
            opts["user"] = c.user
            opts["password"] = c.password or ""
        if c.nkey_seed is not None:
            opts["nkeys_seed"] = os.fspath(c.nkey_seed)
        if c.creds is not None:
            opts["user_credentials"] = os.fspath(c.creds)
        if c.tls_ca is not None or c.tls_cert is not None:
            try:
                ctx = ssl.create_default_context(
                    cafile=os.fspath(c.tls_ca) if c.tls_ca is not None else None
                )
                if c.tls_cert is not None and c.tls_key is not None:
                    ctx.load_cert_chain(os.fspath(c.tls_cert), os.fspath(c.tls_key))
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(f"nats TLS files: {exc}") from exc
            opts["tls"] = ctx
        return opts

    async def connect(self, options: dict[str, Any]) -> None:
        """The first connection of ``nc``, in the order of ``servers``. Fails at once when
        every server refused our credentials or TLS, with one line per server; after
        ``start_timeout`` with one line per server that did not answer."""
        c = self.config
        verdict = self._start_verdict = asyncio.get_running_loop().create_future()
        connecting = asyncio.ensure_future(self.nc.connect(**options))
        try:
            done, _ = await asyncio.wait(
                {connecting, verdict}, timeout=c.start_timeout, return_when="FIRST_COMPLETED"
            )
        except asyncio.CancelledError:
            connecting.cancel()
            raise
        if connecting in done:
            connecting.result()  # raises what nats-py raised
            self._connected_once = True
            self.choice.connected(self.current_netloc())
            return
        connecting.cancel()
        with contextlib.suppress(BaseException):
            await connecting
        if verdict.done():
            raise verdict.result()
        lines = [line for _, line in self._start_errors.values()] or [
            f"nats: no answer from {', '.join(c.servers)} within {c.start_timeout:g} s"
        ]
        raise TransportError("\n".join(lines))

    def settle_start(self, err: TransportError) -> bool:
        """``start()`` is still connecting: make it raise ``err``. False if it is not."""
        if self._start_verdict is None or self._start_verdict.done():
            return False
        self._start_verdict.set_result(err)
        return True

    def disconnected(self, now: float) -> None:
        """The link went down: the server we lost is not tried first again (a frozen one
        would cost a timeout)."""
        self.choice.abandoned(self.choice.current, now)

    def reconnected(self) -> None:
        """The link is up again: errors and refusals of the last outage are forgotten."""
        self._unheard_told = False
        self.choice.connected(self.current_netloc())
        self._refused.clear()
        self._start_errors.clear()

    def who(self) -> str:
        """Our credentials, as an administrator finds them in the config."""
        c = self.config
        if c.user is not None:
            return f"user {c.user}"
        if c.nkey_seed is not None:
            return f"nkey seed {c.nkey_seed}"
        if c.creds is not None:
            return f"creds {c.creds}"
        return "no credentials configured"

    def current_netloc(self) -> str | None:
        nc = self.nc
        if nc is None or nc.connected_url is None:
            return None
        return netloc_of(nc.connected_url.geturl())

    def _erring_server(self) -> str:
        """The server nats-py tried last (the one an error is about)."""
        pool = list(getattr(self.nc, "_server_pool", []) or [])
        if not pool:
            return ", ".join(netloc_of(u) for u in self.config.servers)
        last = max(pool, key=lambda s: s.last_attempt or 0.0)
        return netloc_of(last.uri.geturl())

    def choose_server(self, servers: list[Any], info: dict[str, Any]) -> tuple[Any, float]:
        """nats-py's reconnect handler: the most preferred server not held off."""
        by_netloc = {netloc_of(s.uri.geturl()): s for s in servers}
        pick, delay = self.choice.choose(list(by_netloc), asyncio.get_running_loop().time())
        return by_netloc[pick], delay

    # -- leaving a server ------------------------------------------------------------------------
    async def abandon(self, why: str, hold: bool = True) -> None:
        """Leave the current server now: a dead or frozen server must not keep us waiting
        for a TLS shutdown (asyncio waits up to 30 s for the peer's close_notify). The
        sockets are aborted, and nats-py's reconnect goes to the next server at once."""
        nc = self.nc
        if nc is None or self._closed():
            return
        if hold:
            self.choice.abandoned(self.choice.current, asyncio.get_running_loop().time())
        log.warning("nats: leaving %s: %s", self.choice.current or "the server", why)
        if nc.is_connected:
            await nc.force_reconnect()
        abort_sockets(nc)

    async def leave_unheard(self, by: list[str]) -> None:
        """``by`` have not heard us for ``failure_timeout`` although we hear them: our server
        does not pass our messages on. Move to another one, and keep away from it a while."""
        who = ", ".join(by)
        server = self.choice.current or "the server"
        if len(self.choice.preferred) < 2:
            if not self._unheard_told:
                self._unheard_told = True
                log.error(
                    "nats: %s do(es) not hear us although we hear them: %s does not pass our "
                    "messages on, and [cluster.nats] servers lists no other server to move to "
                    "(see docs/nats.md, one-way paths)",
                    who,
                    server,
                )
            return
        hold = self.choice.unheard(self.choice.current, asyncio.get_running_loop().time())
        await self.abandon(
            f"{who} ha(s|ve) not heard us for {self.config.failure_timeout:g} s although we "
            f"hear them (a one-way path: see docs/nats.md); keeping away from it for {hold:.0f} s",
            hold=False,
        )

    def start_failback(self) -> None:
        """Start :meth:`failback_loop` if there is a server to fail back to."""
        if self.config.failback_interval > 0 and len(self.config.servers) > 1:
            self._failback = asyncio.get_running_loop().create_task(
                self.failback_loop(), name="pbxmesh-nats-failback"
            )

    async def stop(self) -> None:
        """Stop failing back (the transport is closing)."""
        await cancel_and_wait(self._failback)

    async def failback_loop(self) -> None:
        """Return to a more preferred server (the site's leaf) once it answers again."""
        c = self.config
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(c.failback_interval)
            nc = self.nc
            better = self.choice.better()
            if not better or nc is None or not nc.is_connected or not self._link.is_set():
                continue
            answers = await asyncio.gather(*(probe(s, c.connect_timeout) for s in better))
            for server, ok in zip(better, answers, strict=True):
                self.choice.probed(server, ok)
            target = self.choice.failback_target(loop.time())
            if target is not None and nc.is_connected:
                log.info(
                    "nats: preferred server %s answers again; moving back from %s",
                    target,
                    self.choice.current,
                )
                self.choice.connected(None)  # nothing is held: the handler picks the best
                await nc.force_reconnect()  # a polite close: this server is alive

    # -- errors ----------------------------------------------------------------------------------
    async def on_error(self, exc: Exception) -> None:
        """nats-py's ``error_cb``."""
        text = str(exc)
        if self._connect_failure(exc):
            return
        c = self.config
        if "permissions violation" in text.lower():
            self._denials += 1
            if self._denials >= c.max_denials:
                self._fail(
                    TransportError(
                        f"nats: {self.choice.current or 'the server'} denied {self._denials} "
                        f"operations of user/node {self.who()} / {c.name!r} ({text}); "
                        f"this user may not speak as node {c.name!r}: check [node] "
                        "name and [cluster.nats] credentials against accounts.conf. Giving up."
                    )
                )
                return
            frames, hb_subject, sub_subject = group_subjects(
                c.prefix, c.group, member_token(c.name)
            )
            log.error(
                "nats refused an operation group=%s self=%s: %s; the server's permissions for "
                "this user must allow publishing on %s and %s and subscribing to %s",
                c.group,
                member_token(c.name),
                text,
                frames,
                hb_subject,
                sub_subject,
            )
        elif not self._closed():
            log.warning("nats error group=%s: %s: %s", c.group, type(exc).__name__, text)

    def _connect_failure(self, exc: Exception) -> bool:
        """A failed connection attempt (start or reconnect): log one line naming the
        server, once per server and reason; decide whether to give up. True if handled."""
        if not _is_connect_failure(exc):
            return False
        server = self._erring_server()
        kind, line = describe(exc, server, self.who())
        previous = self._start_errors.get(server)
        sticky = previous is not None and previous[0] in ("refused", "tls") and kind != previous[0]
        if previous != (kind, line) and not sticky:  # a refusal outranks the reset after it
            self._start_errors[server] = (kind, line)
            log.warning("%s", line)
        configured = {netloc_of(u) for u in self.config.servers}
        if not self._connected_once:
            definite = {s for s, (k, _) in self._start_errors.items() if k in ("refused", "tls")}
            # Every server tried and none will take us: say why, per server, now.
            tried = configured <= set(self._start_errors)
            if definite and tried:
                lines = [self._start_errors[s][1] for s in sorted(configured)]
                self.settle_start(TransportError("\n".join(lines)))
        elif kind == "refused":
            self._refused.add(server)
            if configured <= self._refused:
                self._fail(
                    TransportError(
                        f"nats: every server refused our credentials ({self.who()}); "
                        "they were revoked or changed. Giving up."
                    )
                )
        return True


def _is_connect_failure(exc: Exception) -> bool:
    """Whether nats-py's ``exc`` is about connecting (rather than an operation)."""
    import nats.errors as ne

    if not isinstance(exc, OSError | TimeoutError | ne.AuthorizationError | ne.Error):
        return False
    auth = "authorization violation" in str(exc).lower()
    return not (
        isinstance(exc, ne.Error)
        and not auth
        and not isinstance(
            exc,
            ne.AuthorizationError
            | ne.SecureConnRequiredError
            | ne.SecureConnFailedError
            | ne.SecureConnWantedError
            | ne.NoServersError
            | ne.TimeoutError,
        )
    )


async def close_client(nc: Any, within: float) -> None:
    """Close the client without a leave (start failed, or after the leave)."""
    if nc is None:
        return
    with contextlib.suppress(Exception):
        async with asyncio.timeout(within):
            await nc.close()
    abort_sockets(nc)


def abort_sockets(nc: Any) -> None:
    """Abort the client's socket (and its TLS layer) without any shutdown handshake.

    nats-py closes politely, and with TLS asyncio then waits up to ``ssl_shutdown_timeout``
    (30 s) for a peer that may be frozen or cut off. Aborting makes ``wait_closed`` return at
    once. It reaches into nats-py's transport (``_io_writer``, ``_bare_io_writer``), checked
    by the failover drills of the test suite on every nats-py version we install.
    """
    transport = getattr(nc, "_transport", None)
    for attr in ("_io_writer", "_bare_io_writer"):
        writer = getattr(transport, attr, None)
        sock_transport = getattr(writer, "transport", None)
        if sock_transport is not None:
            with contextlib.suppress(Exception):
                sock_transport.abort()
