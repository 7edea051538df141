"""The chaos drill: mixed random faults from a seed, steady changes from every PBX, an oracle.

Theory of operation
-------------------
*Cluster.* ``size`` network namespaces on a bridge (``corosync.py``: knet aes256/sha256, token
1000 ms), one corosync and one ``pbxmesh run`` daemon in each, and one simulated Asterisk per
node (``pbxmesh.pbxsim``) running in this process but listening on ``127.0.0.1:5038`` *inside*
that node's namespace (the socket is made by a thread that entered it), so each daemon's AMI
link reaches its own PBX as it would on a real server. Every daemon runs under
``clockstep.py``, so its wall clock can be stepped without touching the machine's.

*Load.* A driver changes every PBX directly, ``rate`` times a second each: its own devices
(``Custom:p{i}-{k}``), devices every PBX sets (``Custom:s-{k}``), mailboxes of its own and a few
that every PBX writes, presentities of its own. The drill is the only writer of each PBX's own
states, so :class:`~tests.harness.chaos_model.Model` knows what every PBX last asserted.

*Faults.* :func:`schedule` draws them from the seed before the run starts, so the schedule is
the reproducible trace (``--replay`` runs a saved one): at random gaps, a kind and a node not
already under a fault, with at most ``max_concurrent`` at once. Each fault recovers by itself
after its duration. Kinds: see :data:`KINDS`.

*Settle and check.* When the time is up no fault starts; the drill waits for those running to
recover, makes sure every process runs and every link is up, stops the load, and polls until
every simulator and every node's store equal the model (``chaos_model.py``) or the deadline
passes. A daemon that exits by itself during the run is a defect too: it is counted, and
restarted so the run goes on.

Timings are wall seconds from ``time.monotonic``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import random
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pbxmesh.pbxsim.pbx import SimPbx
from pbxmesh.pbxsim.server import SimServer

from .chaos_model import Model
from .corosync import Cluster, three_node_cluster
from .nats import NatsServer
from .nodes import NodeProcess, node_group

__all__ = ["KINDS", "DrillConfig", "Fault", "run_drill", "schedule"]

USER, SECRET = "pbxmesh", "chaos-drill"
AMI_PORT = 5038
CLOCKSTEP = Path(__file__).with_name("clockstep.py")

#: fault kind -> (weight, shortest, longest duration in seconds)
KINDS: dict[str, tuple[int, float, float]] = {
    "kill_node": (3, 0.5, 4.0),  # kill -9 pbxmesh, restart with its state directory
    "kill_node_wipe": (2, 0.5, 4.0),  # kill -9 pbxmesh, restart without it (new EID)
    "restart_node": (2, 0.0, 2.0),  # SIGTERM pbxmesh, restart with its state directory
    "restart_node_wipe": (1, 0.0, 2.0),  # SIGTERM, restart without it
    "kill_engine": (2, 1.0, 5.0),  # kill -9 corosync (or nats-server), restart it
    "freeze_node": (2, 1.0, 8.0),  # SIGSTOP pbxmesh, SIGCONT
    "freeze_engine": (2, 1.0, 8.0),  # SIGSTOP corosync (or nats-server), SIGCONT
    "partition": (3, 2.0, 10.0),  # the node's link down, then up
    "ami_drop": (2, 0.0, 0.0),  # every AMI connection of the node's PBX dropped
    "ami_outage": (2, 1.0, 9.0),  # the PBX stops answering (past down_grace sometimes)
    "clock_back": (2, 0.0, 0.0),  # the node's wall clock stepped back 5-120 s
    "burst": (1, 0.0, 0.0),  # one PBX changes `burst` devices at once
}
STATES = ("NOT_INUSE", "INUSE", "BUSY", "UNAVAILABLE", "RINGING", "RINGINUSE", "ONHOLD")
PRESENCE = ("available", "away", "dnd", "xa", "chat", "unavailable")
#: after a fault's duration, the node stays off-limits this long (a restart takes time)
MARGIN = 5.0


@dataclass(frozen=True)
class Fault:
    at: float  # seconds from the start of the load
    kind: str
    target: int  # node index, 0-based
    duration: float = 0.0
    amount: float = 0.0  # seconds stepped back (clock_back) or changes (burst)


@dataclass(frozen=True)
class DrillConfig:
    seed: int
    seconds: float
    size: int = 3
    rate: float = 10.0  # changes per second per PBX
    burst: int = 10_000
    kinds: tuple[str, ...] = tuple(KINDS)
    max_concurrent: int = 2
    gap: tuple[float, float] = (0.5, 3.0)
    down_grace: float = 5.0
    settle_timeout: float = 120.0
    out: Path | None = None  # where the trace, the report and (on divergence) logs go
    replay: tuple[Fault, ...] | None = None
    transport: str = "corosync"  # or "nats": one nats-server per namespace, in one cluster


class Engines:
    """The engine under each node, one per namespace: corosync here, nats-server below.

    Nodes count from 1, as the cluster harness does.
    """

    name = "corosync"

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    def pid(self, i: int) -> int | None:
        return self.cluster.nodes[i].pid

    def kill(self, i: int) -> None:
        self.cluster.kill(i)

    def start(self, i: int) -> None:
        self.cluster.start(i)

    def log(self, i: int) -> Path:
        return self.cluster.nodes[i].workdir / "corosync.log"

    def node_conf(self, i: int, conf: str) -> str:
        """The node's configuration file, for this engine."""
        return conf

    def close(self) -> None:
        """Nothing: the cluster harness stops corosync."""


