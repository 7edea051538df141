"""The configuration file: TOML, validated once at start, every error with file, line and key.

Theory of operation
-------------------
``load_config(path)`` reads ``pbxmesh.toml`` with :mod:`tomllib`, then walks a schema: every
table and key is checked for presence, type and value, unknown keys are errors, and the result
is a tree of frozen dataclasses (:class:`Config`). tomllib reports syntax errors with a line and
column but gives no positions for valid keys, so :class:`_Locator` finds the line of a key by
scanning the text for its table header and ``key =`` line — enough to point an administrator at
the right place. Channels may instead come from Asterisk's own ``ais.conf`` or
``res_corosync.conf`` (``[cluster] asterisk_conf = "/etc/asterisk/ais.conf"``), parsed by
:func:`read_asterisk_channels`.

Library code receives these objects; nothing else reads files or the environment.
"""

from __future__ import annotations

import re
import socket
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from .eid import EID
from .errors import ConfigError, StateError
from .node import EVENT_TYPES, ChannelConfig

__all__ = [
    "AsteriskConfig",
    "ClusterConfig",
    "Config",
    "ControlConfig",
    "CorosyncSection",
    "NatsSection",
    "NodeSection",
    "PeerConfig",
    "SecurityConfig",
    "SipSection",
    "load_config",
    "parse_hostport",
    "read_asterisk_channels",
]

DEFAULT_CONFIG: Final = "/etc/pbxmesh/pbxmesh.toml"


@dataclass(frozen=True, slots=True)
class NodeSection:
    name: str  # this node's name, shown by `members`; default: the host name
    state_dir: Path  # where the EID, the version reservation and keys live
    eid: EID | None = None  # force an EID (as asterisk.conf entityid); default: generated once


@dataclass(frozen=True, slots=True)
class CorosyncSection:
    reconnect_interval: float = 0.2  # seconds between reconnect attempts when corosync is gone


@dataclass(frozen=True, slots=True)
class NatsSection:
    servers: tuple[str, ...] = ("nats://127.0.0.1:4222",)
    user: str | None = None  # user/password authentication at the broker
    password: str | None = None
    nkey_seed: Path | None = None  # or an nkey seed file (per-node credentials)
    creds: Path | None = None  # or a .creds file (JWT + nkey)
    tls_ca: Path | None = None  # CA that signed the servers' certificates
    tls_cert: Path | None = None  # client certificate and key, for mutual TLS
    tls_key: Path | None = None
    heartbeat_interval: float = 0.5  # seconds between heartbeats
    failure_timeout: float = 2.5  # a member silent this long is gone (detection time)
    kv_bucket: str = ""  # JetStream key-value bucket for last states; default: <group>-state


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    transport: str  # "corosync" (LAN) or "nats" (across sites)
    group: str  # CPG group name, or NATS subject prefix
    # Seconds between two frames of one node; changes arriving meanwhile share the next frame.
    frame_interval: float = 0.001
    corosync: CorosyncSection = CorosyncSection()
    nats: NatsSection = NatsSection()


@dataclass(frozen=True, slots=True)
class SipSection:
    """``[asterisk.sip]``: the SIP PUBLISH link (res_pjsip_publish_asterisk)."""

    listen: tuple[str, int] = ("127.0.0.1", 5070)  # pbxmesh's SIP listener (UDP and TCP)
    uri: str = "sip:pbxmesh@127.0.0.1:5060"  # Asterisk's inbound-publication
    username: str | None = None  # digest, both directions
    secret: str | None = None
    transport: str = "udp"  # "udp" or "tcp", towards Asterisk


@dataclass(frozen=True, slots=True)
class AsteriskConfig:
    # Host and port of Asterisk's manager interface; None: no AMI link ([asterisk.sip] alone).
    ami: tuple[str, int] | None
    username: str
    secret: str
    include: tuple[str, ...] = ("*",)  # glob patterns of devices and mailboxes to share
    exclude: tuple[str, ...] = ()  # glob patterns never shared
    remote_template: str = "Custom:remote-{device}"  # local name of remote counterparts
    mwi: bool = True  # share MWI of mailboxes whose voicemail lives here
    presence: bool = True  # share CustomPresence: presence (func_presencestate)
    down_grace: float = 5.0  # seconds Asterisk may be unreachable before its states stop counting
    sip: SipSection | None = None  # the SIP PUBLISH link; with it AMI only serves `hints`


