"""``pbxmesh demo``: a local three-server cluster that plays the 2009 tutorial's test.

It starts (or reuses) a corosync on 127.0.0.1, three PBX simulators standing in for three
Asterisk servers, and three pbxmesh nodes, one per "server", each linked to its simulator over
AMI. Then it walks through the seed's scenario, printing what it does and what each server
shows, in words a newcomer can follow:

1. the members and the event channel (``ais clm show members``, ``ais evt show event channels``);
2. ``Custom:mystate`` set to INUSE on pbx1: hint 1234 shows ``State:InUse`` on pbx2 and pbx3;
3. back to NOT_INUSE: ``State:Idle`` everywhere;
4. mailbox 1000@default gets 2 new messages on pbx1: the lamp lights on pbx2 and pbx3;
5. alice sets do-not-disturb on pbx1: her presence shows on pbx2 and pbx3 (no Asterisk
   clustering module shares presence), and clears when she is back;
6. what Asterisk's own clustering gets wrong: pbx3 is busy and its node stops — the others'
   hints fall back at once instead of staying stale.

Then it leaves everything running, prints how to look at it (CLI, web page), and stops all it
started on Ctrl-C. ``--no-wait`` ends after the scenario (for CI).

``--sip`` links each simulated Asterisk to its node over SIP PUBLISH instead of AMI (the
simulator speaks res_pjsip_publish_asterisk's subset): the hint is the tutorial's own line,
``exten => 1234,hint,Custom:mystate``, untouched, and the PBX aggregates the servers' states
itself. Remote MWI then shows as ``MessageWaiting`` (what phones get), not in ``MailboxCount``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from .demo_cluster import NODES, Demo, say, step
from .demo_scenario import scenario

__all__ = ["main"]


async def _run(args: argparse.Namespace, workdir: Path) -> int:
    demo = Demo(workdir, group=f"pbxmesh-demo-{os.getpid()}", sip=args.sip)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        say("pbxmesh demo: three Asterisk servers sharing device states and MWI")
        if args.sip:
            say("(the PBXs are pbxmesh's simulator, linked over SIP PUBLISH; the rest is real)")
        else:
            say("(the PBXs are pbxmesh's AMI simulator; everything else is the real thing)")
        step(0, "starting corosync, three simulated Asterisk servers and three pbxmesh nodes")
        demo.start_corosync()
        demo.write_files()
        for n in NODES:
            demo.start_sim(n)
        for n in NODES:
            demo.start_node(n)
        for n in NODES:
            await demo.wait_cli(n, "status")
            await demo.connect(n)
        say("   all started.")
        await scenario(demo)
        say()
        say("── Scenario complete: every step behaved as described.")
        if args.no_wait:
            return 0
        demo.summary()
        await stop.wait()
        say("\nstopping…")
        return 0
    finally:
        await demo.close()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="pbxmesh demo",
        description="Start a local three-server cluster (corosync, three simulated Asterisk "
        "servers, three pbxmesh nodes) and play the 2009 tutorial's test.",
    )
    parser.add_argument("--no-wait", action="store_true", help="stop after the scenario")
    parser.add_argument("--keep", action="store_true", help="keep the demo's files and logs")
    parser.add_argument("--dir", type=Path, help="work directory (default: a new temp dir)")
    parser.add_argument(
        "--sip",
        action="store_true",
        help="link each PBX over SIP PUBLISH: the tutorial's hint line works untouched",
    )
    args = parser.parse_args(argv)
    workdir = args.dir or Path(tempfile.mkdtemp(prefix="pbxmesh-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        return asyncio.run(_run(args, workdir))
    except KeyboardInterrupt:
        return 130
    except TimeoutError:
        print(
            f"pbxmesh demo: a step did not complete in time; logs are in {workdir}", file=sys.stderr
        )
        return 1
