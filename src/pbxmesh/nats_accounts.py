"""``pbxmesh nats-accounts``: nats-server accounts and per-node permissions for pbxmesh.

Theory of operation
-------------------
Input is a small TOML file listing tenants, their group and their nodes::

    prefix = "pbxmesh"                 # optional; the transport's subject prefix

    [system]                           # optional: a system account user (monitoring)
    user = "sys"
    password = "change-me"

    [[tenant]]
    account = "ACME"                   # one NATS account per tenant: nothing crosses accounts
    group = "acme"                     # the tenant's [cluster] group in pbxmesh.toml
    nodes = [
      { name = "pbx1", password = "s3cret-1" },     # user defaults to "ACME-pbx1"
      { name = "pbx2", nkey = "UD3K...", user = "ignored-for-nkeys" },
    ]
    leafs = [ { user = "acme-site1", password = "uplink-1" } ]   # optional leaf uplinks

Output is a nats-server configuration snippet (``accounts { ... }`` and ``system_account``)
to ``include`` in every server's configuration. Each tenant becomes an account; each node a
user of it whose permissions are exactly what :class:`~pbxmesh.transport.nats.NatsTransport`
needs:

* publish: ``<prefix>.<group>.frames.<member>`` and ``<prefix>.<group>.hb.<member>``, where
  ``<member>`` is ``member_token(node name)``, so a node cannot speak for another;
* subscribe: ``<prefix>.<group>.>``, the group's traffic and nothing else.

Leaf uplink users (a site's leaf node connecting to the hub into this account) may publish and
subscribe ``<prefix>.<group>.>``; per-node limits are then enforced by the same accounts on the
leaf server (include the same snippet there).

*Generated credentials.* Nodes and leafs without a password get a random one with
``--generate-passwords``; a node with ``nkey = "generate"`` gets an nkey pair (the ``nkeys``
package), its seed written to ``<account>-<name>.nk`` beside the input (mode 0600). What is
generated is kept in ``<input>.secrets.toml`` (mode 0600) and reused on every later run, so
the output does not change unless ``--rotate NAME`` asks for a new credential. Each secret is
printed once, on stderr, when it is made. ``--print-nodes`` prints every node's complete
``[cluster.nats]`` section (``servers`` from the tenant's ``servers`` with the node's ``leaf``
first, ``tls_ca``, credentials). Passwords are written in clear (nats-server also accepts
bcrypt hashes; prefer nkeys where possible).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import sys
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .transport.nats import group_subjects, member_token

__all__ = ["NodeUser", "SecretStore", "Tenant", "main", "parse_spec", "render"]

_NAME = re.compile(r"[A-Za-z0-9_-]{1,100}")
_NKEY = re.compile(r"U[A-Z2-7]{55}")


@dataclass(frozen=True, slots=True)
class NodeUser:
    name: str  # the node's [node] name (its member id is member_token(name))
    user: str  # login name; unused with an nkey
    password: str | None = None
    nkey: str | None = None  # public user nkey (U...)
    leaf: str | None = None  # the node's site (leaf) server URL, first in its servers
    seed_file: Path | None = None  # where a generated nkey seed was written


@dataclass(frozen=True, slots=True)
class Tenant:
    account: str
    group: str
    nodes: tuple[NodeUser, ...]
    leafs: tuple[tuple[str, str], ...] = ()  # (user, password) of leaf uplinks
    servers: tuple[str, ...] = ()  # the hub's client URLs (every node's fallbacks)
    tls_ca: str | None = None  # the CA file as the nodes know it


@dataclass(frozen=True, slots=True)
class Spec:
    prefix: str
    tenants: tuple[Tenant, ...]
    system: tuple[str, str] | None = None


def _str(table: dict[str, Any], key: str, where: str, required: bool = True) -> str | None:
    value = table.get(key)
    if value is None:
        if required:
            raise ConfigError(f"{where}: {key} is required")
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: {key} must be a non-empty string")
    return value


@dataclass
class SecretStore:
    """Generated credentials, kept across runs (``<input>.secrets.toml``, mode 0600)."""

    path: Path | None = None
    seed_dir: Path | None = None
    rotate: frozenset[str] = frozenset()
    values: dict[str, str] = field(default_factory=dict)
    made: list[str] = field(default_factory=list)  # what to tell the operator, once

    @classmethod
    def load(cls, path: Path, rotate: Sequence[str] = ()) -> SecretStore:
        values: dict[str, str] = {}
        if path.exists():
            try:
                data = tomllib.loads(path.read_text(encoding="utf-8"))
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise ConfigError(f"{path}: unreadable ({exc}); fix or delete it") from None
            values = {str(k): str(v) for k, v in data.items()}
        return cls(path=path, seed_dir=path.parent, rotate=frozenset(rotate), values=values)

    def password(self, key: str, name: str, user: str) -> str:
        if key in self.values and name not in self.rotate:
            return self.values[key]
        value = secrets.token_urlsafe(18)
        self.values[key] = value
        self.made.append(f"new password for user {user}: {value}")
        return value

    def nkey(self, key: str, name: str, account: str) -> tuple[str, Path | None]:
        """The public key of a generated user nkey (made now, or kept from an earlier run)."""
        seed_file = (self.seed_dir or Path()) / f"{account}-{name}.nk"
        if key in self.values and name not in self.rotate and seed_file.exists():
            return self.values[key], seed_file
        try:
            import nkeys
        except ImportError:
            raise ConfigError(
                "nkey = \"generate\" needs the nkeys package: pip install 'pbxmesh[nats]'"
            ) from None
        seed = nkeys.encode_seed(secrets.token_bytes(32), nkeys.PREFIX_BYTE_USER)
        public = nkeys.from_seed(bytearray(seed)).public_key.decode()
        seed_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(seed_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(bytes(seed) + b"\n")
        self.values[key] = public
        self.made.append(
            f"new nkey for node {name} ({account}): public {public}, seed in {seed_file} "
            "(copy it to the node, set nkey_seed to its path there)"
        )
        return public, seed_file

    def save(self) -> None:
        if self.path is None or not self.made:
            return
        lines = ["# Generated by `pbxmesh nats-accounts`: keep secret, keep beside the input."]
        lines += [f"{json.dumps(k)} = {json.dumps(v)}" for k, v in sorted(self.values.items())]
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write("\n".join(lines) + "\n")


def parse_spec(
    data: dict[str, Any],
    source: str,
    generate: bool = False,
    store: SecretStore | None = None,
) -> Spec:
    """Validate the TOML input; ``generate`` fills in missing passwords (kept in ``store``)."""
    store = store or SecretStore()
    prefix = _str(data, "prefix", source, required=False) or "pbxmesh"
    if not _NAME.fullmatch(prefix):
        raise ConfigError(f"{source}: prefix must be letters, digits, '-' or '_'")
    system = None
    if "system" in data:
        st = data["system"]
        system = (
            _str(st, "user", f"{source} [system]") or "",
            _str(st, "password", f"{source} [system]") or "",
        )
    tenants: list[Tenant] = []
    users: set[str] = set()
    for i, t in enumerate(data.get("tenant", [])):
        where = f"{source} [[tenant]] #{i + 1}"
        tenants.append(_tenant(t, where, tenants, users, store, generate))
    if not tenants:
        raise ConfigError(f"{source}: no [[tenant]] given")
    return Spec(prefix=prefix, tenants=tuple(tenants), system=system)


def _tenant(
    t: dict[str, Any],
    where: str,
    tenants: list[Tenant],
    users: set[str],
    store: SecretStore,
    generate: bool,
) -> Tenant:
    """One ``[[tenant]]``; ``users`` collects the user names taken so far, across tenants."""
    account = _str(t, "account", where) or ""
    group = _str(t, "group", where) or ""
    for key, value in (("account", account), ("group", group)):
        if not _NAME.fullmatch(value):
            raise ConfigError(f"{where}: {key} {value!r} must be letters, digits, '-', '_'")
    if account in {x.account for x in tenants} or account == "SYS":
        raise ConfigError(f"{where}: account {account!r} is used twice (or is SYS)")
    nodes: list[NodeUser] = []
    for j, n in enumerate(t.get("nodes", [])):
        nodes.append(
            _node_user(n, f"{where} node #{j + 1}", account, nodes, users, store, generate)
        )
    leafs: list[tuple[str, str]] = []
    for j, lf in enumerate(t.get("leafs", [])):
        lwhere = f"{where} leaf #{j + 1}"
        luser = _str(lf, "user", lwhere) or ""
        lpass = _str(lf, "password", lwhere, required=not generate)
        if luser in users:
            raise ConfigError(f"{lwhere}: user {luser!r} is used twice")
        users.add(luser)
        leafs.append((luser, lpass or store.password(f"{account}/leaf/{luser}", luser, luser)))
    if not nodes:
        raise ConfigError(f"{where}: a tenant needs at least one node")
    servers = t.get("servers", [])
    if not isinstance(servers, list) or not all(isinstance(x, str) for x in servers):
        raise ConfigError(f"{where}: servers must be a list of tls:// or nats:// URLs")
    tls_ca = _str(t, "tls_ca", where, required=False)
    return Tenant(account, group, tuple(nodes), tuple(leafs), tuple(servers), tls_ca)


def _node_user(
    n: dict[str, Any],
    nwhere: str,
    account: str,
    nodes: list[NodeUser],
    users: set[str],
    store: SecretStore,
    generate: bool,
) -> NodeUser:
    """One node of a tenant: its name, and a password or an nkey (made if asked to)."""
    name = _str(n, "name", nwhere) or ""
    member_token(name)
    if name in {x.name for x in nodes}:
        raise ConfigError(f"{nwhere}: node name {name!r} is used twice in {account}")
    nkey = _str(n, "nkey", nwhere, required=False)
    password = _str(n, "password", nwhere, required=False)
    leaf = _str(n, "leaf", nwhere, required=False)
    seed_file = None
    if nkey == "generate":
        nkey, seed_file = store.nkey(f"{account}/{name}/nkey", name, account)
    if nkey is not None and not _NKEY.fullmatch(nkey):
        raise ConfigError(f"{nwhere}: nkey must be a public user nkey (U + 55 chars)")
    if nkey is not None and password is not None:
        raise ConfigError(f"{nwhere}: give a password or an nkey, not both")
    if nkey is None and password is None:
        if not generate:
            raise ConfigError(
                f"{nwhere}: node {name!r} needs a password or nkey "
                "(or run with --generate-passwords)"
            )
        user0 = _str(n, "user", nwhere, required=False) or f"{account}-{name}"
        password = store.password(f"{account}/{name}", name, user0)
    user = _str(n, "user", nwhere, required=False) or f"{account}-{name}"
    if nkey is None:
        if user in users:
            raise ConfigError(f"{nwhere}: user {user!r} is used twice; set user = ...")
        users.add(user)
    return NodeUser(
        name=name, user=user, password=password, nkey=nkey, leaf=leaf, seed_file=seed_file
    )


def _q(text: str) -> str:
    return json.dumps(text)  # a double-quoted string nats-server's parser reads back


def render(spec: Spec) -> str:
    """The nats-server configuration snippet for ``spec``."""
    out = [
        "# Generated by `pbxmesh nats-accounts`: one account per tenant, and per node a user",
        "# that may publish only its own frames/heartbeat subjects. Include it in every",
        "# server of the cluster (and in site leaf servers).",
        "accounts {",
    ]
    for t in spec.tenants:
        out.append(f"  {t.account}: {{")
        out.append("    users: [")
        for n in t.nodes:
            frames, hb, sub = group_subjects(spec.prefix, t.group, member_token(n.name))
            perms = (
                f"permissions: {{ publish: {{ allow: [{_q(frames)}, {_q(hb)}] }}, "
                f"subscribe: {{ allow: [{_q(sub)}] }} }}"
            )
            cred = (
                f"nkey: {_q(n.nkey)}"
                if n.nkey
                else f"user: {_q(n.user)}, password: {_q(n.password or '')}"
            )
            out.append(f"      # node {n.name!r} (member id {member_token(n.name)})")
            out.append(f"      {{ {cred}, {perms} }}")
        for luser, lpass in t.leafs:
            sub = f"{spec.prefix}.{t.group}.>"
            out.append("      # leaf uplink of a site")
            out.append(
                f"      {{ user: {_q(luser)}, password: {_q(lpass)}, permissions: "
                f"{{ publish: {{ allow: [{_q(sub)}] }}, subscribe: {{ allow: [{_q(sub)}] }} }} }}"
            )
        out.append("    ]")
        out.append("  }")
    if spec.system is not None:
        out.append(
            f"  SYS: {{ users: [ {{ user: {_q(spec.system[0])}, "
            f"password: {_q(spec.system[1])} }} ] }}"
        )
    out.append("}")
    if spec.system is not None:
        out.append("system_account: SYS")
    return "\n".join(out) + "\n"


def node_snippets(spec: Spec) -> str:
    """``[cluster]`` lines for each node's pbxmesh.toml (credentials included)."""
    out = []
    for t in spec.tenants:
        for n in t.nodes:
            out.append(f"# pbxmesh.toml of node {n.name!r} (tenant {t.account})")
            out.append(f'[cluster]\ntransport = "nats"\ngroup = {_q(t.group)}\n[cluster.nats]')
            servers = ([n.leaf] if n.leaf else []) + list(t.servers)
            if servers:
                out.append("servers = [" + ", ".join(_q(x) for x in servers) + "]")
            else:
                out.append("# servers = [...]   (give servers/leaf in the input to fill this in)")
            if t.tls_ca:
                out.append(f"tls_ca = {_q(t.tls_ca)}")
            if n.nkey:
                seed = n.seed_file.name if n.seed_file else "NODE.nk"
                out.append(f'nkey_seed = "/etc/pbxmesh/{seed}"   # the seed file of {n.nkey}')
            else:
                out.append(f"user = {_q(n.user)}\npassword = {_q(n.password or '')}")
            out.append("")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="pbxmesh nats-accounts",
        description="Generate nats-server accounts and per-node permissions for pbxmesh.",
    )
    p.add_argument("spec", help="TOML file listing tenants, groups and nodes (see docs/nats.md)")
    p.add_argument("-o", "--output", help="write the snippet here (default: stdout)")
    p.add_argument(
        "--generate-passwords",
        action="store_true",
        help="give nodes and leafs without credentials a random password",
    )
    p.add_argument(
        "--rotate",
        action="append",
        default=[],
        metavar="NAME",
        help="make a new generated credential for node or leaf user NAME (repeatable)",
    )
    p.add_argument(
        "--secrets",
        help="where generated credentials are kept (default: SPEC.secrets.toml beside it)",
    )
    p.add_argument(
        "--print-nodes",
        action="store_true",
        help="also print each node's [cluster] section on stderr",
    )
    args = p.parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        text = Path(args.spec).read_text(encoding="utf-8")
        spec_path = Path(args.spec)
        store = SecretStore.load(
            Path(args.secrets) if args.secrets else spec_path.with_suffix(".secrets.toml"),
            rotate=args.rotate,
        )
        spec = parse_spec(
            tomllib.loads(text), args.spec, generate=args.generate_passwords, store=store
        )
        store.save()
    except OSError as exc:
        print(f"pbxmesh nats-accounts: {args.spec}: {exc.strerror}", file=sys.stderr)
        return 2
    except tomllib.TOMLDecodeError as exc:
        print(f"pbxmesh nats-accounts: {args.spec}: not valid TOML: {exc}", file=sys.stderr)
        return 2
    except ConfigError as exc:
        print(f"pbxmesh nats-accounts: {exc}", file=sys.stderr)
        return 2
    conf = render(spec)
    if args.output:
        Path(args.output).write_text(conf, encoding="utf-8")
    else:
        sys.stdout.write(conf)
    for line in store.made:  # each secret once, when it is made
        print(f"pbxmesh nats-accounts: {line}", file=sys.stderr)
    if args.print_nodes:
        sys.stderr.write(node_snippets(spec))
    return 0