class NatsEngines(Engines):
    """One nats-server per namespace on its bridge address, routes to every other one; each
    node lists its own server first, then the others (failover crosses the bridge)."""

    name = "nats"
    CLIENT, ROUTE, HTTP = 4222, 6222, 8222

    def __init__(self, cluster: Cluster) -> None:
        super().__init__(cluster)
        ids = range(1, cluster.size + 1)
        self.servers: dict[int, NatsServer] = {}
        for i in ids:
            d = cluster.workdir / f"nats{i}"
            d.mkdir(exist_ok=True)
            self.servers[i] = NatsServer(
                f"srv{i}",
                d,
                self.CLIENT,
                self.HTTP,
                cluster_port=self.ROUTE,
                jetstream=False,
                netns=cluster.netns(i),
                host=cluster.address(i),
                route_urls=[
                    f"nats-route://{cluster.address(j)}:{self.ROUTE}" for j in ids if j != i
                ],
            )
        for server in self.servers.values():
            server.start()

    def pid(self, i: int) -> int | None:
        return self.servers[i].pid

    def kill(self, i: int) -> None:
        self.servers[i].kill()

    def start(self, i: int) -> None:
        self.servers[i].start()

    def log(self, i: int) -> Path:
        return self.servers[i].log_path

    def node_conf(self, i: int, conf: str) -> str:
        urls = [self.servers[i].url] + [s.url for j, s in self.servers.items() if j != i]
        old = '[cluster]\ntransport = "corosync"\n'
        section = "[cluster.corosync]\nreconnect_interval = 0.1\n"
        if old not in conf or section not in conf:
            raise RuntimeError("the node harness's configuration changed: update NatsEngines")
        return conf.replace(old, '[cluster]\ntransport = "nats"\n').replace(
            section, f"[cluster.nats]\nservers = {json.dumps(urls)}\n"
        )

    def close(self) -> None:
        for server in self.servers.values():
            server.stop()


def schedule(cfg: DrillConfig) -> list[Fault]:
    """The faults of a run, drawn from the seed alone (so a seed always gives this list)."""
    rng = random.Random(cfg.seed)
    kinds = [k for k in KINDS if k in cfg.kinds]
    weights = [KINDS[k][0] for k in kinds]
    busy = [0.0] * cfg.size  # each node: free again at
    ends: list[float] = []
    out: list[Fault] = []
    t = rng.uniform(*cfg.gap)
    while t < cfg.seconds and kinds:
        kind = rng.choices(kinds, weights)[0]
        _, lo, hi = KINDS[kind]
        duration = round(rng.uniform(lo, hi), 2)
        amount = 0.0
        if kind == "clock_back":
            amount = round(rng.uniform(5, 120), 1)
        elif kind == "burst":
            amount = cfg.burst
        free = [i for i in range(cfg.size) if busy[i] <= t]
        active = sum(1 for e in ends if e > t)
        if free and active < cfg.max_concurrent:
            target = rng.choice(free)
            out.append(Fault(round(t, 2), kind, target, duration, amount))
            busy[target] = t + duration + MARGIN
            ends.append(t + duration + MARGIN)
        t += rng.uniform(*cfg.gap)
    return out


