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

*Delivery.* ``send`` publishes on our frames subject; NATS echoes it back to us, so every
member including ourselves gets it, in per-sender FIFO (one connection, one subscription). A
lock keeps concurrent senders in call order; while reconnecting nats-py buffers up to
``pending_size`` bytes, beyond that ``send`` waits for the link and retries. Core NATS is
at-most-once: frames published by others while *we* were disconnected are lost to us, which is
why a reconnect always ends in a snapshot exchange.

*Late joiners* get the whole state from that snapshot exchange, not from a JetStream KV
bucket; docs/nats.md gives the measurements and reasons.

*Errors.* nats-py exceptions become :mod:`pbxmesh.errors` in one place, :func:`_translate`.
nats-py itself is imported lazily in ``start()``: the package imports without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import ssl
import string
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from ..errors import ConfigError, RemoteProtocolError, TransportClosed, TransportError
from ..tasks import cancel_and_wait
from .base import (
    END,
    LinkState,
    Member,
    MembershipChange,
    Message,
    Transport,
    TransportEvent,
    drain,
)

if TYPE_CHECKING:
    from ..config import ClusterConfig

__all__ = [
    "Heartbeat",
    "HeartbeatKind",
    "NatsConfig",
    "NatsTransport",
    "decode_heartbeat",
    "encode_heartbeat",
    "group_subjects",
    "member_token",
]

log = logging.getLogger(__name__)

_SAFE: Final = frozenset(string.ascii_letters + string.digits + "_-")
_FALLBACK_MAX_PAYLOAD: Final = 1024 * 1024
#: a timer this late (seconds) means our event loop was busy: see NatsTransport._forgive
_STALL_SLACK: Final = 0.05


def member_token(name: str) -> str:
    """``name`` as one NATS subject token, reversibly: unsafe UTF-8 bytes become ``%XX``."""
    if not name:
        raise ConfigError("a NATS member needs a non-empty node name")
    out: list[str] = []
    for ch in name:
        if ch in _SAFE:
            out.append(ch)
        else:
            out.extend(f"%{b:02X}" for b in ch.encode())
    return "".join(out)


def group_subjects(prefix: str, group: str, token: str) -> tuple[str, str, str]:
    """(frames subject, heartbeat subject, subscription) of member ``token`` in ``group``."""
    base = f"{prefix}.{group}"
    return f"{base}.frames.{token}", f"{base}.hb.{token}", f"{base}.>"


# -- heartbeat codec (sans-IO) ---------------------------------------------------------------------
class HeartbeatKind(IntEnum):
    # WARNING: wire values, append-only; never renumber.
    ALIVE = 1
    PROBE = 2  # ALIVE, and "everyone answer with an ALIVE now"
    LEAVE = 3


# magic, version, kind, instance, epoch; then the UTF-8 node name (1..255 bytes)
_HB: Final = struct.Struct("!4sBBQI")
_HB_MAGIC: Final = b"PBXH"
# WARNING: bump only with a decoder that still reads version 1.
_HB_VERSION: Final = 1


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """One heartbeat message; validated on construction."""

    kind: HeartbeatKind
    instance: int  # random per transport object: a new one means the member restarted
    epoch: int  # +1 on every reconnect: a higher one means "I may have missed frames"
    name: str  # the node name (its token must match the subject's)

    def __post_init__(self) -> None:
        if not 0 <= self.instance < 1 << 64:
            raise ValueError(f"heartbeat instance {self.instance} is not a u64")
        if not 0 <= self.epoch < 1 << 32:
            raise ValueError(f"heartbeat epoch {self.epoch} is not a u32")
        if not 1 <= len(self.name.encode()) <= 255:
            raise ValueError(f"heartbeat name {self.name!r} must be 1..255 bytes of UTF-8")


def encode_heartbeat(hb: Heartbeat) -> bytes:
    return _HB.pack(_HB_MAGIC, _HB_VERSION, hb.kind, hb.instance, hb.epoch) + hb.name.encode()


def decode_heartbeat(data: bytes) -> Heartbeat:
    """Raises :class:`RemoteProtocolError` for anything that is not a heartbeat."""
    if len(data) <= _HB.size:
        raise RemoteProtocolError(f"heartbeat of {len(data)} bytes is too short")
    magic, version, kind, instance, epoch = _HB.unpack_from(data)
    if magic != _HB_MAGIC or version != _HB_VERSION:
        raise RemoteProtocolError(f"not a version {_HB_VERSION} heartbeat: {data[:5]!r}")
    try:
        return Heartbeat(HeartbeatKind(kind), instance, epoch, data[_HB.size :].decode())
    except (ValueError, UnicodeDecodeError) as exc:
        raise RemoteProtocolError(f"bad heartbeat: {exc}") from None