@dataclass(frozen=True, slots=True)
class RingSection:
    """``[asterisk.ring]``: join a res_corosync ring as a bridge (docs/ring.md)."""

    group: str = "asterisk"  # the CPG group res_corosync uses (Asterisk hard-codes it)
    include: tuple[str, ...] = ("*",)  # glob patterns of devices and mailboxes shared
    exclude: tuple[str, ...] = ()  # glob patterns never shared
    mwi: bool = True  # share MWI in both directions
    down_grace: float = 5.0  # seconds corosync may be gone before the ring's states go


@dataclass(frozen=True, slots=True)
class ControlConfig:
    listen: tuple[str, int] = ("127.0.0.1", 8765)
    token: str | None = None  # required when listening on anything but loopback


@dataclass(frozen=True, slots=True)
class PeerConfig:
    name: str
    public_key: str  # Ed25519 public key, base64 (from `pbxmesh keygen`)
    devices: tuple[str, ...] = ()  # glob patterns of devices this node may assert
    mailboxes: tuple[str, ...] = ()  # glob patterns of mailboxes this node may assert
    # glob patterns of presentities this node may assert, e.g. "CustomPresence:sales-*"
    presentities: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SecurityConfig:
    key: Path | None = None  # this node's private key file; None: frames are not signed
    require_signatures: bool = False
    peers: tuple[PeerConfig, ...] = ()


@dataclass(frozen=True, slots=True)
class Config:
    path: Path
    node: NodeSection
    cluster: ClusterConfig
    channels: tuple[ChannelConfig, ...]
    asterisk: AsteriskConfig | None
    control: ControlConfig
    security: SecurityConfig = field(default_factory=SecurityConfig)
    ring: RingSection | None = None  # [asterisk.ring]


class _Locator:
    """Finds the line of a table or key in the TOML text, for error messages."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.lines = text.splitlines()

    def line(self, table: str, key: str | None = None, index: int = 0) -> int | None:
        start = 0
        if table:
            header = re.compile(r"^\s*\[\[?\s*" + re.escape(table) + r"\s*\]\]?\s*(#.*)?$")
            seen = -1
            for n, text in enumerate(self.lines):
                if header.match(text):
                    seen += 1
                    if seen == index:
                        start = n
                        break
            else:
                return None
        if key is None:
            return start + 1
        if not table:  # a top-level key may be a table: [key], [[key]] or [key.sub]
            head = re.compile(r"^\s*\[\[?\s*" + re.escape(key) + r"\s*[\].]")
            for n, text in enumerate(self.lines):
                if head.match(text):
                    return n + 1
        pattern = re.compile(r"^\s*" + re.escape(key) + r"\s*=")
        for n in range(start if table else 0, len(self.lines)):
            if n > start and self.lines[n].lstrip().startswith("["):
                break
            if pattern.match(self.lines[n]):
                return n + 1
        return start + 1 if table else None

    def error(self, table: str, key: str | None, message: str, index: int = 0) -> ConfigError:
        line = self.line(table, key, index)
        where = f"{self.path}:{line}" if line else str(self.path)
        what = ".".join(p for p in (table, key) if p)
        return ConfigError(f"{where}: {what}: {message}" if what else f"{where}: {message}")


class _Table:
    """One TOML table being validated: typed getters, and unknown keys reported at the end."""

    def __init__(self, loc: _Locator, name: str, data: Any, index: int = 0) -> None:
        self.loc = loc
        self.name = name
        self.index = index
        if not isinstance(data, dict):
            raise loc.error("", name, "must be a table", index)
        self.data: dict[str, Any] = data
        self.used: set[str] = set()

    def err(self, key: str | None, message: str) -> ConfigError:
        return self.loc.error(self.name, key, message, self.index)

    def get(
        self,
        key: str,
        kind: type | tuple[type, ...],
        default: Any = None,
        *,
        required: bool = False,
    ) -> Any:
        self.used.add(key)
        if key not in self.data:
            if required:
                raise self.err(key, "is required")
            return default
        value = self.data[key]
        if isinstance(value, bool) and kind in (int, float, (int, float)):
            raise self.err(key, f"must be a number, not {value!r}")
        if not isinstance(value, kind):
            raise self.err(key, f"must be {_kind_name(kind)}, not {type(value).__name__} {value!r}")
        return value

    def strings(self, key: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        value = self.get(key, list, None)
        if value is None:
            return default
        if not all(isinstance(v, str) for v in value):
            raise self.err(key, "must be a list of strings")
        return tuple(value)

    def sub(self, key: str) -> _Table:
        self.used.add(key)
        name = f"{self.name}.{key}" if self.name else key
        return _Table(self.loc, name, self.data.get(key, {}))

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            valid = ", ".join(sorted(self.used))
            raise self.err(unknown[0], f"unknown key; valid keys here are {valid}")


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "true or false",
        list: "a list",
        dict: "a table",
    }
    if isinstance(kind, tuple):
        return " or ".join(names.get(k, k.__name__) for k in kind)
    return names.get(kind, kind.__name__)


def parse_hostport(text: str, default_port: int | None = None) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` (or a bare host with ``default_port``)."""
    m = re.fullmatch(r"\[([^\]]+)\]:(\d+)|([^:\[\]]+):(\d+)|([^:\[\]]+)", text.strip())
    if not m:
        raise ValueError(f"{text!r} is not HOST:PORT")
    host = m.group(1) or m.group(3) or m.group(5)
    port_text = m.group(2) or m.group(4)
    if port_text is None:
        if default_port is None:
            raise ValueError(f"{text!r} has no port; write HOST:PORT")
        return host, default_port
    port = int(port_text)
    if not 0 < port < 65536:
        raise ValueError(f"port {port} is not between 1 and 65535")
    return host, port


