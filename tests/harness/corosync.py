"""Start real corosync daemons for integration tests: one on loopback, or three in netns.

Every instance gets its own temp dir with ``corosync.conf``, ``state_dir``, logfile and a
private ``/run`` (``/run/corosync.pid`` is a hard-coded lock) bind-mounted inside a mount
namespace of its own, and ``sched_rr: no`` so co-located daemons do not starve the host.
Corosync's IPC uses abstract unix sockets, which are scoped per network namespace: a client
talks to the corosync of the netns it runs in.

* :func:`loopback_corosync` — one node on 127.0.0.1 in the current netns (CI).
* :func:`three_node_cluster` — a bridge netns plus three node netns joined by veth pairs,
  knet with aes256/sha256 and a fresh authkey. Namespace names carry a random tag
  (``pbxm<tag>sw``, ``pbxm<tag>n1``…) so parallel or leftover runs never collide.

Both are context managers that always stop the daemons (SIGTERM, then SIGKILL), remove the
``/dev/shm/qb-*`` files a killed daemon leaves behind, and delete the namespaces.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "Cluster",
    "CorosyncInstance",
    "HarnessError",
    "cleanup_shm",
    "corosync_missing_reason",
    "loopback_corosync",
    "three_node_cluster",
]

_LIBS = ("libcpg.so.4", "libquorum.so.5", "libcmap.so.4")


class HarnessError(RuntimeError):
    """The test environment could not be set up; the message says what and shows the log."""


def corosync_missing_reason(netns: bool = False) -> str | None:
    """Why corosync tests cannot run here (None when they can)."""
    if os.geteuid() != 0:
        return "corosync tests need root (corosync IPC and its /run lock)"
    tools = ["corosync", "corosync-cpgtool", "unshare", "mount"]
    if netns:
        tools += ["ip", "corosync-keygen", "corosync-quorumtool"]
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        return f"not installed: {', '.join(missing)} (apt-get install corosync iproute2)"
    import ctypes

    for lib in _LIBS:
        try:
            ctypes.CDLL(lib)
        except OSError:
            return f"{lib} not found: apt-get install corosync"
    return None


def _run(
    cmd: Sequence[str], check: bool = True, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, check=False)
    if check and res.returncode != 0:
        raise HarnessError(f"{' '.join(cmd)} failed ({res.returncode}): {res.stderr.strip()}")
    return res


def _netns_prefix(netns: str | None) -> list[str]:
    return ["ip", "netns", "exec", netns] if netns else []


def cleanup_shm(pid: int) -> None:
    """Remove the libqb IPC rings and blackbox of a dead corosync ``pid``."""
    shm = Path("/dev/shm")
    for pattern in (f"qb-{pid}-*", f"qb-*-{pid}-*"):
        for path in shm.glob(pattern):  # libqb 2 makes a directory per connection
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    path.unlink()


def _corosync_conf(
    *,
    workdir: Path,
    cluster_name: str,
    nodes: Sequence[tuple[int, str, str]],
    token_ms: int | None,
    keyfile: Path | None,
    quorum: bool,
) -> str:
    crypto = (
        f"    crypto_cipher: aes256\n    crypto_hash: sha256\n    keyfile: {keyfile}\n"
        if keyfile
        else "    crypto_cipher: none\n    crypto_hash: none\n"
    )
    token = f"    token: {token_ms}\n" if token_ms else ""
    nodelist = "".join(
        f"    node {{\n        nodeid: {nid}\n        name: {name}\n"
        f"        ring0_addr: {addr}\n    }}\n"
        for nid, name, addr in nodes
    )
    quorum_section = "quorum {\n    provider: corosync_votequorum\n}\n" if quorum else ""
    return (
        f"totem {{\n    version: 2\n    cluster_name: {cluster_name}\n    transport: knet\n"
        f"{crypto}{token}}}\n"
        f"nodelist {{\n{nodelist}}}\n"
        f"{quorum_section}"
        f"system {{\n    state_dir: {workdir / 'state'}\n    move_to_root_cgroup: no\n"
        f"    sched_rr: no\n}}\n"
        f"logging {{\n    to_stderr: no\n    to_syslog: no\n    to_logfile: yes\n"
        f"    logfile: {workdir / 'corosync.log'}\n    timestamp: hires\n}}\n"
    )


@dataclass
class CorosyncInstance:
    """One corosync daemon with its own dir; ``netns`` None means the current netns."""

    workdir: Path
    netns: str | None = None
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    _pids: list[int] = field(default_factory=list)

    @property
    def conf(self) -> Path:
        return self.workdir / "corosync.conf"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def command(self, *cmd: str) -> list[str]:
        """``cmd`` run so that it talks to this daemon (inside its netns)."""
        return [*_netns_prefix(self.netns), *cmd]

    def start(self, ready_timeout: float = 20.0) -> None:
        """Start the daemon and wait until its CPG service answers."""
        if self.pid is not None:
            raise HarnessError(f"corosync in {self.workdir} is already running")
        for sub in ("run", "state"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        inner = f"mount --bind {self.workdir / 'run'} /run && exec corosync -f -c {self.conf}"
        if self.netns:
            # ip netns exec already unshares the mount namespace (with slave propagation).
            cmd = ["ip", "netns", "exec", self.netns, "sh", "-c", inner]
        else:
            cmd = ["unshare", "-m", "--propagation", "slave", "sh", "-c", inner]
        with open(self.workdir / "stderr.log", "ab") as err:
            # ip netns exec, unshare and sh all exec: the child's pid is corosync's
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
                start_new_session=True,
            )
        self._pids.append(self.proc.pid)
        self.started_at = time.monotonic()
        self.wait_ready(ready_timeout)

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc is None or self.proc.poll() is not None:
                code = None if self.proc is None else self.proc.returncode
                raise HarnessError(f"corosync exited with {code}\n{self.log_tail()}")
            res = _run(self.command("corosync-cpgtool"), check=False, timeout=10)
            if res.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise HarnessError(f"corosync not ready after {timeout} s\n{self.log_tail()}")
            time.sleep(0.1)

    def kill(self) -> None:
        """kill -9 the daemon (as a crash would) and remove its /dev/shm leftovers."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._cleanup()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``; idempotent."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._cleanup()

    def _cleanup(self) -> None:
        for pid in self._pids:
            cleanup_shm(pid)

    def log_tail(self, lines: int = 30) -> str:
        out = []
        for name in ("stderr.log", "corosync.log"):
            path = self.workdir / name
            if path.exists():
                text = path.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"--- {path}\n" + "\n".join(text))
        return "\n".join(out)