_libc = ctypes.CDLL(None, use_errno=True)


def listen_in(netns: str, port: int) -> socket.socket:
    """A listening TCP socket on 127.0.0.1:``port`` inside ``netns``."""
    out: dict[str, Any] = {}

    def inside() -> None:
        try:
            with open(f"/run/netns/{netns}", "rb") as f:
                if _libc.setns(f.fileno(), 0x40000000) != 0:
                    raise OSError(ctypes.get_errno(), f"setns({netns})")
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))
            sock.listen(64)
            sock.setblocking(False)
            out["sock"] = sock
        except BaseException as exc:
            out["err"] = exc

    t = threading.Thread(target=inside, name=f"listen-{netns}")
    t.start()
    t.join()
    if "err" in out:
        raise out["err"]
    sock: socket.socket = out["sock"]
    return sock


@dataclass
class Sim:
    """One simulated Asterisk, serving AMI inside its node's netns."""

    netns: str
    pbx: SimPbx = field(default_factory=lambda: SimPbx([]))
    server: SimServer | None = None

    async def start(self) -> None:
        self.server = SimServer(self.pbx, USER, SECRET, login_fail_delay=0.05)
        await self.server.start("", 0, sock=listen_in(self.netns, AMI_PORT))

    async def stop(self) -> None:
        if self.server is not None:
            server, self.server = self.server, None
            await server.close()

    def flush(self) -> None:
        if self.server is not None:
            self.server.flush_events()


@dataclass
class Report:
    seed: int
    seconds: float
    size: int
    faults: dict[str, int] = field(default_factory=dict)
    changes: dict[str, int] = field(default_factory=dict)
    store: dict[str, int] = field(default_factory=dict)
    crashes: int = 0
    fault_errors: list[str] = field(default_factory=list)
    converged: bool = False
    converge_seconds: float | None = None
    divergences: list[str] = field(default_factory=list)
    out: str = ""

    def summary(self) -> str:
        faults = ", ".join(f"{k} {v}" for k, v in sorted(self.faults.items()))
        changes = ", ".join(f"{k} {v}" for k, v in sorted(self.changes.items()))
        head = (
            f"seed {self.seed}, {self.size} nodes, {self.seconds:.0f} s: "
            f"{sum(self.faults.values())} faults ({faults}); {sum(self.changes.values())} "
            f"changes ({changes}); store {self.store}; crashes {self.crashes}"
        )
        if self.converged:
            return f"{head}\nCONVERGED {self.converge_seconds:.2f} s after the last fault"
        return f"{head}\nDIVERGED (trace in {self.out}):\n" + "\n".join(self.divergences)


