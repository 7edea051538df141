"""Asterisk to Asterisk: Setvar on PBX 1 → DeviceStateChange on PBX 2, over a real corosync,
for several setups side by side in one run. Prints a table.

    python bench/bench_ami.py                       # needs root and corosync (like the tests)
    python bench/bench_ami.py --setups sim asterisk res_corosync

Setups (three servers each; PBX 3 takes part but is not measured):

* ``sim``: three PBX simulators, each linked over AMI to its own pbxmesh daemon.
* ``asterisk``: the same with three real Asterisks (tests/harness/asterisk.py finds the build).
* ``res_corosync``: the same three real Asterisks sharing states with Asterisk's own
  res_corosync, no pbxmesh at all: the reference pbxmesh is measured against.
* ``sip``: three real Asterisks, each linked to its own pbxmesh over SIP PUBLISH only
  (configured as ``pbxmesh asterisk-config`` prints), hints unchanged (``Custom:benchN``).
* ``pjsip_direct``: two real Asterisks publishing to each other with
  res_pjsip_publish_asterisk, no pbxmesh (pair by pair: PBX 3 is left out).

With ``sip`` or ``pjsip_direct`` the run also measures one raw engine hop (a CPG message to
this process's own group member, at 100/s): the SIP targets are p50 <= the direct link's p50
plus that hop, and a sustained rate at least the direct link's.

This process sends ``Setvar DEVICE_STATE(Custom:benchN)`` to PBX 1 at a paced rate (without
waiting for each answer) and timestamps the ``DeviceStateChange`` PBX 2 raises for it (the remote
counterpart ``Custom:remote-Custom-benchN`` with pbxmesh; ``Custom:benchN`` itself, whose
aggregate changes, with res_corosync): one clock, end to end. It reports p50/p99 at 100
changes/s and at each higher rate until p99 passes 50 ms, and the CPU time every process of the
setup spent per change at 1,000 changes/s (pbxmesh daemons, PBXs and corosync, summed over the
three servers; from /proc, so it counts what a deployment pays, whatever else runs).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pbxmesh.links.ami.client import AmiClient, AmiConfig
from pbxmesh.links.ami.codec import Event
from pbxmesh.links.ami.counterparts import counterpart_name
from pbxmesh.links.sip.asterisk_conf import MODULES as SIP_MODULES
from pbxmesh.transport.base import Message
from pbxmesh.transport.corosync import CorosyncConfig, CorosyncTransport
from tests.harness.asterisk import Asterisk, asterisk_missing_reason, eid_of, free_port
from tests.harness.corosync import loopback_corosync
from tests.sip_helpers import HINT_MODULES, sip_asterisk

USER, SECRET = "admin", "s3cret"  # tests/harness/asterisk.py's AMI account
DEVICES = 2000
SERVERS = 3
TICK = os.sysconf("SC_CLK_TCK")


def start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", "pbxmesh", *args],
            stdout=fh,
            stderr=fh,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """User + system CPU seconds of each process (and its reaped children), from /proc."""
    out: dict[int, float] = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[pid] = sum(int(x) for x in fields[11:15]) / TICK  # utime stime cutime cstime
    return out


class Probe:
    def __init__(self, watched: dict[str, str]) -> None:
        self.sent: dict[str, float] = {}
        self.latencies: list[float] = []
        self.names = watched  # the device PBX 2 reports -> the device set on PBX 1

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


@dataclass
class Result:
    setup: str
    rows: list[tuple[float, float, float, int, int]] = field(default_factory=list)
    best: float = 0.0
    cpu_ms: dict[str, float] = field(default_factory=dict)  # per change at 1,000/s, by process


def hints(counterparts: bool) -> str:
    def hint(i: int) -> str:
        dev = f"Custom:bench{i}"
        return f"{dev}&{counterpart_name(dev)}" if counterparts else dev

    return "[bench]\n" + "".join(f"exten => {i},hint,{hint(i)}\n" for i in range(DEVICES))


RES_COROSYNC_CONF = (
    "[general]\npublish_event = device_state\nsubscribe_event = device_state\n"
    "publish_event = mwi\nsubscribe_event = mwi\n"
)


def direct_pjsip(port: int, peer_port: int) -> str:
    """pjsip.conf of one of two Asterisks publishing to each other (sip-publish.md §2)."""
    peer = f"sip:peer@127.0.0.1:{peer_port}"
    return (
        f"[udp]\ntype = transport\nprotocol = udp\nbind = 127.0.0.1:{port}\n\n"
        "[peer]\ntype = endpoint\ncontext = none\ndisallow = all\nallow = ulaw\n\n"
        "[peer]\ntype = identify\nendpoint = peer\nmatch = 127.0.0.1\n\n"
        f"[to-peer-devstate]\ntype = outbound-publish\nserver_uri = {peer}\n"
        "event = asterisk-devicestate\n\n"
        f"[to-peer-mwi]\ntype = outbound-publish\nserver_uri = {peer}\n"
        "event = asterisk-mwi\n\n"
        "[peer]\ntype = inbound-publication\nendpoint = peer\n"
        "event_asterisk-devicestate = peer\nevent_asterisk-mwi = peer\n\n"
        "[peer]\ntype = asterisk-publication\ndevicestate_publish = to-peer-devstate\n"
        "mailboxstate_publish = to-peer-mwi\ndevice_state = yes\nmailbox_state = yes\n"
    )


async def raw_cpg_p50(count: int = 300, rate: float = 100) -> float:
    """One raw engine hop: a CPG message back to this process's own member, p50 in ms."""
    transport = CorosyncTransport(CorosyncConfig.local(f"pbxm-raw-{secrets.token_hex(3)}"))
    await transport.start()
    sent: dict[int, float] = {}
    lat: list[float] = []

    async def pump() -> None:
        async for ev in transport.events():
            if isinstance(ev, Message) and len(ev.data) == 8:
                t0 = sent.pop(int.from_bytes(ev.data, "big"), None)
                if t0 is not None:
                    lat.append(time.perf_counter() - t0)

    task = asyncio.create_task(pump())
    try:
        for k in range(count):
            sent[k] = time.perf_counter()
            await transport.send(k.to_bytes(8, "big"))
            await asyncio.sleep(1 / rate)
        deadline = time.perf_counter() + 2
        while sent and time.perf_counter() < deadline:  # noqa: ASYNC110 - polling
            await asyncio.sleep(0.01)
    finally:
        await transport.close()
        task.cancel()
    return statistics.median(lat) * 1000 if lat else float("inf")


