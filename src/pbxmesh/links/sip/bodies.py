"""The JSON bodies of res_pjsip_publish_asterisk: ``devicestate``, ``mailboxstate``, ``refresh``.

Exact keys, in Asterisk's order::

    {"type":"devicestate","device":"PJSIP/100","state":"INUSE","cachable":1,"eid":"…"}
    {"type":"mailboxstate","uniqueid":"1000@default","old":1,"new":3,"eid":"…"}
    {"type":"refresh","eid":"…"}

Inbound bodies are validated strictly, since Asterisk validates nearly nothing (see the
reference: it takes ``FOO`` as UNKNOWN, an EID of ``zz``, a uniqueid without ``@``): a body
must be a JSON object of the right ``type`` for its event package, with a valid EID, a device
name Asterisk could carry (<= 79 bytes, no control characters), one of the nine upper-case
state names, ``cachable`` 0 or 1 (missing means 0, as Asterisk reads it), counts that are
non-negative 32-bit integers. Unknown extra keys are ignored, for forward compatibility.
Anything else raises :class:`~pbxmesh.errors.RemoteProtocolError`, which the server answers
with 400.

Outbound bodies are built from the same validated dataclasses, so nothing Asterisk could
mis-handle can be emitted: states 0..8 by name only, EIDs printed ``xx:xx:xx:xx:xx:xx``,
names within Asterisk's limits. Mailbox ids are sent as ``mailbox@context`` (Asterisk keeps a
uniqueid without ``@`` as given, which would name a different mailbox).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

from ...eid import EID
from ...errors import RemoteProtocolError, StateError
from ...states import DeviceState
from ...store import check_device_name, normalize_mailbox

__all__ = [
    "CONTENT_TYPE",
    "DEVICESTATE",
    "MWI",
    "PACKAGES",
    "Body",
    "DeviceStateBody",
    "MailboxStateBody",
    "RefreshBody",
    "decode_body",
    "encode_body",
]

#: The two event packages and the only content type.
DEVICESTATE: Final = "asterisk-devicestate"
MWI: Final = "asterisk-mwi"
PACKAGES: Final = (DEVICESTATE, MWI)
CONTENT_TYPE: Final = "application/json"
MAX_BODY: Final = 4096  # far above any valid body; larger ones are refused before parsing
_MAX_COUNT: Final = 2**31 - 1
_STATE_NAMES: Final = {s.name: s for s in DeviceState}


@dataclass(frozen=True, slots=True)
class DeviceStateBody:
    """One server's own state of one device."""

    device: str
    state: DeviceState
    eid: EID
    cachable: bool = True

    def __post_init__(self) -> None:
        check_device_name(self.device)
        if not isinstance(self.state, DeviceState):
            raise StateError(f"{self.state!r} is not a DeviceState")
        if not isinstance(self.eid, EID):
            raise StateError(f"{self.eid!r} is not an EID")


@dataclass(frozen=True, slots=True)
class MailboxStateBody:
    """One server's message counts of one mailbox (``uniqueid`` is ``mailbox@context``)."""

    uniqueid: str
    new: int
    old: int
    eid: EID

    def __post_init__(self) -> None:
        if normalize_mailbox(self.uniqueid) != self.uniqueid:
            raise StateError(f"mailbox {self.uniqueid!r} is not in the form mailbox@context")
        for count in (self.new, self.old):
            if isinstance(count, bool) or not isinstance(count, int):
                raise StateError(f"message count {count!r} is not an integer")
            if not 0 <= count <= _MAX_COUNT:
                raise StateError(f"message count {count} is out of range")
        if not isinstance(self.eid, EID):
            raise StateError(f"{self.eid!r} is not an EID")


@dataclass(frozen=True, slots=True)
class RefreshBody:
    """A request to send every state again (sent by a server that has just started)."""

    eid: EID

    def __post_init__(self) -> None:
        if not isinstance(self.eid, EID):
            raise StateError(f"{self.eid!r} is not an EID")


Body: TypeAlias = DeviceStateBody | MailboxStateBody | RefreshBody


def encode_body(body: Body) -> bytes:
    """The JSON body Asterisk sends for ``body``, byte for byte."""
    obj: dict[str, object]
    match body:
        case DeviceStateBody():
            obj = {
                "type": "devicestate",
                "device": body.device,
                "state": body.state.name,
                "cachable": int(body.cachable),
                "eid": str(body.eid),
            }
        case MailboxStateBody():
            obj = {
                "type": "mailboxstate",
                "uniqueid": body.uniqueid,
                "old": body.old,
                "new": body.new,
                "eid": str(body.eid),
            }
        case RefreshBody():
            obj = {"type": "refresh", "eid": str(body.eid)}
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def package_of(body: Body) -> str:
    """The event package a body travels on (refresh: devicestate; it goes on both)."""
    return MWI if isinstance(body, MailboxStateBody) else DEVICESTATE


def _str(obj: dict[str, Any], key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise RemoteProtocolError(f"body key {key!r} must be a string, got {value!r:.40}")
    return value


def _count(obj: dict[str, Any], key: str) -> int:
    value = obj.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int):
        raise RemoteProtocolError(f"body key {key!r} must be an integer, got {value!r:.40}")
    return value


def decode_body(package: str, data: bytes) -> Body:
    """Validate and decode a body that arrived on event ``package``."""
    if len(data) > MAX_BODY:
        raise RemoteProtocolError(f"body of {len(data)} bytes is larger than {MAX_BODY}")
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise RemoteProtocolError(f"body is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise RemoteProtocolError("body is not a JSON object")
    kind = _str(obj, "type")
    try:
        eid = EID.parse(_str(obj, "eid"))
        if kind == "refresh" and package in PACKAGES:
            return RefreshBody(eid)
        if kind == "devicestate" and package == DEVICESTATE:
            name = _str(obj, "state")
            state = _STATE_NAMES.get(name)
            if state is None:
                raise RemoteProtocolError(f"{name!r:.40} is not a device state name")
            cachable = obj.get("cachable", 0)
            if cachable not in (0, 1) or isinstance(cachable, (bool, float)):
                raise RemoteProtocolError(f"cachable must be 0 or 1, got {cachable!r:.20}")
            return DeviceStateBody(_str(obj, "device"), state, eid, bool(cachable))
        if kind == "mailboxstate" and package == MWI:
            # Asterisk sends "mailbox" alone for an empty context; we name it mailbox@default.
            uniqueid = normalize_mailbox(_str(obj, "uniqueid"))
            return MailboxStateBody(uniqueid, _count(obj, "new"), _count(obj, "old"), eid)
    except StateError as exc:
        raise RemoteProtocolError(f"body is not valid: {exc}") from None
    raise RemoteProtocolError(f"body type {kind!r:.40} is not valid on event {package!r:.40}")