def _hostport(t: _Table, key: str, default: str) -> tuple[str, int]:
    text = t.get(key, str, default)
    try:
        return parse_hostport(text)
    except ValueError as exc:
        raise t.err(key, str(exc)) from None


def _positive(t: _Table, key: str, default: float) -> float:
    value = float(t.get(key, (int, float), default))
    if value <= 0:
        raise t.err(key, f"must be greater than 0, not {value}")
    return value


def _path(t: _Table, key: str, base: Path) -> Path | None:
    value = t.get(key, str, None)
    if value is None:
        return None
    p = Path(value)
    return p if p.is_absolute() else (base / p)


def load_config(path: str | Path) -> Config:
    """Read and validate a pbxmesh.toml. Raises :class:`ConfigError` naming file:line and key."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file; write one (see docs/configuration.md)") from None
    except PermissionError:
        raise ConfigError(f"{path}: permission denied; run as a user that may read it") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a configuration file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    loc = _Locator(path, text)
    base = path.parent
    root = _Table(loc, "", data)

    node_t = root.sub("node")
    name = node_t.get("name", str, None) or socket.gethostname()
    state_dir = _path(node_t, "state_dir", base) or Path("/var/lib/pbxmesh")
    eid_text = node_t.get("eid", str, None)
    try:
        eid = EID.parse(eid_text) if eid_text else None
    except StateError as exc:
        raise node_t.err("eid", str(exc)) from None
    if len(name.encode()) > 64:
        raise node_t.err("name", "must be at most 64 bytes")
    node_t.done()

    cl = root.sub("cluster")
    transport = cl.get("transport", str, "corosync")
    if transport not in ("corosync", "nats"):
        raise cl.err("transport", f'must be "corosync" or "nats", not {transport!r}')
    group = cl.get("group", str, "pbxmesh")
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,100}", group):
        raise cl.err("group", "must be 1 to 100 letters, digits, '-' or '_'")
    asterisk_conf = _path(cl, "asterisk_conf", base)
    frame_interval = float(cl.get("frame_interval", (int, float), 0.001))
    if not 0 <= frame_interval <= 1:
        raise cl.err("frame_interval", f"must be between 0 and 1 second, not {frame_interval}")
    co = cl.sub("corosync")
    corosync = CorosyncSection(reconnect_interval=_positive(co, "reconnect_interval", 0.2))
    co.done()
    nt = cl.sub("nats")
    servers = nt.strings("servers", ("nats://127.0.0.1:4222",))
    for s in servers:
        if not re.fullmatch(r"(nats|tls)://[^\s/]+", s):
            raise nt.err("servers", f"{s!r} is not a nats:// or tls:// URL")
    nats = NatsSection(
        servers=servers,
        user=nt.get("user", str, None),
        password=nt.get("password", str, None),
        nkey_seed=_path(nt, "nkey_seed", base),
        creds=_path(nt, "creds", base),
        tls_ca=_path(nt, "tls_ca", base),
        tls_cert=_path(nt, "tls_cert", base),
        tls_key=_path(nt, "tls_key", base),
        heartbeat_interval=_positive(nt, "heartbeat_interval", 0.5),
        failure_timeout=_positive(nt, "failure_timeout", 2.5),
        kv_bucket=nt.get("kv_bucket", str, ""),
    )
    if nats.failure_timeout <= 2 * nats.heartbeat_interval:
        raise nt.err("failure_timeout", "must be more than twice heartbeat_interval")
    nt.done()
    cl.done()
    cluster = ClusterConfig(
        transport=transport,
        group=group,
        frame_interval=frame_interval,
        corosync=corosync,
        nats=nats,
    )

    channels: list[ChannelConfig] = []
    raw_channels = root.get("channel", list, [])
    for i, raw in enumerate(raw_channels):
        ct = _Table(loc, "channel", raw, i)
        cname = ct.get("name", str, required=True)
        try:
            channels.append(
                ChannelConfig(
                    cname,
                    frozenset(ct.strings("publish", EVENT_TYPES)),
                    frozenset(ct.strings("subscribe", EVENT_TYPES)),
                )
            )
        except StateError as exc:
            raise ct.err(None, str(exc)) from None
        ct.done()
    if asterisk_conf is not None:
        if channels:
            raise cl.err("asterisk_conf", "give channels either here or as [[channel]], not both")
        channels = list(read_asterisk_channels(asterisk_conf))
    if not channels:
        channels = [ChannelConfig("device_state")]
    names = [c.name for c in channels]
    if len(set(names)) != len(names):
        raise loc.error("channel", "name", f"channel names must be unique: {names}")

    asterisk = None
    ring = None
    # [asterisk] holds the AMI link's keys and the sub-tables of other links ([asterisk.ring]);
    # the AMI link is configured only when an AMI key is given.
    raw_ast = data.get("asterisk", {})
    if isinstance(raw_ast, dict) and isinstance(raw_ast.get("ring"), dict):
        rt = root.sub("asterisk").sub("ring")
        ring = RingSection(
            group=rt.get("group", str, "asterisk"),
            include=rt.strings("include", ("*",)),
            exclude=rt.strings("exclude", ()),
            mwi=rt.get("mwi", bool, True),
            down_grace=_down_grace(rt),
        )
        if not 1 <= len(ring.group.encode()) <= 128:
            raise rt.err("group", 'must be 1 to 128 bytes (res_corosync uses "asterisk")')
        rt.done()
    if "asterisk" in data and (not isinstance(raw_ast, dict) or set(raw_ast) - {"ring"}):
        at = root.sub("asterisk")
        at.used.add("ring")
        template = at.get("remote_template", str, "Custom:remote-{device}")
        if "{device}" not in template or not template.lower().startswith("custom:"):
            raise at.err("remote_template", 'must start with "Custom:" and contain {device}')
        sip = _sip_section(at.sub("sip")) if "sip" in at.data else None
        # AMI is configured by its keys; with [asterisk.sip] it may be left out altogether.
        has_ami = sip is None or any(k in at.data for k in ("ami", "username", "secret"))
        asterisk = AsteriskConfig(
            ami=_hostport(at, "ami", "127.0.0.1:5038") if has_ami else None,
            username=at.get("username", str, required=True) if has_ami else "",
            secret=at.get("secret", str, required=True) if has_ami else "",
            include=at.strings("include", ("*",)),
            exclude=at.strings("exclude", ()),
            remote_template=template,
            mwi=at.get("mwi", bool, True),
            presence=at.get("presence", bool, True),
            down_grace=_down_grace(at),
            sip=sip,
        )
        at.used.update(("sip", "ami", "username", "secret"))
        at.done()

    ctl = root.sub("control")
    listen = _hostport(ctl, "listen", "127.0.0.1:8765")
    token = ctl.get("token", str, None)
    if listen[0] not in ("127.0.0.1", "::1", "localhost") and not token:
        raise ctl.err("listen", f"{listen[0]} is not loopback: set [control] token as well")
    ctl.done()
    control = ControlConfig(listen=listen, token=token)

    sec = root.sub("security")
    peers = []
    raw_peers = sec.get("peers", dict, {})
    sec.used.add("peers")
    for pname, praw in raw_peers.items():
        pt = _Table(loc, f"security.peers.{pname}", praw)
        peers.append(
            PeerConfig(
                name=pname,
                public_key=pt.get("public_key", str, required=True),
                devices=pt.strings("devices", ()),
                mailboxes=pt.strings("mailboxes", ()),
                presentities=pt.strings("presentities", ()),
            )
        )
        pt.done()
    security = SecurityConfig(
        key=_path(sec, "key", base),
        require_signatures=sec.get("require_signatures", bool, False),
        peers=tuple(peers),
    )
    sec.done()
    root.used.add("channel")
    root.done()
    return Config(
        path=path,
        node=NodeSection(name=name, state_dir=state_dir, eid=eid),
        cluster=cluster,
        channels=tuple(channels),
        asterisk=asterisk,
        control=control,
        security=security,
        ring=ring,
    )


def _down_grace(at: Any) -> float:
    value = at.get("down_grace", (int, float), 5.0)
    if isinstance(value, bool) or not 0 <= value <= 3600:
        raise at.err("down_grace", "must be a number of seconds from 0 to 3600, e.g. 5")
    return float(value)


def _sip_section(t: _Table) -> SipSection:
    listen = _hostport(t, "listen", "127.0.0.1:5070")
    uri = t.get("uri", str, "sip:pbxmesh@127.0.0.1:5060")
    if not re.fullmatch(r"sip:[A-Za-z0-9_-]+@[^\s@;]+", uri):
        raise t.err(
            "uri", f"{uri!r} is not sip:USER@HOST[:PORT] (USER names the inbound-publication)"
        )
    username = t.get("username", str, None)
    secret = t.get("secret", str, None)
    if (username is None) != (secret is None):
        raise t.err(
            "secret" if username else "username", "give both username and secret, or neither"
        )
    transport = t.get("transport", str, "udp")
    if transport not in ("udp", "tcp"):
        raise t.err("transport", f'must be "udp" or "tcp", not {transport!r}')
    if listen[0] not in ("127.0.0.1", "::1", "localhost") and secret is None:
        # Whoever can PUBLISH to the listener speaks as this server: off loopback, demand digest.
        raise t.err("listen", f"{listen[0]} is not loopback: set username and secret as well")
    t.done()
    return SipSection(listen=listen, uri=uri, username=username, secret=secret, transport=transport)


def read_asterisk_channels(path: Path) -> tuple[ChannelConfig, ...]:
    """Channels from Asterisk's ``ais.conf`` (``[name] type=event_channel …``) or
    ``res_corosync.conf`` (``[general] publish_event=… subscribe_event=…``)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    sections: list[tuple[str, int, dict[str, list[str]]]] = []
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.split(";", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"\[([^\]]+)\](\(.*\))?", line)
        if m:
            sections.append((m.group(1).strip(), n, {}))
            continue
        key, sep, value = line.partition("=")
        if not sep or not sections:
            raise ConfigError(f"{path}:{n}: expected [section] or key=value, got {raw.strip()!r}")
        key = key.strip().rstrip(">").strip().lower()
        sections[-1][2].setdefault(key, []).append(value.strip().lower())
    channels = []
    for name, lineno, opts in sections:
        if name.lower() == "general" and ("publish_event" in opts or "subscribe_event" in opts):
            channel = "device_state"  # res_corosync.conf has one unnamed channel
        elif opts.get("type") == ["event_channel"]:
            channel = name
        else:
            continue
        # presence_state is pbxmesh's own: Asterisk's res_ais/res_corosync do not carry it
        kinds = {"device_state", "mwi", "presence_state", "ping", "cluster_discovery"}
        for key in ("publish_event", "subscribe_event"):
            for v in opts.get(key, []):
                if v not in kinds:
                    raise ConfigError(
                        f"{path}:{lineno}: [{name}] {key}={v}: not an event type "
                        "(device_state, mwi, presence_state, ping, cluster_discovery)"
                    )
        try:
            channels.append(
                ChannelConfig(
                    channel,
                    frozenset(v for v in opts.get("publish_event", []) if v in EVENT_TYPES),
                    frozenset(v for v in opts.get("subscribe_event", []) if v in EVENT_TYPES),
                )
            )
        except StateError as exc:
            raise ConfigError(f"{path}:{lineno}: {exc}") from None
    if not channels:
        raise ConfigError(f"{path}: no event channel found (expected [name] type=event_channel)")
    return tuple(channels)
