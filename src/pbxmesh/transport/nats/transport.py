"""The NATS transport: one pbxmesh group over core NATS pub/sub, for multi-site meshes.

Theory of operation
-------------------
*Subjects.* A group lives under ``<prefix>.<group>`` (prefix ``pbxmesh`` by default)::

    <prefix>.<group>.frames.<member_id>   pbxmesh frames, one per message, sent by member_id
    <prefix>.<group>.hb.<member_id>       heartbeats, probes and leaves of member_id

Each member publishes only on its own two subjects, so a nats-server with per-user publish
allow-lists (``pbxmesh nats-accounts``) makes the subject an authenticated sender id. Each
member subscribes to ``<prefix>.<group>.>`` with **one** subscription: nats-py runs one delivery
task per subscription, so one subscription keeps a sender's heartbeats and frames in the order
it published them (a leave is never overtaken by the frames sent before it). The payload of a
``frames`` message is the frame exactly as the node gave it; the transport adds nothing.

*Member ids* are the configured node name escaped into one subject token
(:func:`member_token`: letters, digits, ``_`` and ``-`` stay, every other byte of the UTF-8 is
written ``%XX``), e.g. ``pbx1``, ``pbx1%2Eexample%2Ecom``. They are stable across restarts,
which is what permissions need; an incarnation number in every heartbeat tells restarts apart.

*Heartbeats* (:class:`Heartbeat`, a 15-byte header plus the name) carry a kind (ALIVE, PROBE,
LEAVE), the sender's ``instance`` (random, per transport object) and ``epoch`` (+1 on every
reconnect). Every member publishes ALIVE each ``heartbeat_interval``. A PROBE is an ALIVE that
asks everyone to answer with an ALIVE at once; it is sent on start and after each reconnect.
Frames count as signs of life too. A member silent for ``failure_timeout`` is reported as left
(``clean=False``); LEAVE reports it left at once (``clean=True``). Detection therefore takes
``failure_timeout`` plus at most one scheduling delay (default 0.5 s / 2.5 s: < 3 s).

*Views.* A new sender joins. A known member whose *instance* changed was restarted: it is
reported left (so that the node drops the origins of the old incarnation) and then joined. A
known member whose *epoch* grew has reconnected and may have missed frames: it is reported
joined again (still a member), which makes every node re-announce its snapshot. ``start()``
sends a PROBE and gathers answers for ``join_gather`` seconds, so the first view lists the
members already there (one snapshot round instead of one per member).

*Link loss and the echo watchdog.* nats-py reconnects by itself (to another server of the
pool, ``max_reconnect_attempts=-1``): ``disconnected_cb`` yields ``LinkState(up=False)``;
``reconnected_cb`` yields ``LinkState(up=True)``, bumps the epoch, resets every member's timer,
sends a PROBE and, after ``join_gather``, a fresh :class:`MembershipChange` whose ``joined``
lists every member (so the node resyncs both ways). Members that appeared meanwhile answer the
probe; members that vanished meanwhile stay silent and are reported left after
``failure_timeout``. No member is declared failed while the link is down, nor while our own
heartbeats do not come back (NATS echoes them to us): silence then says more about our server
than about the others. A server that is frozen rather than dead (no TCP reset) is caught by
that echo watchdog: no echo for ``echo_timeout`` forces a reconnect, long before nats-py's own
ping timer would (``ping_interval`` x ``max_outstanding_pings``). Silence is judged only when
it can be ours to judge: while messages wait unread in the subscription, nobody is declared
failed, and time in which our own event loop did not run us (a 100,000-item snapshot merge,
CPU starvation) is added to every timer instead of counting as silence.

*One-way paths.* Every second a member publishes a *lost notice* (a heartbeat of kind LOST)
naming the members it declared failed and has not heard since. A member that reads itself in
another's notices for ``failure_timeout`` is heard by nobody there although it hears them: its
server takes its messages but does not pass them on (nats-server 2.9's leaf-node interest
defect, docs/nats.md). It leaves that server for the next one and holds it off for 30 s, then
longer at each repeat (``servers.py``). A member declared failed is named at once, not at the
next notice: one that was only frozen or starved past ``failure_timeout`` saw no change of its
own, yet the others dropped its states. Reading itself newly named, it reports the sender
joined again, so its node announces its state again (held by the sender until it hears the
member again, then applied).

*Delivery.* ``send`` publishes on our frames subject; NATS echoes it back to us, so every
member including ourselves gets it, in per-sender FIFO (one connection, one subscription). A
lock keeps concurrent senders in call order; while reconnecting nats-py buffers up to
``pending_size`` bytes, beyond that ``send`` waits for the link and retries. Core NATS is
at-most-once: frames published by others while *we* were disconnected are lost to us, which is
why a reconnect always ends in a snapshot exchange.

*Late joiners* get the whole state from that snapshot exchange, not from a JetStream KV
bucket; docs/nats.md gives the measurements and reasons.

*Where things are.* ``config.py`` (settings, subjects), ``heartbeat.py`` (the heartbeat codec
and the :class:`~pbxmesh.transport.nats.heartbeat.PeerTable` that turns heartbeats and
silence into views; no I/O), ``errors.py`` (nats-py's exceptions), this module (the
connection, the timer, the inbound boundary).

*Errors.* nats-py exceptions become :mod:`pbxmesh.errors` in one place,
:func:`~pbxmesh.transport.nats.errors.translate`.
nats-py itself is imported lazily in ``start()``: the package imports without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import ssl
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Final

from ...errors import ConfigError, RemoteProtocolError, TransportClosed, TransportError
from ...tasks import cancel_and_wait
from ..base import (
    END,
    LinkState,
    Member,
    MembershipChange,
    Message,
    Transport,
    TransportEvent,
    drain,
)
from .config import NatsConfig, group_subjects, member_token
from .errors import Busy, describe, translate
from .heartbeat import (
    Heartbeat,
    HeartbeatKind,
    LostNotice,
    PeerTable,
    UnheardWatch,
    decode_heartbeat,
    encode_heartbeat,
    encode_lost,
)
from .servers import ServerChoice, netloc_of, probe

if TYPE_CHECKING:
    from ...config import ClusterConfig

__all__ = ["NatsTransport"]

log = logging.getLogger(__name__)

#: How long, and how many, frames of a sender not yet in the view are held for it.
HOLD_SECONDS: Final = 5.0
HOLD_FRAMES: Final = 256
#: Most senders held for at once (each node may publish only on its own subject).
HOLD_SENDERS: Final = 1024

#: How long a member we lost is named in our lost notices (unless heard again).
LOST_KEEP_SECONDS: Final = 600.0

_FALLBACK_MAX_PAYLOAD: Final = 1024 * 1024
#: a timer this late (seconds) means our event loop was busy: see NatsTransport._forgive
_STALL_SLACK: Final = 0.05


class NatsTransport(Transport):
    """A member of one pbxmesh group over NATS; see the module docstring."""

    kind = "nats"

    def __init__(self, config: NatsConfig) -> None:
        self.config = config
        self.self_id = member_token(config.name)
        self.member = Member(member_id=self.self_id, name=config.name)
        self._frames, self._hb_subject, self._sub_subject = group_subjects(
            config.prefix, config.group, self.self_id
        )
        self._base = f"{config.prefix}.{config.group}."
        self._instance = secrets.randbits(64)
        self._epoch = 0
        self._queue: asyncio.Queue[TransportEvent | object] = asyncio.Queue()
        self._nc: Any = None
        self._sub: Any = None
        self._peers = PeerTable(self.member)
        self._unheard = UnheardWatch()
        self._unheard_told = False  # "no other server to move to" said for this episode
        self._started = False
        self._closed = False
        self._joined = asyncio.Event()  # set once the first view is out (and for good on close)
        self._link = asyncio.Event()  # set while connected (and for good on close)
        self._gathering = True  # joins are collected, not reported, while gathering
        self._held: list[Message] | None = []  # messages before the first view
        self._last_echo = 0.0
        self._send_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._ticker: asyncio.Task[None] | None = None
        self._max_payload = _FALLBACK_MAX_PAYLOAD
        self._warned_dup = False
        self._choice = ServerChoice(
            tuple(netloc_of(u) for u in config.servers),
            hold_off=config.hold_off,
            retry_wait=config.reconnect_time_wait,
        )
        self._connected_once = False
        self._start_errors: dict[str, tuple[str, str]] = {}  # server -> (kind, line)
        self._start_verdict: asyncio.Future[TransportError] | None = None
        self._denials = 0
        self._refused: set[str] = set()  # servers that refused our credentials since connected
        self._failback: asyncio.Task[None] | None = None
        self._unknown_senders: set[str] = set()
        #: frames of senders not (yet) in our view, held until the view has them (then
        #: delivered right after that view) or for HOLD_SECONDS: sender -> [(time, data)]
        self._pending: dict[str, list[tuple[float, bytes]]] = {}
        #: frames dropped because their sender was not (yet) a member of our view
        self.dropped_from_non_members = 0
        #: set when the transport gave up for good; ``fatal_error`` says why
        self.failed = asyncio.Event()
        self.fatal_error: TransportError | None = None

    @classmethod
    def from_config(cls, cluster: ClusterConfig, node_name: str) -> NatsTransport:
        """The transport for ``[cluster]`` of pbxmesh.toml (``transport = "nats"``)."""
        n = cluster.nats
        if n.kv_bucket:
            log.warning(
                "nats kv_bucket=%s is ignored: late joiners get the state by snapshot exchange "
                "(see docs/nats.md)",
                n.kv_bucket,
            )
        return cls(
            NatsConfig(
                name=node_name,
                group=cluster.group,
                servers=tuple(n.servers),
                user=n.user,
                password=n.password,
                nkey_seed=n.nkey_seed,
                creds=n.creds,
                tls_ca=n.tls_ca,
                tls_cert=n.tls_cert,
                tls_key=n.tls_key,
                heartbeat_interval=n.heartbeat_interval,
                failure_timeout=n.failure_timeout,
                # The order of [cluster.nats] servers is the operator's preference: the site's
                # own (leaf) server first, then the hub's servers as fallbacks.
                randomize=False,
            )
        )

    # -- public API ------------------------------------------------------------------------------
    @property
    def max_message_size(self) -> int:
        cap = self.config.max_message_size
        return min(cap, self._max_payload) if cap else self._max_payload

    @property
    def connected_url(self) -> str | None:
        """The server we are connected to now (for logs, tests and benchmarks)."""
        nc = self._nc
        if nc is None or not nc.is_connected or nc.connected_url is None:
            return None
        return f"{nc.connected_url.hostname}:{nc.connected_url.port}"

    async def start(self) -> None:
        if self._closed:
            raise TransportClosed("nats transport is closed")
        if self._started:
            return
        try:
            from nats.aio.client import Client
        except ImportError as exc:
            raise TransportError(
                f"the NATS transport needs nats-py: pip install 'pbxmesh[nats]' ({exc})"
            ) from exc
        self._started = True
        loop = asyncio.get_running_loop()
        nc = Client()
        self._nc = nc
        self._start_verdict = loop.create_future()
        try:
            await self._connect(nc)
            async with asyncio.timeout(self.config.start_timeout):
                self._max_payload = int(nc.max_payload) or _FALLBACK_MAX_PAYLOAD
                self._sub = await nc.subscribe(
                    self._sub_subject,
                    cb=self._on_msg,
                    pending_msgs_limit=-1,
                    pending_bytes_limit=-1,
                )
                self._link.set()
                self._last_echo = loop.time()
                await self._heartbeat(HeartbeatKind.PROBE)
                await nc.flush()
        except asyncio.CancelledError:
            await self._abort(nc)
            raise
        except TransportError:
            await self._abort(nc)
            raise
        except Exception as exc:
            await self._abort(nc)
            raise translate(exc, self.config.servers) from exc
        await asyncio.sleep(self.config.join_gather)  # probe answers arrive meanwhile
        if self._closed:
            raise TransportClosed("nats transport was closed while starting")
        self._gathering = False
        self._report(self._peers.change(joined=(*self._peers.members(), self.member)))
        held, self._held = self._held or [], None
        for msg in held:
            self._deliver(msg)
        self._joined.set()
        self._ticker = loop.create_task(self._tick(), name="pbxmesh-nats-heartbeat")
        if self.config.failback_interval > 0 and len(self.config.servers) > 1:
            self._failback = loop.create_task(self._failback_loop(), name="pbxmesh-nats-failback")
        log.info(
            "nats joined group=%s self=%s server=%s members=%d",
            self.config.group,
            self.self_id,
            self.connected_url,
            len(self._peers.peers) + 1,
        )

    async def send(self, data: bytes) -> None:
        if len(data) > self.max_message_size:
            raise ValueError(f"message of {len(data)} bytes exceeds {self.max_message_size}")
        if self._closed or not self._started:
            raise TransportClosed("nats transport is not running")
        async with self._send_lock:
            await self._joined.wait()
            while True:
                if self._closed:
                    raise TransportClosed("nats transport is closed")
                try:
                    await self._nc.publish(self._frames, data)
                    return
                except Exception as exc:
                    err = translate(exc, self.config.servers)
                    if not isinstance(err, Busy):
                        raise err from exc
                if self._link.is_set():
                    await asyncio.sleep(0.02)  # nats-py is reconnecting but has not said so yet
                else:
                    await self._link.wait()

    def events(self) -> AsyncIterator[TransportEvent]:
        return drain(self._queue)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await cancel_and_wait(self._ticker)
        await cancel_and_wait(self._failback)
        for task in list(self._tasks):
            task.cancel()
        nc = self._nc
        if nc is not None and nc.is_connected:
            try:
                async with asyncio.timeout(self.config.leave_timeout):
                    await self._heartbeat(HeartbeatKind.LEAVE)
                    await nc.flush()
            except Exception as exc:  # the leave is best effort; failure detection remains
                log.debug("nats leave group=%s: %s", self.config.group, exc)
        await self._abort(nc)
        self._joined.set()
        self._link.set()  # wake senders: they see _closed
        self._queue.put_nowait(END)
        log.info("nats left group=%s self=%s", self.config.group, self.self_id)

    # -- connection ------------------------------------------------------------------------------
    def _connect_options(self) -> dict[str, Any]:
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
            "error_cb": self._on_error,
            "disconnected_cb": self._on_disconnected,
            "reconnected_cb": self._on_reconnected,
            "closed_cb": self._on_closed,
            "reconnect_to_server_handler": self._choose_server,
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

    async def _connect(self, nc: Any) -> None:
        """The first connection, in the order of ``servers``. Fails at once when every server
        refused our credentials or TLS, with one line per server; after ``start_timeout``
        with one line per server that did not answer."""
        c = self.config
        assert self._start_verdict is not None
        connecting = asyncio.ensure_future(nc.connect(**self._connect_options()))
        verdict = self._start_verdict
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
            self._choice.connected(self._current_netloc())
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

    def _who(self) -> str:
        c = self.config
        if c.user is not None:
            return f"user {c.user}"
        if c.nkey_seed is not None:
            return f"nkey seed {c.nkey_seed}"
        if c.creds is not None:
            return f"creds {c.creds}"
        return "no credentials configured"

    def _erring_server(self) -> str:
        """The server nats-py tried last (the one an error is about)."""
        pool = list(getattr(self._nc, "_server_pool", []) or [])
        if not pool:
            return ", ".join(netloc_of(u) for u in self.config.servers)
        last = max(pool, key=lambda s: s.last_attempt or 0.0)
        return netloc_of(last.uri.geturl())

    def _current_netloc(self) -> str | None:
        nc = self._nc
        if nc is None or nc.connected_url is None:
            return None
        return netloc_of(nc.connected_url.geturl())

    def _choose_server(self, servers: list[Any], info: dict[str, Any]) -> tuple[Any, float]:
        """nats-py's reconnect handler: the most preferred server not held off."""
        by_netloc = {netloc_of(s.uri.geturl()): s for s in servers}
        pick, delay = self._choice.choose(list(by_netloc), asyncio.get_running_loop().time())
        return by_netloc[pick], delay

    async def _abandon(self, why: str, hold: bool = True) -> None:
        """Leave the current server now: a dead or frozen server must not keep us waiting
        for a TLS shutdown (asyncio waits up to 30 s for the peer's close_notify). The
        sockets are aborted, and nats-py's reconnect goes to the next server at once."""
        nc = self._nc
        if nc is None or self._closed:
            return
        if hold:
            self._choice.abandoned(self._choice.current, asyncio.get_running_loop().time())
        log.warning("nats: leaving %s: %s", self._choice.current or "the server", why)
        if nc.is_connected:
            await nc.force_reconnect()
        _abort_sockets(nc)

    async def _leave_unheard(self, by: list[str]) -> None:
        """``by`` have not heard us for ``failure_timeout`` although we hear them: our server
        does not pass our messages on. Move to another one, and keep away from it a while."""
        who = ", ".join(by)
        server = self._choice.current or "the server"
        if len(self._choice.preferred) < 2:
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
        hold = self._choice.unheard(self._choice.current, asyncio.get_running_loop().time())
        await self._abandon(
            f"{who} ha(s|ve) not heard us for {self.config.failure_timeout:g} s although we "
            f"hear them (a one-way path: see docs/nats.md); keeping away from it for {hold:.0f} s",
            hold=False,
        )

    async def _failback_loop(self) -> None:
        """Return to a more preferred server (the site's leaf) once it answers again."""
        c = self.config
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(c.failback_interval)
            nc = self._nc
            better = self._choice.better()
            if not better or nc is None or not nc.is_connected or not self._link.is_set():
                continue
            answers = await asyncio.gather(*(probe(s, c.connect_timeout) for s in better))
            for server, ok in zip(better, answers, strict=True):
                self._choice.probed(server, ok)
            target = self._choice.failback_target(loop.time())
            if target is not None and nc.is_connected:
                log.info(
                    "nats: preferred server %s answers again; moving back from %s",
                    target,
                    self._choice.current,
                )
                self._choice.connected(None)  # nothing is held: the handler picks the best
                await nc.force_reconnect()  # a polite close: this server is alive

    def _fail(self, err: TransportError) -> None:
        """Give up for good: the daemon stops with ``err`` (it waits on ``failed``)."""
        if self.fatal_error is not None or self._closed:
            return
        self.fatal_error = err
        log.error("%s", err)
        self.failed.set()
        if self._start_verdict is not None and not self._start_verdict.done():
            self._start_verdict.set_result(err)  # start() raises it
        elif self._joined.is_set():
            self._spawn(self.close())

    async def _abort(self, nc: Any) -> None:
        """Close the client without a leave (start failed, or after the leave)."""
        if nc is None:
            return
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self.config.leave_timeout):
                await nc.close()
        _abort_sockets(nc)

    async def _on_error(self, exc: Exception) -> None:
        text = str(exc)
        if self._connect_failure(exc):
            return
        if "permissions violation" in text.lower():
            self._denials += 1
            if self._denials >= self.config.max_denials:
                self._fail(
                    TransportError(
                        f"nats: {self._choice.current or 'the server'} denied {self._denials} "
                        f"operations of user/node {self._who()} / {self.config.name!r} ({text}); "
                        f"this user may not speak as node {self.config.name!r}: check [node] "
                        "name and [cluster.nats] credentials against accounts.conf. Giving up."
                    )
                )
                return
            log.error(
                "nats refused an operation group=%s self=%s: %s; the server's permissions for "
                "this user must allow publishing on %s and %s and subscribing to %s",
                self.config.group,
                self.self_id,
                text,
                self._frames,
                self._hb_subject,
                self._sub_subject,
            )
        elif not self._closed:
            log.warning("nats error group=%s: %s: %s", self.config.group, type(exc).__name__, text)

    def _connect_failure(self, exc: Exception) -> bool:
        """A failed connection attempt (start or reconnect): log one line naming the
        server, once per server and reason; decide whether to give up. True if handled."""
        import nats.errors as ne

        if not isinstance(exc, OSError | TimeoutError | ne.AuthorizationError | ne.Error):
            return False
        auth = "authorization violation" in str(exc).lower()
        if (
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
        ):
            return False
        server = self._erring_server()
        kind, line = describe(exc, server, self._who())
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
            if definite and tried and self._start_verdict is not None:
                lines = [self._start_errors[s][1] for s in sorted(configured)]
                if not self._start_verdict.done():
                    self._start_verdict.set_result(TransportError("\n".join(lines)))
        elif kind == "refused":
            self._refused.add(server)
            if configured <= self._refused:
                self._fail(
                    TransportError(
                        f"nats: every server refused our credentials ({self._who()}); "
                        "they were revoked or changed. Giving up."
                    )
                )
        return True

    async def _on_disconnected(self) -> None:
        if self._closed or not self._link.is_set():
            return
        self._link.clear()
        # The server we lost is not tried first again (a frozen one would cost a timeout).
        self._choice.abandoned(self._choice.current, asyncio.get_running_loop().time())
        reason = str(getattr(self._nc, "last_error", None) or "disconnected from server")
        log.warning("nats link down group=%s self=%s: %s", self.config.group, self.self_id, reason)
        self._deliver(LinkState(up=False, reason=reason))

    async def _on_reconnected(self) -> None:
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        self._epoch = (self._epoch + 1) & 0xFFFFFFFF
        self._last_echo = now
        self._peers.reset(now)  # they get a full failure_timeout to show up again
        self._unheard.reset()  # notices about our last connection say nothing of this one
        self._unheard_told = False
        self._gathering = True
        self._link.set()
        self._choice.connected(self._current_netloc())
        self._refused.clear()
        self._start_errors.clear()
        log.info(
            "nats link up group=%s self=%s server=%s epoch=%d",
            self.config.group,
            self.self_id,
            self.connected_url,
            self._epoch,
        )
        self._deliver(LinkState(up=True))
        self._spawn(self._resync_view())

    async def _resync_view(self) -> None:
        with contextlib.suppress(Exception):
            await self._heartbeat(HeartbeatKind.PROBE)
        await asyncio.sleep(self.config.join_gather)
        self._gathering = False
        if not self._closed:
            self._report(self._peers.change(joined=self._peers.members()))

    async def _on_closed(self) -> None:
        if self._closed:
            return
        # Only reached if nats-py gave up (it retries forever otherwise): report, stay closed.
        log.error("nats client closed by itself group=%s; transport is dead", self.config.group)
        self._deliver(LinkState(up=False, reason="nats client closed"))
        self._closed = True
        self._joined.set()
        self._link.set()
        self._queue.put_nowait(END)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- heartbeats and failure detection --------------------------------------------------------
    async def _heartbeat(self, kind: HeartbeatKind) -> None:
        hb = Heartbeat(kind, self._instance, self._epoch, self.config.name)
        await self._nc.publish(self._hb_subject, encode_heartbeat(hb))

    async def _lost_notice(self, now: float) -> None:
        lost = self._peers.lost_notice(now, LOST_KEEP_SECONDS)
        if lost:
            notice = LostNotice(self._instance, self._epoch, self.config.name, lost)
            await self._nc.publish(self._hb_subject, encode_lost(notice))

    async def _lost_notice_now(self, now: float) -> None:
        try:
            await self._lost_notice(now)
        except Exception as exc:  # the link is down: the next notice will do
            log.debug("nats lost notice not sent: %s", exc)

    async def _tick(self) -> None:
        """Publish heartbeats (and lost notices every other one), expire silent members and
        watch our own echo, on one timer."""
        loop = asyncio.get_running_loop()
        c = self.config
        next_hb = expected = loop.time()
        beat = 0
        while True:
            now = loop.time()
            if now - expected > _STALL_SLACK:
                self._forgive(now - expected)
            if now >= next_hb:
                next_hb = now + c.heartbeat_interval
                beat += 1
                if self._nc.is_connected:
                    try:
                        await self._heartbeat(HeartbeatKind.ALIVE)
                        if beat % 2 == 0:
                            await self._lost_notice(now)
                    except Exception as exc:
                        log.debug("nats heartbeat not sent: %s", exc)
            self._check(loop.time())
            deadlines = [next_hb, self._last_echo + c.effective_echo_timeout + 0.001]
            deadlines += self._peers.deadlines(c.failure_timeout)
            delay = max(0.005, min(deadlines) - loop.time())
            expected = loop.time() + delay
            await asyncio.sleep(delay)

    def _forgive(self, seconds: float) -> None:
        """Our event loop ran us ``seconds`` late (a long merge, CPU starvation): time in
        which we could not read does not count against anybody, ourselves included."""
        self._last_echo += seconds
        self._peers.forgive(seconds)
        if seconds > self.config.heartbeat_interval:
            log.info("nats: event loop stalled %.2f s; failure timers extended", seconds)

    def _check(self, now: float) -> None:
        if not self._link.is_set() or self._gathering:
            return
        if self._sub is not None and self._sub.pending_msgs > 0:
            return  # input is waiting to be read: silence is ours, judge after reading it
        c = self.config
        echo_age = now - self._last_echo
        if echo_age > c.effective_echo_timeout:
            self._last_echo = now  # one forced reconnect per echo_timeout
            self._spawn(self._abandon(f"no echo of our heartbeats for {echo_age:.1f} s"))
            return  # our own path is in doubt: do not blame the others
        # lost notices come every other heartbeat: three missed ones end an episode
        unheard = self._unheard.unheard(now, c.failure_timeout, 6 * c.heartbeat_interval)
        if unheard:
            self._unheard.reset()
            self._spawn(self._leave_unheard(unheard))
            return
        change = self._peers.expire(now, c.failure_timeout)
        if change is not None:
            self._report(change)
            # tell the failed members now, not at the next notice: one that was only frozen
            # or slow may be heard again within the second, and must announce its state again
            self._spawn(self._lost_notice_now(now))

    # -- inbound ---------------------------------------------------------------------------------
    async def _on_msg(self, msg: Any) -> None:
        """The single inbound boundary: every message of the group passes here, in order."""
        subject: str = msg.subject
        if not subject.startswith(self._base):
            return
        kind, _, sender = subject[len(self._base) :].partition(".")
        if kind == "frames":
            if log.isEnabledFor(logging.DEBUG):
                log.debug("<<- frame from=%s len=%d", sender, len(msg.data))
            if sender != self.self_id and sender not in self._peers.peers:
                # Not (yet, or no longer) in our view: a frame must never be merged ahead of
                # the membership that would drop it. It is held until a view has its sender
                # (then delivered after that view) and dropped if none does in HOLD_SECONDS:
                # the sender may have announced its whole state in it, and would not again.
                self._hold(sender, msg.data)
                return
            self._peers.seen(sender, asyncio.get_running_loop().time())
            self._deliver(Message(sender=sender, data=msg.data))
        elif kind == "hb":
            try:
                hb = decode_heartbeat(msg.data)
            except RemoteProtocolError as exc:
                log.warning("nats: dropped bad heartbeat on %s: %s", subject, exc)
                return
            if member_token(hb.name) != sender:
                log.warning(
                    "nats: heartbeat of %r on %s dropped: name/subject differ", hb.name, subject
                )
                return
            if isinstance(hb, LostNotice):
                if sender != self.self_id:
                    names_us = (self.self_id, self._instance) in hb.lost
                    now = asyncio.get_running_loop().time()
                    if self._unheard.notice(sender, names_us, now):
                        self._declared_failed_by(sender)
                return
            await self._on_heartbeat(sender, hb)

    async def _on_heartbeat(self, sender: str, hb: Heartbeat) -> None:
        now = asyncio.get_running_loop().time()
        if sender == self.self_id:
            if hb.instance == self._instance:
                self._last_echo = now
            elif not self._warned_dup:
                self._warned_dup = True
                log.error(
                    "nats: another process uses our member id %s (node name %r) in group %s; "
                    "every node needs its own [node] name",
                    sender,
                    self.config.name,
                    self.config.group,
                )
            return
        for change in self._peers.heartbeat(sender, hb, now, self._gathering):
            self._report(change)
        self._unknown_senders.discard(sender)
        if hb.kind is HeartbeatKind.PROBE and self._nc is not None and self._nc.is_connected:
            with contextlib.suppress(Exception):
                await self._heartbeat(HeartbeatKind.ALIVE)

    def _declared_failed_by(self, sender: str) -> None:
        """``sender`` declared us failed (we were frozen, starved or cut off past its
        failure_timeout) and dropped our states, though we never stopped and saw no change.
        Reporting it joined again makes the node announce its state again; ``sender`` holds
        those frames until it hears us again, then applies them."""
        peer = self._peers.peers.get(sender)
        if peer is None:
            return  # we lost it too: its return is a join, which announces anyway
        log.info("nats: %s declared us failed; announcing our state again", sender)
        self._report(self._peers.change(joined=(peer.member,)))

    def _hold(self, sender: str, data: bytes) -> None:
        now = asyncio.get_running_loop().time()
        held = self._pending.get(sender)
        if held is None:
            if len(self._pending) >= HOLD_SENDERS:
                self.dropped_from_non_members += 1
                return
            held = self._pending[sender] = []
        while held and (now - held[0][0] > HOLD_SECONDS or len(held) >= HOLD_FRAMES):
            held.pop(0)
            self.dropped_from_non_members += 1
        held.append((now, data))
        if sender not in self._unknown_senders:
            self._unknown_senders.add(sender)
            log.info("nats: frames from %s held until it is a member", sender)

    def _release(self, change: MembershipChange) -> None:
        """Deliver the held frames of every member of ``change`` (after it); forget stale ones."""
        now = asyncio.get_running_loop().time()
        for m in change.members:
            for t, data in self._pending.pop(m.member_id, ()):
                if now - t <= HOLD_SECONDS:
                    self._deliver(Message(sender=m.member_id, data=data))
                else:
                    self.dropped_from_non_members += 1
        for sender in [s for s, held in self._pending.items() if now - held[-1][0] > HOLD_SECONDS]:
            self.dropped_from_non_members += len(self._pending.pop(sender))

    # -- outbound events -------------------------------------------------------------------------
    def _deliver(self, event: TransportEvent) -> None:
        if self._closed:
            return
        if self._held is not None and isinstance(event, Message):
            self._held.append(event)
        else:
            self._queue.put_nowait(event)

    def _report(self, change: MembershipChange) -> None:
        log.info(
            "nats membership group=%s view=%d members=%d joined=%s left=%s clean=%s",
            self.config.group,
            change.view,
            len(change.members),
            [m.member_id for m in change.joined],
            [m.member_id for m in change.left],
            all(change.clean),
        )
        self._deliver(change)
        if self._pending:
            self._release(change)


def _abort_sockets(nc: Any) -> None:
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
