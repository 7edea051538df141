"""The AMI link between the simulator (real TCP) and a fake port: what is AMI's own (counterpart
names, include/exclude, MWI echo, stale AstDB counterparts). The link contract is in
test_link_ami.py."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from ami_helpers import SECRET, THERE, USER, FakeCluster, RawAmi, start_sim, wait_until
from pbxmesh.errors import ConfigError
from pbxmesh.links.ami.client import AmiConfig
from pbxmesh.links.ami.codec import Action
from pbxmesh.links.ami.counterparts import counterpart_name, hint_lines
from pbxmesh.links.ami.link import AmiLink, AmiLinkConfig
from pbxmesh.pbxsim.server import SimServer
from pbxmesh.presence import PresenceState
from pbxmesh.states import DeviceState

MESH_DIALPLAN = "\n".join(
    hint_lines({"1234": "Custom:mystate", "100": "PJSIP/100"}, "devstate_test")
)


async def hints_text(port: int) -> list[str]:
    ami = await RawAmi.connect(port)
    try:
        return (await ami.request(Action.of("Command", Command="core show hints"))).output
    finally:
        await ami.close()


async def hint_state(port: int, exten: str) -> str:
    for line in await hints_text(port):
        if line.startswith(f"{exten}@"):
            return line.split("State:")[1].split()[0]
    raise AssertionError(f"no hint {exten}")


async def setvar(port: int, device: str, value: str) -> None:
    ami = await RawAmi.connect(port)
    try:
        answer = await ami.request(
            Action.of("Setvar", Variable=f"DEVICE_STATE({device})", Value=value)
        )
        assert answer.ok
    finally:
        await ami.close()


class Harness:
    sim: SimServer  # set by start()
    link: AmiLink

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.cluster = FakeCluster()

    async def start(self, config: AmiLinkConfig | None = None, system: bool = True) -> None:
        self.sim = await start_sim(MESH_DIALPLAN, self.tmp_path, system=system)
        ami = AmiConfig.local("127.0.0.1", self.sim.port, USER, SECRET)
        self.link = AmiLink(ami, config)
        await self.link.start(self.cluster)
        async with asyncio.timeout(5):
            await self.link.wait_synced()

    async def restart_sim(self) -> None:
        port = self.sim.port
        await self.sim.close()
        await wait_until(lambda: not self.link.client.connected)
        self.sim = await start_sim(MESH_DIALPLAN, self.tmp_path, port=port)

    async def stop(self) -> None:
        if hasattr(self, "link"):
            await self.link.close()
        if hasattr(self, "sim"):
            await self.sim.close()


@pytest.fixture
async def mesh(tmp_path: Path):
    harness = Harness(tmp_path)
    try:
        yield harness
    finally:
        await harness.stop()


def test_counterpart_names_and_hint_lines() -> None:
    assert counterpart_name("PJSIP/100") == "Custom:remote-PJSIP-100"
    assert counterpart_name("Custom:mystate") == "Custom:remote-Custom-mystate"
    long = counterpart_name("PJSIP/" + "x" * 200)
    other = counterpart_name("PJSIP/" + "x" * 199 + "y")
    assert len(long) == 79 and long != other and long.startswith("Custom:remote-PJSIP-x")
    assert hint_lines({"1234": "Custom:mystate"}, "devstate_test") == [
        "[devstate_test]",
        "exten => 1234,hint,Custom:mystate&Custom:remote-Custom-mystate",
    ]
    with pytest.raises(ConfigError):
        AmiLinkConfig(template="remote-{device}")
    with pytest.raises(ConfigError):
        AmiLinkConfig(template="Custom:remote")


async def test_local_change_is_published(mesh: Harness) -> None:
    await mesh.start()
    await setvar(mesh.sim.port, "Custom:mystate", "INUSE")
    await wait_until(lambda: mesh.cluster.last("Custom:mystate") is DeviceState.INUSE)


async def test_include_exclude(mesh: Harness) -> None:
    await mesh.start(AmiLinkConfig(include=("Custom:*",), exclude=("Custom:private*",)))
    await setvar(mesh.sim.port, "Custom:private1", "BUSY")
    await setvar(mesh.sim.port, "Custom:mystate", "BUSY")
    await wait_until(lambda: mesh.cluster.last("Custom:mystate") is DeviceState.BUSY)
    assert mesh.cluster.last("Custom:private1") is None


async def test_tutorial_remote_inuse_shows_in_core_show_hints(mesh: Harness) -> None:
    await mesh.start()
    assert await hint_state(mesh.sim.port, "1234") == "Idle"
    mesh.cluster.slots["Custom:mystate"] = {"server2": DeviceState.INUSE}
    mesh.link.remote_device("Custom:mystate", DeviceState.INUSE)
    async with asyncio.timeout(5):
        await mesh.link.wait_idle()
    text = await hints_text(mesh.sim.port)
    assert any(
        line.startswith("1234@devstate_test")
        and "Custom:mystate&Custom:remote-Custom-mystate" in line
        and "State:InUse" in line
        for line in text
    ), text
    # the local device itself was never touched, and nothing echoed back to the cluster
    assert mesh.sim.pbx.custom_db.get("mystate") is None
    assert all(not d.startswith("Custom:remote-") for d, _ in mesh.cluster.published)
    assert mesh.link.echoes == 0  # the link's AMI event filter spared it the echo
    # the remote server left: INVALID is written and the hint falls back to the local value
    mesh.link.remote_device("Custom:mystate", DeviceState.INVALID)
    async with asyncio.timeout(5):
        await mesh.link.wait_idle()
    assert mesh.sim.pbx.custom_db["remote-Custom-mystate"] == "INVALID"
    assert await hint_state(mesh.sim.port, "1234") == "Idle"


async def test_mwi_both_ways_without_echo(mesh: Harness) -> None:
    await mesh.start()
    ami = await RawAmi.connect(mesh.sim.port)
    await ami.request(Action.of("MWIUpdate", Mailbox="1000@default", NewMessages=2, OldMessages=0))
    await wait_until(lambda: ("1000@default", 2, 0) in mesh.cluster.published_mwi)
    mesh.cluster.mailboxes["2000@default"] = (5, 1)
    mesh.link.remote_mwi("2000@default", 5, 1, THERE)
    async with asyncio.timeout(5):
        await mesh.link.wait_idle()
    count = await ami.request(Action.of("MailboxCount", Mailbox="2000@default"))
    assert (count["NewMessages"], count["OldMessages"]) == ("5", "1")
    await ami.request(Action.of("MWIUpdate", Mailbox="3000@default", NewMessages=1))
    await wait_until(lambda: ("3000@default", 1, 0) in mesh.cluster.published_mwi)
    assert all(box != "2000@default" for box, _, _ in mesh.cluster.published_mwi)
    await ami.close()


async def test_reconnect_resync_both_ways(mesh: Harness) -> None:
    await mesh.start()
    await setvar(mesh.sim.port, "Custom:mystate", "BUSY")
    mesh.cluster.slots["PJSIP/100"] = {"server2": DeviceState.RINGING}
    mesh.link.remote_device("PJSIP/100", DeviceState.RINGING)
    mesh.cluster.slots["Custom:gone"] = {"server3": DeviceState.INUSE}
    mesh.link.remote_device("Custom:gone", DeviceState.INUSE)
    async with asyncio.timeout(5):
        await mesh.link.wait_idle()
    assert await hint_state(mesh.sim.port, "100") == "Ringing"
    mesh.cluster.published.clear()
    # while Asterisk is down, server3 leaves and server2's phone stops ringing
    await mesh.restart_sim()
    del mesh.cluster.slots["Custom:gone"]
    mesh.cluster.slots["PJSIP/100"] = {"server2": DeviceState.NOT_INUSE}
    async with asyncio.timeout(5):
        await mesh.link.wait_synced()
    # local states were read again and republished
    assert mesh.cluster.last("Custom:mystate") is DeviceState.BUSY
    # remote counterparts rewritten; the stale one (left in AstDB) is corrected to INVALID
    assert mesh.sim.pbx.custom_db["remote-PJSIP-100"] == "NOT_INUSE"
    assert mesh.sim.pbx.custom_db["remote-Custom-gone"] == "INVALID"
    assert await hint_state(mesh.sim.port, "100") == "Idle"
    assert mesh.link.resyncs == 2


async def test_without_the_event_filter_the_link_drops_its_echoes_itself(
    mesh: Harness, caplog
) -> None:
    """A user without the "system" class cannot set filters: every event comes through, the
    link says which manager.conf lines would spare it, and still never reports an echo."""
    caplog.set_level(logging.INFO, logger="pbxmesh.links.ami.link")
    await mesh.start(system=False)
    assert "eventfilter = !Device: Custom:remote-" in caplog.text
    mesh.cluster.slots["Custom:mystate"] = {"server2": DeviceState.INUSE}
    mesh.link.remote_device("Custom:mystate", DeviceState.INUSE)
    await wait_until(lambda: mesh.link.echoes >= 1, 5, "the counterpart's echo arrived")
    assert all(not d.startswith("Custom:remote-") for d, _ in mesh.cluster.published)


async def test_app_voicemail_mailboxes_are_shared_and_remote_ones_said_unshowable(
    tmp_path: Path, caplog
) -> None:
    """A server running app_voicemail has no MWIUpdate/MWIGet: its own mailboxes are read from
    VoicemailUsersList and shared; remote ones cannot be shown there, and the link says so."""
    caplog.set_level(logging.INFO, logger="pbxmesh.links.ami.link")
    sim = await start_sim(MESH_DIALPLAN, voicemail={"1000@default": (2, 1), "1001@default": (0, 0)})
    cluster = FakeCluster()
    cluster.mailboxes["2000@default"] = (5, 0)  # another server's mailbox
    link = AmiLink(AmiConfig.local("127.0.0.1", sim.port, USER, SECRET))
    try:
        await link.start(cluster)
        async with asyncio.timeout(5):
            await link.wait_synced()
        assert ("1000@default", 2, 1) in cluster.published_mwi
        assert ("1001@default", 0, 0) in cluster.published_mwi
        assert "runs app_voicemail" in caplog.text and "2000@default" in caplog.text
        assert link.status().extra["voicemail"] is True
        assert link.status().extra["mwi_not_shown"] == 1
        # A message left now is shared at once; a new remote mailbox is said unshowable too.
        sim.pbx.leave_message("1001@default")
        await wait_until(lambda: ("1001@default", 1, 0) in cluster.published_mwi)
        link.remote_mwi("3000@default", 1, 0, THERE)
        await wait_until(lambda: link.status().extra["mwi_not_shown"] == 2)
        assert "remote mailbox 3000@default cannot be shown" in caplog.text
    finally:
        await link.close()
        await sim.close()


async def test_asterisk_gone_past_the_grace_withdraws_its_states_and_a_blip_does_not(
    mesh: Harness,
) -> None:
    await mesh.start(AmiLinkConfig(down_grace=0.3))
    await setvar(mesh.sim.port, "Custom:mystate", "BUSY")
    await wait_until(lambda: mesh.cluster.last("Custom:mystate") is DeviceState.BUSY)
    # A blip: Asterisk is back before the grace ends (the client reconnects within 0.2 s).
    await mesh.restart_sim()
    async with asyncio.timeout(5):
        await mesh.link.wait_synced()
    await asyncio.sleep(0.4)  # past the grace: nothing may have been withdrawn
    assert mesh.cluster.withdrawals == 0
    # Gone for good: withdrawn once, after the grace; back: reported again.
    port = mesh.sim.port
    await mesh.sim.close()
    await wait_until(lambda: mesh.cluster.withdrawals == 1, 3, "withdrawn after the grace")
    assert mesh.link.status().extra["withdrawals"] == 1
    mesh.cluster.published.clear()
    mesh.sim = await start_sim(MESH_DIALPLAN, mesh.tmp_path, port=port)
    async with asyncio.timeout(5):
        await mesh.link.wait_synced()
    assert mesh.cluster.last("Custom:mystate") is DeviceState.BUSY
    assert mesh.cluster.withdrawals == 1


async def test_names_the_cluster_cannot_carry_are_skipped_and_the_link_survives() -> None:
    """Asterisk can hold a mailbox ``@emptybox`` or a count of -1; neither may end the link."""
    from pbxmesh.errors import StateError
    from pbxmesh.links.ami.client import AmiConfig
    from pbxmesh.links.ami.link import AmiLink
    from tests.ami_helpers import SECRET, USER, FakeCluster, start_sim, wait_until

    class Strict(FakeCluster):
        def mwi(self, mailbox: str, new: int, old: int) -> None:
            if new < 0 or new > 0x7FFFFFFF:
                raise StateError(f"message counts {new}/{old} out of range")
            super().mwi(mailbox, new, old)

    sim = await start_sim()
    sim.pbx.mwi_update("@emptybox", 1, 0)
    sim.pbx.mwi_update("1000@default", 4294967295, 0)
    cluster = Strict()
    link = AmiLink(AmiConfig.local("127.0.0.1", sim.port, USER, SECRET))
    try:
        await link.start(cluster)
        async with asyncio.timeout(10):
            await link.wait_synced()
        assert link.skipped >= 2
        sim.pbx.set_custom("Custom:mystate", "INUSE")
        await wait_until(lambda: cluster.last("Custom:mystate") is not None, 5, "still shared")
        assert link.client.connected
    finally:
        await link.close()
        await sim.close()


async def test_a_stale_copy_of_a_remote_mailbox_is_not_taken_for_a_local_change(
    mesh: Harness,
) -> None:
    """Found by the chaos drill (seed 2): Asterisk still holds the counts another server had
    when the link went down; the cluster's have changed since. The resync read MWIGet *before*
    writing the cluster's counts, saw the old copy differ from them, and reported it as this
    server's own: the stale counts came back everywhere, with a newer version."""
    await mesh.start()
    boxes = [f"{k}@default" for k in range(2000, 2060)]
    for lap in range(3):
        mesh.sim.drop_connections()
        await wait_until(lambda: not mesh.link.client.connected, 5, "the drop seen")
        async with asyncio.timeout(5):
            await mesh.link.client.wait_connected()
        for box in boxes:  # remote changes arriving as the link comes back
            mesh.cluster.mailboxes[box] = (lap + 1, 0)
            mesh.link.remote_mwi(box, lap + 1, 0, THERE)
        async with asyncio.timeout(10):
            await mesh.link.wait_synced()
            await mesh.link.wait_idle()
    assert all(mesh.sim.pbx.mwi_db[box] == (3, 0) for box in boxes)
    claimed = [m for m in mesh.cluster.published_mwi if m[0] in boxes]
    assert claimed == [], f"remote counts reported as this server's own: {claimed[:5]}"


