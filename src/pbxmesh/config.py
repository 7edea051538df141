"""The configuration file: TOML, validated once at start, every error with file, line and key.

Theory of operation
-------------------
``load_config(path)`` reads ``pbxmesh.toml`` with :mod:`tomllib`, then walks a schema, one
function per section (``_node``, ``_cluster``, ``_channels``, ``_asterisk`` …): every table and
key is checked for presence, type and value, unknown keys are errors, and the result is a tree
of frozen dataclasses (:class:`Config`). Each key is validated here and only here, links'
keys included (``remote_template`` by the AMI link's own naming rules, ``down_grace`` of every
link), so a mistake is named with file:line before anything starts; the links' own configs are
then built from these objects in :mod:`pbxmesh.linkconfig`. The line of a key is found by
:mod:`pbxmesh.config_schema`. Channels may instead come from Asterisk's own ``ais.conf`` or
``res_corosync.conf`` (``[cluster] asterisk_conf = "/etc/asterisk/ais.conf"``), parsed by
:func:`~pbxmesh.asterisk_channels.read_asterisk_channels`.

Library code receives these objects; nothing else reads files or the environment.
"""

from __future__ import annotations

import re
import socket
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from .asterisk_channels import read_asterisk_channels
from .config_schema import Locator, Table, hostport, parse_hostport, path_value, positive
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
class HintsSection:
    """``[asterisk.hints]``: hints kept for the other servers' extensions (docs/asterisk.md)."""

    context: str  # the dialplan context the hints go into, e.g. "ext-local-custom"
    device: str = "PJSIP/{exten}"  # which devices are extensions, and their extension number


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
    hints: HintsSection | None = None  # [asterisk.hints]: keep hints for remote extensions


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


def load_config(path: str | Path) -> Config:
    """Read and validate a pbxmesh.toml. Raises :class:`ConfigError` naming file:line and key."""
    path = Path(path)
    text = _read_text(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    loc = Locator(path, text)
    base = path.parent
    root = Table(loc, "", data)
    node = _node(root.sub("node"), base)
    cluster, asterisk_conf = _cluster(root.sub("cluster"), base)
    channels = _channels(root, asterisk_conf)
    ring = _ring(root, data)
    asterisk = _asterisk(root, data)
    control = _control(root.sub("control"))
    security = _security(root.sub("security"), base)
    root.used.add("channel")
    root.done()
    return Config(
        path=path,
        node=node,
        cluster=cluster,
        channels=channels,
        asterisk=asterisk,
        control=control,
        security=security,
        ring=ring,
    )


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file; write one (see docs/configuration.md)") from None
    except PermissionError:
        raise ConfigError(f"{path}: permission denied; run as a user that may read it") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a configuration file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _node(t: Table, base: Path) -> NodeSection:
    """``[node]``."""
    name = t.get("name", str, None) or socket.gethostname()
    state_dir = path_value(t, "state_dir", base) or Path("/var/lib/pbxmesh")
    eid_text = t.get("eid", str, None)
    try:
        eid = EID.parse(eid_text) if eid_text else None
    except StateError as exc:
        raise t.err("eid", str(exc)) from None
    if len(name.encode()) > 64:
        raise t.err("name", "must be at most 64 bytes")
    t.done()
    return NodeSection(name=name, state_dir=state_dir, eid=eid)


def _cluster(cl: Table, base: Path) -> tuple[ClusterConfig, Path | None]:
    """``[cluster]`` and its sub-tables; also ``asterisk_conf``, read by :func:`_channels`."""
    transport = cl.get("transport", str, "corosync")
    if transport not in ("corosync", "nats"):
        raise cl.err("transport", f'must be "corosync" or "nats", not {transport!r}')
    group = cl.get("group", str, "pbxmesh")
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,100}", group):
        raise cl.err("group", "must be 1 to 100 letters, digits, '-' or '_'")
    asterisk_conf = path_value(cl, "asterisk_conf", base)
    frame_interval = float(cl.get("frame_interval", (int, float), 0.001))
    if not 0 <= frame_interval <= 1:
        raise cl.err("frame_interval", f"must be between 0 and 1 second, not {frame_interval}")
    co = cl.sub("corosync")
    corosync = CorosyncSection(reconnect_interval=positive(co, "reconnect_interval", 0.2))
    co.done()
    nats = _nats(cl.sub("nats"), base)
    cl.done()
    cluster = ClusterConfig(
        transport=transport,
        group=group,
        frame_interval=frame_interval,
        corosync=corosync,
        nats=nats,
    )
    return cluster, asterisk_conf