class Drill:
    def __init__(
        self, cfg: DrillConfig, cluster: Cluster, engines: Engines, nodes: list[NodeProcess]
    ) -> None:
        self.cfg = cfg
        self.cluster = cluster
        self.engines = engines
        self.nodes = nodes
        self.sims = [Sim(cluster.netns(i + 1)) for i in range(cfg.size)]
        self.model = Model(cfg.size)
        self.rng = random.Random(cfg.seed * 7919 + 1)
        self.changes: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.errors: list[str] = []
        self.crashes = 0
        self.offsets = [0.0] * cfg.size
        self.under_fault: set[int] = set()
        self.trace: list[dict[str, Any]] = []
        #: every change made: (seconds, pbx, kind, name, value)
        self.log: list[tuple[float, int, str, str, str]] = []
        self.t0 = 0.0

    # -- setup -----------------------------------------------------------------------------
    def offset_file(self, i: int) -> Path:
        return self.nodes[i].workdir / "clock-offset"

    def configure(self) -> None:
        for i, node in enumerate(self.nodes):
            node.write_config()
            node.config_path.write_text(
                self.engines.node_conf(i + 1, node.config_path.read_text())
                + f'[asterisk]\nami = "127.0.0.1:{AMI_PORT}"\nusername = "{USER}"\n'
                f'secret = "{SECRET}"\ndown_grace = {self.cfg.down_grace}\n'
            )
            self.offset_file(i).write_text("0\n")
            node.entry = (str(CLOCKSTEP), str(self.offset_file(i)))

    async def start_node(self, i: int) -> None:
        await asyncio.to_thread(self.nodes[i].start, 60.0)
        self.model.set_eid(i, await asyncio.to_thread(self.nodes[i].eid))

    # -- load ------------------------------------------------------------------------------
    def change(self, i: int) -> None:
        rng, pbx, model = self.rng, self.sims[i].pbx, self.model
        roll = rng.random()
        if roll < 0.7:
            shared = rng.random() < 0.2
            device = (
                f"Custom:s-{rng.randrange(5)}" if shared else f"Custom:p{i}-{rng.randrange(200)}"
            )
            state = rng.choice(STATES)
            pbx.set_custom(device, state)
            model.device(i, device, state)
            self.changes["device_state"] += 1
            self.note(i, "device", device, state)
        elif roll < 0.85:
            shared = rng.random() < 0.2
            box = (
                f"9{rng.randrange(3)}@default" if shared else f"1{i}{rng.randrange(20):02d}@default"
            )
            new, old = rng.randrange(10), rng.randrange(10)
            pbx.mwi_update(box, new, old)
            model.mwi(i, box, new, old, shared)
            self.changes["mwi"] += 1
            self.note(i, "mwi", box, f"{new}/{old}")
        else:
            assert pbx.presence is not None
            name = f"CustomPresence:p{i}-{rng.randrange(10)}"
            state, sub, msg = rng.choice(PRESENCE), f"s{rng.randrange(9)}", f"m{rng.randrange(99)}"
            pbx.presence.write(name, f"{state},{sub},{msg}")
            model.set_presence(i, name, state, sub, msg)
            self.changes["presence_state"] += 1
            self.note(i, "presence", name, f"{state},{sub},{msg}")

    def note(self, i: int, kind: str, name: str, value: str) -> None:
        self.log.append((round(time.monotonic() - self.t0, 3), i, kind, name, value))

    def burst(self, i: int, count: int) -> None:
        pbx = self.sims[i].pbx
        for k in range(count):
            device, state = f"Custom:b{i}-{k}", self.rng.choice(STATES)
            pbx.set_custom(device, state)
            self.model.device(i, device, state)
        self.changes["device_state"] += count
        self.note(i, "burst", f"Custom:b{i}-*", str(count))
        self.sims[i].flush()

    async def drive(self, stop: asyncio.Event) -> None:
        interval = 1.0 / self.cfg.rate
        next_at = time.monotonic()
        while not stop.is_set():
            for i in range(self.cfg.size):
                self.change(i)
                self.sims[i].flush()
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    # -- faults ----------------------------------------------------------------------------
    async def inject(self, f: Fault) -> None:
        i, node = f.target, self.nodes[f.target]
        ci = i + 1  # the cluster harness counts nodes from 1
        self.under_fault.add(i)
        began = time.monotonic() - self.t0
        error = ""
        try:
            if f.kind in ("kill_node", "kill_node_wipe", "restart_node", "restart_node_wipe"):
                await asyncio.to_thread(node.kill if f.kind.startswith("kill") else node.stop)
                await asyncio.sleep(f.duration)
                if f.kind.endswith("wipe"):
                    shutil.rmtree(node.state_dir, ignore_errors=True)
                await self.start_node(i)
            elif f.kind == "kill_engine":
                await asyncio.to_thread(self.engines.kill, ci)
                await asyncio.sleep(f.duration)
                await asyncio.to_thread(self.engines.start, ci)
            elif f.kind in ("freeze_node", "freeze_engine"):
                pid = node.pid if f.kind == "freeze_node" else self.engines.pid(ci)
                if pid is None:
                    raise RuntimeError("process not running")
                os.kill(pid, signal.SIGSTOP)
                try:
                    await asyncio.sleep(f.duration)
                finally:
                    os.kill(pid, signal.SIGCONT)
            elif f.kind == "partition":
                await asyncio.to_thread(self.cluster.link_down, ci)
                try:
                    await asyncio.sleep(f.duration)
                finally:
                    await asyncio.to_thread(self.cluster.link_up, ci)
            elif f.kind == "ami_drop":
                server = self.sims[i].server
                if server is not None:
                    server.drop_connections()
            elif f.kind == "ami_outage":
                await self.sims[i].stop()
                await asyncio.sleep(f.duration)
                await self.sims[i].start()
            elif f.kind == "clock_back":
                self.offsets[i] -= f.amount
                self.offset_file(i).write_text(f"{self.offsets[i]}\n")
            elif f.kind == "burst":
                self.burst(i, int(f.amount))
            self.faults[f.kind] += 1
        except Exception as exc:  # the harness failed to inject: said in the report
            error = f"{f.kind} on node {i + 1} at {f.at} s: {exc!r}"
            self.errors.append(error)
        finally:
            self.under_fault.discard(i)
            self.trace.append(
                {**asdict(f), "began": round(began, 2),
                 "ended": round(time.monotonic() - self.t0, 2), "error": error}
            )  # fmt: skip

    async def watch(self, stop: asyncio.Event) -> None:
        """A daemon that exits by itself (not under a fault) is a defect: count, restart."""
        while not stop.is_set():
            await asyncio.sleep(0.5)
            for i, node in enumerate(self.nodes):
                if i in self.under_fault or node.pid is not None:
                    continue
                self.crashes += 1
                self.errors.append(f"node {i + 1} exited by itself:\n{node.log_tail(20)}")
                self.under_fault.add(i)
                try:
                    await self.start_node(i)
                finally:
                    self.under_fault.discard(i)

    async def ensure_up(self) -> None:
        """After the faults: every process runs, every link is up, every PBX serves."""
        for i, node in enumerate(self.nodes):
            ci = i + 1
            await asyncio.to_thread(self.cluster.link_up, ci)
            for pid in (node.pid, self.engines.pid(ci)):
                if pid is not None:
                    os.kill(pid, signal.SIGCONT)
            if self.engines.pid(ci) is None:
                await asyncio.to_thread(self.engines.start, ci)
            if node.pid is None:
                await self.start_node(i)
            if self.sims[i].server is None:
                await self.sims[i].start()

    # -- the oracle ------------------------------------------------------------------------
    def check_sims(self, shared: dict[str, tuple[int, int]]) -> list[str]:
        out: list[str] = []
        for j, sim in enumerate(self.sims):
            out += self.model.check_sim(j, sim.pbx, shared)
        return out

    def check_nodes(self) -> tuple[list[str], list[dict[str, tuple[int, int]]]]:
        out: list[str] = []
        held: list[dict[str, tuple[int, int]]] = []
        for i, node in enumerate(self.nodes):
            shared: dict[str, tuple[int, int]] = {}
            out += self.model.check_node(
                f"node{i + 1}", node.devices(), node.mwi(), node.get("/presence"), shared
            )
            held.append(shared)
        return out + self.model.check_shared_agree(held), held

    async def converge(self, deadline: float) -> tuple[float | None, list[str]]:
        start = time.monotonic()
        last: list[str] = []
        while True:
            try:
                last, held = await asyncio.to_thread(self.check_nodes)
                if not last:
                    last = self.check_sims(held[0])
            except Exception as exc:  # a node that does not answer yet
                last = [f"read failed: {exc!r}"]
            if not last:
                return time.monotonic() - start, []
            if time.monotonic() - start > deadline:
                return None, last
            await asyncio.sleep(0.5)

    # -- the run ---------------------------------------------------------------------------
    async def run(self, faults: Sequence[Fault]) -> Report:
        loop = asyncio.get_running_loop()

        def quiet(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
            # a dropped or closed AMI session cancels its handler: that is the fault, not news
            if not isinstance(context.get("exception"), asyncio.CancelledError):
                loop.default_exception_handler(context)

        loop.set_exception_handler(quiet)
        self.configure()
        for sim in self.sims:
            await sim.start()
        await asyncio.gather(*(self.start_node(i) for i in range(self.cfg.size)))
        stop = asyncio.Event()
        self.t0 = time.monotonic()
        tasks = [
            asyncio.create_task(self.drive(stop), name="chaos-drive"),
            asyncio.create_task(self.watch(stop), name="chaos-watch"),
        ]
        running: list[asyncio.Task[None]] = []
        for f in faults:
            await asyncio.sleep(max(0.0, self.t0 + f.at - time.monotonic()))
            running.append(asyncio.create_task(self.inject(f), name=f"chaos-{f.kind}"))
        await asyncio.sleep(max(0.0, self.t0 + self.cfg.seconds - time.monotonic()))
        if running:
            await asyncio.wait(running, timeout=120)
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.ensure_up()
        took, divergences = await self.converge(self.cfg.settle_timeout)
        report = Report(
            seed=self.cfg.seed,
            seconds=self.cfg.seconds,
            size=self.cfg.size,
            faults=dict(self.faults),
            changes=dict(self.changes),
            store=self.model.counts(),
            crashes=self.crashes,
            fault_errors=self.errors,
            converged=took is not None and not self.crashes,
            converge_seconds=took,
            divergences=divergences,
        )
        for sim in self.sims:
            await sim.stop()
        return report


def save_logs(nodes: Sequence[NodeProcess], engines: Engines, out: Path) -> None:
    for i, node in enumerate(nodes):
        with contextlib.suppress(OSError):
            shutil.copy(node.log_path, out / f"node{i + 1}.log")
        with contextlib.suppress(OSError):
            shutil.copy(engines.log(i + 1), out / f"{engines.name}{i + 1}.log")


def run_drill(cfg: DrillConfig) -> Report:
    """Run one drill (needs root, network namespaces, corosync or nats-server); returns its
    report."""
    out = cfg.out or Path(tempfile.mkdtemp(prefix="pbxmesh-chaos-"))
    out.mkdir(parents=True, exist_ok=True)
    faults = list(cfg.replay) if cfg.replay is not None else schedule(cfg)
    (out / "schedule.json").write_text(
        json.dumps(
            {
                "config": {
                    "seed": cfg.seed,
                    "seconds": cfg.seconds,
                    "size": cfg.size,
                    "rate": cfg.rate,
                    "burst": cfg.burst,
                    "transport": cfg.transport,
                },
                "faults": [asdict(f) for f in faults],
            },
            indent=1,
        )
    )
    nats = cfg.transport == "nats"
    with three_node_cluster(token_ms=1000, size=cfg.size, start=not nats) as cluster:
        engines = NatsEngines(cluster) if nats else Engines(cluster)
        specs = [(f"pbx{i + 1}", cluster.netns(i + 1)) for i in range(cfg.size)]
        try:
            with node_group(specs) as nodes:
                drill = Drill(cfg, cluster, engines, nodes)
                try:
                    report = asyncio.run(drill.run(faults))
                finally:
                    (out / "trace.json").write_text(json.dumps(drill.trace, indent=1))
                    with open(out / "changes.jsonl", "w", encoding="utf-8") as f:
                        f.writelines(json.dumps(row) + "\n" for row in drill.log)
                report.out = str(out)
                if not report.converged:
                    save_logs(nodes, engines, out)
        finally:
            engines.close()
    (out / "report.json").write_text(json.dumps(asdict(report), indent=1))
    return report


def load_schedule(path: Path) -> tuple[Fault, ...]:
    data = json.loads(path.read_text())
    return tuple(Fault(**f) for f in data["faults"])
