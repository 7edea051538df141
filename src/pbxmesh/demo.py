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
import contextlib
import functools
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from .links.ami.client import AmiClient, AmiConfig
from .links.ami.codec import Event
from .links.ami.counterparts import counterpart_name

__all__ = ["main"]

NODES = ("pbx1", "pbx2", "pbx3")
USER, SECRET = "pbxmesh", "demo-secret"


def _ephemeral_low() -> int:
    """Where the kernel starts handing out ports for outgoing connections (Linux)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _free_ports(n: int) -> list[int]:
    """``n`` distinct ports free on 127.0.0.1 for both TCP and UDP, below the ephemeral range.

    A port the kernel gave out for ``bind(("127.0.0.1", 0))`` and that was closed again is
    ephemeral: another process's outgoing connection (a node's AMI or SIP client) may take it
    before the demo's daemon binds it, which made a node fail to start ("Address already in
    use"). Below the ephemeral range only a listener can hold a port, and each is checked.
    """
    low = _ephemeral_low()
    first = 20000 if low > 21000 else 1024
    pool = range(first, low) if low - first >= 20 * n else range(first, 65536)
    candidates = random.sample(pool, k=min(len(pool), 20 * n))
    ports: list[int] = []
    for port in candidates:
        try:
            for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                with socket.socket(socket.AF_INET, kind) as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        ports.append(port)
        if len(ports) == n:
            return ports
    raise SystemExit(f"pbxmesh demo: found no {n} free ports on 127.0.0.1")


def say(text: str = "") -> None:
    print(text, flush=True)


def step(n: int, text: str) -> None:
    say()
    say(f"── Step {n}: {text}")


def show(prefix: str, lines: list[str]) -> None:
    for line in lines:
        say(f"   {prefix} {line}")


class Demo:
    def __init__(self, workdir: Path, group: str, sip: bool = False) -> None:
        self.dir = workdir
        self.group = group
        self.sip = sip
        ports = iter(_free_ports(4 * len(NODES)))
        self.sip_ports = {n: next(ports) for n in NODES}  # the simulators' SIP
        self.link_ports = {n: next(ports) for n in NODES}  # the nodes' SIP listeners
        self.waiting: dict[str, dict[str, tuple[str, str]]] = {n: {} for n in NODES}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.ami_ports = {n: next(ports) for n in NODES}
        self.ctl_ports = {n: next(ports) for n in NODES}
        self.clients: dict[str, AmiClient] = {}
        self.corosync: subprocess.Popen[bytes] | None = None

    # -- processes ---------------------------------------------------------------------------
    def _spawn(self, key: str, args: list[str]) -> None:
        log = open(self.dir / f"{key}.log", "ab")  # noqa: SIM115 - kept open for the child
        self.procs[key] = subprocess.Popen(
            args, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True
        )

    def corosync_running(self) -> bool:
        tool = shutil.which("corosync-cpgtool")
        return (
            tool is not None
            and subprocess.run([tool], capture_output=True, check=False).returncode == 0
        )

    def start_corosync(self) -> None:
        if self.corosync_running():
            say("   corosync is already running on this machine: the demo joins it.")
            return
        if shutil.which("corosync") is None:
            raise SystemExit("pbxmesh demo: corosync is not installed: apt-get install corosync")
        if os.geteuid() != 0:
            raise SystemExit("pbxmesh demo: starting corosync needs root (it is a system daemon)")
        run = self.dir / "corosync-run"
        state = self.dir / "corosync-state"
        run.mkdir()
        state.mkdir()
        conf = self.dir / "corosync.conf"
        conf.write_text(
            "totem {\n  version: 2\n  cluster_name: pbxmesh-demo\n  transport: knet\n"
            "  crypto_cipher: none\n  crypto_hash: none\n}\n"
            "nodelist {\n  node {\n    nodeid: 1\n    name: demo\n    ring0_addr: 127.0.0.1\n"
            "  }\n}\n"
            f"system {{\n  state_dir: {state}\n  move_to_root_cgroup: no\n  sched_rr: no\n}}\n"
            f"logging {{\n  to_stderr: no\n  to_syslog: no\n  to_logfile: yes\n"
            f"  logfile: {self.dir / 'corosync.log'}\n}}\n"
        )
        inner = f"mount --bind {run} /run && exec corosync -f -c {conf}"
        log = open(self.dir / "corosync.stderr", "ab")  # noqa: SIM115
        self.corosync = subprocess.Popen(
            ["unshare", "-m", "--propagation", "slave", "sh", "-c", inner],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 20
        while not self.corosync_running():
            if self.corosync.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(
                    f"pbxmesh demo: corosync did not start; see {self.dir / 'corosync.log'}"
                )
            time.sleep(0.1)
        say(f"   corosync started on 127.0.0.1 (its log: {self.dir / 'corosync.log'})")

    def write_files(self) -> None:
        for n in NODES:
            d = self.dir / n
            (d / "pbx-state").mkdir(parents=True)
            hint = (
                "Custom:mystate"  # the tutorial's own line: the PBX aggregates by itself
                if self.sip
                else f"Custom:mystate&{counterpart_name('Custom:mystate')}"
            )
            # Over SIP, device states and MWI take the SIP link; AMI beside it carries presence
            # (no Asterisk clustering protocol has presence) and serves `pbxmesh hints`.
            link = (
                f'[asterisk]\nami = "127.0.0.1:{self.ami_ports[n]}"\n'
                f'username = "{USER}"\nsecret = "{SECRET}"\n\n'
            )
            if self.sip:
                link += (
                    f'[asterisk.sip]\nlisten = "127.0.0.1:{self.link_ports[n]}"\n'
                    f'uri = "sip:pbxmesh@127.0.0.1:{self.sip_ports[n]}"\n\n'
                )
            (d / "extensions.conf").write_text(
                "[general]\nautofallthrough=yes\n\n[devstate_test]\n"
                "exten => 1000,hint,Custom:alice,CustomPresence:alice\n"
                f"exten => 1234,hint,{hint}\n"
            )
            (d / "pbxmesh.toml").write_text(
                f'[node]\nname = "{n}"\nstate_dir = "{d / "state"}"\n\n'
                f'[cluster]\ntransport = "corosync"\ngroup = "{self.group}"\n\n'
                '[[channel]]\nname = "device_state"\n'
                'publish = ["device_state", "mwi", "presence_state"]\n'
                'subscribe = ["device_state", "mwi", "presence_state"]\n\n'
                f"{link}"
                f'[control]\nlisten = "127.0.0.1:{self.ctl_ports[n]}"\n'
            )

    def start_sim(self, n: str) -> None:
        d = self.dir / n
        self._spawn(
            f"sim-{n}",
            [
                sys.executable,
                "-m",
                "pbxmesh",
                "sim",
                "--listen",
                f"127.0.0.1:{self.ami_ports[n]}",
                "--username",
                USER,
                "--secret",
                SECRET,
                "--dialplan",
                str(d / "extensions.conf"),
                "--state-dir",
                str(d / "pbx-state"),
                *(
                    [
                        "--sip-listen",
                        f"127.0.0.1:{self.sip_ports[n]}",
                        "--sip-peer",
                        f"sip:pbxmesh@127.0.0.1:{self.link_ports[n]}",
                        "--eid",
                        f"02:00:00:00:de:{NODES.index(n) + 1:02x}",
                    ]
                    if self.sip
                    else []
                ),
            ],
        )

    def start_node(self, n: str) -> None:
        self._spawn(
            f"node-{n}",
            [sys.executable, "-m", "pbxmesh", "-c", str(self.dir / n / "pbxmesh.toml"), "run"],
        )

    def stop_node(self, n: str) -> None:
        proc = self.procs.pop(f"node-{n}")
        proc.terminate()
        proc.wait(timeout=15)

    def cli(self, n: str, *args: str) -> list[str]:
        out = subprocess.run(
            [sys.executable, "-m", "pbxmesh", "-c", str(self.dir / n / "pbxmesh.toml"), *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        return (out.stdout + out.stderr).rstrip().splitlines()

    async def wait_cli(self, n: str, *args: str, deadline: float = 30) -> None:
        end = time.monotonic() + deadline
        while True:
            out = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "pbxmesh", "-c", str(self.dir / n / "pbxmesh.toml"), *args],
                capture_output=True,
                check=False,
            )
            if out.returncode == 0:
                return
            if time.monotonic() > end:
                # The demo's directory is removed on exit: show the log's end now.
                try:
                    tail = (self.dir / f"node-{n}.log").read_text(errors="replace")[-3000:]
                except OSError as exc:
                    tail = f"(no log: {exc})"
                raise SystemExit(
                    f"pbxmesh demo: node {n} did not come up within {deadline:g} s; "
                    f"the end of its log:\n{tail}"
                )
            await asyncio.sleep(0.3)

    # -- AMI -------------------------------------------------------------------------------
    async def connect(self, n: str) -> AmiClient:
        def on_event(event: Event) -> None:
            if event.name == "MessageWaiting":
                box = event.get("Mailbox") or ""
                self.waiting[n][box] = (event.get("New") or "", event.get("Old") or "")

        client = AmiClient(
            AmiConfig.local("127.0.0.1", self.ami_ports[n], USER, SECRET), on_event=on_event
        )
        await client.start()
        async with asyncio.timeout(20):
            await client.wait_connected()
        self.clients[n] = client
        return client

    async def hints(self, n: str) -> list[str]:
        return [ln for ln in await self.clients[n].command("core show hints") if "@" in ln]

    async def until(
        self, what: str, check: Callable[[], Awaitable[bool]], deadline: float = 15
    ) -> float:
        t0 = time.monotonic()
        async with asyncio.timeout(deadline):
            while not await check():  # noqa: ASYNC110 - polling another process
                await asyncio.sleep(0.02)
        return time.monotonic() - t0

    async def hint_state(self, n: str, text: str) -> bool:
        return any(
            f"State:{text} " in line for line in await self.hints(n) if line.startswith("1234@")
        )

    async def presence(self, n: str) -> tuple[str | None, str | None]:
        r = await self.clients[n].action("PresenceState", Provider="CustomPresence:alice")
        return r.get("State"), r.get("PresenceMessage")

    async def until_hint(self, n: str, text: str, deadline: float = 15) -> float:
        """Seconds until hint 1234 on server ``n`` shows ``State:<text>``."""

        async def check() -> bool:
            return await self.hint_state(n, text)

        return await self.until(n, check, deadline)

    # -- the scenario ------------------------------------------------------------------------
    async def scenario(self) -> None:
        step(1, "who is in the cluster (ais clm show members) — on pbx1")
        show("pbx1$ pbxmesh members:", [""])
        show("  ", self.cli("pbx1", "members"))
        say("   Three servers, each with its own entity id (EID).")
        say("   The event channel (ais evt show event channels):")
        show("  ", self.cli("pbx1", "channels"))

        say()
        if self.sip:
            say("   Each simulated Asterisk has the tutorial's hint line, untouched: pbxmesh")
            say("   publishes the other servers' states over SIP under their own EIDs and the")
            say("   PBX aggregates them itself (`pbxmesh asterisk-config` prints its pjsip.conf):")
        else:
            say("   Each simulated Asterisk has the tutorial's hint, joined with the remote")
            say("   counterpart pbxmesh writes (see `pbxmesh dialplan-hints 1234=Custom:mystate`):")
        show("  ", (self.dir / "pbx1" / "extensions.conf").read_text().splitlines()[-1:])
        for n in NODES:
            show(f"{n}*CLI> core show hints:", [""])
            show("  ", await self.hints(n))

        step(2, "on pbx1: Set(DEVICE_STATE(Custom:mystate)=INUSE)")
        await self.clients["pbx1"].action(
            "Setvar", Variable="DEVICE_STATE(Custom:mystate)", Value="INUSE"
        )
        for n in ("pbx2", "pbx3"):
            took = await self.until_hint(n, "InUse")
            show(f"{n}*CLI> core show hints  (InUse after {took * 1000:.0f} ms):", [""])
            show("  ", await self.hints(n))
        say("   The lamp of extension 1234 is lit on every server, as in the tutorial.")

        step(3, "on pbx1: Set(DEVICE_STATE(Custom:mystate)=NOT_INUSE)")
        await self.clients["pbx1"].action(
            "Setvar", Variable="DEVICE_STATE(Custom:mystate)", Value="NOT_INUSE"
        )
        for n in ("pbx2", "pbx3"):
            await self.until_hint(n, "Idle")
            show(f"{n}*CLI> core show hints:", [""])
            show("  ", await self.hints(n))

        step(4, "voicemail on pbx1: mailbox 1000@default gets 2 new messages")
        await self.clients["pbx1"].action(
            "MWIUpdate", Mailbox="1000@default", NewMessages="2", OldMessages="1"
        )

        async def lamp(n: str) -> bool:
            if self.sip:  # what phones get; MailboxCount reads only local voicemail
                return self.waiting[n].get("1000@default") == ("2", "1")
            r = await self.clients[n].action("MailboxCount", Mailbox="1000@default")
            return (r.get("NewMessages"), r.get("OldMessages")) == ("2", "1")

        for n in ("pbx2", "pbx3"):
            await self.until(n, functools.partial(lamp, n))
            if self.sip:
                say(f"   {n}: MessageWaiting 1000@default → 2 new, 1 old (what phones get)")
            else:
                say(f"   {n}: MailboxCount 1000@default → 2 new, 1 old (message lamp on)")
        show("pbx3$ pbxmesh mwi:", [""])
        show("  ", self.cli("pbx3", "mwi"))

        step(5, "on pbx1: Set(PRESENCE_STATE(CustomPresence:alice)=dnd,,back at 3)")
        await self.clients["pbx1"].action(
            "Setvar", Variable="PRESENCE_STATE(CustomPresence:alice)", Value="dnd,,back at 3"
        )
        for n in ("pbx2", "pbx3"):

            async def dnd(n: str = n) -> bool:
                return await self.presence(n) == ("dnd", "back at 3")

            took = await self.until(n, dnd)
            say(f"   {n}: alice is dnd, 'back at 3' ({took * 1000:.0f} ms later)")
        show("pbx2*CLI> core show hint 1000:", [""])
        show("  ", [ln for ln in await self.hints("pbx2") if ln.startswith("1000@")])
        await self.clients["pbx1"].action(
            "Setvar", Variable="PRESENCE_STATE(CustomPresence:alice)", Value="available"
        )

        async def back() -> bool:
            return await self.presence("pbx3") == ("available", None)

        await self.until("pbx3", back)
        say("   alice is back: pbx3 shows her available again. (pbxmesh presence lists them.)")
        show("pbx3$ pbxmesh presence:", [""])
        show("  ", self.cli("pbx3", "presence"))

        step(6, "what Asterisk's own clustering gets wrong: a server leaves")
        await self.clients["pbx3"].action(
            "Setvar", Variable="DEVICE_STATE(Custom:mystate)", Value="BUSY"
        )
        await self.until_hint("pbx1", "Busy")
        say("   pbx3 sets Custom:mystate BUSY: pbx1 shows State:Busy.")
        show("pbx1$ pbxmesh devices:", [""])
        show("  ", self.cli("pbx1", "devices"))
        say("   Now pbx3's pbxmesh node stops (SIGTERM):")
        t0 = time.monotonic()
        self.stop_node("pbx3")
        await self.until_hint("pbx1", "Idle")
        say(
            f"   pbx1's hint is back to Idle {(time.monotonic() - t0) * 1000:.0f} ms later —"
            " Asterisk would have kept Busy."
        )
        show("pbx1*CLI> core show hints:", [""])
        show("  ", await self.hints("pbx1"))
        say("   pbx3 comes back; its BUSY state (kept in its AstDB) is shared again:")
        self.start_node("pbx3")
        took = await self.until_hint("pbx1", "Busy", deadline=30)
        say(f"   pbx1 shows Busy again after {took:.1f} s.")
        await self.clients["pbx3"].action(
            "Setvar", Variable="DEVICE_STATE(Custom:mystate)", Value="NOT_INUSE"
        )
        await self.until_hint("pbx1", "Idle")

    def summary(self) -> None:
        say()
        say("── The demo cluster keeps running. Try:")
        for n in NODES:
            conf = self.dir / n / "pbxmesh.toml"
            url = f"http://127.0.0.1:{self.ctl_ports[n]}/"
            say(f"   {n}: pbxmesh -c {conf} devices   (lamps: {url})")
        conf1 = self.dir / "pbx1" / "pbxmesh.toml"
        say(f"   pbxmesh -c {conf1} publish device_state Custom:lamp1 RINGING")
        say(f"   pbxmesh -c {conf1} publish presence_state alice away lunch 'back at 2'")
        port1 = self.ami_ports["pbx1"]
        say(f"   Simulated Asterisk AMI: 127.0.0.1:{port1} (user {USER}, secret {SECRET})")
        say(f"   Logs and files: {self.dir}")
        say("   Press Ctrl-C to stop everything the demo started.")

    async def close(self) -> None:
        for client in self.clients.values():
            with contextlib.suppress(Exception):
                await client.close()
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        if self.corosync is not None:
            self.corosync.terminate()
            try:
                self.corosync.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.corosync.kill()


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
        await demo.scenario()
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