def _nats(nt: Table, base: Path) -> NatsSection:
    """``[cluster.nats]``."""
    servers = nt.strings("servers", ("nats://127.0.0.1:4222",))
    for s in servers:
        if not re.fullmatch(r"(nats|tls)://[^\s/]+", s):
            raise nt.err("servers", f"{s!r} is not a nats:// or tls:// URL")
    nats = NatsSection(
        servers=servers,
        user=nt.get("user", str, None),
        password=nt.get("password", str, None),
        nkey_seed=path_value(nt, "nkey_seed", base),
        creds=path_value(nt, "creds", base),
        tls_ca=path_value(nt, "tls_ca", base),
        tls_cert=path_value(nt, "tls_cert", base),
        tls_key=path_value(nt, "tls_key", base),
        heartbeat_interval=positive(nt, "heartbeat_interval", 0.5),
        failure_timeout=positive(nt, "failure_timeout", 2.5),
        kv_bucket=nt.get("kv_bucket", str, ""),
    )
    if nats.failure_timeout <= 2 * nats.heartbeat_interval:
        raise nt.err("failure_timeout", "must be more than twice heartbeat_interval")
    nt.done()
    return nats


def _channels(root: Table, asterisk_conf: Path | None) -> tuple[ChannelConfig, ...]:
    """``[[channel]]``, or the channels of ``[cluster] asterisk_conf``; by default one."""
    loc = root.loc
    channels: list[ChannelConfig] = []
    for i, raw in enumerate(root.get("channel", list, [])):
        ct = Table(loc, "channel", raw, i)
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
            raise loc.error(
                "cluster", "asterisk_conf", "give channels either here or as [[channel]], not both"
            )
        channels = list(read_asterisk_channels(asterisk_conf))
    if not channels:
        channels = [ChannelConfig("device_state")]
    names = [c.name for c in channels]
    if len(set(names)) != len(names):
        raise loc.error("channel", "name", f"channel names must be unique: {names}")
    return tuple(channels)


def _ring(root: Table, data: dict[str, Any]) -> RingSection | None:
    """``[asterisk.ring]``, if given."""
    raw_ast = data.get("asterisk", {})
    if not (isinstance(raw_ast, dict) and isinstance(raw_ast.get("ring"), dict)):
        return None
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
    return ring


def _asterisk(root: Table, data: dict[str, Any]) -> AsteriskConfig | None:
    """``[asterisk]``: the AMI link's keys and ``[asterisk.sip]``. It also holds the sub-tables
    of other links (``[asterisk.ring]``): the AMI link is configured only when an AMI key is
    given."""
    raw_ast = data.get("asterisk", {})
    if "asterisk" not in data or (isinstance(raw_ast, dict) and not set(raw_ast) - {"ring"}):
        return None
    at = root.sub("asterisk")
    at.used.add("ring")
    template = _remote_template(at)
    sip = _sip_section(at.sub("sip")) if "sip" in at.data else None
    # AMI is configured by its keys; with [asterisk.sip] it may be left out altogether.
    has_ami = sip is None or any(k in at.data for k in ("ami", "username", "secret"))
    asterisk = AsteriskConfig(
        ami=hostport(at, "ami", "127.0.0.1:5038") if has_ami else None,
        username=at.get("username", str, required=True) if has_ami else "",
        secret=at.get("secret", str, required=True) if has_ami else "",
        include=at.strings("include", ("*",)),
        exclude=at.strings("exclude", ()),
        remote_template=template,
        mwi=at.get("mwi", bool, True),
        presence=at.get("presence", bool, True),
        down_grace=_down_grace(at),
        sip=sip,
        hints=_hints_section(at, has_ami) if "hints" in at.data else None,
    )
    at.used.update(("sip", "ami", "username", "secret", "hints"))
    at.done()
    return asterisk


