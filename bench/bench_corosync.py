"""Corosync benchmark: node-to-node latency, sustained rate, resync, vs raw CPG. Prints a table.

    python bench/bench_corosync.py              # full run (needs root, corosync, netns)
    python bench/bench_corosync.py --quick      # short phases, for a smoke test
    python bench/bench_corosync.py --batch-delay 0.001 --max-items 2000   # node batching

Setup: the test harness's 3-node corosync cluster (tests/harness/corosync.py: one netns per
node, knet aes256/sha256, token 1000 ms, ``sched_rr: no``). In each netns a *worker* process
(this file with ``--worker``) runs a :class:`pbxmesh.node.Node` over
:class:`~pbxmesh.transport.corosync.CorosyncTransport` — or, for the raw CPG comparison, the
transport alone — and talks JSON lines with the driver over stdin/stdout.

Clock: every timestamp is ``time.monotonic_ns()`` (CLOCK_MONOTONIC). Network namespaces do not
virtualise it, so the publisher on node 1 and the receivers on nodes 2 and 3 read one machine
clock and their differences are one-way latencies, with no clock skew. The publisher stamps a
change right before ``Node.publish_device`` (which applies it locally, queues it, and the
node's sender batches it into a CHANGES frame); a receiver stamps it in its node listener's
``on_device``, i.e. once decoded and applied to its store. Latency = receive - publish, pooled
over both receivers. Raw CPG: 100-byte messages stamped before ``transport.send``, and on
arrival in the transport's ``events()`` stream.

Devices: latency runs cycle through a pool of 200,000 names ``L/<n>`` whose state alternates
INUSE / NOT_INUSE each lap, so every publish is a visible change and each receiver can tell
which publish an ``on_device`` belongs to (the k-th change of ``L/n`` is publish k*POOL+n).

Phases: raw CPG at 100 msg/s; node at 100 and 1,000 changes/s; node at rising rates until p99
exceeds 20 ms, a change is lost, or the publisher cannot keep the rate (twice in a row: a
failed step is tried once more, as one stall on a shared host can spoil a window); then a
fresh set of nodes: node 1 asserts 100,000 devices, node 2 is restarted (process killed, new
process, same group) and the time from its join to holding all 100,000 is measured.

Where the time goes: ``--profile DIR`` makes each worker write cProfile stats, ``--trace DIR``
log every frame sent and received (with times), and each row shows the worst garbage-collector
pause seen in the three workers and corosync's CPU time.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import gc
import json
import os
import queue
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
POOL = 50_000

# == worker: runs inside one node's netns ========================================================


def _out(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


async def _worker(args: argparse.Namespace) -> None:
    from pbxmesh.eid import EID
    from pbxmesh.node import Node, NodeConfig, make_listener
    from pbxmesh.states import DeviceState
    from pbxmesh.store import DeviceChange
    from pbxmesh.transport.base import Message
    from pbxmesh.transport.corosync import CorosyncConfig, CorosyncTransport

    loop = asyncio.get_running_loop()
    cmds: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    def read_stdin() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(cmds.put_nowait, json.loads(line))
        loop.call_soon_threadsafe(cmds.put_nowait, {"op": "exit"})

    threading.Thread(target=read_stdin, daemon=True).start()
    gc_pauses: list[int] = []
    gc_start = [0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_start[0] = time.monotonic_ns()
        else:
            gc_pauses.append(time.monotonic_ns() - gc_start[0])

    gc.callbacks.append(on_gc)
    t_process = args.t0
    transport: Any
    if args.transport == "nats":  # bench_growth.py runs the same worker over NATS
        from pbxmesh.transport.nats import NatsConfig, NatsTransport

        servers = tuple(args.servers.split(","))
        transport = NatsTransport(
            NatsConfig(name=args.name, group=args.group, servers=servers, randomize=False)
        )
    else:
        transport = CorosyncTransport(CorosyncConfig(group=args.group))
    # Receipts in arrays of machine ints: nothing the garbage collector has to traverse, so the
    # measurement itself does not cause collections (a list of tuples did, of 100-200 ms).
    recv_seq, recv_t = array.array("q"), array.array("q")
    node: Node | None = None
    pump: asyncio.Task[None] | None = None
    resync = {"want": args.expect, "got": 0}

    t_start = time.monotonic_ns()
    if args.mode == "raw":
        await transport.start()

        async def pump_raw() -> None:
            async for ev in transport.events():
                if isinstance(ev, Message) and ev.sender != transport.self_id:
                    recv_t.append(time.monotonic_ns())
                    recv_seq.append(int.from_bytes(ev.data[:8], "big"))

        pump = asyncio.create_task(pump_raw())
    else:
        counts = array.array("q", bytes(8 * POOL))

        def on_device(change: DeviceChange) -> None:
            t = time.monotonic_ns()
            d = change.device
            if d[0] == "L":
                idx = int(d[2:])
                c = counts[idx]
                counts[idx] = c + 1
                recv_seq.append(c * POOL + idx)
                recv_t.append(t)
            elif d[0] == "R" and resync["want"]:
                resync["got"] += 1
                if resync["got"] == resync["want"]:
                    _out({"ev": "resynced", "t": t})

        node = Node(
            NodeConfig(
                name=args.name,
                eid=EID.generate(),
                batch_delay=args.batch_delay,
                frame_interval=args.frame_interval,
                max_items_per_frame=args.max_items,
            ),
            transport,
        )
        node.listeners.append(make_listener(on_device=on_device))
        if args.trace:
            _trace_frames(node, transport, args)
        await node.start()
    # t_start: the join begins; t_joined: start() returned (over NATS it gathers the members
    # first, so a small resync can be complete, and "resynced" sent, before "ready")
    _out(
        {"ev": "ready", "t_process": t_process, "t_start": t_start, "t_joined": time.monotonic_ns()}
    )

    seq = 0
    states = (DeviceState.INUSE, DeviceState.NOT_INUSE)
    pad = b"x" * 92
    while True:
        cmd = await cmds.get()
        op = cmd["op"]
        if op == "publish":
            rate, count = float(cmd["rate"]), int(cmd["count"])
            first = seq
            stamps = array.array("q")
            start = time.monotonic_ns()
            period_ns = 1e9 / rate
            while seq - first < count:
                due = min(count, int((time.monotonic_ns() - start) / period_ns) + 1)
                while seq - first < due:
                    stamps.append(time.monotonic_ns())
                    if node is not None:
                        idx = seq % POOL
                        node.publish_device(f"L/{idx}", states[(seq // POOL) % 2])
                    else:
                        await transport.send(seq.to_bytes(8, "big") + pad)
                    seq += 1
                next_due = start + (seq - first) * period_ns
                await asyncio.sleep(max(0.0, (next_due - time.monotonic_ns()) / 1e9))
            took = (time.monotonic_ns() - start) / 1e9
            if node is not None:
                while node.queue_depth:  # noqa: ASYNC110 (the node exposes no event)
                    await asyncio.sleep(0.001)
            _out({"ev": "published", "first": first, "stamps": stamps.tolist(), "seconds": took})
        elif op == "fill":
            assert node is not None
            count, start_at = int(cmd["count"]), int(cmd.get("start", 0))
            for i in range(start_at, start_at + count):
                node.publish_device(f"R/{i}", DeviceState.INUSE)
                if i % 1000 == 999:
                    await asyncio.sleep(0)
            while node.queue_depth:  # noqa: ASYNC110 (the node exposes no event)
                await asyncio.sleep(0.005)
            _out({"ev": "filled", "devices": len(node.devices)})
        elif op == "dump":
            pauses = sorted(gc_pauses)
            _out(
                {
                    "ev": "dump",
                    "seq": recv_seq.tolist(),
                    "t": recv_t.tolist(),
                    "gc": [len(pauses), sum(pauses) / 1e6, pauses[-1] / 1e6 if pauses else 0.0],
                }
            )
            del recv_seq[:], recv_t[:]
            gc_pauses.clear()
        elif op == "status":
            _out(
                {
                    "ev": "status",
                    "devices": len(node.devices) if node else 0,
                    "members": len(node.members()) if node else 0,
                }
            )
        elif op == "exit":
            break
    if node is not None:
        await node.close()
    else:
        await transport.close()
        if pump is not None:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
    _out({"ev": "bye"})


def _trace_frames(node: Any, transport: Any, args: argparse.Namespace) -> None:
    """With --trace: log every frame sent (start, end, bytes) and received (time, bytes)."""
    log = open(os.path.join(args.trace, f"{args.name}-{os.getpid()}.frames"), "w")  # noqa: SIM115
    send, on_message = transport.send, node._on_message

    async def traced_send(data: bytes) -> None:
        t = time.monotonic_ns()
        await send(data)
        log.write(f"S {t} {time.monotonic_ns()} {len(data)}\n")

    def traced_on_message(sender: str, data: bytes) -> None:
        t = time.monotonic_ns()
        on_message(sender, data)
        log.write(f"R {t} {time.monotonic_ns()} {len(data)} {sender}\n")

    transport.send = traced_send
    node._on_message = traced_on_message


def worker_main(args: argparse.Namespace) -> int:
    if args.profile:
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
        try:
            asyncio.run(_worker(args))
        finally:
            prof.disable()
            prof.dump_stats(os.path.join(args.profile, f"{args.name}-{os.getpid()}.prof"))
    else:
        asyncio.run(_worker(args))
    return 0


# == driver ======================================================================================


class Worker:
    """One worker process in a node's netns, driven by JSON lines."""

    #: events a worker sends unasked; one that comes while another is awaited is kept
    SPONTANEOUS = frozenset({"resynced"})

    def __init__(
        self,
        cluster: Any,
        i: int,
        mode: str,
        group: str,
        opts: argparse.Namespace,
        expect: int = 0,
        extra: tuple[str, ...] = (),
    ) -> None:
        self.name = f"pbx{i}"
        cmd = cluster.command(
            i,
            sys.executable,
            str(Path(__file__).resolve()),
            "--worker",
            "--mode",
            mode,
            "--group",
            group,
            "--name",
            self.name,
            "--batch-delay",
            str(opts.batch_delay),
            "--max-items",
            str(opts.max_items),
            "--frame-interval",
            str(opts.frame_interval),
            "--expect",
            str(expect),
            "--t0",
            str(time.monotonic_ns()),
            *(["--profile", opts.profile] if opts.profile else []),
            *(["--trace", opts.trace] if opts.trace else []),
            *extra,
        )
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True
        )
        self.lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.early: dict[str, dict[str, Any]] = {}
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(json.loads(line))
        self.lines.put(None)

    def send(self, **cmd: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        self.proc.stdin.flush()

    def wait(self, ev: str, timeout: float = 60.0) -> dict[str, Any]:
        if ev in self.early:
            return self.early.pop(ev)
        deadline = time.monotonic() + timeout
        while True:
            try:
                msg = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise RuntimeError(f"{self.name}: no {ev!r} within {timeout} s") from None
            if msg is None:
                raise RuntimeError(f"{self.name}: exited (code {self.proc.poll()}) before {ev!r}")
            if msg.get("ev") == ev:
                return msg
            if msg.get("ev") in self.SPONTANEOUS:
                self.early[msg["ev"]] = msg  # kept for a later wait()

    def ask(self, op: str, ev: str, timeout: float = 60.0, **kw: Any) -> dict[str, Any]:
        self.send(op=op, **kw)
        return self.wait(ev, timeout)

    def close(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                self.send(op="exit")
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def _pct(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(p / 100 * (len(sorted_values) - 1))))
    return sorted_values[k]


def _corosync_cpu(cluster: Any) -> float:
    """utime + stime of the three corosync daemons, in seconds."""
    total = 0
    for inst in cluster.nodes.values():
        pid = inst.pid
        if pid is None:
            continue
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _uptime() -> str:
    out = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout
    return out.strip().split("load average:")[-1].strip()


def measure(
    workers: dict[int, Worker], cluster: Any, rate: float, seconds: float
) -> dict[str, Any]:
    """Publish on node 1 at ``rate`` for ``seconds``; latencies at nodes 2 and 3 (ms)."""
    count = max(1, int(rate * seconds))
    for i in (1, 2, 3):
        workers[i].ask("dump", "dump")  # discard earlier receipts and GC counts
    cpu0 = _corosync_cpu(cluster)
    pub = workers[1].ask("publish", "published", timeout=seconds * 5 + 60, rate=rate, count=count)
    time.sleep(0.3 + min(2.0, seconds * 0.05))  # let the tail arrive
    cpu = _corosync_cpu(cluster) - cpu0
    gc_max = workers[1].ask("dump", "dump")["gc"][2]  # the publisher's own pauses count too
    first, stamps = pub["first"], pub["stamps"]
    lat: list[float] = []
    lost = 0
    for i in (2, 3):
        dump = workers[i].ask("dump", "dump")
        got = dict(zip(dump["seq"], dump["t"], strict=True))
        gc_max = max(gc_max, dump["gc"][2])
        for k, t_pub in enumerate(stamps):
            t = got.get(first + k)
            if t is None:
                lost += 1
            else:
                lat.append((t - t_pub) / 1e6)
    lat.sort()
    return {
        "rate": rate,
        "count": count,
        "achieved": count / pub["seconds"] if pub["seconds"] > 0 else float("inf"),
        "p50": _pct(lat, 50),
        "p99": _pct(lat, 99),
        "max": lat[-1] if lat else float("nan"),
        "lost": lost,
        "corosync_cpu": cpu,
        "wall": pub["seconds"],
        "gc_max_ms": gc_max,
        "load1": _uptime().split(",")[0],
    }


def start_workers(
    cluster: Any, mode: str, opts: argparse.Namespace
) -> tuple[dict[int, Worker], str]:
    group = f"pbxm-bench-{secrets.token_hex(3)}"
    workers: dict[int, Worker] = {}
    try:
        for i in (1, 2, 3):
            workers[i] = Worker(cluster, i, mode, group, opts)
            workers[i].wait("ready", 60)
        if mode == "node":
            deadline = time.monotonic() + 30
            while any(w.ask("status", "status")["members"] < 3 for w in workers.values()):
                if time.monotonic() > deadline:
                    raise RuntimeError("workers do not see each other")
                time.sleep(0.1)
        else:
            time.sleep(1.0)  # let the three joins settle
    except BaseException:
        for w in workers.values():
            w.kill()
        raise
    return workers, group


def resync_phase(cluster: Any, opts: argparse.Namespace, n: int) -> dict[str, float]:
    """Node 1 asserts ``n`` devices; node 2 is killed and a new process joins: its resync."""
    workers, group = start_workers(cluster, "node", opts)
    try:
        t0 = time.monotonic()
        workers[1].ask("fill", "filled", timeout=300, count=n)
        fill = time.monotonic() - t0
        deadline = time.monotonic() + 120
        while min(workers[i].ask("status", "status")["devices"] for i in (2, 3)) < n:
            if time.monotonic() > deadline:
                raise RuntimeError("nodes 2/3 never got node 1's devices")
            time.sleep(0.05)
        delivered = time.monotonic() - t0
        workers[2].kill()
        time.sleep(0.5)  # the others see PROCDOWN (about 10 ms) and drop its empty origin
        cpu0 = _corosync_cpu(cluster)
        workers[2] = Worker(cluster, 2, "node", group, opts, expect=n)
        ready = workers[2].wait("ready", 60)
        done = workers[2].wait("resynced", 120)
        cpu = _corosync_cpu(cluster) - cpu0
        return {
            "devices": n,
            "fill_publish_s": fill,
            "fill_delivered_s": delivered,
            "spawn_to_join_s": (ready["t_joined"] - ready["t_process"]) / 1e9,
            "join_to_all_s": (done["t"] - ready["t_joined"]) / 1e9,
            "spawn_to_all_s": (done["t"] - ready["t_process"]) / 1e9,
            "corosync_cpu_s": cpu,
        }
    finally:
        for w in workers.values():
            w.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--mode", default="node", choices=("node", "raw"), help=argparse.SUPPRESS)
    p.add_argument("--group", default="", help=argparse.SUPPRESS)
    p.add_argument("--name", default="", help=argparse.SUPPRESS)
    p.add_argument("--expect", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--t0", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--transport", default="corosync", help=argparse.SUPPRESS)
    p.add_argument("--servers", default="", help=argparse.SUPPRESS)
    p.add_argument("--quick", action="store_true", help="short phases (smoke test)")
    p.add_argument("--batch-delay", type=float, default=0.0, help="NodeConfig.batch_delay (s)")
    p.add_argument(
        "--frame-interval", type=float, default=0.001, help="NodeConfig.frame_interval (s)"
    )
    p.add_argument("--max-items", type=int, default=1000, help="NodeConfig.max_items_per_frame")
    p.add_argument("--profile", default="", help="directory: workers write cProfile stats")
    p.add_argument("--trace", default="", help="directory: workers log every frame sent/received")
    p.add_argument("--resync-devices", type=int, default=100_000, help="devices to resync")
    args = p.parse_args(argv)
    if args.worker:
        return worker_main(args)
    return driver(args)


STEP_RATES = (2_000, 5_000, 10_000, 15_000, 20_000, 25_000, 30_000, 40_000, 50_000)


def driver(args: argparse.Namespace) -> int:
    sys.path.insert(0, str(ROOT))
    from tests.harness.corosync import corosync_missing_reason, three_node_cluster

    reason = corosync_missing_reason(netns=True)
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    low_s, mid_s, step_s = (3.0, 2.0, 1.0) if args.quick else (10.0, 5.0, 3.0)
    date = time.strftime("%Y-%m-%d %H:%M %Z")
    load_before = _uptime()
    print(f"# pbxmesh corosync benchmark, {date}; load before: {load_before}", flush=True)
    rows: list[tuple[str, dict[str, Any]]] = []
    steps: list[dict[str, Any]] = []
    with three_node_cluster(token_ms=1000) as cluster:
        workers, _ = start_workers(cluster, "raw", args)
        try:
            rows.append(("raw CPG, 100 msg/s", measure(workers, cluster, 100, low_s)))
            _progress(rows[-1])
        finally:
            for w in workers.values():
                w.close()
        workers, _ = start_workers(cluster, "node", args)
        try:
            # warm-up lap: every pool device exists once, as on a PBX whose devices are known;
            # measured runs then change states only (no store growth)
            measure(workers, cluster, 25_000, POOL / 25_000)
            rows.append(("node, 100 changes/s", measure(workers, cluster, 100, low_s)))
            _progress(rows[-1])
            rows.append(("node, 1,000 changes/s", measure(workers, cluster, 1000, mid_s)))
            _progress(rows[-1])
            # A step passes if p99 <= 20 ms, nothing is lost and the publisher kept the rate.
            # On a shared host one scheduling stall of a few tens of ms inside a 3 s window is
            # enough to push p99 over, so a failed step is tried once more (both attempts are
            # reported); stepping stops when both attempts fail.
            for rate in STEP_RATES:
                passed = False
                for attempt in (1, 2):
                    r = measure(workers, cluster, rate, step_s)
                    r["ok"] = r["p99"] <= 20.0 and r["lost"] == 0 and r["achieved"] >= 0.95 * rate
                    r["attempt"] = attempt
                    steps.append(r)
                    _progress((f"step {rate}/s attempt {attempt} ok={r['ok']}", r))
                    if r["ok"]:
                        passed = True
                        break
                if not passed:
                    break
        finally:
            for w in workers.values():
                w.close()
        resync = resync_phase(cluster, args, 10_000 if args.quick else args.resync_devices)
    load_after = _uptime()
    _report(date, load_before, load_after, args, rows, steps, resync)
    return 0


def _progress(row: tuple[str, dict[str, Any]]) -> None:
    name, r = row
    print(
        f"  {name}: p50 {r['p50']:.2f} ms, p99 {r['p99']:.2f} ms, max {r['max']:.1f} ms, "
        f"achieved {r['achieved']:.0f}/s, lost {r['lost']}, corosync cpu {r['corosync_cpu']:.1f} s"
        f" in {r['wall']:.1f} s, worst GC pause {r['gc_max_ms']:.1f} ms",
        flush=True,
    )


def _report(
    date: str,
    load_before: str,
    load_after: str,
    args: argparse.Namespace,
    rows: list[tuple[str, dict[str, Any]]],
    steps: list[dict[str, Any]],
    resync: dict[str, float],
) -> None:
    print()
    print(f"pbxmesh over Corosync, 3 nodes in netns (knet aes256/sha256, token 1000 ms), {date}")
    print(
        f"node batching: batch_delay={args.batch_delay} s, "
        f"frame_interval={args.frame_interval} s, max_items_per_frame={args.max_items}"
    )
    print(f"load (uptime 1/5/15 min): before {load_before}; after {load_after}")
    print()
    print(
        "| measurement | p50 ms | p99 ms | max ms | achieved/s | lost "
        "| corosync CPU s / wall s | worst GC pause ms | load 1 min |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    stepped = [(f"node, {s['rate']:,.0f} changes/s (step, try {s['attempt']})", s) for s in steps]
    for name, r in rows + stepped:
        mark = "" if r.get("ok", True) else " **over**"
        print(
            f"| {name}{mark} | {r['p50']:.2f} | {r['p99']:.2f} | {r['max']:.1f} | "
            f"{r['achieved']:,.0f} | {r['lost']} | {r['corosync_cpu']:.1f} / {r['wall']:.1f} "
            f"| {r['gc_max_ms']:.1f} | {r['load1']} |"
        )
    ok = [s["rate"] for s in steps if s.get("ok")]
    best = max(ok) if ok else 0
    raw = rows[0][1]["p50"]
    node = rows[1][1]["p50"]
    print()
    print(f"highest sustained rate with p99 <= 20 ms: {best:,.0f} changes/s (target >= 20,000)")
    print(f"p50 node - raw CPG at 100/s: {node - raw:+.2f} ms (target within 0.5 ms)")
    print(
        f"resync of {resync['devices']:,} devices to a restarted node: join -> all "
        f"{resync['join_to_all_s']:.2f} s (target < 2 s); process start -> all "
        f"{resync['spawn_to_all_s']:.2f} s (start -> join {resync['spawn_to_join_s']:.2f} s); "
        f"corosync CPU {resync['corosync_cpu_s']:.1f} s"
    )
    print(
        f"(fill: node 1 published {resync['devices']:,} in {resync['fill_publish_s']:.2f} s, "
        f"all held by nodes 2 and 3 after {resync['fill_delivered_s']:.2f} s)"
    )


if __name__ == "__main__":
    sys.exit(main())