async def change_here(mesh: Harness, box: str, new: int, old: int) -> None:
    """This server's Asterisk changes ``box`` (another AMI session); wait until reported."""
    ami = await RawAmi.connect(mesh.sim.port)
    try:
        await ami.request(Action.of("MWIUpdate", Mailbox=box, NewMessages=new, OldMessages=old))
    finally:
        await ami.close()
    await wait_until(lambda: (box, new, old) in mesh.cluster.published_mwi)


async def resynced(mesh: Harness) -> None:
    """The link's resync is over, its queue written, and the echoes are in."""
    async with asyncio.timeout(10):
        await mesh.link.wait_synced()
        await mesh.link.wait_idle()
    await asyncio.sleep(0.2)


async def test_nothing_is_written_between_a_reconnect_and_its_resync(mesh: Harness) -> None:
    """Found by the chaos drill over NATS (seed 24): a node restarted, learnt a newer count for
    another server's mailbox at its join, and its link connected. The writer wrote that count
    at once, while the resync was still setting its event filters; the resync then forgot the
    echoes it expected, took the write's MessageWaiting for a change made on this Asterisk,
    and claimed the mailbox for this server. The writer now waits for the resync."""
    await mesh.start()
    box = "3100@default"
    release = asyncio.Event()
    original = mesh.link.resync.set_filters

    async def slow_filters(client: Any) -> None:  # a slow first round trip of the session
        await release.wait()
        await original(client)

    mesh.link.resync.set_filters = slow_filters  # type: ignore[method-assign]
    mesh.sim.drop_connections()
    await wait_until(lambda: not mesh.link.client.connected, 5, "the drop seen")
    async with asyncio.timeout(5):
        await mesh.link.client.wait_connected()
    mesh.cluster.mailboxes[box] = (4, 1)
    mesh.link.remote_mwi(box, 4, 1, THERE)  # learnt as the link comes back
    await asyncio.sleep(0.2)
    assert box not in mesh.sim.pbx.mwi_db, "written before the resync began"
    release.set()
    await resynced(mesh)
    assert mesh.sim.pbx.mwi_db[box] == (4, 1)
    claimed = [m for m in mesh.cluster.published_mwi if m[0] == box]
    assert claimed == [], f"a remote count reported as this server's own: {claimed}"


