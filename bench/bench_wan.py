"""Three sites over a slow WAN: pbxmesh over a NATS cluster with one server per site.

    python bench/bench_wan.py             # about a minute
    python bench/bench_wan.py --quick     # smaller counts, for a smoke test

Sites a, b and c each have one nats-server; the three are one cluster whose routes cross the
WAN: every route, and every client connection to another site's server, goes through
``tests/harness/wanproxy.py`` with the one-way delay of that pair of sites (a-b 20 ms, a-c
50 ms, b-c 80 ms). One pbxmesh node per site (in this process) connects to its own site's
server first, then to the others across the WAN. Measured, with the ``uptime`` load:

* cross-site latency of a device change per pair of sites, at 100 and 1,000 changes/s, against
  the injected one-way delay (target: delay + at most 2 ms at p50); again with 1 % of TCP
  chunks lost (each lost chunk late by one 200 ms retransmission, holding back what follows);
* failover: kill -9 of site a's server; time until a's node is on another site's server, and
  until its next change is applied at site c;
* a whole site cut off (c), silently: time until c's states leave the lamps of a and b (and
  theirs leave c), then healed: time until they are back everywhere.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_corosync import Worker  # noqa: E402

from pbxmesh.eid import EID  # noqa: E402
from pbxmesh.node import Node, NodeConfig  # noqa: E402
from pbxmesh.states import DeviceState  # noqa: E402
from pbxmesh.transport.nats import NatsConfig, NatsTransport  # noqa: E402
from tests.harness.nats import NatsServer, free_ports, nats_missing_reason  # noqa: E402

SITES = ("a", "b", "c")
DELAY = {("a", "b"): 0.020, ("a", "c"): 0.050, ("b", "c"): 0.080}
Row = tuple[str, str, str, str]


def delay(x: str, y: str) -> float:
    return DELAY[(x, y) if x < y else (y, x)]


def load() -> str:
    try:
        out = subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout
        return out.split("load average:")[1].strip()
    except (OSError, subprocess.CalledProcessError, IndexError):
        return "?"


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(p / 100 * len(s)))]


async def wait(pred: object, within: float, what: str) -> float:
    began = time.perf_counter()
    while not pred():  # type: ignore[operator]
        if time.perf_counter() - began > within:
            raise SystemExit(f"bench_wan: timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.001)
    return time.perf_counter() - began


class Wan:
    """The servers, the proxy process and its commands."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        ports = iter(free_ports(3 * 3 + 12 + 1))
        # Every route and client connection must cross the proxy. A server tells the others
        # about its routes (gossip); they would dial its real cluster port, bypassing the WAN.
        # So each server advertises a port nobody listens on: those implicit routes fail once
        # and are not retried, the explicit ones through the proxy stay. Likewise clients are
        # not told the servers' real client ports (no_advertise).
        nowhere = next(ports)
        cluster_conf = f"  advertise: 127.0.0.1:{nowhere}\n  no_advertise: true\n"
        self.servers: dict[str, NatsServer] = {}
        cluster_ports = {s: next(ports) for s in SITES}
        client_ports = {s: next(ports) for s in SITES}
        http_ports = {s: next(ports) for s in SITES}
        links = []
        #: (from site, to site) -> the proxy port that reaches to's route / client port
        self.route_via: dict[tuple[str, str], int] = {}
        self.client_via: dict[tuple[str, str], int] = {}
        for x in SITES:
            for y in SITES:
                if x == y:
                    continue
                pairs = ((self.route_via, cluster_ports), (self.client_via, client_ports))
                for table, target in pairs:
                    port = next(ports)
                    table[(x, y)] = port
                    links.append(
                        {"listen": port, "target": target[y], "delay": delay(x, y), "sites": [x, y]}
                    )
        for s in SITES:
            d = workdir / s
            d.mkdir()
            self.servers[s] = NatsServer(
                f"site-{s}",
                d,
                client_ports[s],
                http_ports[s],
                cluster_port=cluster_ports[s],
                routes=[self.route_via[(s, y)] for y in SITES if y != s],
                jetstream=False,
                cluster_conf=cluster_conf,
            )
        spec = workdir / "wan.json"
        spec.write_text(json.dumps(links))
        self.proxy = subprocess.Popen(
            [sys.executable, "-m", "tests.harness.wanproxy", str(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        assert self.proxy.stdout is not None
        if self.proxy.stdout.readline().strip() != "ready":
            raise SystemExit("bench_wan: the WAN proxy did not start")

    def command(self, line: str) -> None:
        assert self.proxy.stdin is not None and self.proxy.stdout is not None
        self.proxy.stdin.write(line + "\n")
        self.proxy.stdin.flush()
        self.proxy.stdout.readline()

    def urls(self, site: str) -> tuple[str, ...]:
        own = self.servers[site].url
        return (
            own,
            *(f"nats://127.0.0.1:{self.client_via[(site, y)]}" for y in SITES if y != site),
        )

    def start(self) -> None:
        for s in self.servers.values():
            s.start()
        deadline = time.monotonic() + 30
        while not all(s.num_routes() >= 2 for s in self.servers.values()):
            if time.monotonic() > deadline:
                raise SystemExit("bench_wan: routes across the WAN did not come up")
            time.sleep(0.1)
        self.check_routes()

    def check_routes(self) -> None:
        """Fail if any route bypasses the proxy (its remote port is a server's own)."""
        own = {s.cluster_port for s in self.servers.values()}
        for name, server in self.servers.items():
            status, body = server._get("/routez")
            for route in json.loads(body).get("routes", []) if status == 200 else []:
                if route.get("port") in own:
                    raise SystemExit(f"bench_wan: a route of site {name} bypasses the WAN proxy")

    def close(self) -> None:
        for s in self.servers.values():
            s.stop()
        with contextlib.suppress(Exception):
            self.command("quit")
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proxy.wait(5)
        if self.proxy.poll() is None:
            self.proxy.kill()


def make_node(wan: Wan, site: str, group: str) -> Node:
    config = NatsConfig(name=f"pbx-{site}", group=group, servers=wan.urls(site), randomize=False)
    return Node(NodeConfig(name=f"pbx-{site}", eid=EID.generate()), NatsTransport(config))


class Local:
    """Worker commands run here, on loopback: the sites differ only by the proxy between them."""

    def command(self, i: int, *cmd: str) -> list[str]:
        return list(cmd)


class Sites:
    """One bench worker process per site (a real pbxmesh Node each, as in production)."""

    def __init__(self, wan: Wan, group: str) -> None:
        opts = argparse.Namespace(
            batch_delay=0.0, max_items=1000, frame_interval=0.001, profile="", trace=""
        )
        self.workers = {
            s: Worker(
                Local(),
                k + 1,
                "node",
                group,
                opts,
                extra=("--transport", "nats", "--servers", ",".join(wan.urls(s))),
            )
            for k, s in enumerate(SITES)
        }

    def __enter__(self) -> Sites:
        for w in self.workers.values():
            w.wait("ready", 60)
        deadline = time.monotonic() + 30
        while any(w.ask("status", "status")["members"] < 3 for w in self.workers.values()):
            if time.monotonic() > deadline:
                raise SystemExit("bench_wan: the three sites' nodes do not see each other")
            time.sleep(0.1)
        return self

    def __exit__(self, *exc: object) -> None:
        for w in self.workers.values():
            w.close()

    def latency(self, src: str, dst: list[str], count: int, rate: float) -> list[list[float]]:
        """Seconds from ``src`` asserting a change to each of ``dst`` holding it."""
        for w in self.workers.values():
            w.ask("dump", "dump")  # discard earlier receipts
        pub = self.workers[src].ask(
            "publish", "published", timeout=count / rate * 5 + 60, rate=rate, count=count
        )
        first, stamps = pub["first"], pub["stamps"]
        lat: list[list[float]] = []
        deadline = time.monotonic() + 30
        for y in dst:
            got: dict[int, int] = {}
            while len(got) < count:
                dump = self.workers[y].ask("dump", "dump")
                got.update(zip(dump["seq"], dump["t"], strict=True))
                if len(got) < count:
                    if time.monotonic() > deadline:
                        raise SystemExit(f"bench_wan: {count - len(got)} changes lost {src}->{y}")
                    time.sleep(0.2)
            lat.append([(got[first + k] - t) / 1e9 for k, t in enumerate(stamps)])
        return lat


def holds(node: Node, origin: EID, device: str) -> bool:
    return origin in node.devices.slots_of(device)


async def run(quick: bool) -> list[Row]:
    rows: list[Row] = []
    count = 300 if quick else 1500
    group = f"wan{os.getpid()}"
    workdir = Path(tempfile.mkdtemp(prefix="pbxm-wan-"))
    wan = Wan(workdir)
    try:
        wan.start()

        def measure(
            sites: Sites, src: str, dst: list[str], rate: float, n: int, note: str, wan_on: bool
        ) -> None:
            """Rows of ``src``'s changes at ``rate`` seen at each of ``dst``, with the load."""
            before = load()
            lat = sites.latency(src, dst, n, rate)
            for k, y in enumerate(dst):
                p50, p99 = pct(lat[k], 50) * 1e3, pct(lat[k], 99) * 1e3
                if wan_on:
                    d = delay(src, y) * 1e3
                    label = f"{src} -> {y}, {d:.0f} ms one way, {note}"
                    result = f"p50 {p50:.1f} ms (+{p50 - d:.1f}), p99 {p99:.1f} ms"
                    target = "p50 <= delay + 2 ms" if "loss" not in note else ""
                else:
                    label = f"{src} -> {y}, no delay (the stack alone), {note}"
                    result, target = f"p50 {p50:.1f} ms, p99 {p99:.1f} ms", ""
                rows.append((label, result, target, before))

        # Latency: one process per site. A source's changes are fresh devices for its
        # receivers, so each source gets a group of its own.
        for src, dst in (("a", ["b", "c"]), ("b", ["c"])):
            with Sites(wan, f"{group}-{src}") as sites:
                # first from a, what the stack costs without any WAN delay: pbxmesh,
                # nats-server and the proxy itself (a Python process of its own)
                for wan_on in (False, True) if src == "a" else (True,):
                    wan.command(f"delay {int(wan_on)}")
                    for rate in (100.0, 1000.0):
                        n = count // 5 if rate == 100 else count
                        measure(sites, src, dst, rate, n, f"{rate:.0f}/s", wan_on)
                if src == "a":
                    wan.command("loss 0.01 0.2")
                    measure(sites, src, dst, 100.0, count // 3, "100/s, 1 % loss", True)
                    wan.command("loss 0 0.2")

        nodes = {s: make_node(wan, s, group) for s in SITES}
        for n in nodes.values():
            await n.start()
        await wait(lambda: all(len(n.members()) == 3 for n in nodes.values()), 30, "3 members")
        a, b, c = nodes["a"], nodes["b"], nodes["c"]

        # a whole site cut off, silently, then healed
        for i in range(50):
            c.publish_device(f"Custom:c-{i}", DeviceState.INUSE)
            a.publish_device(f"Custom:a-{i}", DeviceState.INUSE)
        await wait(
            lambda: holds(a, c.eid, "Custom:c-49") and holds(c, a.eid, "Custom:a-49"), 10, "seed"
        )
        before = load()
        cut = time.perf_counter()
        wan.command("cut c")
        gone_ab = await wait(
            lambda: not holds(a, c.eid, "Custom:c-0") and not holds(b, c.eid, "Custom:c-0"),
            30,
            "c's states gone at a and b",
        )
        gone_c = await wait(lambda: not holds(c, a.eid, "Custom:a-0"), 30, "a's states gone at c")
        gone_c += gone_ab
        healed = time.perf_counter()
        wan.command("heal c")
        back = await wait(
            lambda: holds(a, c.eid, "Custom:c-49") and holds(b, c.eid, "Custom:c-49")
            and holds(c, a.eid, "Custom:a-49"),
            60,
            "states back after the heal",
        )  # fmt: skip
        rows.append(
            (
                "site c cut off: c's states leave a and b / a's leave c",
                f"{gone_ab:.2f} s / {gone_c:.2f} s",
                "failure_timeout 2.5 s + heartbeat",
                before,
            )
        )
        rows.append(("site c healed: every state back everywhere", f"{back:.2f} s", "", load()))
        del cut, healed

        # failover: site a's server dies; a's node moves across the WAN
        before = load()
        changes = a.stats.link_changes
        killed = time.perf_counter()
        wan.servers["a"].kill()
        await wait(lambda: a.stats.link_changes >= changes + 2 and a.stats.link_up, 20, "failover")
        moved = time.perf_counter() - killed
        a.publish_device("Custom:after-failover", DeviceState.BUSY)
        await wait(lambda: holds(c, a.eid, "Custom:after-failover"), 20, "change after failover")
        applied = time.perf_counter() - killed
        lost = [s for s in ("b", "c") if not holds(nodes[s], a.eid, "Custom:a-0")]
        rows.append(
            (
                "failover: kill -9 of site a's server -> a's node on b's (20 ms away)",
                f"{moved * 1e3:.0f} ms; next change at c after {applied * 1e3:.0f} ms; "
                f"a's states dropped meanwhile at {lost or 'no site'}",
                "< 1 s",
                before,
            )
        )
        for n in nodes.values():
            await n.close()
    finally:
        wan.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smaller counts (smoke test)")
    args = p.parse_args()
    reason = nats_missing_reason()
    if reason:
        print(f"bench_wan: {reason}", file=sys.stderr)
        return 2
    start_load = load()
    rows = asyncio.run(run(args.quick))
    print(
        "\npbxmesh over a 3-site WAN (NATS cluster, one server per site; "
        f"load at start {start_load})"
    )
    header = ("measurement", "result", "target", "load (1/5/15 min) before")
    widths = [max(len(r[i]) for r in (*rows, header)) for i in range(4)]
    for row in (header, tuple("-" * w for w in widths), *rows):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    print(f"load at end: {load()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
