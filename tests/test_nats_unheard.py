"""One-way paths over NATS: lost notices, the watch that reads them, and the move they cause.

A member whose server takes its messages but does not pass them on (nats-server 2.9's leaf-node
interest defect, docs/nats.md) hears everyone and is heard by nobody beyond that server. The
others name it in their lost notices; it reads itself there for ``failure_timeout`` and moves
to another server, which it then keeps away from for a while.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pbxmesh.errors import RemoteProtocolError
from pbxmesh.transport import Member
from pbxmesh.transport.nats import Heartbeat, HeartbeatKind, member_token
from pbxmesh.transport.nats.heartbeat import (
    LOST_MAX,
    LostNotice,
    PeerTable,
    UnheardWatch,
    decode_heartbeat,
    encode_heartbeat,
    encode_lost,
)
from pbxmesh.transport.nats.servers import UNHEARD_HOLD, UNHEARD_HOLD_MAX, ServerChoice
from tests.harness.nats import NatsCluster

ROOT = Path(__file__).resolve().parent.parent

# -- the codec ---------------------------------------------------------------------------------
tokens = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-%", min_size=1, max_size=40)
notices = st.builds(
    LostNotice,
    instance=st.integers(0, 2**64 - 1),
    epoch=st.integers(0, 2**32 - 1),
    name=st.text(min_size=1, max_size=60).filter(lambda s: 1 <= len(s.encode()) <= 255),
    lost=st.lists(st.tuples(tokens, st.integers(0, 2**64 - 1)), max_size=LOST_MAX).map(tuple),
)


@given(notices)
def test_a_lost_notice_round_trips(notice: LostNotice) -> None:
    assert decode_heartbeat(encode_lost(notice)) == notice


@given(notices, st.data())
def test_a_cut_or_damaged_lost_notice_is_a_protocol_error_or_another_valid_one(
    notice: LostNotice, data: st.DataObject
) -> None:
    raw = bytearray(encode_lost(notice))
    cut = data.draw(st.integers(0, len(raw) - 1))
    if data.draw(st.booleans()):
        raw = raw[:cut]
    else:
        raw[cut] = data.draw(st.integers(0, 255))
    try:
        decoded = decode_heartbeat(bytes(raw))
    except RemoteProtocolError:
        return
    assert isinstance(decoded, Heartbeat | LostNotice)


@given(st.binary(max_size=200))
def test_any_bytes_decode_or_raise_a_protocol_error(raw: bytes) -> None:
    try:
        decoded = decode_heartbeat(b"PBXH\x01\x04" + raw)
    except RemoteProtocolError:
        return
    assert isinstance(decoded, LostNotice)


def test_a_lost_notice_is_not_an_ordinary_heartbeat() -> None:
    with pytest.raises(ValueError, match="encode_lost"):
        encode_heartbeat(Heartbeat(HeartbeatKind.LOST, 1, 0, "pbx1"))
    with pytest.raises(ValueError, match="at most"):
        LostNotice(1, 0, "pbx1", tuple((f"m{i}", i) for i in range(LOST_MAX + 1)))
    with pytest.raises(ValueError, match="subject token"):
        LostNotice(1, 0, "pbx1", (("", 1),))


# -- who we lost, and who says they lost us ----------------------------------------------------
def _hb(name: str, instance: int = 7, kind: HeartbeatKind = HeartbeatKind.ALIVE) -> Heartbeat:
    return Heartbeat(kind, instance, 0, name)


def test_the_peer_table_names_whom_it_lost_until_it_hears_them_again() -> None:
    table = PeerTable(Member("me", "me"))
    table.heartbeat("pbx1", _hb("pbx1", 11), 0.0, gathering=False)
    table.heartbeat("pbx2", _hb("pbx2", 22), 0.0, gathering=False)
    table.heartbeat("pbx2", _hb("pbx2", 22), 2.0, gathering=False)
    change = table.expire(3.0, 2.5)
    assert change is not None and [m.member_id for m in change.left] == ["pbx1"]
    assert table.lost_notice(3.5, keep=600) == (("pbx1", 11),)
    table.expire(6.0, 2.5)  # pbx2 too, later: the most recently lost comes first
    assert table.lost_notice(6.0, keep=600) == (("pbx2", 22), ("pbx1", 11))
    table.heartbeat("pbx1", _hb("pbx1", 11), 7.0, gathering=False)  # heard again
    assert table.lost_notice(7.0, keep=600) == (("pbx2", 22),)
    assert table.lost_notice(700.0, keep=600) == ()  # forgotten after `keep`


def test_a_clean_leave_is_not_named_as_lost() -> None:
    table = PeerTable(Member("me", "me"))
    table.heartbeat("pbx1", _hb("pbx1"), 0.0, gathering=False)
    table.heartbeat("pbx1", _hb("pbx1", kind=HeartbeatKind.LEAVE), 1.0, gathering=False)
    assert table.expire(10.0, 2.5) is None
    assert table.lost_notice(10.0, keep=600) == ()


def test_the_watch_needs_notices_naming_us_for_the_whole_span() -> None:
    watch = UnheardWatch()
    assert watch.notice("pbx2", True, 10.0) is True  # it has just declared us failed
    assert watch.notice("pbx2", True, 11.0) is False  # the same episode
    assert watch.unheard(11.0, span=2.5, current=3.0) == []
    watch.notice("pbx2", True, 12.6)
    assert watch.unheard(12.6, span=2.5, current=3.0) == ["pbx2"]
    assert watch.unheard(20.0, span=2.5, current=3.0) == []  # its notices stopped: not current
    assert watch.notice("pbx2", False, 20.5) is False  # it hears us again: the episode ends
    assert watch.notice("pbx2", True, 21.0) is True  # and a new one begins
    assert watch.unheard(22.0, span=2.5, current=3.0) == []


def test_a_burst_of_old_notices_read_at_once_is_not_an_episode() -> None:
    """A member frozen for a while reads the notices queued meanwhile all at once; the others
    hear it again right away, so its episode never lasts a failure timeout."""
    watch = UnheardWatch()
    for _ in range(20):
        watch.notice("pbx2", True, 50.0)
    watch.notice("pbx2", False, 50.6)
    assert watch.unheard(53.1, span=2.5, current=3.0) == []


def test_an_unheard_server_is_held_off_longer_at_each_repeat() -> None:
    choice = ServerChoice(("leaf1:4222", "hub1:4222", "hub2:4222"))
    choice.connected("leaf1:4222")
    holds = []
    now = 0.0
    for _ in range(7):
        holds.append(choice.unheard("leaf1:4222", now))
        pick, _delay = choice.choose(["leaf1:4222", "hub1:4222", "hub2:4222"], now + 1)
        assert pick == "hub1:4222"
        choice.connected(pick)
        for s in ("leaf1:4222",):
            choice.probed(s, True)
            choice.probed(s, True)
        assert choice.failback_target(now + holds[-1] - 1) is None
        assert choice.failback_target(now + holds[-1] + 1) == "leaf1:4222"
        now += holds[-1] + 1
        choice.connected("leaf1:4222")
    assert holds == [UNHEARD_HOLD * 2**k for k in range(5)] + [UNHEARD_HOLD_MAX] * 2
    # A long good spell forgets the strikes.
    assert choice.unheard("leaf1:4222", now + 3 * UNHEARD_HOLD_MAX) == UNHEARD_HOLD


# -- on real nats-servers ----------------------------------------------------------------------


@pytest.mark.integration
async def test_a_member_named_lost_by_one_it_hears_moves_to_another_server(
    nats_cluster: NatsCluster, nats_group: str
) -> None:
    """A ghost member is heard by a and says it has lost a: a's messages do not reach it. a
    leaves its server for the next one and does not fail back to it within the hold."""
    import nats

    from tests.test_transport_nats import joined_of, member

    servers = nats_cluster.urls_from(0)
    async with member("a", nats_group, servers) as (a, alog):
        first = a.connected_url
        assert first is not None and first.endswith(f":{nats_cluster.servers[0].port}")
        ghost = await nats.connect(nats_cluster.urls_from(2)[0])
        subject = f"pbxmesh.{nats_group}.hb.{member_token('ghost')}"
        instance = secrets.randbits(64)
        started = time.monotonic()
        try:
            while a.connected_url == first and time.monotonic() - started < 10:
                await ghost.publish(subject, encode_heartbeat(_hb("ghost", instance)))
                notice = LostNotice(instance, 0, "ghost", (("a", a._instance),))
                await ghost.publish(subject, encode_lost(notice))
                await asyncio.sleep(0.25)
            moved = time.monotonic() - started
        finally:
            await ghost.close()
        await alog.wait_for(joined_of("ghost"), 1, "a heard the ghost")
        await asyncio.sleep(0.1)
        now = a.connected_url
        assert now is not None and now != first, "a did not leave the server nobody hears it on"
        assert 1.25 <= moved < 4.0, f"moved after {moved:.2f} s"
        await asyncio.sleep(3)  # several fail-back probes: the first server is held off
        assert a.connected_url == now
        print(f"\nnamed lost by a member it hears: moved to {now} after {moved:.2f} s")


FROZEN_MEMBER = """
import asyncio, sys
from pbxmesh.eid import EID
from pbxmesh.node import Node, NodeConfig
from pbxmesh.states import DeviceState
from pbxmesh.transport.nats import NatsConfig, NatsTransport