async def test_a_local_change_during_a_resync_is_not_overwritten_by_it(mesh: Harness) -> None:
    """Found by the chaos drill over NATS (seed 24): a restarted node's resync had read the
    cluster's counts for a shared mailbox and was still writing counterparts when this server
    changed that mailbox. The change was reported (the cluster's value now), and then the
    resync wrote the older count it had read over it, here alone, for good."""
    await mesh.start()
    first, shared = "3200@default", "3201@default"
    for box in (first, shared):
        mesh.cluster.mailboxes[box] = (8, 6)
    paused, release = asyncio.Event(), asyncio.Event()
    original = mesh.link.writer.write_mwi

    async def slow_first(box: str, new: int, old: int) -> None:
        if box == first and not release.is_set():
            paused.set()
            await release.wait()
        await original(box, new, old)

    mesh.link.writer.write_mwi = slow_first  # type: ignore[method-assign]
    mesh.sim.drop_connections()  # the resync at the reconnect writes both remote counts
    async with asyncio.timeout(10):
        await paused.wait()
    await change_here(mesh, shared, 2, 2)  # while the resync is under way
    release.set()
    await resynced(mesh)
    assert mesh.sim.pbx.mwi_db[first] == (8, 6)
    assert mesh.sim.pbx.mwi_db[shared] == (2, 2), "the resync wrote its older count over it"


