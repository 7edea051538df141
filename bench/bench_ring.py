"""Latency across the ring bridge, beside res_corosync's own ring-internal latency, in one run.

    python bench/bench_ring.py [--changes 200] [--rate 20]   # root, corosync, nats, Asterisk

The setup is the test suite's (tests/harness/ring.py): three real Asterisks on a res_corosync
ring, the pbxmesh bridge on a fourth corosync node, and a second site (pbxmesh over NATS,
linked over AMI to its own Asterisk), all in network namespaces of their own. This process
sends ``Setvar DEVICE_STATE(Custom:...)`` to one Asterisk and timestamps the
``DeviceStateChange`` another raises for it: one clock, end to end, a new device per change.

* ``ring → site``: ring Asterisk 1 → site Asterisk (the counterpart ``Custom:remote-...``);
* ``site → ring``: site Asterisk → ring Asterisk 2 (``Custom:...`` itself);
* ``res_corosync``: ring Asterisk 1 → ring Asterisk 2, Asterisk's own ring, no pbxmesh.

Changes are paced (``--rate`` per second) and measured one by one: this is the latency of a
lamp, not a throughput test.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pbxmesh.links.ami.counterparts import counterpart_name
from tests.harness.asterisk import AMI_SECRET, AMI_USER
from tests.harness.nodes import _connect
from tests.harness.ring import Ring, asterisk_ring


class Ami:
    """A minimal AMI session opened inside a network namespace: actions and events."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.waiters: dict[str, asyncio.Future[float]] = {}
        self.task: asyncio.Task[None] | None = None
        self.n = 0

    @classmethod
    async def open(cls, netns: str, port: int) -> Ami:
        sock = _connect(netns, "127.0.0.1", port, 10)
        reader, writer = await asyncio.open_connection(sock=sock)
        self = cls(reader, writer)
        await reader.readline()
        self.send("Login", Username=AMI_USER, Secret=AMI_SECRET, Events="system,call")
        self.task = asyncio.create_task(self._read())
        return self

    def send(self, action: str, **fields: object) -> None:
        self.n += 1
        lines = [f"Action: {action}", f"ActionID: {self.n}"]
        lines += [f"{k}: {v}" for k, v in fields.items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())

    async def _read(self) -> None:
        block: dict[str, str] = {}
        while line := await self.reader.readline():
            text = line.decode(errors="replace").rstrip("\r\n")
            if text:
                key, _, value = text.partition(": ")
                block.setdefault(key, value)
                continue
            if block.get("Event") == "DeviceStateChange":
                fut = self.waiters.pop(block.get("Device", ""), None)
                if fut is not None and not fut.done():
                    fut.set_result(time.perf_counter())
            block = {}

    def expect(self, device: str) -> asyncio.Future[float]:
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.waiters[device] = fut
        return fut

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        self.writer.close()


async def measure(src: Ami, dst: Ami, tag: str, seen_as: str, n: int, rate: float) -> list[float]:
    out = []
    for i in range(n):
        device = f"Custom:{tag}{i}"
        fut = dst.expect(counterpart_name(device) if seen_as == "counterpart" else device)
        t0 = time.perf_counter()
        src.send("Setvar", Variable=f"DEVICE_STATE({device})", Value="INUSE")
        try:
            async with asyncio.timeout(5):
                out.append((await fut) - t0)
        except TimeoutError:
            print(f"  {tag}: change {i} not seen within 5 s", file=sys.stderr)
        await asyncio.sleep(1 / rate)
    return out


def row(name: str, samples: list[float], n: int) -> str:
    if not samples:
        return f"{name:<14} no samples"
    ms = sorted(s * 1000 for s in samples)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    return (
        f"{name:<14} {len(ms):>4}/{n:<4} p50 {statistics.median(ms):7.2f} ms   "
        f"p99 {p99:7.2f} ms   max {ms[-1]:7.2f} ms"
    )


async def run(ring: Ring, n: int, rate: float) -> list[str]:
    a1 = await Ami.open(ring.cluster.netns(1), ring.asterisks[1].ami_port)
    a2 = await Ami.open(ring.cluster.netns(2), ring.asterisks[2].ami_port)
    site = await Ami.open(ring.netns, ring.site_pbx.ami_port)
    try:
        await asyncio.sleep(0.5)  # logins answered
        results = {
            "ring → site": await measure(a1, site, "br", "counterpart", n, rate),
            "site → ring": await measure(site, a2, "bs", "device", n, rate),
            "res_corosync": await measure(a1, a2, "bi", "device", n, rate),
        }
    finally:
        for a in (a1, a2, site):
            await a.close()
    return [row(name, s, n) for name, s in results.items()]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--changes", type=int, default=200, help="changes per direction")
    p.add_argument("--rate", type=float, default=20.0, help="changes per second")
    args = p.parse_args()
    with asterisk_ring() as ring:
        lines = asyncio.run(run(ring, args.changes, args.rate))
    print("Setvar on one Asterisk → DeviceStateChange on another (one clock, paced)")
    for line in lines:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
