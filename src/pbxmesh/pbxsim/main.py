"""``pbxmesh sim``: a PBX simulator that serves AMI as Asterisk does.

Usage::

    pbxmesh sim --listen HOST:PORT --username USER --secret SECRET
                [--dialplan extensions.conf] [--state-dir DIR]
                [--sip-listen HOST:PORT --sip-peer URI --eid EID]
    python -m pbxmesh.pbxsim.main --listen 127.0.0.1:5038 --username admin --secret s3cret

It speaks the subset of AMI that pbxmesh uses (see :mod:`pbxmesh.pbxsim.server`) with the
state rules of func_devstate, the device-state cache, hints and res_mwi_external (see
:mod:`pbxmesh.pbxsim.pbx`). The reference document is its specification; every difference
from real Asterisk is a bug. With ``--state-dir`` the custom device states and mailboxes
survive a restart and are republished at start, as Asterisk does with its AstDB.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path

from ..eid import EID
from ..errors import ConfigError
from .dialplan import Hint, load_hints
from .pbx import SimPbx
from .server import SimServer

__all__ = ["build_parser", "main", "parse_listen", "run"]

log = logging.getLogger(__name__)


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) → (host, port); ArgumentTypeError if bad."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT (e.g. 127.0.0.1:5038)")
    port = int(port_text)
    if port > 65535:
        raise argparse.ArgumentTypeError(f"port {port} in {text!r} is above 65535")
    return host.strip("[]"), port


def build_parser(prog: str = "pbxmesh sim") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="Serve a simulated Asterisk over AMI (for tests and demos)."
    )
    parser.add_argument(
        "--listen",
        required=True,
        type=parse_listen,
        metavar="HOST:PORT",
        help="address to listen on; port 0 picks a free port",
    )
    parser.add_argument("--username", required=True, help="the AMI user to accept")
    parser.add_argument("--secret", required=True, help="that user's secret")
    parser.add_argument(
        "--dialplan",
        type=Path,
        metavar="FILE",
        help="extensions.conf-style file whose 'exten => X,hint,...' lines define the hints",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        metavar="DIR",
        help="directory for the AstDB-like state file (astdb.json)",
    )
    parser.add_argument(
        "--sip-listen",
        type=parse_listen,
        metavar="HOST:PORT",
        help="also speak res_pjsip_publish_asterisk's SIP PUBLISH here (UDP and TCP)",
    )
    parser.add_argument(
        "--sip-peer",
        metavar="URI",
        help="where to publish local states, e.g. sip:pbxmesh@127.0.0.1:5070 (with --sip-listen)",
    )
    parser.add_argument(
        "--eid", type=EID.parse, help="this simulated Asterisk's entityid (with --sip-listen)"
    )
    return parser


async def run(
    host: str,
    port: int,
    pbx: SimPbx,
    username: str,
    secret: str,
    sip: tuple[tuple[str, int], str, EID] | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM or cancellation (``sip``: listen, peer URI, EID)."""
    server = SimServer(pbx, username, secret)
    await server.start(host, port)
    sim_sip = None
    if sip is not None:
        from .sip import SimSip

        sim_sip = SimSip(pbx, sip[2], sip[0], sip[1])
        await sim_sip.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        if sim_sip is not None:
            await sim_sip.close()
        await server.close()


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``pbxmesh sim``; returns the process exit code (2 for bad arguments)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse prints its own message
        return int(exc.code) if isinstance(exc.code, int) else 2
    hints: list[Hint] = []
    try:
        if args.dialplan is not None:
            hints = load_hints(args.dialplan)
        if args.state_dir is not None and args.state_dir.exists() and not args.state_dir.is_dir():
            raise ConfigError(f"--state-dir {args.state_dir} exists and is not a directory")
        pbx = SimPbx(hints, args.state_dir)
    except ConfigError as exc:
        print(f"pbxmesh sim: error: {exc}", file=sys.stderr)
        return 2
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    host, port = args.listen
    sip = None
    if args.sip_listen is not None:
        if not args.sip_peer or args.eid is None:
            print("pbxmesh sim: error: --sip-listen needs --sip-peer and --eid", file=sys.stderr)
            return 2
        sip = (args.sip_listen, args.sip_peer, args.eid)
    try:
        asyncio.run(run(host, port, pbx, args.username, args.secret, sip))
    except OSError as exc:
        print(
            f"pbxmesh sim: error: cannot listen on {host}:{port}: {exc.strerror}", file=sys.stderr
        )
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