# -- configuration ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class NatsConfig:
    """Settings of :class:`NatsTransport`; validated when built. Times in seconds."""

    # This node's name; its member id and subject token is member_token(name).
    name: str
    # The group ([cluster] group): nodes of one mesh share it, and a subject level.
    group: str = "pbxmesh"
    # Server URLs (nats:// or tls://). Give every server of the site or cluster: nats-py
    # fails over to the others (it also learns the cluster's servers from the first one).
    servers: tuple[str, ...] = ("nats://127.0.0.1:4222",)
    # First subject level. Change it only to run unrelated meshes in one account.
    prefix: str = "pbxmesh"
    # Credentials: user/password, or an nkey seed file, or a .creds file (JWT + nkey).
    user: str | None = None
    password: str | None = None
    nkey_seed: Path | None = None
    creds: Path | None = None
    # TLS: the CA that signed the servers' certificates; client cert and key for mutual TLS.
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # Seconds between heartbeats. Lower detects failures sooner for more messages (each
    # member sends 1/interval per second, and receives that times the group size).
    heartbeat_interval: float = 0.5
    # A member silent this long has failed. Keep it >= 4 heartbeats: a WAN hiccup or a busy
    # host must not look like a failure (every failure costs a snapshot round).
    failure_timeout: float = 2.5
    # No echo of our own heartbeats for this long while "connected": the server is frozen or
    # cut off; force a reconnect to another server. 0: 3 x heartbeat_interval.
    echo_timeout: float = 0.0
    # After start and after a reconnect, wait this long for probe answers before reporting
    # the view. Longer merges more joins into one view (one snapshot round); shorter joins
    # sooner. Answers on a LAN or loopback arrive in a few ms, on a WAN in one RTT.
    join_gather: float = 0.2
    # nats-py client pings: a dead server is noticed after about interval x (pings + 1).
    # The echo watchdog is faster; this is the backstop.
    ping_interval: float = 2.0
    max_outstanding_pings: int = 2
    # Seconds for one connection attempt (TCP, TLS, INFO/CONNECT). A frozen server accepts
    # the TCP connection and then says nothing: this bounds the time lost on it.
    connect_timeout: float = 1.0
    # Seconds before trying the same server again; other servers are tried at once.
    reconnect_time_wait: float = 0.25
    # Bytes nats-py buffers while reconnecting; beyond that send() waits for the link.
    pending_size: int = 8 * 1024 * 1024
    # Shuffle the server list (spreads nodes over servers). Tests pin a server with False.
    randomize: bool = True
    # Seconds start() may take to connect before raising TransportError.
    start_timeout: float = 10.0
    # Seconds close() waits for the leave to be flushed to the server.
    leave_timeout: float = 2.0
    # Cap on one message in bytes; the effective limit is the smaller of this and the
    # server's max_payload. 0: the server's limit.
    max_message_size: int = 0

    def __post_init__(self) -> None:
        member_token(self.name)
        if len(self.name.encode()) > 255:
            raise ConfigError(f"nats node name {self.name!r} is longer than 255 bytes")
        for key in ("group", "prefix"):
            value = getattr(self, key)
            if not value or any(c not in _SAFE for c in value):
                raise ConfigError(f"nats {key} {value!r} must be letters, digits, '-' or '_'")
        if not self.servers:
            raise ConfigError("nats servers: give at least one nats:// or tls:// URL")
        for key in (
            "heartbeat_interval",
            "failure_timeout",
            "join_gather",
            "ping_interval",
            "connect_timeout",
            "reconnect_time_wait",
            "start_timeout",
            "leave_timeout",
        ):
            if getattr(self, key) <= 0:
                raise ConfigError(f"nats {key} must be > 0, got {getattr(self, key)!r}")
        if self.failure_timeout <= 2 * self.heartbeat_interval:
            raise ConfigError("nats failure_timeout must be more than twice heartbeat_interval")
        if self.echo_timeout and self.echo_timeout <= self.heartbeat_interval:
            raise ConfigError("nats echo_timeout must be more than heartbeat_interval (or 0)")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("nats tls_cert and tls_key go together (mutual TLS)")
        if self.password is not None and self.user is None:
            raise ConfigError("nats password given without user")
        if sum(x is not None for x in (self.user, self.nkey_seed, self.creds)) > 1:
            raise ConfigError("nats: give one of user/password, nkey_seed or creds")
        if self.max_message_size < 0 or self.pending_size < 0 or self.max_outstanding_pings < 1:
            raise ConfigError("nats max_message_size/pending_size >= 0, max_outstanding_pings >= 1")

    @property
    def effective_echo_timeout(self) -> float:
        return self.echo_timeout or 3 * self.heartbeat_interval

    @classmethod
    def local(cls, name: str, group: str, servers: tuple[str, ...], **kw: Any) -> NatsConfig:
        """Fast timers for tests against servers on the same host."""
        base: dict[str, Any] = {
            "heartbeat_interval": 0.25,
            "failure_timeout": 1.25,
            "join_gather": 0.1,
            "ping_interval": 1.0,
            "connect_timeout": 0.5,
            "reconnect_time_wait": 0.1,
            "start_timeout": 10.0,
        }
        base.update(kw)
        return cls(name=name, group=group, servers=servers, **base)


