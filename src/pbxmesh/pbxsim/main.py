"""``pbxmesh sim``: a PBX simulator that serves AMI as Asterisk does.

Usage::

    pbxmesh sim --listen HOST:PORT --username USER --secret SECRET
                [--dialplan extensions.conf] [--state-dir DIR]
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
    return parser


async def run(host: str, port: int, pbx: SimPbx, username: str, secret: str) -> None:
    """Serve until SIGINT/SIGTERM or cancellation."""
    server = SimServer(pbx, username, secret)
    await server.start(host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
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
    try:
        asyncio.run(run(host, port, pbx, args.username, args.secret))
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
