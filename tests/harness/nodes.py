"""Run real ``pbxmesh run`` daemons for integration tests, and read them through the control API.

* :class:`NodeProcess` — one daemon: its config file, state_dir and log in a temp dir of its
  own; ``start``/``stop`` (SIGTERM)/``kill`` (SIGKILL, as a crash); optionally inside a
  network namespace. Its control listener is ``127.0.0.1:<port>`` *inside that netns*: the
  HTTP client opens its socket from a short-lived thread that has entered the netns
  (``setns``), so a request costs no ``ip netns exec`` process.
* :func:`wait_converged` — poll every node until all hold identical stores (the full
  per-origin JSON of ``/devices`` and ``/mwi``), with a deadline.
* :func:`private_loopback` — one corosync on 127.0.0.1 inside a fresh netns of our own, so the
  tests never collide with another corosync on the host (its IPC names are per netns).
* :func:`node_group` — a context manager that always stops every daemon it started.

Timing helpers return seconds measured with ``time.monotonic``, for the drill reports.
"""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from .corosync import CorosyncInstance, HarnessError, loopback_corosync

__all__ = [
    "NodeProcess",
    "Store",
    "node_group",
    "private_loopback",
    "stores",
    "wait_converged",
    "wait_until",
]

T = TypeVar("T")
Store = tuple[list[dict[str, Any]], list[dict[str, Any]]]  # (/devices, /mwi)

_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
_API = "/api/v1"


