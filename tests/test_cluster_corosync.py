"""pbxmesh daemons over real Corosync: convergence, failures and drills, end to end.

Each node is a separate ``pbxmesh run`` process (tests/harness/nodes.py), read and driven only
through its control API. Stores are compared in full (per-origin ``/devices`` and ``/mwi``)
against a model of what every live node asserted, so "converged" means *identical everywhere,
nothing lost, nothing stale*.

* Loopback: one corosync on 127.0.0.1 in a private netns, three daemons on it.
* Drills: the harness's three corosync nodes in network namespaces (knet aes256/sha256, token
  1000 ms), one daemon per netns.

Timings are printed (run with ``-s``) and, when ``PBXMESH_DRILL_LOG`` names a file, appended
to it as JSON lines. After a restart the test republishes the node's local state, as the
Asterisk bridge does when it (re)connects: a daemon keeps no state across restarts.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

from pbxmesh.states import DeviceState, aggregate
from tests.harness.corosync import Cluster, CorosyncInstance
from tests.harness.fixtures import require_corosync
from tests.harness.nodes import (
    NodeProcess,
    Store,
    node_group,
    private_loopback,
    wait_converged,
    wait_until,
)

pytestmark = [pytest.mark.integration]


def record(drill: str, **values: float) -> None:
    """Print one drill's timings (seconds); append them to $PBXMESH_DRILL_LOG if set."""
    row = {"drill": drill, **{k: round(v, 3) for k, v in values.items()}}
    print(f"\nDRILL {drill}: " + ", ".join(f"{k}={v:.3f} s" for k, v in values.items()))
    path = os.environ.get("PBXMESH_DRILL_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"at": time.strftime("%Y-%m-%d %H:%M:%S"), **row}) + "\n")


class Expect:
    """What the stores must hold: each live origin's device states, and MWI (last writer)."""

    def __init__(self) -> None:
        self.slots: dict[str, dict[str, str]] = {}  # device -> {eid: state}
        self.mwi: dict[str, tuple[int, int, str]] = {}  # mailbox -> (new, old, eid)
        self.dropped: dict[str, dict[str, str]] = {}  # eid -> {device: state} it had

    def device(self, node: NodeProcess, eid: str, device: str, state: str) -> None:
        node.publish_device(device, state)
        self.slots.setdefault(device, {})[eid] = state

    def mailbox(self, node: NodeProcess, eid: str, mailbox: str, new: int, old: int) -> None:
        node.publish_mwi(mailbox, new, old)
        self.mwi[mailbox] = (new, old, eid)

    def drop(self, eid: str) -> None:
        """The origin's node left: its device slots go; its MWI stays (as in Asterisk)."""
        self.dropped[eid] = {d: o[eid] for d, o in self.slots.items() if eid in o}
        for device in list(self.slots):
            self.slots[device].pop(eid, None)
            if not self.slots[device]:
                del self.slots[device]

    def restore(self, eid: str) -> dict[str, str]:
        """The origin's node restarted: the states it published through the API come back
        (kept in its state directory). Returns them."""
        kept = self.dropped.pop(eid, {})
        for device, state in kept.items():
            self.slots.setdefault(device, {})[eid] = state
        return kept

    def devices_json(self) -> list[dict[str, Any]]:
        return [
            {
                "device": device,
                "state": aggregate(DeviceState[s] for s in origins.values()).name,
                "origins": origins,
            }
            for device, origins in sorted(self.slots.items())
        ]

    def matches(self, store: Store) -> bool:
        devices, mwi = store
        got_mwi = {r["mailbox"]: (r["new"], r["old"], r["origin"]) for r in mwi}
        return devices == self.devices_json() and got_mwi == self.mwi

    def assert_matches(self, store: Store) -> None:
        devices, mwi = store
        assert devices == self.devices_json()
        assert {r["mailbox"]: (r["new"], r["old"], r["origin"]) for r in mwi} == self.mwi


def origin_gone(nodes: list[NodeProcess], eid: str) -> bool:
    return all(all(eid not in r["origins"] for r in n.devices()) for n in nodes)


def seed(exp: Expect, nodes: list[NodeProcess], eids: list[str], per_node: int = 5) -> None:
    """Each node asserts a few devices of its own, one shared device and one mailbox."""
    states = ["INUSE", "BUSY", "RINGING", "ONHOLD", "NOT_INUSE", "UNAVAILABLE"]
    for i, (node, eid) in enumerate(zip(nodes, eids, strict=True), start=1):
        for k in range(per_node):
            exp.device(node, eid, f"PJSIP/{i}{k:02d}", states[(i + k) % len(states)])
        exp.device(node, eid, "Custom:shared", states[i])
        exp.mailbox(node, eid, f"{i}000@default", i, 0)


# -- (a) one loopback corosync, three daemons -------------------------------------------------
@pytest.fixture(scope="module")
def loopback() -> Iterator[CorosyncInstance]:
    require_corosync(netns=True)
    with private_loopback() as instance:
        yield instance


def test_change_aggregates_everywhere_and_late_joiner_gets_all(
    loopback: CorosyncInstance,
) -> None:
    ns = loopback.netns
    with node_group([("pbx1", ns), ("pbx2", ns), ("pbx3", ns)]) as nodes:
        one, two, three = nodes
        one.start()
        two.start()
        e1, e2 = one.eid(), two.eid()
        exp = Expect()
        exp.device(one, e1, "Custom:agg", "BUSY")
        exp.device(two, e2, "Custom:agg", "RINGING")
        exp.mailbox(two, e2, "1000@default", 2, 1)
        store, _ = wait_converged([one, two], 10, exp.matches)
        assert store[0][0]["state"] == "RINGINUSE"  # Asterisk: ringing + busy = ring-in-use

        t0 = time.monotonic()
        for k in range(2000):
            exp.device(one if k % 2 else two, e1 if k % 2 else e2, f"PJSIP/{k:04d}", "INUSE")
        published = time.monotonic() - t0
        wait_converged([one, two], 20, exp.matches)

        ready = three.start()
        e3 = three.eid()
        store, joined = wait_converged(nodes, 20, exp.matches)
        assert len(store[0]) == 2001
        exp.device(three, e3, "Custom:agg", "NOT_INUSE")
        exp.mailbox(three, e3, "1000@default", 0, 3)  # last writer wins everywhere
        store, applied = wait_converged(nodes, 10, exp.matches)
        exp.assert_matches(store)
        assert next(r for r in store[0] if r["device"] == "Custom:agg")["state"] == "RINGINUSE"
        record(
            "loopback late joiner (2,001 devices)",
            publish_2000_via_api=published,
            start_to_api=ready,
            api_to_identical=joined,
            change_to_identical=applied,
        )


def test_leave_kill_and_restart_drop_and_restore_slots(loopback: CorosyncInstance) -> None:
    ns = loopback.netns
    with node_group([("pbx1", ns), ("pbx2", ns), ("pbx3", ns)]) as nodes:
        for n in nodes:
            n.start()
        eids = [n.eid() for n in nodes]
        one, two, three = nodes
        exp = Expect()
        seed(exp, nodes, eids)
        wait_converged(nodes, 15, exp.matches)

        # SIGTERM: the daemon leaves cleanly (LEAVE frame + cpg_leave)
        three.terminate()
        _, sigterm_drop = wait_until(lambda: origin_gone([one, two], eids[2]), 5, "pbx3 dropped")
        assert three.wait_exit(10) == 0
        exp.drop(eids[2])
        wait_converged([one, two], 5, exp.matches)
        assert sigterm_drop < 1.0, f"slots of a node that left stayed {sigterm_drop:.3f} s"

        # restart with the same state_dir: same EID; the states it had published through the
        # API come back (kept in its state directory), then it changes one of them
        t0 = time.monotonic()
        three.start()
        assert three.eid() == eids[2]
        kept = exp.restore(eids[2])
        exp.device(three, eids[2], "PJSIP/300", "RINGING")
        exp.mailbox(three, eids[2], "3000@default", 3, 1)
        wait_converged(nodes, 15, exp.matches)
        restart_converge = time.monotonic() - t0
        assert three.slots_of(eids[2]) == {**kept, "PJSIP/300": "RINGING"}

        # kill -9: corosync reports PROCDOWN
        two.kill()
        _, kill_drop = wait_until(lambda: origin_gone([one, three], eids[1]), 5, "pbx2 dropped")
        exp.drop(eids[1])
        wait_converged([one, three], 5, exp.matches)
        assert kill_drop < 1.0, f"slots of a killed node stayed {kill_drop:.3f} s"

        t0 = time.monotonic()
        two.start()
        assert two.eid() == eids[1]
        kept = exp.restore(eids[1])  # saved long before the kill, so nothing was lost
        exp.device(two, eids[1], "PJSIP/200", "BUSY")
        exp.device(two, eids[1], "Custom:shared", "INUSE")
        exp.mailbox(two, eids[1], "2000@default", 0, 2)
        store, _ = wait_converged(nodes, 15, exp.matches)
        kill_restart = time.monotonic() - t0
        exp.assert_matches(store)
        assert two.slots_of(eids[1]) == {**kept, "PJSIP/200": "BUSY", "Custom:shared": "INUSE"}
        record(
            "loopback leave/kill",
            sigterm_to_dropped=sigterm_drop,
            restart_to_identical_incl_process_start=restart_converge,
            kill9_to_dropped=kill_drop,
            kill9_restart_to_identical_incl_process_start=kill_restart,
        )


# -- (b) three corosync nodes in network namespaces -------------------------------------------
@pytest.fixture
def mesh(corosync_cluster: Cluster) -> Iterator[tuple[Cluster, list[NodeProcess], list[str]]]:
    """One daemon per netns node, fresh group; the cluster is healed and whole again after."""
    cluster = corosync_cluster
    specs = [(f"pbx{i}", cluster.netns(i)) for i in (1, 2, 3)]
    try:
        with node_group(specs) as nodes:
            for n in nodes:
                n.start()
            eids = [n.eid() for n in nodes]
            wait_until(
                lambda: all(len(n.members()) == 3 for n in nodes), 20, "3 members everywhere"
            )
            yield cluster, nodes, eids
    finally:
        for i in (1, 2, 3):
            cluster.link_up(i)
            if cluster.nodes[i].pid is None:
                cluster.start(i)
        cluster.wait_formed(timeout=60)


@pytest.mark.netns
@pytest.mark.slow
def test_drill_corosync_kill9(mesh: tuple[Cluster, list[NodeProcess], list[str]]) -> None:
    cluster, nodes, eids = mesh
    one, two, three = nodes
    exp = Expect()
    seed(exp, nodes, eids)
    wait_converged(nodes, 20, exp.matches)

    cluster.kill(3)
    _, link_down = wait_until(lambda: not three.status()["link_up"], 10, "pbx3 link down")
    _, detect = wait_until(lambda: origin_gone([one, two], eids[2]), 15, "pbx3 dropped", 0.05)
    detect += link_down
    # pbx3 keeps serving its own state, and takes local writes, while corosync is gone
    own = {d: s[eids[2]] for d, s in exp.slots.items() if eids[2] in s}
    assert three.slots_of(eids[2]) == own
    exp.device(three, eids[2], "PJSIP/399", "RINGING")
    exp.mailbox(three, eids[2], "3999@default", 9, 9)
    assert three.slots_of(eids[2])["PJSIP/399"] == "RINGING"
    exp.device(one, eids[0], "PJSIP/199", "ONHOLD")

    t1 = time.monotonic()
    cluster.start(3)
    _, link_up = wait_until(lambda: three.status()["link_up"], 20, "pbx3 link up")
    store, _ = wait_converged(nodes, 30, exp.matches, interval=0.05)
    converge = time.monotonic() - t1
    exp.assert_matches(store)
    record(
        "netns corosync kill -9 (node 3)",
        kill_to_link_down_at_pbx3=link_down,
        kill_to_dropped_at_others=detect,
        start_returned_to_link_up=link_up,
        start_to_identical=converge,
    )


@pytest.mark.netns
@pytest.mark.slow
def test_drill_pbxmesh_kill9_restart(
    mesh: tuple[Cluster, list[NodeProcess], list[str]],
) -> None:
    _, nodes, eids = mesh
    one, two, three = nodes
    exp = Expect()
    seed(exp, nodes, eids)
    wait_converged(nodes, 20, exp.matches)

    two.kill()
    _, detect = wait_until(lambda: origin_gone([one, three], eids[1]), 10, "pbx2 dropped")
    exp.drop(eids[1])
    exp.device(one, eids[0], "PJSIP/198", "BUSY")  # written while pbx2 is away

    t1 = time.monotonic()
    two.start()
    assert two.eid() == eids[1]
    kept = exp.restore(eids[1])  # what it had published through the API comes back
    exp.device(two, eids[1], "PJSIP/200", "INUSE")
    exp.mailbox(two, eids[1], "2000@default", 4, 4)
    store, _ = wait_converged(nodes, 20, exp.matches, interval=0.05)
    converge = time.monotonic() - t1
    exp.assert_matches(store)
    assert two.slots_of(eids[1]) == {**kept, "PJSIP/200": "INUSE"}
    record(
        "netns pbxmesh kill -9 (node 2)",
        kill_to_dropped=detect,
        restart_to_identical_incl_process_start=converge,
    )


@pytest.mark.netns
@pytest.mark.slow
def test_drill_corosync_restart(mesh: tuple[Cluster, list[NodeProcess], list[str]]) -> None:
    cluster, nodes, eids = mesh
    one, two, three = nodes
    exp = Expect()
    seed(exp, nodes, eids)
    wait_converged(nodes, 20, exp.matches)

    t0 = time.monotonic()
    cluster.stop(2)  # SIGTERM; returns once corosync has exited (2-3 s)
    stopped = time.monotonic() - t0
    _, detect = wait_until(lambda: origin_gone([one, three], eids[1]), 15, "pbx2 dropped", 0.05)
    detect += stopped
    exp.device(two, eids[1], "PJSIP/299", "UNAVAILABLE")  # local write while corosync is down
    exp.device(three, eids[2], "PJSIP/399", "INUSE")

    t1 = time.monotonic()
    cluster.start(2)
    store, _ = wait_converged(nodes, 30, exp.matches, interval=0.05)
    converge = time.monotonic() - t1
    exp.assert_matches(store)
    record(
        "netns corosync restart (node 2, SIGTERM)",
        sigterm_to_exited=stopped,
        sigterm_to_dropped_at_others=detect,
        start_to_identical=converge,
    )


@pytest.mark.netns
@pytest.mark.slow
def test_drill_partition_and_heal(mesh: tuple[Cluster, list[NodeProcess], list[str]]) -> None:
    cluster, nodes, eids = mesh
    one, two, three = nodes
    exp = Expect()
    seed(exp, nodes, eids)
    wait_converged(nodes, 20, exp.matches)

    cluster.link_down(3)
    _, majority_detect = wait_until(
        lambda: origin_gone([one, two], eids[2]), 15, "pbx3 dropped by pbx1/pbx2", 0.05
    )
    _, minority_detect = wait_until(
        lambda: origin_gone([three], eids[0]) and origin_gone([three], eids[1]),
        15,
        "pbx1/pbx2 dropped by pbx3",
        0.05,
    )
    minority_detect += majority_detect
    # writes on both sides, the same device and mailbox too; pbx3's mailbox write is later
    exp.device(one, eids[0], "Custom:split", "BUSY")
    exp.device(two, eids[1], "PJSIP/250", "RINGING")
    exp.mailbox(one, eids[0], "split@default", 1, 0)
    exp.device(three, eids[2], "Custom:split", "RINGING")
    exp.device(three, eids[2], "PJSIP/350", "INUSE")
    time.sleep(0.01)  # versions are milliseconds: keep pbx3's mailbox write clearly the later
    exp.mailbox(three, eids[2], "split@default", 5, 5)
    assert one.slots_of(eids[0])["Custom:split"] == "BUSY"
    assert "Custom:split" not in {r["device"] for r in one.devices() if eids[2] in r["origins"]}

    t1 = time.monotonic()
    cluster.link_up(3)
    store, _ = wait_converged(nodes, 30, exp.matches, interval=0.05)
    converge = time.monotonic() - t1
    exp.assert_matches(store)
    split = next(r for r in store[0] if r["device"] == "Custom:split")
    assert split["state"] == "RINGINUSE"
    record(
        "netns partition {3} | {1,2} and heal",
        down_to_dropped_majority=majority_detect,
        down_to_dropped_minority=minority_detect,
        heal_to_identical=converge,
    )