async def test_a_local_presence_change_during_a_resync_is_not_overwritten_by_it(
    mesh: Harness,
) -> None:
    """The same as for MWI: presence is last-writer-wins too."""
    await mesh.start()
    first, shared = "CustomPresence:zed", "CustomPresence:alice"
    for p in (first, shared):
        mesh.cluster.presentities[p] = (PresenceState.DND, "", "")
    paused, release = asyncio.Event(), asyncio.Event()
    original = mesh.link.presence.write

    async def slow_first(client: Any, presentity: str, value: Any) -> None:
        if presentity == first and not release.is_set():
            paused.set()
            await release.wait()
        await original(client, presentity, value)

    mesh.link.presence.write = slow_first  # type: ignore[method-assign]
    mesh.sim.drop_connections()
    async with asyncio.timeout(10):
        await paused.wait()
    ami = await RawAmi.connect(mesh.sim.port)
    try:
        answer = await ami.request(
            Action.of("Setvar", Variable=f"PRESENCE_STATE({shared})", Value="away,,")
        )
    finally:
        await ami.close()
    assert answer.ok
    await wait_until(lambda: any(p[1] is PresenceState.AWAY
                                 for p in mesh.cluster.published_presence))  # fmt: skip
    release.set()
    await resynced(mesh)
    assert mesh.sim.pbx.presence is not None
    assert mesh.sim.pbx.presence.cache[shared][0] == 3, "the resync wrote dnd over away"


