"""The daemon in-process over the in-memory transport: restarts keep this node's assertions."""

from __future__ import annotations

from pathlib import Path

import pytest

from pbxmesh.config import load_config
from pbxmesh.daemon import Daemon
from pbxmesh.errors import ConfigError
from pbxmesh.ports import free_ports
from pbxmesh.states import DeviceState
from pbxmesh.transport.memory import MemoryNetwork
from tests.test_node import wait_for


def free_port() -> int:
    return free_ports(1)[0]


def config(tmp_path: Path, name: str):
    path = tmp_path / f"{name}.toml"
    path.write_text(
        f'[node]\nname = "{name}"\nstate_dir = "{tmp_path / name}"\n'
        f'[control]\nlisten = "127.0.0.1:{free_port()}"\n'
    )
    return load_config(path)


async def started(tmp_path: Path, net: MemoryNetwork, name: str) -> Daemon:
    daemon = Daemon(config(tmp_path, name), transport=net.new_transport(name))
    await daemon.start()
    return daemon


async def test_a_restarted_node_serves_and_announces_what_it_had_published(tmp_path) -> None:
    net = MemoryNetwork()
    a = await started(tmp_path, net, "a")
    b = await started(tmp_path, net, "b")
    try:
        a.node.publish_device("Custom:dnd1001", DeviceState.BUSY, keep=True)
        a.node.publish_mwi("1001@default", 4, 2, keep=True)
        a.node.publish_device("PJSIP/1001", DeviceState.INUSE)  # learned: Asterisk's to say
        await wait_for(lambda: b.node.devices.cluster_state("Custom:dnd1001") is DeviceState.BUSY)
        eid = a.eid
        await a.stop()
        await wait_for(lambda: "Custom:dnd1001" not in b.node.devices)
        again = Daemon(config(tmp_path, "a"), transport=net.new_transport("a"))
        assert again.eid == eid
        await again.start()
        try:
            assert again.node.devices.cluster_state("Custom:dnd1001") is DeviceState.BUSY
            assert "PJSIP/1001" not in again.node.devices
            await wait_for(
                lambda: b.node.devices.cluster_state("Custom:dnd1001") is DeviceState.BUSY
            )
            record = b.node.mwi.get("1001@default")
            assert record is not None and (record.new, record.old) == (4, 2)
            # A new assertion after the restart is newer than the restored one everywhere.
            again.node.publish_device("Custom:dnd1001", DeviceState.NOT_INUSE)
            await wait_for(
                lambda: b.node.devices.cluster_state("Custom:dnd1001") is DeviceState.NOT_INUSE
            )
        finally:
            await again.stop()
    finally:
        await b.stop()


async def test_reported_mailboxes_and_presence_are_announced_again_after_a_restart(
    tmp_path,
) -> None:
    """What a link reported (not kept) is saved too, so that a restarted node's snapshot at
    join carries its mailboxes and presence before its link has re-read Asterisk: a node
    that joins meanwhile learns them from their owner instead of claiming its own copies."""
    from pbxmesh.presence import PresenceState

    net = MemoryNetwork()
    a = await started(tmp_path, net, "a")
    b = await started(tmp_path, net, "b")
    try:
        a.node.publish_mwi("1405@default", 3, 1)  # as the AMI link reports a change
        a.node.publish_presence("alice", PresenceState.AWAY, "", "lunch")

        def saved() -> bool:  # by the periodic save, before any stop
            mwi = a.own_file.load()[1]
            presence = a.own_file.load_presence()
            return [m[:3] for m in mwi] == [("1405@default", 3, 1)] and [
                p[:4] for p in presence
            ] == [("CustomPresence:alice", int(PresenceState.AWAY), "", "lunch")]

        await wait_for(saved)
        eid = a.eid
        await a.stop()
        again = await started(tmp_path, net, "a")
        c = await started(tmp_path, net, "c")
        try:
            await wait_for(lambda: c.node.mwi.get("1405@default") is not None)
            record = c.node.mwi.get("1405@default")
            assert record is not None and (record.new, record.old, record.origin) == (3, 1, eid)
            presence = c.node.presence.get("CustomPresence:alice")
            assert presence is not None and presence.origin == eid
            assert presence.value == (PresenceState.AWAY, "", "lunch")
        finally:
            await c.stop()
            await again.stop()
    finally:
        await b.stop()