def _check_ipc_free() -> None:
    """Fail clearly if another corosync already serves this netns (its IPC names collide)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
            # abstract names are shown with "@" for the leading and the padding NULs
            name = line.split()[-1].rstrip("@")
            if name in ("@cpg", "@cmap", "@quorum"):
                raise HarnessError(
                    "another corosync already serves this network namespace "
                    f"({name}); stop it or run the tests in a fresh netns"
                )


@contextlib.contextmanager
def loopback_corosync(
    base: Path | None = None, quorum: bool = False, private_netns: bool = False
) -> Iterator[CorosyncInstance]:
    """One corosync on 127.0.0.1 in a temp dir; stopped and removed on exit.

    It runs in the current netns, or with ``private_netns`` in a fresh one of its own
    (``instance.netns``) where another corosync on the host (a neighbour's test run) cannot
    collide with it.
    """
    netns = f"pbxm{secrets.token_hex(2)}lo" if private_netns else None
    if netns is None:
        _check_ipc_free()
    workdir = Path(tempfile.mkdtemp(prefix="pbxm-corosync-", dir=base))
    inst = CorosyncInstance(workdir=workdir, netns=netns)
    try:
        if netns is not None:
            _run(["ip", "netns", "add", netns])
            _run(["ip", "-n", netns, "link", "set", "lo", "up"])
        inst.conf.write_text(
            _corosync_conf(
                workdir=workdir,
                cluster_name="pbxmci",
                nodes=[(1, "ci1", "127.0.0.1")],
                token_ms=None,
                keyfile=None,
                quorum=quorum,
            )
        )
        inst.start()
        yield inst
    finally:
        inst.stop()
        if netns is not None:
            _run(["ip", "netns", "del", netns], check=False)
        shutil.rmtree(workdir, ignore_errors=True)


@dataclass
class Cluster:
    """Three corosync nodes, one netns each, on a bridge in a switch netns."""

    tag: str
    workdir: Path
    token_ms: int
    nodes: dict[int, CorosyncInstance] = field(default_factory=dict)
    size: int = 3

    @property
    def switch(self) -> str:
        return f"pbxm{self.tag}sw"

    def netns(self, i: int) -> str:
        return f"pbxm{self.tag}n{i}"

    def address(self, i: int) -> str:
        return f"10.213.0.{i}"

    def veth(self, i: int) -> str:
        return f"pbxm{self.tag}h{i}"  # bridge side, in the switch netns

    def kill(self, i: int) -> None:
        """kill -9 node ``i``'s corosync."""
        self.nodes[i].kill()

    def start(self, i: int, ready_timeout: float = 20.0) -> None:
        """(Re)start node ``i``'s corosync; returns when its CPG service answers."""
        self.nodes[i].start(ready_timeout)

    def stop(self, i: int) -> None:
        self.nodes[i].stop()

    def link_down(self, i: int) -> None:
        """Cut node ``i`` off the bridge (a partition: {i} vs the others)."""
        _run(["ip", "-n", self.switch, "link", "set", self.veth(i), "down"])

    def link_up(self, i: int) -> None:
        _run(["ip", "-n", self.switch, "link", "set", self.veth(i), "up"])

    def command(self, i: int, *cmd: str) -> list[str]:
        """``cmd`` prefixed to run inside node ``i``'s netns."""
        return ["ip", "netns", "exec", self.netns(i), *cmd]

    def run(self, i: int, *cmd: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` in node ``i``'s netns and return its result (not checked)."""
        return _run(self.command(i, *cmd), check=False, timeout=timeout)

    def popen(self, i: int, *cmd: str, **kwargs: object) -> subprocess.Popen[bytes]:
        """Start ``cmd`` in node ``i``'s netns; the caller owns (and must end) the process."""
        return subprocess.Popen(self.command(i, *cmd), **kwargs)  # type: ignore[call-overload,no-any-return]

    def quorum_status(self, i: int) -> tuple[int, bool] | None:
        """(number of nodes, quorate) as node ``i`` sees it, None if it does not answer."""
        res = self.run(i, "corosync-quorumtool", "-s", timeout=10)
        nodes, quorate = None, None
        for line in res.stdout.splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "Nodes":
                nodes = int(value.strip())
            elif key.strip() == "Quorate":
                quorate = value.strip() == "Yes"
        return None if nodes is None or quorate is None else (nodes, quorate)

    def wait_formed(self, nodes: Sequence[int] = (1, 2, 3), timeout: float = 30.0) -> None:
        """Wait until every node in ``nodes`` sees ``len(nodes)`` nodes and is quorate."""
        deadline = time.monotonic() + timeout
        while True:
            status = {i: self.quorum_status(i) for i in nodes}
            if all(s == (len(nodes), True) for s in status.values()):
                return
            if time.monotonic() > deadline:
                tails = "\n".join(self.nodes[i].log_tail(10) for i in nodes)
                raise HarnessError(f"cluster not formed after {timeout} s: {status}\n{tails}")
            time.sleep(0.2)

    def teardown(self) -> None:
        for inst in self.nodes.values():
            with contextlib.suppress(Exception):
                inst.stop()
        for ns in [*(self.netns(i) for i in range(1, self.size + 1)), self.switch]:
            _run(["ip", "netns", "del", ns], check=False)


@contextlib.contextmanager
def three_node_cluster(
    token_ms: int = 1000, base: Path | None = None, start: bool = True, size: int = 3
) -> Iterator[Cluster]:
    """A 3-node (or ``size``-node) knet cluster (aes256/sha256) in fresh network namespaces;
    torn down on exit.

    With ``token_ms=1000`` a dead node is detected in about 3.5 s.
    """
    ids = tuple(range(1, size + 1))
    workdir = Path(tempfile.mkdtemp(prefix="pbxm-cluster-", dir=base))
    cluster = Cluster(tag=secrets.token_hex(2), workdir=workdir, token_ms=token_ms, size=size)
    try:
        sw = cluster.switch
        _run(["ip", "netns", "add", sw])
        _run(["ip", "-n", sw, "link", "set", "lo", "up"])
        _run(["ip", "-n", sw, "link", "add", "br0", "type", "bridge"])
        _run(["ip", "-n", sw, "link", "set", "br0", "up"])
        for i in ids:
            ns = cluster.netns(i)
            _run(["ip", "netns", "add", ns])
            _run(["ip", "-n", ns, "link", "set", "lo", "up"])
            _run(["ip", "link", "add", cluster.veth(i), "netns", sw, "type", "veth",
                  "peer", "name", "eth0", "netns", ns])  # fmt: skip
            _run(["ip", "-n", sw, "link", "set", cluster.veth(i), "master", "br0"])
            _run(["ip", "-n", sw, "link", "set", cluster.veth(i), "up"])
            _run(["ip", "-n", ns, "addr", "add", f"{cluster.address(i)}/24", "dev", "eth0"])
            _run(["ip", "-n", ns, "link", "set", "eth0", "up"])
        keyfile = workdir / "authkey"
        _run(["corosync-keygen", "-k", str(keyfile)])
        nodes = [(i, f"node{i}", cluster.address(i)) for i in ids]
        for i in ids:
            nodedir = workdir / f"node{i}"
            nodedir.mkdir()
            inst = CorosyncInstance(workdir=nodedir, netns=cluster.netns(i))
            inst.conf.write_text(
                _corosync_conf(
                    workdir=nodedir,
                    cluster_name=f"pbxm{cluster.tag}",
                    nodes=nodes,
                    token_ms=token_ms,
                    keyfile=keyfile,
                    quorum=True,
                )
            )
            cluster.nodes[i] = inst
        if start:
            for i in ids:
                cluster.start(i)
            cluster.wait_formed(ids)
        yield cluster
    finally:
        cluster.teardown()
        shutil.rmtree(workdir, ignore_errors=True)
