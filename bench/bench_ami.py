"""Asterisk to Asterisk through pbxmesh: Setvar on simulator 1 → DeviceStateChange of the
remote counterpart on simulator 2, over a real corosync. Prints a table.

    python bench/bench_ami.py            # needs root and corosync (like the tests)

Two PBX simulators and two pbxmesh daemons run as separate processes; this process sends
``Setvar DEVICE_STATE(Custom:benchN)`` to simulator 1 at a paced rate (without waiting for each
answer) and timestamps the ``DeviceStateChange`` of ``Custom:remote-Custom-benchN`` raised by
simulator 2: one clock, end to end (AMI in, node, corosync, node, AMI out, Asterisk's event).
It reports p50/p99 at 100 changes/s, then steps the rate up to find the highest rate whose p99
stays within 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pbxmesh.links.ami.client import AmiClient, AmiConfig
from pbxmesh.links.ami.codec import Event
from pbxmesh.links.ami.counterparts import counterpart_name
from tests.harness.corosync import loopback_corosync

USER, SECRET = "bench", "bench-secret"
DEVICES = 2000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", "pbxmesh", *args],
            stdout=fh,
            stderr=fh,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


class Probe:
    def __init__(self) -> None:
        self.sent: dict[str, float] = {}
        self.latencies: list[float] = []
        self.waiters: dict[str, asyncio.Future[None]] = {}
        self.names = {
            counterpart_name(f"Custom:bench{i}"): f"Custom:bench{i}" for i in range(DEVICES)
        }

    def on_event(self, event: Event) -> None:
        if event.name != "DeviceStateChange":
            return
        device = self.names.get(event.get("Device") or "")
        key = f"{device}={event.get('State')}"
        t0 = self.sent.pop(key, None)
        if t0 is not None:
            self.latencies.append(time.perf_counter() - t0)


async def run_rate(
    sender: AmiClient, probe: Probe, rate: float, seconds: float, state_of: dict[int, str]
) -> tuple[float, float, int, int]:
    probe.latencies.clear()
    probe.sent.clear()
    n = int(rate * seconds)
    t_start = time.perf_counter()
    tasks = []
    for k in range(n):
        due = t_start + k / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        i = k % DEVICES
        state_of[i] = "INUSE" if state_of.get(i) != "INUSE" else "NOT_INUSE"
        probe.sent[f"Custom:bench{i}={state_of[i]}"] = time.perf_counter()
        tasks.append(
            asyncio.create_task(
                sender.action(
                    "Setvar", Variable=f"DEVICE_STATE(Custom:bench{i})", Value=state_of[i]
                )
            )
        )
    await asyncio.gather(*tasks)
    deadline = time.perf_counter() + 5
    while probe.sent and time.perf_counter() < deadline:  # noqa: ASYNC110 - polling
        await asyncio.sleep(0.01)
    lat = sorted(probe.latencies)
    if not lat:
        return float("inf"), float("inf"), 0, n
    p50 = statistics.median(lat) * 1000
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000
    return p50, p99, len(lat), n


async def main_async(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="pbxmesh-bench-ami-"))
    group = f"pbxm-bench-{secrets.token_hex(3)}"
    procs = []
    dialplan = work / "extensions.conf"
    dialplan.write_text(
        "[bench]\n"
        + "".join(
            f"exten => {i},hint,Custom:bench{i}&{counterpart_name(f'Custom:bench{i}')}\n"
            for i in range(DEVICES)
        )
    )
    ports = {n: (free_port(), free_port()) for n in ("pbx1", "pbx2")}
    try:
        for name, (ami, ctl) in ports.items():
            (work / name).mkdir()
            procs.append(
                start(
                    [
                        "sim",
                        "--listen",
                        f"127.0.0.1:{ami}",
                        "--username",
                        USER,
                        "--secret",
                        SECRET,
                        "--dialplan",
                        str(dialplan),
                    ],
                    work / f"sim-{name}.log",
                )
            )
            conf = work / name / "pbxmesh.toml"
            conf.write_text(
                f'[node]\nname = "{name}"\nstate_dir = "{work / name / "state"}"\n'
                f'[cluster]\ntransport = "corosync"\ngroup = "{group}"\n'
                f'[asterisk]\nami = "127.0.0.1:{ami}"\nusername = "{USER}"\n'
                f'secret = "{SECRET}"\n[control]\nlisten = "127.0.0.1:{ctl}"\n'
            )
            procs.append(start(["-c", str(conf), "run"], work / f"node-{name}.log"))
        probe = Probe()
        sender = AmiClient(AmiConfig.local("127.0.0.1", ports["pbx1"][0], USER, SECRET))
        receiver = AmiClient(
            AmiConfig.local("127.0.0.1", ports["pbx2"][0], USER, SECRET), on_event=probe.on_event
        )
        for c in (sender, receiver):
            for _ in range(100):
                try:
                    await c.start()
                    async with asyncio.timeout(10):
                        await c.wait_connected()
                    break
                except (OSError, TimeoutError):
                    await asyncio.sleep(0.2)
        await asyncio.sleep(3)  # the nodes join and their bridges finish the first resync
        state_of: dict[int, str] = {}
        await run_rate(sender, probe, 50, 2, state_of)  # warm up
        print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        print(f"{'rate (changes/s)':>16}  {'p50 ms':>8}  {'p99 ms':>8}  {'delivered':>12}")
        best = 0.0
        for rate in args.rates:
            seconds = 10 if rate <= 100 else 5
            p50, p99, got, sent = await run_rate(sender, probe, rate, seconds, state_of)
            print(f"{rate:>16,.0f}  {p50:>8.2f}  {p99:>8.2f}  {got:>6}/{sent:<6}")
            if p99 <= 50 and got == sent:
                best = rate
            elif rate > 100:
                break
        print(f"highest sustained rate with p99 <= 50 ms: {best:,.0f} changes/s")
        print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        await sender.close()
        await receiver.close()
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--rates", type=float, nargs="+", default=[100, 250, 500, 1000, 1500, 2000, 3000, 4000]
    )
    args = ap.parse_args()
    with loopback_corosync():
        asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
