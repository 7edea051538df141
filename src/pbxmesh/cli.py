"""The ``pbxmesh`` command: run a node, query it, simulate a PBX, run the demo.

Every query command talks to the running node through its control API, found from the same
configuration file (``-c``, default /etc/pbxmesh/pbxmesh.toml). Human tables by default,
``--json`` for scripts. Exit codes: 0 done, 1 the node failed or refused, 2 bad usage or
configuration, 3 the node is unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import logging
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .config import DEFAULT_CONFIG, Config, load_config
from .eid import EID, load_or_create_eid
from .errors import ConfigError, PbxmeshError, StateError
from .presence import check_presence_text, check_presentity, parse_presence
from .states import parse_state

__all__ = ["main"]

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pbxmesh",
        description="Share Asterisk device states (BLF) and MWI across PBX servers.",
    )
    p.add_argument("--version", action="version", version=f"pbxmesh {__version__}")
    p.add_argument(
        "-c",
        "--config",
        default=os.environ.get("PBXMESH_CONFIG", DEFAULT_CONFIG),
        help=f"configuration file (default {DEFAULT_CONFIG}, or $PBXMESH_CONFIG)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    # The same two options after the command (`pbxmesh run -c FILE`, `pbxmesh devices --json`):
    # SUPPRESS keeps a value given before the command when none is given after it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-c", "--config", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="JSON")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, **kw: Any) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], **kw)

    run = add("run", help="run this server's node (the daemon)")
    run.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    add("check-config", help="validate the configuration file and exit")
    add("members", help="cluster members (as ais clm show members)")
    add("channels", help="event channels (as ais evt show event channels)")
    dev = add("devices", help="devices: cluster value and each server's state")
    dev.add_argument("pattern", nargs="?", help="glob pattern, e.g. 'PJSIP/1*'")
    add("hints", help="the linked Asterisk's hints and their states")
    mwi = add("mwi", help="mailboxes: counts and last writer")
    mwi.add_argument("pattern", nargs="?", help="glob pattern, e.g. '10*@default'")
    pres = add("presence", help="presentities: state, subtype, message and last writer")
    pres.add_argument("pattern", nargs="?", help="glob pattern, e.g. 'sales-*'")
    add("status", help="health of the node, its transport and links")
    pub = add("publish", help="assert a state as this node")
    pubsub = pub.add_subparsers(dest="kind", metavar="KIND", required=True)
    pd = pubsub.add_parser(
        "device_state", help="publish device_state DEVICE STATE", parents=[common]
    )
    pd.add_argument("device")
    pd.add_argument("state")
    pm = pubsub.add_parser("mwi", help="publish mwi MAILBOX@CONTEXT NEW OLD", parents=[common])
    pm.add_argument("mailbox")
    pm.add_argument("new", type=int)
    pm.add_argument("old", type=int)
    pp = pubsub.add_parser(
        "presence_state",
        help="publish presence_state NAME STATE [SUBTYPE [MESSAGE]]",
        parents=[common],
    )
    pp.add_argument("presentity", metavar="NAME", help="CustomPresence:alice, or alice")
    pp.add_argument("state", help="not_set, unavailable, available, away, xa, chat or dnd")
    pp.add_argument("subtype", nargs="?", default="")
    pp.add_argument("message", nargs="?", default="")
    hl = add(
        "dialplan-hints",
        help="print extensions.conf hint lines joining each device with its remote counterpart",
    )
    hl.add_argument("mapping", nargs="+", metavar="EXTEN=DEVICE", help="e.g. 1234=Custom:mystate")
    hl.add_argument("--context", default="default")
    hl.add_argument("--template", default=None, help="counterpart template (default from config)")
    ac = add(
        "asterisk-config",
        help="print the pjsip.conf, manager.conf and modules.conf lines Asterisk needs",
    )
    ac.add_argument(
        "--no-transport",
        action="store_true",
        help="leave out the pjsip transport (Asterisk already binds the uri's address)",
    )
    ac.add_argument(
        "--freepbx",
        action="store_true",
        help="lay the parts out for FreePBX: each under the custom file it goes into "
        "(docs/freepbx.md)",
    )
    kg = add("keygen", help="make an Ed25519 key pair for signing this node's frames")
    kg.add_argument("--out", default=None, help="private key file (default STATE_DIR/node.key)")
    kg.add_argument(
        "--show", action="store_true", help="print the public key of the existing key file"
    )
    add("sim", help="run the AMI PBX simulator (see pbxmesh sim --help)", add_help=False)
    add("demo", help="start a local 3-node demo cluster", add_help=False)
    add("nats-accounts", help="generate nats-server accounts for the cluster", add_help=False)
    add(
        "corosync-config",
        help="write corosync.conf and authkey for a res_corosync ring with a bridge",
        add_help=False,
    )
    return p


_SUBPROGRAMS = {
    "sim": "pbxmesh.pbxsim.main",
    "demo": "pbxmesh.demo",
    "nats-accounts": "pbxmesh.nats_accounts",
    "corosync-config": "pbxmesh.corosync_conf",
}


def _command_of(args: list[str]) -> tuple[str | None, list[str]]:
    """The first word that is not an option (nor -c's value), and what follows it."""
    i = 0
    while i < len(args):
        if args[i] in ("-c", "--config"):
            i += 2
        elif args[i].startswith("-"):
            i += 1
        else:
            return args[i], args[i + 1 :]
    return None, []


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    command, rest = _command_of(args_list)
    if command in _SUBPROGRAMS:
        # Sub-programs with their own fixed argument syntax (e.g. `pbxmesh sim --listen ...`).
        import importlib

        result: int = importlib.import_module(_SUBPROGRAMS[command]).main(rest)
        return result
    parser = _parser()
    args = parser.parse_args(args_list)
    if not args.command:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return _dispatch(args)
    except CliError as exc:
        print(f"pbxmesh: {exc}", file=sys.stderr)
        return exc.code
    except ConfigError as exc:
        print(f"pbxmesh: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except StateError as exc:
        print(f"pbxmesh: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except PbxmeshError as exc:
        print(f"pbxmesh: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "run":
        return _run(args)
    if args.command == "check-config":
        cfg = load_config(args.config)
        from .preflight import check_files

        problems = check_files(cfg)
        if problems:
            raise CliError("\n".join(f"{cfg.path}: {p}" for p in problems), EXIT_USAGE)
        print(
            f"{cfg.path}: OK (node {cfg.node.name}, {cfg.cluster.transport}, "
            f"{len(cfg.channels)} channel(s))"
        )
        return 0
    if args.command == "keygen":
        from .security import keygen

        found = load_config(args.config) if os.path.exists(args.config) else None
        out = args.out or (str(found.node.state_dir / "node.key") if found else None)
        if out is None:
            raise CliError(f"{args.config} not found: give --out FILE", EXIT_USAGE)
        if args.show:
            from .security import load_private_key, public_key_text

            key = load_private_key(Path(out))
            print(f"public key: {public_key_text(key.public_key())}")
            return 0
        public = keygen(out)
        print(f"private key written to {out} (keep it secret)")
        print(f"public key: {public}")
        return 0
    if args.command == "dialplan-hints":
        return _dialplan_hints(args)
    if args.command == "asterisk-config":
        return _asterisk_config(args)
    client = _Client.from_config(args.config)
    if args.command == "members":
        return _members(client, args.json)
    if args.command == "channels":
        return _channels(client, args.json)
    if args.command == "devices":
        return _devices(client, args.json, args.pattern)
    if args.command == "mwi":
        return _mwi(client, args.json, args.pattern)
    if args.command == "presence":
        return _presence(client, args.json, args.pattern)
    if args.command == "hints":
        return _hints(client, args.json)
    if args.command == "status":
        return _status(client, args.json)
    if args.command == "publish":
        return _publish(client, args)
    raise CliError(f"unknown command {args.command}", EXIT_USAGE)


def _run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from .daemon import Daemon

    async def go() -> int:
        return await Daemon(cfg).run()

    return asyncio.run(go())


class _Client:
    """A small client of the control API (stdlib only, so the CLI starts fast)."""

    def __init__(self, base: str, token: str | None) -> None:
        self.base = base
        self.token = token

    @classmethod
    def from_config(cls, path: str) -> _Client:
        cfg = load_config(path)
        host, port = cfg.control.listen
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return cls(f"http://{host}:{port}/api/v1", cfg.control.token)

    def request(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            try:
                message = json.loads(exc.read()).get("error", exc.reason)
            except (ValueError, AttributeError):
                message = exc.reason
            raise CliError(str(message), EXIT_USAGE if exc.code == 400 else EXIT_FAILED) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise CliError(
                f"node unreachable at {self.base} ({reason}); is `pbxmesh run` running?",
                EXIT_UNREACHABLE,
            ) from None


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    return "\n".join(lines)


def _out(data: Any, as_json: bool, human: str) -> int:
    print(json.dumps(data, indent=2) if as_json else human)
    return 0


def _members(client: _Client, as_json: bool) -> int:
    full = client.request("GET", "/members?full=1")
    members = full["members"]
    if as_json:
        return _out(
            [
                {
                    k: m[k]
                    for k in (
                        "name",
                        "nodeid",
                        "address",
                        "eid",
                        "member",
                        "self",
                        "joined_at",
                        "trusted",
                        "kind",
                    )
                    if k in m
                }
                for m in members
            ],
            True,
            "",
        )
    rows = [
        [
            m["name"]
            + (" (this node)" if m["self"] else "")
            + (" (Asterisk on the res_corosync ring)" if m.get("kind") == "asterisk" else "")
            + (" (UNTRUSTED: not in [security.peers])" if m.get("trusted") is False else ""),
            m["nodeid"] or "-",
            m["address"] or "-",
            m["eid"] or "-",
            "Yes" if m["member"] else "No",
            datetime.datetime.fromtimestamp(m["joined_at"]).strftime("%Y-%m-%d %H:%M:%S")
            if m["joined_at"]
            else "-",
        ]
        for m in members
    ]
    head = f"view {full['view']}, quorate: {'yes' if full['quorate'] else 'NO'}"
    return _out(
        None,
        False,
        head + "\n" + _table(["NODE NAME", "ID", "ADDRESS", "EID", "MEMBER", "JOINED"], rows),
    )


def _channels(client: _Client, as_json: bool) -> int:
    chans = client.request("GET", "/channels")
    rows = [
        [c["name"], ",".join(c["publish"]) or "-", ",".join(c["subscribe"]) or "-"] for c in chans
    ]
    return _out(chans, as_json, _table(["EVENT CHANNEL", "PUBLISH", "SUBSCRIBE"], rows))


def _devices(client: _Client, as_json: bool, pattern: str | None) -> int:
    q = "?" + urllib.parse.urlencode({"pattern": pattern}) if pattern else ""
    devs = client.request("GET", "/devices" + q)
    rows = [
        [d["device"], d["state"], " ".join(f"{e}={s}" for e, s in d["origins"].items())]
        for d in devs
    ]
    return _out(devs, as_json, _table(["DEVICE", "STATE", "ORIGINS (EID=STATE)"], rows))


def _mwi(client: _Client, as_json: bool, pattern: str | None) -> int:
    q = "?" + urllib.parse.urlencode({"pattern": pattern}) if pattern else ""
    boxes = client.request("GET", "/mwi" + q)
    if as_json:
        return _out(
            [{k: b[k] for k in ("mailbox", "new", "old", "origin")} for b in boxes], True, ""
        )
    rows = [
        [
            b["mailbox"],
            str(b["new"]),
            str(b["old"]),
            f"{b['origin']} ({b['origin_name']})" if b["origin_name"] else b["origin"],
        ]
        for b in boxes
    ]
    return _out(boxes, False, _table(["MAILBOX", "NEW", "OLD", "ORIGIN"], rows))


def _presence(client: _Client, as_json: bool, pattern: str | None) -> int:
    q = "?" + urllib.parse.urlencode({"pattern": pattern}) if pattern else ""
    rows = client.request("GET", "/presence" + q)
    if as_json:
        keys = ("presentity", "state", "subtype", "message", "origin")
        return _out([{k: r[k] for k in keys} for r in rows], True, "")
    table = [
        [
            r["presentity"],
            r["state"],
            r["subtype"] or "-",
            r["message"] or "-",
            f"{r['origin']} ({r['origin_name']})" if r["origin_name"] else r["origin"],
        ]
        for r in rows
    ]
    return _out(rows, False, _table(["PRESENTITY", "STATE", "SUBTYPE", "MESSAGE", "ORIGIN"], table))


def _hints(client: _Client, as_json: bool) -> int:
    hints = client.request("GET", "/hints")
    rows = [
        [f"{h['exten']}@{h['context']}", h["hint"] or "", h["status_text"] or ""] for h in hints
    ]
    return _out(hints, as_json, _table(["HINT", "DEVICES", "STATE"], rows))


def _status(client: _Client, as_json: bool) -> int:
    s = client.request("GET", "/status")
    ast = s.get("asterisk")
    ast_text = "not configured"
    if ast:
        # connected, DEGRADED (Asterisk answers and refuses what we send) or DISCONNECTED
        state = ast.get("state") or ("connected" if ast["connected"] else "disconnected")
        ast_text = f"{state if state == 'connected' else state.upper()} to {ast['address']}"
        if ast.get("reason"):  # what to fix, on a line of its own
            ast_text += f"\nreason     {ast['reason']}"
    human = "\n".join(
        [
            f"node       {s['name']}  eid {s['eid']}",
            f"transport  {s['transport']}  link {'up' if s['link_up'] else 'DOWN'}  "
            f"quorate {'yes' if s['quorate'] else 'NO'}  view {s['view']}  members {s['members']}",
            f"state      {s['devices']} devices, {s['mailboxes']} mailboxes, "
            f"{s.get('presentities', 0)} presentities, "
            f"{s['queue_depth']} changes queued, {s['resyncs']} resyncs",
            f"asterisk   {ast_text}",
            f"rejected   {', '.join(f'{k}={v}' for k, v in s['rejected'].items()) or 'none'}",
        ]
    )
    _out(s, as_json, human)
    return 0 if s["link_up"] and (not ast or ast["connected"]) else EXIT_FAILED


def _publish(client: _Client, args: argparse.Namespace) -> int:
    if args.kind == "device_state":
        state = parse_state(args.state)
        r = client.request(
            "POST", "/publish/device_state", {"device": args.device, "state": state.name}
        )
        return _out(r, args.json, f"{r['device']} is now {r['state']} on this node")
    if args.kind == "presence_state":
        # Checked here too, so a mistake is said before the node is asked (exit 2).
        presence = parse_presence(args.state)
        presentity = check_presentity(args.presentity)
        check_presence_text("subtype", args.subtype)
        check_presence_text("message", args.message)
        r = client.request(
            "POST",
            "/publish/presence_state",
            {
                "presentity": presentity,
                "state": presence.text,
                "subtype": args.subtype,
                "message": args.message,
            },
        )
        shown = ", ".join(t for t in (r["subtype"], r["message"]) if t)
        return _out(
            r, args.json, f"{r['presentity']} is now {r['state']}{f' ({shown})' if shown else ''}"
        )
    if args.new < 0 or args.old < 0:
        raise CliError("message counts cannot be negative", EXIT_USAGE)
    r = client.request(
        "POST", "/publish/mwi", {"mailbox": args.mailbox, "new": args.new, "old": args.old}
    )
    return _out(r, args.json, f"{r['mailbox']}: {r['new']} new, {r['old']} old")


def _asterisk_config(args: argparse.Namespace) -> int:
    """The local Asterisk's configuration for this node's links, ready to include."""
    from .links.sip.asterisk_conf import asterisk_conf, manager_conf, node_modules_conf

    cfg = load_config(args.config)
    ast = cfg.asterisk
    if ast is None:
        if cfg.ring is not None:
            print(
                "; [asterisk.ring]: this node bridges a res_corosync ring and has no Asterisk of\n"
                "; its own; the ring's Asterisks keep their res_corosync.conf (docs/ring.md)"
            )
            return 0
        raise CliError(
            f"{cfg.path} has no [asterisk] link: add [asterisk] (AMI) or [asterisk.sip] "
            "(docs/asterisk.md) to configure one",
            1,
        )
    eid = str(_node_eid(cfg))
    sip = None
    if ast.sip is not None:
        from .linkconfig import sip_link_config
        from .links.sip.asterisk_conf import pjsip_conf

        sip = sip_link_config(ast)
    if args.freepbx:
        from .links.sip.asterisk_conf import freepbx_conf, node_modules

        manager = None
        if ast.ami is not None:
            manager = manager_conf(ast.username, ast.secret, _permit(ast.ami[0]))
        mods = node_modules(sip, ast.ami is not None, presence=ast.presence, mwi=ast.mwi)
        print(
            freepbx_conf(eid, sip, transport=not args.no_transport, modules=mods, manager=manager),
            end="",
        )
        return 0
    parts = [asterisk_conf(eid)]
    parts.append(node_modules_conf(sip, ast.ami is not None, presence=ast.presence, mwi=ast.mwi))
    if sip is not None:
        parts.append(pjsip_conf(sip, transport=not args.no_transport))
    if ast.ami is not None:
        parts.append(manager_conf(ast.username, ast.secret, _permit(ast.ami[0])))
    print("\n".join(parts), end="")
    return 0


def _node_eid(cfg: Config) -> EID:
    """This node's EID, as the daemon finds it (``[node] eid``, the signing key, state_dir)."""
    if cfg.node.eid is not None:
        return cfg.node.eid
    if cfg.security.key is not None:
        from .security import eid_for_key, load_private_key

        return eid_for_key(load_private_key(cfg.security.key).public_key())
    state_dir = cfg.node.state_dir
    if not (state_dir / "eid").exists() and not state_dir.is_dir():
        raise CliError(
            f"{state_dir} does not exist, so this node has no entity id yet: create it (the "
            "package does) or set [node] eid",
            1,
        )
    try:
        return load_or_create_eid(state_dir)
    except OSError as exc:
        raise CliError(
            f"cannot read or create {state_dir / 'eid'} ({exc.strerror}): run as root or as the "
            "daemon's user, or set [node] eid",
            1,
        ) from None


def _permit(host: str) -> str:
    return "127.0.0.1" if host in ("localhost", "::1", "") else host


def _dialplan_hints(args: argparse.Namespace) -> int:
    from .links.ami.counterparts import DEFAULT_TEMPLATE, hint_lines

    template = args.template
    if template is None:
        template = DEFAULT_TEMPLATE
        if os.path.exists(args.config):
            cfg = load_config(args.config)
            if cfg.asterisk is not None:
                template = cfg.asterisk.remote_template
    mapping = {}
    for item in args.mapping:
        exten, sep, device = item.partition("=")
        if not sep or not exten or not device:
            raise CliError(f"{item!r} is not EXTEN=DEVICE (e.g. 1234=Custom:mystate)", EXIT_USAGE)
        mapping[exten] = device
    print("\n".join(hint_lines(mapping, args.context, template)))
    return 0
