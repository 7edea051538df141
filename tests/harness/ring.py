"""A res_corosync ring of real Asterisk servers with a pbxmesh bridge, and a second site.

:func:`asterisk_ring` builds, in fresh network namespaces of its own:

* a 4-node knet corosync cluster (``tests/harness/corosync.py``);
* Asterisk 1..3 on corosync nodes 1..3, each inside its corosync's mount and network
  namespaces with ``res_corosync`` sharing ``device_state`` and ``mwi`` (the ring);
* on node 4, which runs no Asterisk: a nats-server, the bridge (``pbxmesh run`` with NATS and
  ``[asterisk.ring]``), and a second *site*: another pbxmesh node on NATS linked over AMI to
  its own Asterisk (no res_corosync).

Everything is stopped and removed on exit. Asterisks are driven through AMI (opened inside
their namespace) and read through ``asterisk -rx``, as an administrator would.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pbxmesh.links.ami.counterparts import counterpart_name

from .asterisk import AMI_MODULES, AMI_SECRET, AMI_USER, Asterisk, free_port
from .corosync import Cluster, three_node_cluster
from .nats import nats_server_binary
from .nodes import NodeProcess, _connect, wait_until

__all__ = ["Ring", "ami", "asterisk_ring", "hint_state"]

RING_MODULES = (*AMI_MODULES, "res_corosync")
RES_COROSYNC_CONF = (
    "[general]\npublish_event = device_state\nsubscribe_event = device_state\n"
    "publish_event = mwi\nsubscribe_event = mwi\n"
)
DEVICES = ("Custom:x", "Custom:ringdev", "Custom:far")


def ring_eid(i: int) -> str:
    return f"02:00:00:00:0c:{i:02x}"


def ami(netns: str | None, port: int, action: str, **fields: object) -> dict[str, str]:
    """One AMI action on the Asterisk listening on 127.0.0.1:``port`` inside ``netns``."""
    sock = _connect(netns, "127.0.0.1", port, 10)
    try:
        f = sock.makefile("rwb")
        f.readline()  # the banner

        def request(name: str, **kv: object) -> dict[str, str]:
            lines = [f"Action: {name}", "ActionID: t"] + [f"{k}: {v}" for k, v in kv.items()]
            f.write(("\r\n".join(lines) + "\r\n\r\n").encode())
            f.flush()
            while True:
                block: dict[str, str] = {}
                while (line := f.readline().decode().rstrip("\r\n")) != "":
                    key, _, value = line.partition(": ")
                    block.setdefault(key, value)
                if "Response" in block:
                    return block

        login = request("Login", Username=AMI_USER, Secret=AMI_SECRET, Events="off")
        assert login.get("Response") == "Success", login
        answer = request(action, **fields)
        assert answer.get("Response") == "Success", f"{action} {fields}: {answer}"
        return answer
    finally:
        sock.close()


def hint_state(a: Asterisk, exten: str, context: str = "ring") -> str:
    """The state text Asterisk's hint shows now (``core show hint``), e.g. ``InUse``. Asks
    for the extension alone: Asterisk 22 finds no hint for ``exten@context``, master does."""
    out = a.cli(f"core show hint {exten}", check=False).stdout
    m = re.search(rf"^{re.escape(exten)}@{re.escape(context)}\s.*State:(\S+)", out, re.M)
    return m.group(1) if m else f"(no hint: {out.strip()[:80]})"


@dataclass
class Ring:
    cluster: Cluster
    asterisks: dict[int, Asterisk]  # 1..3 on the ring
    bridge: NodeProcess
    site: NodeProcess  # the second site's pbxmesh node
    site_pbx: Asterisk  # its own Asterisk, linked over AMI
    nats: subprocess.Popen[bytes] | None
    workdir: Path
    extra: list[NodeProcess] = field(default_factory=list)

    @property
    def netns(self) -> str:
        return self.cluster.netns(4)

    def cli(self, node: NodeProcess, *args: str) -> subprocess.CompletedProcess[str]:
        """``pbxmesh ARGS`` against ``node``, run where the node runs (its netns)."""
        cmd = [sys.executable, "-m", "pbxmesh", "-c", str(node.config_path), *args]
        return subprocess.run(
            ["ip", "netns", "exec", self.netns, *cmd],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    def ami(self, i: int, action: str, **fields: object) -> dict[str, str]:
        """An AMI action on ring Asterisk ``i`` (0: the second site's PBX)."""
        if i == 0:
            return ami(self.netns, self.site_pbx.ami_port, action, **fields)
        return ami(self.cluster.netns(i), self.asterisks[i].ami_port, action, **fields)

    def hints(self, exten: str) -> list[str]:
        return [hint_state(self.asterisks[i], exten) for i in sorted(self.asterisks)]

    def wait_hints(self, exten: str, state: str, within: float = 15.0) -> float:
        def probe() -> bool:
            return self.hints(exten) == [state] * len(self.asterisks)

        try:
            return wait_until(probe, within, f"hint {exten} {state} on every ring Asterisk", 0.05)[
                1
            ]
        except Exception as exc:
            raise AssertionError(f"{exc}: {self.hints(exten)}\n{self.logs()}") from None

    def logs(self) -> str:
        return "\n".join([self.bridge.log_tail(25), self.site.log_tail(10)])


#: Ring Asterisk i -> its further modules and configuration files (e.g. PJSIP for phones).
Extra = Callable[[int], tuple[Sequence[str], dict[str, str]]]


def _ring_asterisk(cluster: Cluster, i: int, extra: Extra | None = None) -> Asterisk:
    dialplan = "[ring]\n" + "".join(
        f"exten => {100 + n},hint,{dev}\n" for n, dev in enumerate(DEVICES)
    )
    modules, files = extra(i) if extra is not None else ((), {})
    return Asterisk(
        name=f"ring{i}",
        eid=ring_eid(i),
        modules=(*RING_MODULES, *modules),
        dialplan=dialplan,
        files={"res_corosync.conf": RES_COROSYNC_CONF, **files},
        enter_pid=cluster.nodes[i].pid,
    )


def _node_config(
    node: NodeProcess,
    nats_port: int,
    extra: str,
    group: str = "ringmesh",
    nats_host: str = "127.0.0.1",
) -> None:
    node.workdir.mkdir(parents=True, exist_ok=True)
    node.config_path.write_text(
        f'[node]\nname = "{node.name}"\nstate_dir = "{node.state_dir}"\n'
        f'[cluster]\ntransport = "nats"\ngroup = "{group}"\n'
        f'[cluster.nats]\nservers = ["nats://{nats_host}:{nats_port}"]\n'
        "heartbeat_interval = 0.2\nfailure_timeout = 1.0\n"
        '[[channel]]\nname = "device_state"\n'
        'publish = ["device_state", "mwi"]\nsubscribe = ["device_state", "mwi"]\n'
        f'[control]\nlisten = "127.0.0.1:{node.port}"\n{extra}'
    )


@contextlib.contextmanager
def asterisk_ring(
    token_ms: int = 500, bridges: int = 1, extra: Extra | None = None
) -> Iterator[Ring]:
    """The ring, the bridge and the second site, all started; everything removed on exit.

    ``bridges=2`` adds a second bridge on a fifth corosync node (``Ring.extra[-1]``), on the
    same ring and the same mesh; nats-server then listens on node 4's ring address too.
    ``extra(i)`` gives ring Asterisk i's further modules and configuration files.
    """
    workdir = Path(tempfile.mkdtemp(prefix="pbxm-ring-"))
    started: list[Asterisk] = []
    nodes: list[NodeProcess] = []
    nats: subprocess.Popen[bytes] | None = None
    try:
        with three_node_cluster(token_ms=token_ms, size=3 + bridges) as cluster:
            ns4 = cluster.netns(4)
            nats_port = free_port()
            binary = nats_server_binary()
            assert binary, "nats-server is not installed"
            nats = subprocess.Popen(
                ["ip", "netns", "exec", ns4, binary, "-a", "0.0.0.0", "-p", str(nats_port)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            asterisks = {i: _ring_asterisk(cluster, i, extra) for i in (1, 2, 3)}
            for a in asterisks.values():
                a.write()
                a.start()
                started.append(a)
            site_dialplan = "[ring]\n" + "".join(
                f"exten => {100 + n},hint,{dev}&{counterpart_name(dev)}\n"
                for n, dev in enumerate(DEVICES)
            )
            site_pbx = Asterisk(name="site", eid=ring_eid(9), dialplan=site_dialplan, netns=ns4)
            site_pbx.write()
            site_pbx.start()
            started.append(site_pbx)
            _wait_port(ns4, nats_port)
            bridge = NodeProcess("bridge", workdir / "bridge", "", free_port(), netns=ns4)
            site = NodeProcess("site", workdir / "site", "", free_port(), netns=ns4)
            nodes += [bridge, site]
            _node_config(bridge, nats_port, '[asterisk.ring]\ngroup = "asterisk"\n'
                         "down_grace = 1.0\n")  # fmt: skip
            _node_config(
                site,
                nats_port,
                f'[asterisk]\nami = "127.0.0.1:{site_pbx.ami_port}"\n'
                f'username = "{AMI_USER}"\nsecret = "{AMI_SECRET}"\n',
            )
            bridge.start()
            site.start()
            if bridges == 2:
                ns5 = cluster.netns(5)
                second = NodeProcess("bridge2", workdir / "bridge2", "", free_port(), netns=ns5)
                nodes.append(second)
                ring_conf = '[asterisk.ring]\ngroup = "asterisk"\n'
                _node_config(second, nats_port, ring_conf, nats_host=cluster.address(4))
                second.start()
            ring = Ring(cluster, asterisks, bridge, site, site_pbx, nats, workdir, nodes)
            for b in [bridge, *nodes[2:]]:
                wait_until(lambda b=b: len(_asterisk_members(b)) == 3, 20, "the ring's Asterisks")
            yield ring
    finally:
        for n in nodes:
            with contextlib.suppress(Exception):
                n.stop(timeout=5)
        for a in started:
            with contextlib.suppress(Exception):
                a.stop(timeout=5)
            a.cleanup()
        if nats is not None:
            nats.terminate()
            nats.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


def _asterisk_members(node: NodeProcess) -> list[dict[str, object]]:
    return [m for m in node.get("/members") if m.get("kind") == "asterisk"]


def _wait_port(netns: str, port: int) -> None:
    def probe() -> bool:
        with contextlib.closing(_connect(netns, "127.0.0.1", port, 1)):
            return True

    try:
        wait_until(probe, 10, "nats-server", 0.05)
    except Exception as exc:
        raise AssertionError(f"nats-server did not listen: {exc}") from None
