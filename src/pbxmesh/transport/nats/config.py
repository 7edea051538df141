"""The NATS transport's settings, and how names become subjects (pure; no nats-py)."""

from __future__ import annotations

import logging
import string
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from ...errors import ConfigError

if TYPE_CHECKING:
    from ...config import ClusterConfig

__all__ = ["NatsConfig", "group_subjects", "member_token"]

# the transport's logger: the line an administrator reads stays as it was
log = logging.getLogger("pbxmesh.transport.nats.transport")

_SAFE: Final = frozenset(string.ascii_letters + string.digits + "_-")


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
    # A server that failed us (no connection, or abandoned as dead) is not chosen again for
    # this long while another one is free. Longer avoids flapping back to a sick server.
    hold_off: float = 5.0
    # While on a server that is not the first of `servers`, probe the better ones this often
    # and move back to one that answered two probes in a row (0: never fail back). Each move
    # costs a snapshot round; shorter returns traffic to the site sooner.
    failback_interval: float = 2.0
    # Permission violations on our own subjects before the transport gives up for good (the
    # server does not let this user speak for this node name: wrong credentials or an
    # impersonation). A bounded number, so that a misconfigured node stops with a clear error.
    max_denials: int = 3
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

    @classmethod
    def from_cluster(cls, cluster: ClusterConfig, node_name: str) -> NatsConfig:
        """The settings for ``[cluster]`` of pbxmesh.toml (``transport = "nats"``)."""
        n = cluster.nats
        if n.kv_bucket:
            log.warning(
                "nats kv_bucket=%s is ignored: late joiners get the state by snapshot exchange "
                "(see docs/nats.md)",
                n.kv_bucket,
            )
        return cls(
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
            "hold_off",
            "start_timeout",
            "leave_timeout",
        ):
            if getattr(self, key) <= 0:
                raise ConfigError(f"nats {key} must be > 0, got {getattr(self, key)!r}")
        if self.failure_timeout <= 2 * self.heartbeat_interval:
            raise ConfigError("nats failure_timeout must be more than twice heartbeat_interval")
        if self.echo_timeout and self.echo_timeout <= self.heartbeat_interval:
            raise ConfigError("nats echo_timeout must be more than heartbeat_interval (or 0)")
        self._check_credentials_and_limits()

    def _check_credentials_and_limits(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("nats tls_cert and tls_key go together (mutual TLS)")
        if self.password is not None and self.user is None:
            raise ConfigError("nats password given without user")
        if sum(x is not None for x in (self.user, self.nkey_seed, self.creds)) > 1:
            raise ConfigError("nats: give one of user/password, nkey_seed or creds")
        if self.failback_interval < 0 or self.max_denials < 1:
            raise ConfigError("nats failback_interval >= 0 and max_denials >= 1")
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
            "hold_off": 2.0,
            "failback_interval": 0.5,
            "start_timeout": 10.0,
        }
        base.update(kw)
        return cls(name=name, group=group, servers=servers, **base)