def _connect(netns: str | None, host: str, port: int, timeout: float) -> socket.socket:
    """A TCP connection to ``host:port`` as seen from ``netns`` (None: our own netns)."""
    if netns is None:
        sock = socket.create_connection((host, port), timeout)
    else:
        sock = _connect_inside(netns, host, port, timeout)
    # headers and body go out in separate segments: without this, delayed ACK costs 40 ms
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _connect_inside(netns: str, host: str, port: int, timeout: float) -> socket.socket:
    out: dict[str, Any] = {}

    def inside() -> None:  # setns changes only this thread, which then ends
        try:
            with open(f"/run/netns/{netns}", "rb") as f:
                if _libc.setns(f.fileno(), _CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns({netns}): {os.strerror(err)}")
            out["sock"] = socket.create_connection((host, port), timeout)
        except BaseException as exc:
            out["err"] = exc

    t = threading.Thread(target=inside, name=f"setns-{netns}")
    t.start()
    t.join()
    if "err" in out:
        raise out["err"]
    sock: socket.socket = out["sock"]
    return sock


def wait_until(
    probe: Callable[[], T | None], timeout: float, what: str, interval: float = 0.01
) -> tuple[T, float]:
    """Poll ``probe`` until it returns something truthy; (that value, seconds waited)."""
    start = time.monotonic()
    deadline = start + timeout
    last_exc: Exception | None = None
    while True:
        try:
            value = probe()
            if value:
                return value, time.monotonic() - start
        except (OSError, http.client.HTTPException, HarnessError) as exc:
            last_exc = exc
        if time.monotonic() > deadline:
            extra = f" (last error: {last_exc})" if last_exc else ""
            raise HarnessError(f"timed out after {timeout} s waiting for {what}{extra}")
        time.sleep(interval)


@dataclass
class NodeProcess:
    """One ``pbxmesh run`` daemon. ``workdir`` holds its config, state_dir and stderr log."""

    name: str
    workdir: Path
    group: str
    port: int
    netns: str | None = None
    proc: subprocess.Popen[bytes] | None = None
    #: what the interpreter runs: pbxmesh itself, or a wrapper that runs it (clockstep.py)
    entry: tuple[str, ...] = ("-m", "pbxmesh")
    _http: http.client.HTTPConnection | None = field(default=None, repr=False)

    @property
    def config_path(self) -> Path:
        return self.workdir / "pbxmesh.toml"

    @property
    def state_dir(self) -> Path:
        return self.workdir / "state"

    @property
    def log_path(self) -> Path:
        return self.workdir / "stderr.log"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def write_config(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(
            f'[node]\nname = "{self.name}"\nstate_dir = "{self.state_dir}"\n'
            f'[cluster]\ntransport = "corosync"\ngroup = "{self.group}"\n'
            "[cluster.corosync]\nreconnect_interval = 0.1\n"
            '[[channel]]\nname = "device_state"\n'
            'publish = ["device_state", "mwi", "presence_state"]\n'
            'subscribe = ["device_state", "mwi", "presence_state"]\n'
            f'[control]\nlisten = "127.0.0.1:{self.port}"\n'
        )

    # -- process -----------------------------------------------------------------------------
    def start(self, ready_timeout: float = 30.0) -> float:
        """Start the daemon; returns the seconds until its control API answered."""
        if self.pid is not None:
            raise HarnessError(f"node {self.name} is already running")
        if not self.config_path.exists():
            self.write_config()
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        cmd = [*prefix, sys.executable, *self.entry, "-c", str(self.config_path), "run"]
        with open(self.log_path, "ab") as err:
            err.write(f"=== start {time.strftime('%H:%M:%S')} ===\n".encode())
            err.flush()
            # ip netns exec execs python: the child's pid is the daemon's
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=err, stderr=err, start_new_session=True
            )
        self._close_http()

        def ready() -> bool:
            if self.proc is None or self.proc.poll() is not None:
                raise HarnessError(f"node {self.name} exited at start\n{self.log_tail()}")
            return bool(self.get("/status"))

        try:
            _, took = wait_until(ready, ready_timeout, f"node {self.name}'s control API", 0.05)
        except HarnessError as exc:
            raise HarnessError(f"{exc}\n{self.log_tail()}") from None
        return took

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (leave cleanly), then SIGKILL after ``timeout``; idempotent."""
        self._close_http()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def terminate(self) -> None:
        """Send SIGTERM and return at once (the caller measures what follows)."""
        self._close_http()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """kill -9, as a crash would."""
        self._close_http()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def wait_exit(self, timeout: float = 10.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return f"--- {self.name}: no log"
        text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return f"--- {self.name} ({self.log_path})\n" + "\n".join(text)

    # -- control API -------------------------------------------------------------------------
    def _close_http(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    def request(self, method: str, path: str, body: Any = None, timeout: float = 10.0) -> Any:
        """One JSON request to the control API (keep-alive; reconnects once if dropped)."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        for attempt in (1, 2):
            if self._http is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
                conn.sock = _connect(self.netns, "127.0.0.1", self.port, timeout)
                self._http = conn
            try:
                self._http.request(method, _API + path, body=data, headers=headers)
                resp = self._http.getresponse()
                payload = resp.read()
            except (OSError, http.client.HTTPException):
                self._close_http()
                if attempt == 2:
                    raise
                continue
            if resp.status >= 400:
                raise HarnessError(f"{self.name}: {method} {path} -> {resp.status} {payload!r}")
            return json.loads(payload)
        raise AssertionError("unreachable")

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = self.get("/status")
        return result

    def eid(self) -> str:
        return str(self.status()["eid"])

    def devices(self, pattern: str | None = None) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.get(
            f"/devices?pattern={pattern}" if pattern else "/devices"
        )
        return result

    def mwi(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.get("/mwi")
        return result

    def store(self) -> Store:
        return self.devices(), self.mwi()

    def members(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.get("/members")
        return result

    def publish_device(self, device: str, state: str) -> None:
        self.request("POST", "/publish/device_state", {"device": device, "state": state})

    def publish_mwi(self, mailbox: str, new: int, old: int) -> None:
        self.request("POST", "/publish/mwi", {"mailbox": mailbox, "new": new, "old": old})

    def slots_of(self, eid: str) -> dict[str, str]:
        """``device -> state`` of one origin, as this node holds them."""
        return {
            row["device"]: row["origins"][eid] for row in self.devices() if eid in row["origins"]
        }


def stores(nodes: Sequence[NodeProcess]) -> list[Store]:
    return [n.store() for n in nodes]


def wait_converged(
    nodes: Sequence[NodeProcess],
    timeout: float = 30.0,
    check: Callable[[Store], bool] | None = None,
    interval: float = 0.02,
) -> tuple[Store, float]:
    """Wait until every node holds the same store (and ``check(store)`` holds, if given).

    Returns the common store and the seconds waited. On timeout the error shows how the stores
    differ, so a failing drill says what was lost or left behind.
    """
    last: list[Store] = []

    def probe() -> Store | None:
        nonlocal last
        last = stores(nodes)
        first = last[0]
        if all(s == first for s in last[1:]) and (check is None or check(first)):
            return first
        return None

    try:
        return wait_until(probe, timeout, "identical stores", interval)
    except HarnessError as exc:
        raise HarnessError(f"{exc}\n{describe_difference(nodes, last)}") from None


def describe_difference(nodes: Sequence[NodeProcess], got: list[Store]) -> str:
    if not got:
        return "no store read"
    out = []
    ref_dev = {r["device"]: r for r in got[0][0]}
    for node, (devs, mwi) in zip(nodes, got, strict=False):
        mine = {r["device"]: r for r in devs}
        only_ref = sorted(set(ref_dev) - set(mine))[:5]
        only_me = sorted(set(mine) - set(ref_dev))[:5]
        differ = sorted(d for d in set(mine) & set(ref_dev) if mine[d] != ref_dev[d])[:5]
        out.append(
            f"{node.name}: {len(devs)} devices, {len(mwi)} mailboxes; missing vs first "
            f"{only_ref}; extra {only_me}; differing {[mine[d] for d in differ]} "
            f"vs {[ref_dev[d] for d in differ]}; mwi {mwi[:3]}"
        )
    return "\n".join(out) + "\n" + "\n".join(n.log_tail(15) for n in nodes)


@contextlib.contextmanager
def node_group(
    specs: Sequence[tuple[str, str | None]], group: str | None = None, base_port: int = 18765
) -> Iterator[list[NodeProcess]]:
    """``NodeProcess`` objects for ``(name, netns)`` pairs, in a temp dir; not started.

    Every daemon still running on exit is stopped (SIGTERM, then SIGKILL), and the temp dir
    removed, whatever happened.
    """
    workdir = Path(tempfile.mkdtemp(prefix="pbxm-nodes-"))
    group = group or f"pbxm-test-{secrets.token_hex(4)}"
    nodes = [
        NodeProcess(name=name, workdir=workdir / name, group=group, port=base_port + i, netns=ns)
        for i, (name, ns) in enumerate(specs)
    ]
    for n in nodes:
        n.write_config()
    try:
        yield nodes
    finally:
        for n in nodes:
            with contextlib.suppress(Exception):
                n.terminate()
        for n in nodes:
            with contextlib.suppress(Exception):
                n.stop(timeout=5)
        shutil.rmtree(workdir, ignore_errors=True)


def private_loopback() -> contextlib.AbstractContextManager[CorosyncInstance]:
    """One corosync on 127.0.0.1 inside a fresh netns (``instance.netns``); all removed on exit."""
    return loopback_corosync(private_netns=True)
