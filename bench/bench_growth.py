"""Growth: how the cost of pbxmesh grows with nodes (3, 5, 8) and devices (1k, 10k, 100k).

    python bench/bench_growth.py --transport corosync       # a few minutes (root, netns)
    python bench/bench_growth.py --transport nats
    python bench/bench_growth.py --transport corosync --nodes 3,5 --devices 1000,10000

It wraps bench_corosync.py's worker (one process per node, a real pbxmesh Node on its
transport, driven over stdin/stdout): over Corosync the harness's netns cluster of ``n`` nodes
(knet aes256/sha256, token 1000 ms), over NATS a three-server cluster on loopback with the
nodes spread over the servers. For each number of nodes, the store grows in steps; at each
step node 1 asserts the new devices and, once every node holds them:

* **fill rate**: the new devices over the time until every other node holds them (sustained
  rate, batched by the node's sender);
* **latency** p50/p99 of single changes at 100/s from node 1, pooled over every other node;
* **resync**: node 2's process is killed and a new one joins: from the start of its join
  (``Node.start()`` called) until it holds every device;
* **memory**: RSS of every node's process (mean and max), **CPU**: every node process's and
  the engine's CPU seconds over the step, per node;
* **failure detection**, once per cluster size: over Corosync node n's link is cut (the others
  see it gone after the token timeout), over NATS node n's process is frozen (heartbeats stop).

Every wait is bounded; a step that does not finish in its bound is reported as such and the
size stops there (that is where it stops scaling on this machine).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import signal
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_corosync import Worker, _pct, _uptime  # noqa: E402

LAT_RATE, LAT_SECONDS = 100.0, 5.0


class Local:
    """Runs worker commands in the current netns (NATS on loopback), beside ``servers``."""

    def __init__(self, servers: list[Any]) -> None:
        self.servers = servers

    def command(self, i: int, *cmd: str) -> list[str]:
        return list(cmd)


def proc_stats(pid: int | None) -> tuple[float, float]:
    """(RSS in MB, CPU seconds) of a process; zeros if gone."""
    if pid is None:
        return 0.0, 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        rss = int(fields[21]) * os.sysconf("SC_PAGE_SIZE") / 2**20
        return rss, cpu
    except (OSError, IndexError, ValueError):
        return 0.0, 0.0


def engine_pids(transport: str, cluster: Any) -> list[int | None]:
    if transport == "corosync":
        return [inst.pid for inst in cluster.nodes.values()]
    return [s.pid for s in cluster.servers]


def opts() -> argparse.Namespace:
    return argparse.Namespace(
        batch_delay=0.0, max_items=1000, frame_interval=0.001, profile="", trace=""
    )


def wait_all(workers: dict[int, Worker], want: int, within: float, skip: int = 1) -> float | None:
    """Seconds until every worker but ``skip`` holds ``want`` devices; None past ``within``."""
    began = time.monotonic()
    while True:
        counts = [w.ask("status", "status")["devices"] for i, w in workers.items() if i != skip]
        if min(counts) >= want:
            return time.monotonic() - began
        if time.monotonic() - began > within:
            return None
        time.sleep(0.05)


def latency(workers: dict[int, Worker]) -> tuple[float, float, int]:
    count = int(LAT_RATE * LAT_SECONDS)
    for w in workers.values():
        w.ask("dump", "dump")
    pub = workers[1].ask("publish", "published", timeout=120, rate=LAT_RATE, count=count)
    time.sleep(0.5)
    first, stamps = pub["first"], pub["stamps"]
    lat: list[float] = []
    lost = 0
    workers[1].ask("dump", "dump")
    for i, w in workers.items():
        if i == 1:
            continue
        dump = w.ask("dump", "dump")
        got = dict(zip(dump["seq"], dump["t"], strict=True))
        for k, t_pub in enumerate(stamps):
            t = got.get(first + k)
            if t is None:
                lost += 1
            else:
                lat.append((t - t_pub) / 1e6)
    lat.sort()
    return _pct(lat, 50), _pct(lat, 99), lost


def run_size(transport: str, n: int, steps: list[int], extra_for: Any, cluster: Any) -> list[str]:
    rows: list[str] = []
    group = f"pbxm-growth-{secrets.token_hex(3)}"
    o = opts()
    workers: dict[int, Worker] = {}
    try:
        for i in range(1, n + 1):
            workers[i] = Worker(cluster, i, "node", group, o, extra=extra_for(i))
        for w in workers.values():
            w.wait("ready", 120)
        deadline = time.monotonic() + 60
        while any(w.ask("status", "status")["members"] < n for w in workers.values()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{n} workers do not see each other")
            time.sleep(0.1)
        held = 0  # R/ devices asserted by node 1
        lat_published = 0
        for d in steps:
            cpu0 = [proc_stats(w.proc.pid)[1] for w in workers.values()]
            eng0 = sum(proc_stats(p)[1] for p in engine_pids(transport, cluster))
            t0 = time.monotonic()
            new = d - held
            workers[1].ask("fill", "filled", timeout=600, count=new, start=held)
            want = d + min(lat_published, 50_000)
            took = wait_all(workers, want, 300)
            if took is None:
                rows.append(f"| {transport} | {n} | {d:,} | not all held after 300 s |")
                print(rows[-1], flush=True)
                break
            fill_s = time.monotonic() - t0
            held = d
            p50, p99, lost = latency(workers)
            lat_published += int(LAT_RATE * LAT_SECONDS)
            stats = [proc_stats(w.proc.pid) for w in workers.values()]
            cpu = sum(s[1] for s in stats) - sum(cpu0)
            eng = sum(proc_stats(p)[1] for p in engine_pids(transport, cluster)) - eng0
            rss = [s[0] for s in stats]
            # resync: node 2's process killed, a new one joins
            workers[2].kill()
            time.sleep(0.5)
            workers[2] = Worker(cluster, 2, "node", group, o, expect=d, extra=extra_for(2))
            ready = workers[2].wait("ready", 120)
            try:
                done = workers[2].wait("resynced", 120)
                resync = f"{(done['t'] - ready['t_start']) / 1e9:.2f}"
            except RuntimeError:
                resync = "> 120"
            rows.append(
                f"| {transport} | {n} | {d:,} | {new / fill_s:,.0f}"
                f" ({fill_s:.1f} s) | {p50:.2f} / {p99:.2f}{' lost ' + str(lost) if lost else ''}"
                f" | {resync} | {sum(rss) / len(rss):.0f} / {max(rss):.0f} "
                f"| {cpu / n:.1f} | {eng / n:.1f} | {_uptime().split(',')[0]} |"
            )
            print(rows[-1], flush=True)
        # failure detection: node n cut off (corosync) or frozen (nats)
        before = workers[1].ask("status", "status")["members"]
        t0 = time.monotonic()
        frozen = None
        if transport == "corosync":
            cluster.link_down(n)
        else:
            frozen = workers[n].proc.pid
            os.kill(frozen, signal.SIGSTOP)
        try:
            while workers[1].ask("status", "status")["members"] >= before:
                if time.monotonic() - t0 > 30:
                    break
                time.sleep(0.02)
            detect = time.monotonic() - t0
        finally:
            if transport == "corosync":
                cluster.link_up(n)
            elif frozen is not None:
                os.kill(frozen, signal.SIGCONT)
        rows.append(f"| {transport} | {n} | failure of node {n} seen by node 1 | {detect:.2f} s |")
        print(rows[-1], flush=True)
    finally:
        for w in workers.values():
            w.kill()
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--transport", choices=("corosync", "nats"), default="corosync")
    p.add_argument("--nodes", default="3,5,8")
    p.add_argument("--devices", default="1000,10000,100000")
    args = p.parse_args()
    sizes = [int(x) for x in args.nodes.split(",")]
    steps = [int(x) for x in args.devices.split(",")]
    print(f"# pbxmesh growth over {args.transport}, {time.strftime('%Y-%m-%d %H:%M %Z')}; "
          f"load {_uptime()}")  # fmt: skip
    print("| engine | nodes | devices | fill rate /s (time) | latency p50 / p99 ms @100/s "
          "| resync s | RSS MB mean / max | node CPU s per node | engine CPU s per node "
          "| load 1 min |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for n in sizes:
        if args.transport == "corosync":
            from tests.harness.corosync import three_node_cluster

            with three_node_cluster(token_ms=1000, size=n) as cluster:
                run_size("corosync", n, steps, lambda i: (), cluster)
        else:
            from tests.harness.nats import three_server_cluster

            with three_server_cluster() as cluster:
                local = Local(cluster.servers)

                def extra(i: int, c: Any = cluster) -> tuple[str, ...]:
                    urls = ",".join(c.urls_from((i - 1) % 3))
                    return ("--transport", "nats", "--servers", urls)

                with contextlib.suppress(KeyboardInterrupt):
                    run_size("nats", n, steps, extra, local)
    print(f"load at end: {_uptime()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