@dataclass(slots=True)
class _Peer:
    member: Member
    instance: int
    epoch: int
    last_seen: float


class _Busy(TransportError):
    """nats-py cannot take the message now (reconnecting, buffer full): wait and retry."""


def _translate(exc: BaseException, servers: tuple[str, ...]) -> TransportError:
    """THE place where nats-py exceptions become pbxmesh errors."""
    import nats.errors as ne

    where = ", ".join(servers)
    match exc:
        case ne.OutboundBufferLimitError() | ne.ConnectionReconnectingError():
            return _Busy(f"nats: reconnecting, outbound buffer full ({type(exc).__name__})")
        case ne.ConnectionClosedError() | ne.ConnectionDrainingError():
            return TransportClosed("nats connection is closed")
        case ne.AuthorizationError():
            return TransportError(
                f"nats: {where} refused our credentials; check [cluster.nats] user/password, "
                "nkey_seed or creds against the server's accounts"
            )
        case ne.SecureConnRequiredError() | ne.SecureConnFailedError() | ssl.SSLError():
            return TransportError(
                f"nats: TLS with {where} failed ({exc}); set tls_ca to the CA of the servers' "
                "certificates (and tls_cert/tls_key if the servers require client certificates)"
            )
        case ne.NoServersError() | ne.TimeoutError() | TimeoutError() | OSError():
            return TransportError(
                f"nats: no server reachable among {where} ({type(exc).__name__}: {exc}); "
                "is nats-server running there?"
            )
        case ne.Error():
            return TransportError(f"nats: {type(exc).__name__}: {exc}")
    return TransportError(f"nats: unexpected {type(exc).__name__}: {exc}")