async def run_setup(kind: str, rates: list[float], corosync_pid: int, work: Path) -> Result:
    group = f"pbxm-bench-{secrets.token_hex(3)}"
    procs: list[subprocess.Popen[bytes]] = []
    stars: list[Asterisk] = []
    pids: dict[int, str] = {corosync_pid: "corosync"}
    ami_ports: list[int] = []
    mesh = kind in ("sim", "asterisk", "sip")
    counterparts = kind in ("sim", "asterisk")  # SIP: Asterisk aggregates, hints unchanged
    servers = 2 if kind == "pjsip_direct" else SERVERS
    direct_ports = [free_port() for _ in range(servers)]
    try:
        for n in range(1, servers + 1):
            name = f"pbx{n}"
            sip_link = None
            if kind == "sip":
                star, sip_link = sip_asterisk(name, eid_of(n), dialplan=hints(False), mwi=())
                stars.append(star)
                await asyncio.to_thread(star.start)
                assert star.proc is not None
                pids[star.proc.pid] = "pbx"
                port = star.ami_port
            elif kind == "pjsip_direct":
                peer = direct_ports[1 - (n - 1)]
                star = Asterisk(
                    name,
                    eid_of(n),
                    modules=[*HINT_MODULES, *SIP_MODULES],
                    dialplan=hints(False),
                    files={"pjsip.conf": direct_pjsip(direct_ports[n - 1], peer)},
                )
                stars.append(star)
                await asyncio.to_thread(star.start)
                assert star.proc is not None
                pids[star.proc.pid] = "pbx"
                port = star.ami_port
            elif kind == "sim":
                port = free_port()
                (work / "extensions.conf").write_text(hints(True))
                sim = start(
                    [
                        "sim",
                        "--listen",
                        f"127.0.0.1:{port}",
                        "--username",
                        USER,
                        "--secret",
                        SECRET,
                        "--dialplan",
                        str(work / "extensions.conf"),
                    ],
                    work / f"sim-{name}.log",
                )
                procs.append(sim)
                pids[sim.pid] = "pbx"
            else:
                modules = ["pbx_config", "func_devstate", "res_manager_devicestate"]
                files = {}
                if not mesh:
                    modules.append("res_corosync")
                    files["res_corosync.conf"] = RES_COROSYNC_CONF
                star = Asterisk(
                    name, eid_of(n), modules=modules, dialplan=hints(counterparts), files=files
                )
                stars.append(star)
                await asyncio.to_thread(star.start)
                assert star.proc is not None
                pids[star.proc.pid] = "pbx"
                port = star.ami_port
            ami_ports.append(port)
            if mesh:
                conf = work / f"{name}.toml"
                link = (
                    f'[asterisk.sip]\nlisten = "127.0.0.1:{sip_link.listen[1]}"\n'
                    f'uri = "{sip_link.uri}"\n'
                    if sip_link is not None
                    else f'[asterisk]\nami = "127.0.0.1:{port}"\nusername = "{USER}"\n'
                    f'secret = "{SECRET}"\n'
                )
                conf.write_text(
                    f'[node]\nname = "{name}"\nstate_dir = "{work / name}"\n'
                    f'[cluster]\ntransport = "corosync"\ngroup = "{group}"\n'
                    f'{link}[control]\nlisten = "127.0.0.1:{free_port()}"\n'
                )
                node = start(["-c", str(conf), "run"], work / f"node-{name}.log")
                procs.append(node)
                pids[node.pid] = "pbxmesh"
        watched = {
            (counterpart_name(f"Custom:bench{i}") if counterparts else f"Custom:bench{i}"): (
                f"Custom:bench{i}"
            )
            for i in range(DEVICES)
        }
        probe = Probe(watched)
        sender = AmiClient(AmiConfig.local("127.0.0.1", ami_ports[0], USER, SECRET))
        receiver = AmiClient(
            AmiConfig.local("127.0.0.1", ami_ports[1], USER, SECRET), on_event=probe.on_event
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
        await asyncio.sleep(3)  # the nodes join and their links finish the first resync
        state_of: dict[int, str] = {}
        await run_rate(sender, probe, 50, 2, state_of)  # warm up
        result = Result(kind)
        for rate in rates:
            seconds = 10 if rate <= 100 else 5
            before = cpu_seconds(list(pids))
            p50, p99, got, sent = await run_rate(sender, probe, rate, seconds, state_of)
            after = cpu_seconds(list(pids))
            result.rows.append((rate, p50, p99, got, sent))
            if rate == 1000 and sent:
                for pid, role in pids.items():
                    used = after.get(pid, 0.0) - before.get(pid, 0.0)
                    result.cpu_ms[role] = result.cpu_ms.get(role, 0.0) + used * 1000 / sent
            if p99 <= 50 and got == sent:
                result.best = rate
            elif rate > 100:
                break
        await sender.close()
        await receiver.close()
        return result
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        for star in stars:
            await asyncio.to_thread(star.cleanup)


def report(results: list[Result]) -> None:
    print(f"{'setup':<13} {'rate/s':>7} {'p50 ms':>8} {'p99 ms':>8} {'delivered':>13}")
    for r in results:
        for rate, p50, p99, got, sent in r.rows:
            print(f"{r.setup:<13} {rate:>7,.0f} {p50:>8.2f} {p99:>8.2f} {got:>6}/{sent:<6}")
    print()
    print(f"{'setup':<13} {'sustained/s':>11}  CPU ms per change at 1,000/s (3 servers)")
    for r in results:
        cpu = "  ".join(f"{k} {v:.2f}" for k, v in sorted(r.cpu_ms.items()))
        total = sum(r.cpu_ms.values())
        print(f"{r.setup:<13} {r.best:>11,.0f}  total {total:.2f}: {cpu}")


async def main_async(args: argparse.Namespace, corosync_pid: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="pbxmesh-bench-ami-"))
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    results = []
    for kind in args.setups:
        if kind != "sim" and asterisk_missing_reason():
            print(f"{kind}: skipped, {asterisk_missing_reason()}")
            continue
        (work / kind).mkdir()
        results.append(await run_setup(kind, args.rates, corosync_pid, work / kind))
        print(f"{kind}: done; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if {"sip", "pjsip_direct"} & set(args.setups):
        hop = await raw_cpg_p50()
        print(f"raw CPG hop p50 (same run): {hop:.2f} ms")
        rows = {r.setup: r for r in results}
        if "sip" in rows and "pjsip_direct" in rows and rows["pjsip_direct"].rows:
            direct = rows["pjsip_direct"].rows[0][1]
            target = direct + hop
            sip = rows["sip"].rows[0][1] if rows["sip"].rows else float("inf")
            print(
                f"SIP p50 at {rows['sip'].rows[0][0]:,.0f}/s: {sip:.2f} ms; target direct p50 "
                f"{direct:.2f} + raw hop {hop:.2f} = {target:.2f} ms: "
                f"{'met' if sip <= target else 'NOT met'}; sustained {rows['sip'].best:,.0f}/s "
                f"vs direct {rows['pjsip_direct'].best:,.0f}/s: "
                f"{'met' if rows['sip'].best >= rows['pjsip_direct'].best else 'NOT met'}"
            )
    report(results)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--setups",
        nargs="+",
        choices=["sim", "asterisk", "res_corosync", "sip", "pjsip_direct"],
        default=["sim", "asterisk", "res_corosync"],
    )
    ap.add_argument(
        "--rates", type=float, nargs="+", default=[100, 250, 500, 1000, 1500, 2000, 3000, 4000]
    )
    args = ap.parse_args()
    with loopback_corosync() as corosync:
        assert corosync.pid is not None
        asyncio.run(main_async(args, corosync.pid))


if __name__ == "__main__":
    main()
