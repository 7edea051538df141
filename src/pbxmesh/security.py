"""Origin authentication, authorisation and replay protection for frames, on every transport.

Theory of operation
-------------------
The seed's second limit: anybody on the ring could change any device state anywhere. Here
every node signs every frame it sends with its own Ed25519 key, and every receiver checks, in
this order (guard clauses; the first failure rejects the frame with a stable reason):

1. ``unsigned``       — no signature while signatures are required;
2. ``unknown-origin`` — the frame's node name is not in the cluster's list of nodes;
3. ``bad-signature``  — the signature does not verify with that node's public key;
4. ``wrong-origin``   — the frame asserts an EID that is not that node's. A node's EID is
   derived from its public key (see :func:`eid_for_key`);
5. ``replay``         — the frame's sequence is not newer than the last one accepted from that
   node. Sequences are the sender's persisted clock, so they increase across its restarts;
   the receiver keeps the last accepted sequence per node in its state directory, so the
   protection survives its own restarts too;
6. ``unauthorised``   — per item: a node may assert only the devices, mailboxes and
   presentities (``CustomPresence:NAME``) matching the glob patterns granted to it. Items
   outside its grant are dropped (and counted); the rest of the frame is applied.

The guard is sans-IO except for the small replay file, written atomically at most every
``flush_interval`` seconds and on close. Transport-level authentication (Corosync knet crypto
with an authkey, NATS TLS and per-node credentials) is configured on the engines themselves;
this layer makes origins end-to-end authentic whatever the transport.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import hashlib
import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .eid import EID
from .errors import ConfigError, SecurityError, StateError
from .files import atomic_write
from .wire.frame import SIGNATURE_SIZE, Frame, Item, ItemKind, signed_part

if TYPE_CHECKING:
    from .config import SecurityConfig

log = logging.getLogger(__name__)

__all__ = [
    "Peer",
    "SignatureGuard",
    "build_guard",
    "build_peers",
    "eid_for_key",
    "keygen",
    "load_private_key",
    "parse_public_key",
    "public_key_text",
]


def public_key_text(key: Ed25519PublicKey) -> str:
    """A public key as it goes in the config: base64 of the 32 raw bytes."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def parse_public_key(text: str) -> Ed25519PublicKey:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise StateError(f"public key {text[:16]!r}… is not base64") from None
    if len(raw) != 32:
        raise StateError(f"an Ed25519 public key is 32 bytes, this one has {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


def eid_for_key(key: Ed25519PublicKey) -> EID:
    """The EID a key implies: 6 bytes of its SHA-256, made a local unicast address."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    digest = bytearray(hashlib.sha256(raw).digest()[:6])
    digest[0] = (digest[0] | 0x02) & 0xFE
    return EID(bytes(digest))


def keygen(path: str | Path) -> str:
    """Write a new private key (PEM, mode 0600) to ``path``; return the public key text.

    Refuses to overwrite an existing key: a node's key is its identity.
    """
    path = Path(path)
    if path.exists():
        raise StateError(f"{path} exists; remove it first if you really want a new identity")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    return public_key_text(key.public_key())


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the node key: {exc.strerror}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path}: not a PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path}: not an Ed25519 key; make one with `pbxmesh keygen`")
    return key


@dataclass(frozen=True, slots=True)
class Peer:
    """A node of the cluster as the receivers know it."""

    name: str
    key: Ed25519PublicKey
    eid: EID
    devices: tuple[str, ...]
    mailboxes: tuple[str, ...]
    presentities: tuple[str, ...] = ()
    _grant_re: dict[ItemKind, re.Pattern[str]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # One compiled alternation per grant: checking an item is one regex match.
        grants = {kind: _compile(self.granted(kind)) for kind in ItemKind}
        object.__setattr__(self, "_grant_re", grants)

    def granted(self, kind: ItemKind) -> tuple[str, ...]:
        """The patterns of the names of ``kind`` this node may assert."""
        grants = {
            ItemKind.DEVICE: self.devices,
            ItemKind.MWI: self.mailboxes,
            ItemKind.PRESENCE: self.presentities,
        }
        return grants[kind]

    def may_assert(self, item: Item) -> bool:
        return self._grant_re[item.kind].match(item.name) is not None


#: the key of [security.peers.NAME] that grants each item kind
_GRANT_KEYS: Final = {
    ItemKind.DEVICE: "devices",
    ItemKind.MWI: "mailboxes",
    ItemKind.PRESENCE: "presentities",
}


def _compile(patterns: tuple[str, ...]) -> re.Pattern[str]:
    if not patterns:
        return re.compile(r"(?!)")  # matches nothing
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns))


class SignatureGuard:
    """Signs our frames and checks everyone else's (a :class:`~pbxmesh.node.FrameGuard`)."""

    def __init__(
        self,
        key: Ed25519PrivateKey | None,
        peers: list[Peer],
        require_signatures: bool,
        replay_file: Path | None = None,
        flush_interval: float = 0.05,
    ) -> None:
        self._key = key
        self.signed = key is not None
        self._peers = {p.name: p for p in peers}
        self._by_eid = {p.eid: p for p in peers}
        self._require = require_signatures
        #: this node's own entry of [security.peers] (its grant), if listed
        self.own: Peer | None = None
        self._replay_file = replay_file
        self._flush_interval = flush_interval
        self._last_seq: dict[str, int] = {}
        self._dirty = False
        self._last_flush = 0.0
        if replay_file is not None:
            self._last_seq = _load_replay(replay_file)

    # -- sending -----------------------------------------------------------------------------
    def seal(self, data: bytes) -> bytes:
        """Replace the 64 reserved bytes at the end of a SIGNED frame with the signature."""
        if self._key is None:
            return data
        body = signed_part(data)
        return body + self._key.sign(body)

    # -- receiving ---------------------------------------------------------------------------
    def check(self, frame: Frame, data: bytes) -> tuple[Item, ...]:
        """Raise :class:`SecurityError` to reject the frame; return the items it may assert."""
        if frame.signature is None:
            if self._require:
                raise SecurityError("unsigned", f"unsigned frame from {frame.name or frame.origin}")
            return frame.items
        if not self._peers:
            if self._require:
                raise SecurityError(
                    "unknown-origin", "signatures are required but no node is listed in peers"
                )
            return frame.items  # signing, but no list of nodes yet: nothing to check against
        peer = self._peers.get(frame.name)
        if peer is None:
            raise SecurityError(
                "unknown-origin",
                f"frame signed by unknown node {frame.name!r}: add it to [security.peers]",
            )
        try:
            peer.key.verify(frame.signature, data[:-SIGNATURE_SIZE])
        except InvalidSignature:
            raise SecurityError(
                "bad-signature", f"signature of a frame from {peer.name!r} does not verify"
            ) from None
        if frame.origin != peer.eid:
            raise SecurityError(
                "wrong-origin",
                f"node {peer.name!r} asserts entity id {frame.origin}, but its own is {peer.eid}",
            )
        last = self._last_seq.get(peer.name, -1)
        if frame.seq <= last:
            raise SecurityError(
                "replay",
                f"frame from {peer.name!r} with sequence {frame.seq} is not newer than {last}",
            )
        self._last_seq[peer.name] = frame.seq
        self._dirty = True
        self._maybe_flush()
        allowed = peer.may_assert
        return tuple(i for i in frame.items if allowed(i))

    # -- our own grant and the list of nodes ----------------------------------------------------
    def trusts(self, name: str) -> bool | None:
        """Whether frames signed by node ``name`` are accepted (None: no list of nodes)."""
        return (name in self._peers) if self._peers else None

    def allows(self, origin: EID, item: Item) -> bool:
        """Whether the node of entity id ``origin`` may assert ``item`` under the current list
        of nodes: anything while none is listed, nothing for a node no longer listed."""
        if not self._peers:
            return True
        peer = self._by_eid.get(origin)
        return peer is not None and peer.may_assert(item)

    def refuses(self, item: Item) -> str | None:
        """Why the other nodes would drop ``item`` from us (None: they accept it)."""
        if not self._peers:
            return None
        if self.own is None:
            return "this node is not in [security.peers]: every node rejects its frames"
        if not self.own.may_assert(item):
            granted = ", ".join(self.own.granted(item.kind)) or "nothing"
            return (
                f"{item.name!r} is outside this node's grant ([security.peers.{self.own.name}] "
                f"{_GRANT_KEYS[item.kind]} = {granted}): every other node would drop it"
            )
        return None

    def replace_peers(self, peers: list[Peer], require_signatures: bool, own: str) -> None:
        """Take a new list of nodes and grants (SIGHUP), at once; replay state is kept."""
        self._peers = {p.name: p for p in peers}
        self._by_eid = {p.eid: p for p in peers}
        self._require = require_signatures
        self.own = self._peers.get(own)

    # -- replay state --------------------------------------------------------------------------
    def _maybe_flush(self) -> None:
        now = time.monotonic()
        if now - self._last_flush >= self._flush_interval:
            self.flush()
            self._last_flush = now

    def flush(self) -> None:
        """Save the last accepted sequence of each node (called often, and at close)."""
        if not self._dirty or self._replay_file is None:
            return
        try:
            atomic_write(self._replay_file, json.dumps(self._last_seq, sort_keys=True))
        except OSError as exc:  # keep accepting frames; the file is retried next time
            log.error("cannot save replay state to %s: %s", self._replay_file, exc)
            return
        self._dirty = False


def _load_replay(path: Path) -> dict[str, int]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (ValueError, OSError) as exc:
        raise ConfigError(
            f"{path}: replay state is unreadable ({exc}); fix or delete it (deleting it "
            "accepts frames older than the last ones seen until each node sends again)"
        ) from None
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and type(v) is int for k, v in data.items()
    ):
        raise ConfigError(f"{path}: replay state is not a map of node name to sequence")
    return data


