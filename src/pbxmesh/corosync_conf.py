"""``pbxmesh corosync-config``: a corosync.conf and authkey for a res_corosync ring with a bridge.

Theory of operation
-------------------
A pbxmesh bridge joins an Asterisk ring (``[asterisk.ring]``, docs/ring.md) as a corosync node
of its own: every node of the ring must list it in ``nodelist {}`` and share the ring's
``authkey``. This command writes both, so that joining a site ring is one step:

* from scratch: ``pbxmesh corosync-config --cluster-name site1 --node pbx1=10.0.0.1
  --node pbx2=10.0.0.2 --node bridge=10.0.0.9 --out ring/``;
* adding the bridge to a running ring: ``pbxmesh corosync-config --from
  /etc/corosync/corosync.conf --node bridge=10.0.0.9 --authkey /etc/corosync/authkey --out
  ring/`` keeps the cluster name, timers, crypto and node ids of the ring and appends the new
  node (node ids continue after the highest).

The file uses knet with ``aes256``/``sha256`` (the authkey encrypts and authenticates every
packet), votequorum (``two_node`` for a ring of two), and ``system { sched_rr: no }``: corosync
then runs at normal priority instead of SCHED_RR, so on a host that also carries Asterisk's
media it never preempts RTP; ``--sched-rr`` keeps corosync's real-time default for dedicated
hosts (a token timeout of 3 s or more rides out scheduling delays either way). The authkey is
256 random bytes, written mode 0400; an existing one given with ``--authkey`` is copied, never
replaced. Copy both files to every node, then ``corosync-cfgtool -R`` on one running node (a
new node needs a corosync restart on the others only if their version cannot reload the
node list).

The parser reads the subset of corosync.conf syntax it needs (``key: value`` and nested
``name { }`` sections, ``#`` comments); anything it does not keep is named in the output's
header so the administrator can carry it over.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import secrets
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError

__all__ = ["RingNode", "RingSpec", "main", "parse_conf", "read_spec", "render"]

AUTHKEY_BYTES = 256


@dataclass(frozen=True, slots=True)
class RingNode:
    nodeid: int
    name: str
    address: str


@dataclass(frozen=True, slots=True)
class RingSpec:
    cluster_name: str
    nodes: tuple[RingNode, ...]
    token_ms: int = 3000
    sched_rr: bool = False
    cipher: str = "aes256"
    hash: str = "sha256"
    #: settings of the source file this command does not carry over (named in the header)
    dropped: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", self.cluster_name):
            raise ConfigError(f"cluster name {self.cluster_name!r}: use 1-64 letters, digits, -_.")
        ids = [n.nodeid for n in self.nodes]
        if len(set(ids)) != len(ids) or len({n.address for n in self.nodes}) != len(ids):
            raise ConfigError("every node needs its own node id and address")
        if not self.nodes:
            raise ConfigError("a ring needs at least one node (--node NAME=ADDRESS)")


def parse_conf(text: str) -> dict[str, object]:
    """corosync.conf as nested dicts; a repeated section (``node``) becomes a list."""
    root: dict[str, object] = {}
    stack: list[dict[str, object]] = [root]
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.endswith("{"):
            name = line[:-1].strip()
            child: dict[str, object] = {}
            here = stack[-1]
            if name in here:
                prev = here[name]
                here[name] = [*prev, child] if isinstance(prev, list) else [prev, child]
            else:
                here[name] = child
            stack.append(child)
        elif line == "}":
            if len(stack) == 1:
                raise ConfigError(f"corosync.conf line {lineno}: '}}' without a section")
            stack.pop()
        elif ":" in line:
            key, _, value = line.partition(":")
            stack[-1][key.strip()] = value.strip()
        else:
            raise ConfigError(f"corosync.conf line {lineno}: cannot read {raw.strip()!r}")
    if len(stack) != 1:
        raise ConfigError("corosync.conf: a section is not closed")
    return root


def read_spec(text: str, sched_rr: bool = False) -> RingSpec:
    """A ring spec from an existing corosync.conf (its name, token, crypto and nodes)."""
    conf = parse_conf(text)
    totem = conf.get("totem", {})
    nodelist = conf.get("nodelist", {})
    if not isinstance(totem, dict) or not isinstance(nodelist, dict):
        raise ConfigError("corosync.conf: totem and nodelist must be sections")
    raw_nodes = nodelist.get("node", [])
    raw_nodes = raw_nodes if isinstance(raw_nodes, list) else [raw_nodes]
    nodes = []
    for n in raw_nodes:
        if not isinstance(n, dict) or "nodeid" not in n or "ring0_addr" not in n:
            raise ConfigError("corosync.conf: every node needs nodeid and ring0_addr")
        nodes.append(RingNode(int(str(n["nodeid"])), str(n.get("name", "")), str(n["ring0_addr"])))
    kept = {"version", "cluster_name", "transport", "token", "crypto_cipher", "crypto_hash"}
    dropped = tuple(f"totem.{k}" for k in totem if k not in kept)
    return RingSpec(
        cluster_name=str(totem.get("cluster_name", "asterisk")),
        nodes=tuple(nodes),
        token_ms=int(str(totem.get("token", 3000))),
        sched_rr=sched_rr,
        cipher=str(totem.get("crypto_cipher", "aes256")) if totem.get("crypto_cipher") != "none"
        else "aes256",
        hash=str(totem.get("crypto_hash", "sha256")) if totem.get("crypto_hash") != "none"
        else "sha256",
        dropped=dropped + tuple(k for k in conf if k not in ("totem", "nodelist", "quorum",
                                                             "logging", "system")),
    )  # fmt: skip


def render(spec: RingSpec, keyfile: str = "/etc/corosync/authkey") -> str:
    """The corosync.conf text for ``spec`` (the same file on every node)."""
    head = [
        "# Written by pbxmesh corosync-config: the same file on every node of the ring.",
        "# The pbxmesh bridge runs on a corosync node of its own (docs/ring.md).",
    ]
    if spec.dropped:
        head.append("# Not carried over from the source file: " + ", ".join(spec.dropped))
    nodes = "".join(
        f"    node {{\n        nodeid: {n.nodeid}\n"
        + (f"        name: {n.name}\n" if n.name else "")
        + f"        ring0_addr: {n.address}\n    }}\n"
        for n in sorted(spec.nodes, key=lambda n: n.nodeid)
    )
    two_node = "    two_node: 1\n" if len(spec.nodes) == 2 else ""
    sched = (
        "    # corosync keeps SCHED_RR (real-time): for hosts that carry nothing else\n"
        "    sched_rr: yes\n"
        if spec.sched_rr
        else "    # normal priority: corosync never preempts Asterisk's media on shared hosts\n"
        "    sched_rr: no\n"
    )
    return (
        "\n".join(head)
        + "\n"
        + f"totem {{\n    version: 2\n    cluster_name: {spec.cluster_name}\n"
        f"    transport: knet\n    token: {spec.token_ms}\n"
        f"    crypto_cipher: {spec.cipher}\n    crypto_hash: {spec.hash}\n"
        f"    keyfile: {keyfile}\n}}\n"
        f"nodelist {{\n{nodes}}}\n"
        f"quorum {{\n    provider: corosync_votequorum\n{two_node}}}\n"
        f"system {{\n{sched}}}\n"
        "logging {\n    to_syslog: yes\n    timestamp: on\n}\n"
    )


def _node_arg(text: str) -> tuple[int | None, str, str]:
    """``[ID=]NAME=ADDRESS`` → (id or None, name, address)."""
    parts = text.split("=")
    if len(parts) == 2:
        nid, (name, addr) = None, parts
    elif len(parts) == 3 and parts[0].isdigit():
        nid, name, addr = int(parts[0]), parts[1], parts[2]
    else:
        raise ConfigError(f"--node {text!r}: expected NAME=ADDRESS or ID=NAME=ADDRESS")
    try:
        ipaddress.ip_address(addr)
    except ValueError:
        raise ConfigError(f"--node {text!r}: {addr!r} is not an IP address") from None
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name):
        raise ConfigError(f"--node {text!r}: name must be letters, digits, -_.")
    return nid, name, addr


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="pbxmesh corosync-config",
        description="Write corosync.conf and authkey for a res_corosync ring with a pbxmesh "
        "bridge (copy both to every node).",
    )
    p.add_argument("--cluster-name", help="the ring's cluster name (new ring)")
    p.add_argument("--from", dest="source", type=Path, help="existing corosync.conf to extend")
    p.add_argument(
        "--node", action="append", default=[], metavar="[ID=]NAME=ADDRESS", help="a node to add"
    )
    p.add_argument("--authkey", type=Path, help="the ring's existing authkey (copied as is)")
    p.add_argument("--token", type=int, default=3000, help="token timeout in ms (new ring)")
    p.add_argument("--sched-rr", action="store_true", help="keep corosync real-time (SCHED_RR)")
    p.add_argument("--keyfile", default="/etc/corosync/authkey", help="authkey path on nodes")
    p.add_argument("--out", type=Path, default=Path("."), help="directory to write into")
    args = p.parse_args(argv)
    try:
        if args.source is not None:
            spec = read_spec(args.source.read_text(), sched_rr=args.sched_rr)
        elif args.cluster_name:
            spec = _with_nodes(args.cluster_name, (), args.token, args.sched_rr, args.node)
            args.node = []
        else:
            raise ConfigError("give --cluster-name for a new ring or --from FILE to extend one")
        if args.node:
            spec = _with_nodes(
                spec.cluster_name, spec.nodes, spec.token_ms, spec.sched_rr, args.node, spec
            )
        args.out.mkdir(parents=True, exist_ok=True)
        conf = args.out / "corosync.conf"
        conf.write_text(render(spec, args.keyfile))
        key = args.out / "authkey"
        if args.authkey is not None:
            data = args.authkey.read_bytes()
            made = "copied"
        else:
            data = secrets.token_bytes(AUTHKEY_BYTES)
            made = "new"
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o400)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(key, 0o400)
    except (ConfigError, OSError, ValueError) as exc:
        print(f"pbxmesh corosync-config: {exc}", file=sys.stderr)
        return 2
    names = ", ".join(f"{n.nodeid}={n.name or '-'}@{n.address}" for n in spec.nodes)
    print(f"wrote {conf} (nodes {names}) and {key} ({made}, mode 0400)")
    print(f"copy both to every node ({args.keyfile}, /etc/corosync/corosync.conf), then")
    print("start corosync on the new node and run 'corosync-cfgtool -R' on one running node")
    return 0


def _with_nodes(
    name: str,
    nodes: tuple[RingNode, ...],
    token: int,
    sched_rr: bool,
    added: list[str],
    base: RingSpec | None = None,
) -> RingSpec:
    out = list(nodes)
    for text in added:
        nid, node_name, addr = _node_arg(text)
        if nid is None:
            nid = max((n.nodeid for n in out), default=0) + 1
        out.append(RingNode(nid, node_name, addr))
    if base is not None:
        return RingSpec(
            name, tuple(out), token, sched_rr, base.cipher, base.hash, dropped=base.dropped
        )
    return RingSpec(name, tuple(out), token, sched_rr)
