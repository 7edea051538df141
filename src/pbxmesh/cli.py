"""The ``pbxmesh`` command: run a node, query it, simulate a PBX, run the demo.

Every query command talks to the running node through its control API, found from the same
configuration file (``-c``, default /etc/pbxmesh/pbxmesh.toml). Human tables by default,
``--json`` for scripts. Exit codes: 0 done, 1 the node failed or refused, 2 bad usage or
configuration, 3 the node is unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .cli_asterisk import asterisk_config, dialplan_hints
from .cli_common import EXIT_FAILED, EXIT_USAGE, CliError
from .cli_query import query
from .config import DEFAULT_CONFIG, load_config
from .errors import ConfigError, PbxmeshError, StateError

__all__ = ["main"]


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
        return dialplan_hints(args)
    if args.command == "asterisk-config":
        return asterisk_config(args)
    return query(args)


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