def build_peers(security: SecurityConfig, name: str) -> tuple[list[Peer], bool]:
    """The list of nodes of ``[security]`` and whether signatures are required; checks that
    this node's own key (if any) is its own entry."""
    key = load_private_key(security.key) if security.key is not None else None
    peers = []
    for p in security.peers:
        try:
            public = parse_public_key(p.public_key)
        except StateError as exc:
            raise ConfigError(f"[security.peers.{p.name}] public_key: {exc}") from None
        peers.append(
            Peer(p.name, public, eid_for_key(public), p.devices, p.mailboxes, p.presentities)
        )
    own = next((p for p in peers if p.name == name), None)
    if key is not None and own is not None:
        mine = public_key_text(key.public_key())
        if public_key_text(own.key) != mine:
            raise ConfigError(
                f"[security.peers.{name}] public_key is not this node's key "
                f"({security.key} has public key {mine}): every other node would reject its "
                "frames as bad-signature; put this key in every node's [security.peers]"
            )
    require = security.require_signatures or bool(peers)
    if require and key is None:
        raise ConfigError("[security] peers are listed but this node has no key: set key")
    if security.require_signatures and not peers:
        raise ConfigError(
            "[security] require_signatures is set but no peer is listed: list every node "
            "(with its public key) in [security.peers.NAME]"
        )
    return peers, require


def build_guard(security: SecurityConfig, eid: EID, name: str, state_dir: Path) -> SignatureGuard:
    """The guard for a node from its [security] configuration."""
    key = load_private_key(security.key) if security.key is not None else None
    if key is not None:
        own = eid_for_key(key.public_key())
        if own != eid:
            raise ConfigError(
                f"[node] eid {eid} does not match this node's key (which implies {own}): "
                "remove [node] eid; a signing node's entity id comes from its key"
            )
    peers, require = build_peers(security, name)
    if peers and not any(p.name == name for p in peers):
        log.warning(
            "this node (%s) is not in [security.peers]: the others reject its frames as "
            "unknown-origin; add [security.peers.%s] with its public key everywhere",
            name,
            name,
        )
    state_dir.mkdir(parents=True, exist_ok=True)
    guard = SignatureGuard(key, peers, require, replay_file=state_dir / "replay.json")
    guard.own = next((p for p in peers if p.name == name), None)
    return guard