async def main() -> None:
    config = NatsConfig.local("frozen", sys.argv[1], tuple(sys.argv[2:]), randomize=False)
    node = Node(NodeConfig(name="frozen", eid=EID.generate()), NatsTransport(config))
    await node.start()
    for i in range(50):
        node.publish_device(f"Custom:f{i}", DeviceState.INUSE)
    print("ready", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


@pytest.mark.integration
async def test_a_member_frozen_past_the_failure_timeout_announces_its_state_again(
    nats_cluster: NatsCluster, nats_group: str
) -> None:
    """A frozen member saw no change of its own, but the others declared it failed and dropped
    its states; when it thaws it must announce them again (found by the chaos drill over NATS:
    a member frozen 2.7 s never had its unchanged devices back elsewhere)."""
    import os
    import signal
    import sys

    from pbxmesh.eid import EID
    from pbxmesh.node import Node, NodeConfig
    from pbxmesh.transport.nats import NatsConfig, NatsTransport

    servers = nats_cluster.urls_from(0)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        FROZEN_MEMBER,
        nats_group,
        *nats_cluster.urls_from(1),
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    node = Node(
        NodeConfig(name="watcher", eid=EID.generate()),
        NatsTransport(NatsConfig.local("watcher", nats_group, servers, randomize=False)),
    )
    await node.start()

    async def held(count: int, within: float) -> float:
        began = time.monotonic()
        while sum(1 for i in range(50) if f"Custom:f{i}" in node.devices) != count:
            assert time.monotonic() - began < within, f"not {count} devices after {within} s"
            await asyncio.sleep(0.02)
        return time.monotonic() - began

    try:
        assert proc.stdout is not None
        assert await asyncio.wait_for(proc.stdout.readline(), 20) == b"ready\n"
        await held(50, 10)
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            await held(0, 5)  # failure_timeout 1.25 s: declared failed, its states dropped
            await asyncio.sleep(0.5)
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        back = await held(50, 5)  # nothing changed there: it announces them again
        print(f"\nfrozen member's states back {back:.2f} s after it thawed")
    finally:
        proc.kill()
        await proc.wait()
        await node.close()
