"""The processes of ``pbxmesh demo``: corosync, three simulated Asterisk servers, three
pbxmesh nodes, and the AMI clients the scenario watches them through (:class:`Demo`)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from .links.ami.client import AmiClient, AmiConfig
from .links.ami.codec import Event
from .links.ami.counterparts import counterpart_name
from .ports import free_ports

__all__ = ["NODES", "SECRET", "USER", "Demo", "say", "show", "step"]

NODES = ("pbx1", "pbx2", "pbx3")
USER, SECRET = "pbxmesh", "demo-secret"


def _free_ports(n: int) -> list[int]:
    """``n`` ports for the demo's daemons and simulators (see :mod:`pbxmesh.ports`)."""
    try:
        return free_ports(n)
    except OSError as exc:
        raise SystemExit(f"pbxmesh demo: {exc}") from None


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