async def test_a_restarted_node_knows_the_mailboxes_and_presence_of_a_writer_that_is_gone(
    tmp_path,
) -> None:
    """Snapshots carry only their sender's records: a node restarted while another writer is
    down learns that writer's mailboxes and presence from its own saved copy, under the
    writer's EID (so its link takes its PBX's copies for copies, not for this server's)."""
    from pbxmesh.presence import PresenceState

    net = MemoryNetwork()
    a = await started(tmp_path, net, "a")
    b = await started(tmp_path, net, "b")
    a.node.publish_mwi("1200@default", 3, 1)
    a.node.publish_presence("bob", PresenceState.DND, "", "meeting")
    await wait_for(lambda: b.node.presence.get("CustomPresence:bob") is not None)
    await wait_for(lambda: len(b.own_file.load_cluster()[1]) == 1)  # b's periodic save
    await a.stop()
    await b.stop()
    again = await started(tmp_path, MemoryNetwork(), "b")
    try:
        box = again.node.mwi.get("1200@default")
        assert box is not None and (box.new, box.old, box.origin) == (3, 1, a.eid)
        bob = again.node.presence.get("CustomPresence:bob")
        assert bob is not None and bob.origin == a.eid
        assert bob.value == (PresenceState.DND, "", "meeting")
        assert again.node.own.own_state()[1] == [] and again.node.own.own_presence() == []
        assert again.node.clock.tick() > max(box.version, bob.version)
    finally:
        await again.stop()


def test_a_damaged_own_state_file_is_a_clear_error(tmp_path) -> None:
    cfg = config(tmp_path, "a")
    cfg.node.state_dir.mkdir(parents=True)
    (cfg.node.state_dir / "own-state.json").write_text('{"devices": [["x", 42, 1]], "mwi": []}')
    d = Daemon(cfg, transport=MemoryNetwork().new_transport("a"))
    with pytest.raises(ConfigError, match=r"outside 0\.\.8"):
        d.own_file.load()
    (cfg.node.state_dir / "own-state.json").write_text("{not json")
    with pytest.raises(ConfigError, match="saved state is unreadable"):
        d.own_file.load()


async def test_the_control_api_refuses_what_a_web_page_could_forge(tmp_path) -> None:
    import aiohttp

    cfg = config(tmp_path, "a")
    d = Daemon(cfg, transport=MemoryNetwork().new_transport("a"))
    await d.start()
    host, port = cfg.control.listen
    base = f"http://{host}:{port}/api/v1"
    try:
        async with aiohttp.ClientSession() as http:
            body = '{"device": "Custom:x", "state": "BUSY"}'
            # A cross-site form or no-cors fetch can only send "simple" content types.
            async with http.post(
                f"{base}/publish/device_state", data=body, headers={"Content-Type": "text/plain"}
            ) as r:
                assert r.status == 415
            # DNS rebinding: a foreign host name pointing at 127.0.0.1.
            async with http.get(f"{base}/devices", headers={"Host": "evil.example:80"}) as r:
                assert r.status == 403
            async with http.post(
                f"{base}/publish/device_state",
                data=body,
                headers={"Content-Type": "application/json"},
            ) as r:
                assert r.status == 202
            async with http.post(
                f"{base}/publish/device_state",
                data="{not json",
                headers={"Content-Type": "application/json"},
            ) as r:
                assert r.status == 400 and "must be JSON" in (await r.json())["error"]
        assert d.node.devices.cluster_state("Custom:x") is DeviceState.BUSY
    finally:
        await d.stop()