# -- the transport ---------------------------------------------------------------------------------
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
        self._peers: dict[str, _Peer] = {}
        self._view = 0
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
                "the NATS transport needs nats-py: pip install 'pbxmesh[nats]'"
            ) from exc
        self._started = True
        loop = asyncio.get_running_loop()
        nc = Client()
        try:
            async with asyncio.timeout(self.config.start_timeout):
                await nc.connect(**self._connect_options())
                self._nc = nc
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
        except Exception as exc:
            await self._abort(nc)
            raise _translate(exc, self.config.servers) from exc
        await asyncio.sleep(self.config.join_gather)  # probe answers arrive meanwhile
        if self._closed:
            raise TransportClosed("nats transport was closed while starting")
        self._gathering = False
        self._report(joined=(*(p.member for p in self._peers.values()), self.member))
        held, self._held = self._held or [], None
        for msg in held:
            self._deliver(msg)
        self._joined.set()
        self._ticker = loop.create_task(self._tick(), name="pbxmesh-nats-heartbeat")
        log.info(
            "nats joined group=%s self=%s server=%s members=%d",
            self.config.group,
            self.self_id,
            self.connected_url,
            len(self._peers) + 1,
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
                    err = _translate(exc, self.config.servers)
                    if not isinstance(err, _Busy):
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

    async def _abort(self, nc: Any) -> None:
        """Close the client without a leave (start failed, or after the leave)."""
        if nc is None:
            return
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self.config.leave_timeout):
                await nc.close()

    async def _on_error(self, exc: Exception) -> None:
        text = str(exc)
        if "permissions violation" in text.lower():
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

    async def _on_disconnected(self) -> None:
        if self._closed or not self._link.is_set():
            return
        self._link.clear()
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
        for peer in self._peers.values():
            peer.last_seen = now  # they get a full failure_timeout to show up again
        self._gathering = True
        self._link.set()
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
            self._report(joined=tuple(p.member for p in self._peers.values()))

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

    async def _tick(self) -> None:
        """Publish heartbeats, expire silent members and watch our own echo, on one timer."""
        loop = asyncio.get_running_loop()
        c = self.config
        next_hb = expected = loop.time()
        while True:
            now = loop.time()
            if now - expected > _STALL_SLACK:
                self._forgive(now - expected)
            if now >= next_hb:
                next_hb = now + c.heartbeat_interval
                if self._nc.is_connected:
                    try:
                        await self._heartbeat(HeartbeatKind.ALIVE)
                    except Exception as exc:
                        log.debug("nats heartbeat not sent: %s", exc)
            self._check(loop.time())
            deadlines = [next_hb]
            deadlines += [p.last_seen + c.failure_timeout for p in self._peers.values()]
            delay = max(0.005, min(deadlines) - loop.time())
            expected = loop.time() + delay
            await asyncio.sleep(delay)

    def _forgive(self, seconds: float) -> None:
        """Our event loop ran us ``seconds`` late (a long merge, CPU starvation): time in
        which we could not read does not count against anybody, ourselves included."""
        self._last_echo += seconds
        for peer in self._peers.values():
            peer.last_seen += seconds
        if seconds > self.config.heartbeat_interval:
            log.info("nats: event loop stalled %.2f s; failure timers extended", seconds)

    def _check(self, now: float) -> None:
        if not self._link.is_set() or self._gathering:
            return
        if self._sub is not None and self._sub.pending_msgs > 0:
            return  # input is waiting to be read: silence is ours, judge after reading it
        echo_age = now - self._last_echo
        if echo_age > self.config.effective_echo_timeout:
            if self._nc.is_connected:
                log.warning(
                    "nats: no echo of our heartbeats for %.1f s from %s; reconnecting elsewhere",
                    echo_age,
                    self.connected_url,
                )
                self._last_echo = now  # one forced reconnect per echo_timeout
                self._spawn(self._nc.force_reconnect())
            return  # our own path is in doubt: do not blame the others
        dead = [p for p in self._peers.values() if now - p.last_seen > self.config.failure_timeout]
        for p in dead:
            del self._peers[p.member.member_id]
        if dead:
            self._report(left=tuple(p.member for p in dead), clean=False)

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
            peer = self._peers.get(sender)
            if peer is not None:
                peer.last_seen = asyncio.get_running_loop().time()
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
        peer = self._peers.get(sender)
        if hb.kind is HeartbeatKind.LEAVE:
            if peer is not None and peer.instance == hb.instance:
                del self._peers[sender]
                self._report(left=(peer.member,), clean=True)
            return
        if peer is not None and peer.instance != hb.instance:
            # Restarted: the old incarnation failed. Report it gone first, so that the node
            # drops what it asserted, then the new one joins.
            del self._peers[sender]
            self._report(left=(peer.member,), clean=False)
            peer = None
        if peer is None:
            member = Member(member_id=sender, name=hb.name)
            self._peers[sender] = _Peer(member, hb.instance, hb.epoch, now)
            if not self._gathering:
                self._report(joined=(member,))
        else:
            peer.last_seen = now
            if hb.epoch != peer.epoch:
                peer.epoch = hb.epoch
                if not self._gathering:
                    self._report(joined=(peer.member,))  # it reconnected: resync
        if hb.kind is HeartbeatKind.PROBE and self._nc is not None and self._nc.is_connected:
            with contextlib.suppress(Exception):
                await self._heartbeat(HeartbeatKind.ALIVE)

    # -- outbound events -------------------------------------------------------------------------
    def _deliver(self, event: TransportEvent) -> None:
        if self._closed:
            return
        if self._held is not None and isinstance(event, Message):
            self._held.append(event)
        else:
            self._queue.put_nowait(event)

    def _report(
        self, joined: tuple[Member, ...] = (), left: tuple[Member, ...] = (), clean: bool = True
    ) -> None:
        self._view += 1
        members = (self.member, *sorted((p.member for p in self._peers.values()), key=_mid))
        change = MembershipChange(
            members=members,
            joined=joined,
            left=left,
            view=self._view,
            clean=tuple(clean for _ in left),
        )
        log.info(
            "nats membership group=%s view=%d members=%d joined=%s left=%s clean=%s",
            self.config.group,
            self._view,
            len(members),
            [m.member_id for m in joined],
            [m.member_id for m in left],
            clean,
        )
        self._deliver(change)


def _mid(m: Member) -> str:
    return m.member_id