def hold_actions(
    mesh: Harness, action: str, key: str, value: str
) -> tuple[asyncio.Event, asyncio.Event]:
    """Hold the link's ``action`` whose ``key`` is ``value`` before it is sent (it is then in
    flight, as far as the link knows) until the second event is set; the first says one is."""
    in_flight, land = asyncio.Event(), asyncio.Event()
    original = mesh.link.client.action

    async def held(name: str, **fields: Any) -> Any:
        if name == action and fields.get(key) == value and not land.is_set():
            in_flight.set()
            await land.wait()
        return await original(name, **fields)

    mesh.link.client.action = held  # type: ignore[method-assign]
    return in_flight, land


async def test_a_local_change_overtaken_by_a_write_in_flight_is_written_back(
    mesh: Harness,
) -> None:
    """The narrow race left after defect 3: a remote count already on its way to Asterisk
    when this server changes the mailbox. Asterisk applies the local change first (its event
    comes first), then our older write: Asterisk alone ends with the remote count. The link
    now writes the local change back once the write in flight is echoed."""
    await mesh.start()
    box = "3300@default"
    in_flight, land = hold_actions(mesh, "MWIUpdate", "Mailbox", box)
    mesh.cluster.mailboxes[box] = (5, 5)
    mesh.link.remote_mwi(box, 5, 5, THERE)
    async with asyncio.timeout(5):
        await in_flight.wait()
    await change_here(mesh, box, 1, 1)  # while the remote count is in flight
    land.set()  # the older remote count lands on Asterisk after the local change
    await wait_until(lambda: mesh.sim.pbx.mwi_db.get(box) == (1, 1), 5, "the change redone")
    async with asyncio.timeout(10):
        await mesh.link.wait_idle()
    await asyncio.sleep(0.2)
    assert mesh.sim.pbx.mwi_db[box] == (1, 1)
    assert [m for m in mesh.cluster.published_mwi if m[0] == box] == [(box, 1, 1)]