def _hints_section(at: Table, has_ami: bool) -> HintsSection:
    """``[asterisk.hints]``: kept over the AMI session, which must therefore be configured."""
    if not has_ami:
        raise at.err(
            "hints",
            "kept hints are added over AMI: give ami, username and secret in [asterisk] "
            "beside [asterisk.sip] (the AMI session then shares presence only, docs/asterisk.md)",
        )
    ht = at.sub("hints")
    context: str = ht.get("context", str, required=True)
    if not re.fullmatch(r"[A-Za-z0-9_.+-]{1,79}", context):
        raise ht.err(
            "context",
            f"{context!r} is not a dialplan context name: letters, digits and _ . + - only, "
            'e.g. "ext-local-custom"',
        )
    device: str = ht.get("device", str, "PJSIP/{exten}")
    if device.count("{exten}") != 1 or not device.partition("{exten}")[0]:
        raise ht.err(
            "device",
            f"{device!r} must start with the device's technology and hold {{exten}} exactly "
            'once, e.g. "PJSIP/{exten}"',
        )
    ht.done()
    return HintsSection(context=context, device=device)


def _remote_template(at: Table) -> str:
    """``[asterisk] remote_template``, held to what the AMI link writes into Asterisk: a
    ``Custom:`` device (Asterisk reports it back spelled so), ``{device}`` once, short enough
    for a device name and with no character that would break a hint."""
    # The AMI link owns its naming rules; imported here only, so a file without [asterisk]
    # does not load the AMI link.
    from .links.ami.counterparts import DEFAULT_TEMPLATE, MAX_DEVICE_NAME, UNSAFE

    template: str = at.get("remote_template", str, DEFAULT_TEMPLATE)
    example = f"e.g. {DEFAULT_TEMPLATE!r}"
    if not template.startswith("Custom:") or template.count("{device}") != 1:
        raise at.err(
            "remote_template",
            f'{template!r} must start with "Custom:" and contain {{device}} exactly once, '
            + example,
        )
    if len(template) - len("{device}") > MAX_DEVICE_NAME - 16:
        raise at.err(
            "remote_template",
            f"{template!r} is too long: leave at least 16 of Asterisk's {MAX_DEVICE_NAME} "
            "characters for the device",
        )
    prefix, _, suffix = template.partition("{device}")
    bad = UNSAFE.findall(prefix[len("Custom:") :] + suffix)
    if bad:
        raise at.err(
            "remote_template",
            f"{template!r} holds {''.join(sorted(set(bad)))!r}; use letters, digits and "
            "_ . @ + # * ~ = - only",
        )
    return template


def _down_grace(t: Table) -> float:
    """``down_grace`` of a link's section: the same rule for every link."""
    value = t.get("down_grace", (int, float), 5.0)
    if isinstance(value, bool) or not 0 <= value <= 3600:
        raise t.err("down_grace", "must be a number of seconds from 0 to 3600, e.g. 5")
    return float(value)


def _sip_section(t: Table) -> SipSection:
    """``[asterisk.sip]``."""
    listen = hostport(t, "listen", "127.0.0.1:5070")
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


def _control(ctl: Table) -> ControlConfig:
    """``[control]``."""
    listen = hostport(ctl, "listen", "127.0.0.1:8765")
    token = ctl.get("token", str, None)
    if listen[0] not in ("127.0.0.1", "::1", "localhost") and not token:
        raise ctl.err("listen", f"{listen[0]} is not loopback: set [control] token as well")
    ctl.done()
    return ControlConfig(listen=listen, token=token)


def _security(sec: Table, base: Path) -> SecurityConfig:
    """``[security]`` and its ``[security.peers.NAME]`` tables."""
    peers = []
    raw_peers = sec.get("peers", dict, {})
    sec.used.add("peers")
    for pname, praw in raw_peers.items():
        pt = Table(sec.loc, f"security.peers.{pname}", praw)
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
        key=path_value(sec, "key", base),
        require_signatures=sec.get("require_signatures", bool, False),
        peers=tuple(peers),
    )
    sec.done()
    return security
