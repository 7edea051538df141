"""Drills over a three-server NATS cluster on loopback: pbxmesh nodes (in process, each with its
own connection) on different servers; kill -9 and SIGSTOP of servers while every node keeps
publishing; every drill ends with identical stores holding every node's last state. And tenant
isolation with the accounts that ``pbxmesh nats-accounts`` generates."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from pbxmesh.eid import EID
from pbxmesh.nats_accounts import parse_spec, render
from pbxmesh.node import Node, NodeConfig
from pbxmesh.states import DeviceState
from pbxmesh.transport import MembershipChange, Message
from pbxmesh.transport.nats import NatsConfig, NatsTransport
from tests.harness.nats import NatsCluster, single_server
from tests.harness.nats_fixtures import require_nats

pytestmark = pytest.mark.integration

DEVICES = 200
MAILBOXES = 20
STATES = [DeviceState.NOT_INUSE, DeviceState.INUSE, DeviceState.BUSY, DeviceState.RINGING]


class Drill:
    """Three nodes, node i connected first to server i; tracks what each one asserted."""

    def __init__(self, cluster: NatsCluster, group: str) -> None:
        self.cluster = cluster
        self.group = group
        self.nodes: list[Node] = []
        self.expected_dev: dict[str, dict[str, DeviceState]] = {}
        self.expected_mwi: dict[str, tuple[int, int]] = {}
        self.rng = random.Random(7)

    async def start(self) -> None:
        for i, name in enumerate(("pbx-a", "pbx-b", "pbx-c")):
            transport = NatsTransport(
                NatsConfig.local(name, self.group, self.cluster.urls_from(i), randomize=False)
            )
            node = Node(NodeConfig(name=name, eid=EID.generate()), transport)
            await node.start()
            self.nodes.append(node)
            self.expected_dev[name] = {}

    async def close(self) -> None:
        for node in self.nodes:
            await node.close()

    def publish_one(self, i: int) -> None:
        node = self.nodes[i]
        name = node.config.name
        if self.rng.random() < 0.9:
            device = f"PJSIP/{name}-{self.rng.randrange(DEVICES)}"
            state = self.rng.choice(STATES)
            node.publish_device(device, state)
            self.expected_dev[name][device] = state
        else:
            mailbox = f"{self.rng.randrange(MAILBOXES)}@{name}"
            counts = (self.rng.randrange(10), self.rng.randrange(10))
            node.publish_mwi(mailbox, *counts)
            self.expected_mwi[mailbox] = counts

    async def fill(self) -> None:
        for i in range(len(self.nodes)):
            for d in range(DEVICES):
                device = f"PJSIP/{self.nodes[i].config.name}-{d}"
                self.nodes[i].publish_device(device, DeviceState.NOT_INUSE)
                self.expected_dev[self.nodes[i].config.name][device] = DeviceState.NOT_INUSE
        await self.converged(15, "initial fill")

    async def churn(self, seconds: float, rate: float = 300.0) -> int:
        """Every node publishes random changes for ``seconds``; returns how many."""
        n = 0
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for i in range(len(self.nodes)):
                self.publish_one(i)
                n += 1
            await asyncio.sleep(len(self.nodes) / rate)
        return n

    def problems(self) -> list[str]:
        out = []
        first = self.nodes[0]
        for node in self.nodes:
            for origin in self.nodes:
                want = self.expected_dev[origin.config.name]
                held = {d: s for d, (s, _) in _slots(node, origin.eid).items()}
                if held != want:
                    wrong = [d for d in want if held.get(d) != want[d]]
                    out.append(
                        f"{node.config.name} holds {len(held)} of {origin.config.name}'s "
                        f"{len(want)} devices, {len(wrong)} wrong/missing (e.g. {wrong[:2]})"
                    )
            mwi = {r.mailbox: (r.new, r.old) for r in node.mwi.records()}
            if mwi != self.expected_mwi:
                out.append(
                    f"{node.config.name} mwi differs: {len(mwi)} vs {len(self.expected_mwi)}"
                )
            if node.devices.canonical() != first.devices.canonical():
                out.append(f"{node.config.name} devices.canonical() differs from pbx-a's")
            if node.mwi.canonical() != first.mwi.canonical():
                out.append(f"{node.config.name} mwi.canonical() differs from pbx-a's")
        return out

    async def converged(self, within: float, what: str) -> float:
        began = time.monotonic()
        deadline = began + within
        while True:
            problems = self.problems()
            if not problems:
                return time.monotonic() - began
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not converged after {within} s: {problems[:6]}")
            await asyncio.sleep(0.05)


def _slots(node: Node, origin: EID) -> dict[str, tuple[DeviceState, int]]:
    out = {}
    for device, _ in node.devices.devices():
        slot = node.devices.slots_of(device).get(origin)
        if slot is not None and slot[0] is not DeviceState.INVALID:
            out[device] = slot
    return out


@contextlib.asynccontextmanager
async def drill(cluster: NatsCluster, group: str) -> AsyncIterator[Drill]:
    d = Drill(cluster, group)
    try:
        await d.start()
        await d.fill()
        yield d
    finally:
        await d.close()


async def wait_link_cycle(node: Node, before: int, within: float) -> float:
    """Seconds until the node saw its link go down and come up again."""
    began = time.monotonic()
    while not (node.stats.link_changes >= before + 2 and node.stats.link_up):
        if time.monotonic() - began > within:
            raise AssertionError(f"{node.config.name}: link did not come back within {within} s")
        await asyncio.sleep(0.005)
    return time.monotonic() - began


async def test_kill_9_of_a_nodes_server(nats_cluster: NatsCluster, nats_group: str) -> None:
    async with drill(nats_cluster, nats_group) as d:
        a = d.nodes[0]
        churn = asyncio.create_task(d.churn(3.0))
        await asyncio.sleep(1.0)
        before = a.stats.link_changes
        nats_cluster.servers[0].kill()
        failover = await wait_link_cycle(a, before, 5.0)
        published = await churn
        settle = await d.converged(15, "after kill -9 of pbx-a's server")
        assert failover < 1.0, f"failover took {failover:.3f} s"
        print(
            f"\nkill -9: pbx-a back on {a.transport.connected_url} after {failover * 1000:.0f} ms"
            f"; {published} changes published; converged "
            f"{settle:.2f} s after the churn"
        )


async def test_frozen_server_sigstop_then_sigcont(
    nats_cluster: NatsCluster, nats_group: str
) -> None:
    async with drill(nats_cluster, nats_group) as d:
        b = d.nodes[1]
        churn = asyncio.create_task(d.churn(5.0))
        await asyncio.sleep(0.5)
        before = b.stats.link_changes
        nats_cluster.servers[1].freeze()
        try:
            moved = await wait_link_cycle(b, before, 8.0)
            await asyncio.sleep(1.0)
        finally:
            nats_cluster.servers[1].thaw()
        published = await churn
        settle = await d.converged(20, "after SIGSTOP/SIGCONT of pbx-b's server")
        print(
            f"\nSIGSTOP: pbx-b moved to {b.transport.connected_url} after {moved:.2f} s; "
            f"{published} changes; converged {settle:.2f} s after the churn"
        )


async def test_server_killed_and_restarted_and_late_joiner(
    nats_cluster: NatsCluster, nats_group: str
) -> None:
    async with drill(nats_cluster, nats_group) as d:
        nats_cluster.servers[2].kill()
        await d.churn(1.0)
        await d.converged(15, "after kill -9 of pbx-c's server")
        nats_cluster.servers[2].start()
        nats_cluster.wait_routes()
        late = Node(
            NodeConfig(name="pbx-late", eid=EID.generate()),
            NatsTransport(
                NatsConfig.local("pbx-late", nats_group, nats_cluster.urls_from(2), randomize=False)
            ),
        )
        await late.start()
        try:
            d.nodes.append(late)
            d.expected_dev["pbx-late"] = {}
            late.publish_device("Custom:DND-late", DeviceState.BUSY)
            d.expected_dev["pbx-late"]["Custom:DND-late"] = DeviceState.BUSY
            took = await d.converged(10, "late joiner")
            print(f"\nlate joiner has {3 * DEVICES} devices after {took:.2f} s")
        finally:
            d.nodes.remove(late)
            await late.close()


# -- tenant isolation -----------------------------------------------------------------------------
SPEC = {
    "tenant": [
        {
            "account": "ACME",
            "group": "mesh",
            "nodes": [{"name": "pbx1", "password": "a1"}, {"name": "pbx2", "password": "a2"}],
        },
        {"account": "BETA", "group": "mesh", "nodes": [{"name": "pbx1", "password": "b1"}]},
    ]
}


async def _raw(url: str, user: str, password: str, errors: list[str]) -> Any:
    import nats

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    return await nats.connect(
        url, user=user, password=password, error_cb=on_error, allow_reconnect=False
    )


async def _wait(pred: Any, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def test_tenant_isolation_and_per_node_publish_permissions() -> None:
    require_nats()
    conf = render(parse_spec(SPEC, "test"))
    with single_server(jetstream=False, extra_conf=conf) as server:
        url = (server.url,)

        def transport(name: str, user: str, password: str) -> NatsTransport:
            return NatsTransport(NatsConfig.local(name, "mesh", url, user=user, password=password))

        a1 = transport("pbx1", "ACME-pbx1", "a1")
        a2 = transport("pbx2", "ACME-pbx2", "a2")
        b1 = transport("pbx1", "BETA-pbx1", "b1")  # same group and member id, other tenant
        seen: dict[str, list[Any]] = {"a1": [], "a2": [], "b1": []}

        async def pump(key: str, t: NatsTransport) -> None:
            async for event in t.events():
                seen[key].append(event)

        tasks = []
        for key, t in (("a1", a1), ("a2", a2), ("b1", b1)):
            await t.start()
            tasks.append(asyncio.create_task(pump(key, t)))
        try:

            def members(key: str) -> set[str]:
                views = [e for e in seen[key] if isinstance(e, MembershipChange)]
                return {m.member_id for m in views[-1].members} if views else set()

            await _wait(lambda: members("a1") == {"pbx1", "pbx2"}, 5, "pbx2 in a1's view")
            await b1.send(b"beta-secret")
            await a1.send(b"acme-hello")
            await _wait(
                lambda: any(
                    isinstance(e, Message) and e.data == b"beta-secret" for e in seen["b1"]
                ),
                5,
                "beta's own echo",
            )
            await _wait(
                lambda: any(isinstance(e, Message) and e.data == b"acme-hello" for e in seen["a2"]),
                5,
                "acme message at pbx2",
            )
            assert members("b1") == {"pbx1"}, "BETA must not see ACME's members"
            assert members("a1") == {"pbx1", "pbx2"}
            for key in ("a1", "a2"):
                assert not any(
                    isinstance(e, Message) and e.data == b"beta-secret" for e in seen[key]
                )
            assert not any(isinstance(e, Message) and e.data == b"acme-hello" for e in seen["b1"])

            # A node may not read another group/tenant's subjects, nor everything ...
            errors: list[str] = []
            nc = await _raw(server.url, "ACME-pbx1", "a1", errors)
            try:
                await nc.subscribe("pbxmesh.other.>")
                await nc.subscribe(">")
                # ... nor speak for another node of its own tenant.
                await nc.publish("pbxmesh.mesh.frames.pbx2", b"forged")
                await nc.publish("pbxmesh.mesh.hb.pbx2", b"forged")
                await nc.flush()
                await _wait(lambda: len(errors) >= 4, 5, "four permission violations")
            finally:
                await nc.close()
            text = "\n".join(errors).lower()
            assert text.count("permissions violation") >= 4, errors
            assert 'subscription to "pbxmesh.other.>"' in text or "pbxmesh.other.>" in text
            assert "pbxmesh.mesh.frames.pbx2" in text
            await asyncio.sleep(0.2)  # give a forged message time to show up, if it could
            assert not any(isinstance(e, Message) and e.data == b"forged" for e in seen["a2"])
        finally:
            for t in (a1, a2, b1):
                await t.close()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


@pytest.mark.slow
async def test_late_joiner_process_gets_100k_states(
    nats_cluster: NatsCluster, nats_group: str
) -> None:
    """The snapshot path at scale: a node holding 100,000 device states on server 1, a new
    node in its own process on server 2 (as a restarted PBX); prints the time to full state."""
    import json
    import sys

    count = 100_000
    a = Node(
        NodeConfig(name="holder", eid=EID.generate()),
        NatsTransport(
            NatsConfig.local("holder", nats_group, nats_cluster.urls_from(0), randomize=False)
        ),
    )
    await a.start()
    try:
        for i in range(count):
            a.publish_device(f"PJSIP/{i:06d}", DeviceState.INUSE)
        await asyncio.sleep(0.5)  # let the (unheard) changes go out before the joiner starts
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.harness.nats",
            ",".join(nats_cluster.urls_from(1)),
            nats_group,
            str(count),
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 90)
        result = json.loads(out.decode().strip().splitlines()[-1])
        print(
            f"\nlate joiner process: joined {result['joined']:.2f} s, "
            f"{count:,} states after {result['complete']:.2f} s"
        )
        assert result["devices"] >= count
        assert result["complete"] < 10, "far beyond the 2 s target even for a busy machine"
    finally:
        await a.close()