async def test_a_local_presence_overtaken_by_a_write_in_flight_is_written_back(
    mesh: Harness,
) -> None:
    """The same race for presence (last-writer-wins too)."""
    await mesh.start()
    who = "CustomPresence:carol"
    variable = f"PRESENCE_STATE({who})"
    in_flight, land = hold_actions(mesh, "Setvar", "Variable", variable)
    mesh.cluster.presentities[who] = (PresenceState.DND, "", "")
    mesh.link.remote_presence(who, PresenceState.DND, "", "", THERE)
    async with asyncio.timeout(5):
        await in_flight.wait()
    ami = await RawAmi.connect(mesh.sim.port)
    try:
        answer = await ami.request(Action.of("Setvar", Variable=variable, Value="away,,"))
    finally:
        await ami.close()
    assert answer.ok
    await wait_until(lambda: any(p[0] == who and p[1] is PresenceState.AWAY
                                 for p in mesh.cluster.published_presence))  # fmt: skip
    land.set()
    assert mesh.sim.pbx.presence is not None
    cache = mesh.sim.pbx.presence.cache
    await wait_until(lambda: cache[who][0] == 3, 5, "the change redone")  # away
    async with asyncio.timeout(10):
        await mesh.link.wait_idle()
    await asyncio.sleep(0.2)
    assert cache[who][0] == 3


