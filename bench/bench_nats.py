"""NATS benchmark: pbxmesh nodes over a three-server nats-server cluster on loopback.

    python bench/bench_nats.py            # full run (about a minute)
    python bench/bench_nats.py --quick    # smaller counts, for a smoke test

Starts its own cluster (tests/harness/nats.py; binary from $PBXMESH_NATS_SERVER or PATH) and
prints one table, with the ``uptime`` load before and after:

* latency p50/p99 of a device change: node A (on server 1) publishes, node B (on server 3)
  applies it — encode, NATS route hop, decode, merge (both nodes in this process);
* raw NATS publish -> receive latency from Python, same servers and rate, for comparison;
* sustained rate with batching: A publishes N changes as fast as it can, B applies them all;
* resync: a late joiner C (on server 2) gets A's 100,000 device states;
* failover: kill -9 of A's server until A is connected to another one, and until a change
  published by A after the kill is applied at B.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pbxmesh.eid import EID
from pbxmesh.node import Node, NodeConfig, make_listener
from pbxmesh.states import DeviceState
from pbxmesh.store import DeviceChange
from pbxmesh.transport.nats import NatsConfig, NatsTransport
from tests.harness.nats import NatsCluster, nats_missing_reason, three_server_cluster

REPO = str(Path(__file__).resolve().parent.parent)
Row = tuple[str, str, str, str]


def load() -> str:
    try:
        out = subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout
        return out.split("load average:")[1].strip()
    except (OSError, subprocess.CalledProcessError, IndexError):
        return "?"


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(p / 100 * len(s)))]


def node(name: str, cluster: NatsCluster, server: int, group: str) -> Node:
    config = NatsConfig(name=name, group=group, servers=cluster.urls_from(server), randomize=False)
    return Node(NodeConfig(name=name, eid=EID.generate()), NatsTransport(config))


async def wait(pred: object, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not pred():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: timed out waiting for {what}")
        await asyncio.sleep(0.001)


async def node_latency(a: Node, b: Node, count: int, rate: float) -> list[float]:
    sent: dict[str, float] = {}
    lat: list[float] = []

    def on_device(change: DeviceChange) -> None:
        t = sent.get(change.device)
        if t is not None:
            lat.append(time.perf_counter() - t)

    b.listeners.append(make_listener(on_device=on_device))
    for i in range(count):
        device = f"PJSIP/lat-{rate:.0f}-{i}"
        sent[device] = time.perf_counter()
        a.publish_device(device, DeviceState.INUSE)
        await asyncio.sleep(1 / rate)
    await wait(lambda: len(lat) >= count, 10, "latency samples")
    b.listeners.pop()
    return lat


async def raw_latency(cluster: NatsCluster, count: int, rate: float) -> list[float]:
    import nats

    pub = await nats.connect(cluster.servers[0].url)
    sub_nc = await nats.connect(cluster.servers[2].url)
    lat: list[float] = []

    async def on_msg(msg: object) -> None:
        lat.append(time.perf_counter() - float(msg.data[:20]))  # type: ignore[attr-defined]

    await sub_nc.subscribe("bench.raw", cb=on_msg)
    await sub_nc.flush()
    await asyncio.sleep(0.2)  # the route learns the subscription
    for _ in range(count):
        await pub.publish("bench.raw", f"{time.perf_counter():20.9f}".encode().ljust(100))
        await asyncio.sleep(1 / rate)
    await wait(lambda: len(lat) >= count, 10, "raw samples")
    await pub.close()
    await sub_nc.close()
    return lat


class Holding:
    """A listener that tracks which bulk devices (``PJSIP/000123``) are INUSE at a node."""

    def __init__(self) -> None:
        self.inuse: set[str] = set()

    def on_device(self, change: DeviceChange) -> None:
        if not change.device.startswith("PJSIP/0"):
            return
        if change.state is DeviceState.INUSE:
            self.inuse.add(change.device)
        else:
            self.inuse.discard(change.device)


async def sustained(a: Node, b: Node, devices: int) -> tuple[float, int]:
    """A publishes every device twice (two states); seconds until B holds all final states."""
    holding = Holding()
    b.listeners.append(make_listener(on_device=holding.on_device))
    began = time.perf_counter()
    total = 0
    for state in (DeviceState.NOT_INUSE, DeviceState.INUSE):
        for i in range(devices):
            a.publish_device(f"PJSIP/{i:06d}", state)
            total += 1
            if i % 2000 == 0:
                await asyncio.sleep(0)  # let the sender and receiver run: a real feed trickles
    await wait(lambda: len(holding.inuse) >= devices, 60, "sustained run at B")
    elapsed = time.perf_counter() - began
    b.listeners.pop()
    return elapsed, total


async def run(quick: bool) -> list[Row]:
    rows: list[Row] = []
    count = 500 if quick else 2000
    devices = 10_000 if quick else 100_000
    group = f"bench{os.getpid()}"
    with three_server_cluster() as cluster:
        a = node("bench-a", cluster, 0, group)
        b = node("bench-b", cluster, 2, group)
        await a.start()
        await b.start()
        await wait(lambda: len(b.members()) == 2, 10, "A and B in one view")
        for rate in (100.0, 1000.0):
            before = load()
            lat = await node_latency(a, b, count if rate > 100 else count // 4, rate)
            rows.append(
                (
                    f"node A(s1) -> node B(s3) latency @ {rate:.0f}/s",
                    f"p50 {pct(lat, 50) * 1e3:.2f} ms, p99 {pct(lat, 99) * 1e3:.2f} ms",
                    "",
                    before,
                )
            )
            before = load()
            raw = await raw_latency(cluster, count if rate > 100 else count // 4, rate)
            rows.append(
                (
                    f"raw nats-py s1 -> s3 latency @ {rate:.0f}/s",
                    f"p50 {pct(raw, 50) * 1e3:.2f} ms, p99 {pct(raw, 99) * 1e3:.2f} ms",
                    "",
                    before,
                )
            )

        before = load()
        elapsed, total = await sustained(a, b, devices)
        rows.append(
            (
                f"sustained, {total:,} changes A -> B (batched)",
                f"{total / elapsed:,.0f} changes/s ({elapsed:.2f} s)",
                ">= 40,000/s",
                before,
            )
        )

        before = load()
        c = node("bench-c", cluster, 1, group)
        holding = Holding()
        c.listeners.append(make_listener(on_device=holding.on_device))
        began = time.perf_counter()
        await c.start()
        joined = time.perf_counter() - began
        await wait(lambda: len(holding.inuse) >= devices, 30, "late joiner resync")
        resync = time.perf_counter() - began
        rows.append(
            (
                f"late joiner gets {devices:,} states (snapshot)",
                f"{resync:.2f} s (joined after {joined:.2f} s)",
                "< 2 s",
                before,
            )
        )
        await c.close()

        # The same late joiner as a PBX really is: its own process (decoding in parallel with
        # the senders' encoding, as on separate servers).
        before = load()
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.harness.nats",
            ",".join(cluster.urls_from(1)),
            group,
            str(devices),
            stdout=asyncio.subprocess.PIPE,
            cwd=REPO,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 90)
        result = json.loads(out.decode().strip().splitlines()[-1])
        rows.append(
            (
                f"late joiner in its own process gets {devices:,} states",
                f"{result['complete']:.2f} s (joined after {result['joined']:.2f} s)",
                "< 2 s",
                before,
            )
        )

        before = load()
        link_changes = a.stats.link_changes
        killed = time.perf_counter()
        cluster.servers[0].kill()
        await wait(
            lambda: a.stats.link_changes >= link_changes + 2 and a.stats.link_up,
            10,
            "failover",
        )
        failover = time.perf_counter() - killed
        a.publish_device("Custom:after-failover", DeviceState.BUSY)
        await wait(
            lambda: (
                b.devices.slots_of("Custom:after-failover").get(a.eid, (None, 0))[0]
                is DeviceState.BUSY
            ),
            10,
            "change after failover",
        )
        applied = time.perf_counter() - killed
        rows.append(
            (
                "failover: kill -9 of A's server -> A on another",
                f"{failover * 1e3:.0f} ms (next change at B after {applied * 1e3:.0f} ms)",
                "< 1 s",
                before,
            )
        )
        await a.close()
        await b.close()
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smaller counts (smoke test)")
    args = p.parse_args()
    reason = nats_missing_reason()
    if reason:
        print(f"bench_nats: {reason}", file=sys.stderr)
        return 2
    start_load = load()
    rows = asyncio.run(run(args.quick))
    server = subprocess.run(
        [os.environ.get("PBXMESH_NATS_SERVER", "nats-server"), "--version"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    print(f"\npbxmesh NATS benchmark ({server}; 3 servers on loopback; load at start {start_load})")
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    header = ("measurement", "result", "target", "load (1/5/15 min) before")
    widths = [max(w, len(h)) for w, h in zip(widths, header, strict=True)]
    for row in (header, tuple("-" * w for w in widths), *rows):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    print(f"load at end: {load()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
