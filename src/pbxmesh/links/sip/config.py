"""The SIP link's configuration (``[asterisk.sip]``) and the EIDs and values it publishes
under: :func:`stand_in` for an origin that shares the receiving Asterisk's EID, and
:func:`neutral` for a removed slot (see ``link.py``'s theory of operation)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ...eid import EID
from ...errors import ConfigError
from ...states import DeviceState

__all__ = ["SipLinkConfig", "neutral", "stand_in", "uri_hostport"]


def uri_hostport(uri: str) -> tuple[str, int]:
    """``(host, port)`` of a ``sip:user@host[:port][;params]`` URI (port 5060 by default)."""
    _, colon, rest = uri.partition(":")
    hostpart = rest.rpartition("@")[2].split(";")[0].split("?")[0]
    if not colon or not hostpart:
        raise ConfigError(f"{uri!r} is not a sip:user@host:port URI")
    if hostpart.startswith("["):
        host, _, tail = hostpart[1:].partition("]")
        port_text = tail[1:] if tail.startswith(":") else ""
    else:
        host, _, port_text = hostpart.partition(":")
    if not host:
        raise ConfigError(f"{uri!r} has no host")
    if not port_text:
        return host, 5060
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(f"{uri!r} has no valid port")
    return host, int(port_text)


def stand_in(origin: EID) -> EID:
    """The EID to publish ``origin`` under when it equals the receiving Asterisk's own.

    The locally administered bit (0x02 of the first byte) flipped: distinct from ``origin`` and
    stable, so every publication of that origin lands in one slot of Asterisk's cache.
    """
    raw = bytearray(origin.raw)
    raw[0] ^= 0x02
    if not any(raw):
        raw[5] ^= 0x01
    return EID(bytes(raw))


def neutral(device: str) -> DeviceState:
    """What a removed slot is published as: the value Asterisk would show had that server
    never published the device.

    Both candidates lose to every real state (INVALID is the identity of the aggregation,
    UNKNOWN beats only INVALID); they differ when nothing else holds the device. A ``Custom:``
    device nobody set reads UNKNOWN from func_devstate, so UNKNOWN (hint ``Idle``); any other
    device a server does not have reads INVALID (hint ``Unavailable``), so INVALID.
    """
    return DeviceState.UNKNOWN if device[:7].lower() == "custom:" else DeviceState.INVALID


@dataclass(frozen=True, slots=True)
class SipLinkConfig:
    """The ``[asterisk.sip]`` section, plus what the link shares."""

    # pbxmesh's SIP listener (UDP and TCP): Asterisk's outbound-publish sends here.
    listen: tuple[str, int] = ("127.0.0.1", 5070)
    # Asterisk's inbound-publication: pbxmesh PUBLISHes here; its user names the section.
    uri: str = "sip:pbxmesh@127.0.0.1:5060"
    # The Request-URI user Asterisk's outbound-publish must use towards us (404 otherwise).
    resource: str = "pbxmesh"
    username: str | None = None  # digest in both directions, when given with secret
    secret: str | None = None
    transport: Literal["udp", "tcp"] = "udp"
    include: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()
    share_mwi: bool = True
    mwi_include: tuple[str, ...] = ("*",)
    mwi_exclude: tuple[str, ...] = ()
    slots: int = 8  # publications per EID and package: PUBLISHes in flight per EID
    expires: int = 3600  # what our publications ask for
    grace: float = 60.0  # Asterisk's publications are kept this long past their expiry
    keepalive: float = 1.0  # seconds between OPTIONS probes
    keepalive_timeout: float = 2.0  # a probe unanswered this long: Asterisk is down
    # Seconds Asterisk may stay down before the device states it published stop counting in
    # the cluster (LinkPort.withdraw), counted from the probe that found it down.
    down_grace: float = 5.0
    asterisk_eid: EID | None = None  # Asterisk's entityid, if known before its first body
    # Where the (EID, device) pairs Asterisk holds from this link are kept, so that a restarted
    # pbxmesh still neutralises those of servers that left while it was down.
    state_file: Path | None = None

    def __post_init__(self) -> None:
        uri_hostport(self.uri)
        if (self.username is None) != (self.secret is None):
            raise ConfigError("give both username and secret, or neither")
        if self.transport not in ("udp", "tcp"):
            raise ConfigError(f'transport must be "udp" or "tcp", not {self.transport!r}')
        if not self.resource or not self.resource.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(f"resource {self.resource!r} must be letters, digits, '-', '_'")
        if self.keepalive <= 0 or self.keepalive_timeout <= 0 or self.slots < 1:
            raise ConfigError("keepalive, keepalive_timeout and slots must be positive")

    @property
    def dest(self) -> tuple[str, int]:
        return uri_hostport(self.uri)