async def test_a_counterpart_write_that_times_out_is_written_again(mesh: Harness) -> None:
    """Found by the chaos drill over NATS (its CI seed): under load a Setvar's answer took
    longer than action_timeout, the connection stayed up, and the writer dropped the writes
    of that batch (popped from the queue, never retried), while the batch's other writes,
    still in flight, could be overtaken by the next batch's and skipped as already written.
    Eight counterparts stayed INVALID for good. Failed writes are now queued again, and a
    batch ends only when each of its writes has."""
    from pbxmesh.errors import AmiError

    await mesh.start()
    devices = [f"Custom:t{k}" for k in range(20)]
    timed_out: set[str] = set()
    original = mesh.link.client.action

    async def slow_setvar(name: str, **fields: Any) -> Any:
        variable = str(fields.get("Variable", ""))
        if name == "Setvar" and "remote-Custom-t1" in variable and variable not in timed_out:
            timed_out.add(variable)  # e.g. remote-Custom-t1, -t10 .. -t19: the first try fails
            await asyncio.sleep(0.3)
            raise AmiError("AMI 127.0.0.1: sending Setvar failed: ")  # a timeout, as _send says
        return await original(name, **fields)

    mesh.link.client.action = slow_setvar  # type: ignore[method-assign]
    for d in devices:
        mesh.cluster.slots[d] = {"server2": DeviceState.RINGING}
        mesh.link.remote_device(d, DeviceState.RINGING)
    db = mesh.sim.pbx.custom_db
    want = {f"remote-Custom-t{k}" for k in range(20)}
    await wait_until(lambda: all(db.get(k) == "RINGING" for k in want), 10, "every counterpart")
    assert mesh.link.client.connected  # no reconnect, no resync did it
    assert len(timed_out) == 11


async def test_a_local_mwi_change_cancels_a_remote_count_still_queued(mesh: Harness) -> None:
    """Found by the chaos drill (seed 101): the writer was busy with thousands of counterparts
    when a remote count for a mailbox was queued; this server then changed that mailbox itself
    (reported, and so the cluster's value). The queued, older remote count was written after
    it and overwrote this server's own newer counts, which no one reported again."""
    await mesh.start()
    for k in range(3000):  # a burst elsewhere: the writer has a long queue of counterparts
        mesh.cluster.slots[f"Custom:b{k}"] = {"server2": DeviceState.INUSE}
        mesh.link.remote_device(f"Custom:b{k}", DeviceState.INUSE)
    mesh.cluster.mailboxes["91@default"] = (6, 3)
    mesh.link.remote_mwi("91@default", 6, 3, THERE)
    ami = await RawAmi.connect(mesh.sim.port)
    try:
        await ami.request(
            Action.of("MWIUpdate", Mailbox="91@default", NewMessages=2, OldMessages=7)
        )
    finally:
        await ami.close()
    await wait_until(lambda: ("91@default", 2, 7) in mesh.cluster.published_mwi)
    async with asyncio.timeout(20):
        await mesh.link.wait_idle()
    assert mesh.sim.pbx.mwi_db["91@default"] == (2, 7)


async def test_a_local_presence_change_cancels_a_remote_value_still_queued(mesh: Harness) -> None:
    """The same as for MWI: presence is last-writer-wins too."""
    await mesh.start()
    for k in range(3000):
        mesh.cluster.slots[f"Custom:b{k}"] = {"server2": DeviceState.INUSE}
        mesh.link.remote_device(f"Custom:b{k}", DeviceState.INUSE)
    mesh.cluster.presentities["CustomPresence:alice"] = (PresenceState.DND, "", "")
    mesh.link.remote_presence("CustomPresence:alice", PresenceState.DND, "", "", THERE)
    ami = await RawAmi.connect(mesh.sim.port)
    try:
        answer = await ami.request(
            Action.of("Setvar", Variable="PRESENCE_STATE(CustomPresence:alice)", Value="away,,")
        )
    finally:
        await ami.close()
    assert answer.ok
    await wait_until(lambda: any(p[1] is PresenceState.AWAY
                                 for p in mesh.cluster.published_presence))  # fmt: skip
    async with asyncio.timeout(20):
        await mesh.link.wait_idle()
    assert mesh.sim.pbx.presence is not None
    assert mesh.sim.pbx.presence.cache["CustomPresence:alice"][0] == 3  # away
