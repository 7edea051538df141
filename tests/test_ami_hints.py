"""Kept hints ([asterisk.hints]) against the PBX simulator, whose DialplanExtensionAdd/Remove
and ``dialplan reload`` are held to real Asterisk in tests/test_ami_conformance_dialplan.py
(the same behaviours on real Asterisk: tests/test_hints_asterisk.py)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from ami_helpers import SECRET, USER, FakeCluster, start_sim, wait_until
from pbxmesh.cli_query import hints as print_hints
from pbxmesh.links.ami import AmiConfig, AmiLink, AmiLinkConfig
from pbxmesh.links.ami.hints import HintsConfig
from pbxmesh.pbxsim.server import SimServer
from pbxmesh.presence import PresenceState
from pbxmesh.states import DeviceState
from tests.ami_helpers import THERE

CONTEXT = "ext-local-custom"
DIALPLAN = f"[{CONTEXT}]\nexten => 1000,hint,PJSIP/1000\n"
CONFIG = AmiLinkConfig(hints=HintsConfig(context=CONTEXT))


@pytest.fixture
async def sim() -> AsyncIterator[SimServer]:
    server = await start_sim(DIALPLAN)
    try:
        yield server
    finally:
        await server.close()


async def linked(sim: SimServer, cluster: FakeCluster | None = None) -> AmiLink:
    link = AmiLink(AmiConfig.local("127.0.0.1", sim.port, USER, SECRET), CONFIG)
    await link.start(cluster or FakeCluster())
    async with asyncio.timeout(5):
        await link.wait_synced()
    return link


def hint_of(sim: SimServer, exten: str) -> str | None:
    hint, _ = sim.pbx.extension_state(exten, CONTEXT)
    return hint.app if hint is not None else None


async def test_kept_follows_the_cluster_and_never_replaces(sim: SimServer) -> None:
    link = await linked(sim)
    try:
        want = "PJSIP/2001&Custom:remote-PJSIP-2001"
        link.remote_device("PJSIP/2001", DeviceState.INUSE)
        link.remote_device("PJSIP/1000", DeviceState.INUSE)  # has a hint of Asterisk's own
        link.remote_device("SIP/2002", DeviceState.INUSE)  # not an extension by the template
        await wait_until(lambda: hint_of(sim, "2001") == want, 2.0, "2001 kept")
        assert sim.pbx.extension_state("2001", CONTEXT)[1] == 1  # InUse
        assert hint_of(sim, "1000") == "PJSIP/1000" and hint_of(sim, "2002") is None
        rows = {(h.exten, h.hint, h.kept) for h in await link.hints()}
        assert rows == {("1000", "PJSIP/1000", False), ("2001", want, True)}
        link.remote_device("PJSIP/2001", DeviceState.INVALID)
        link.remote_device("PJSIP/1000", DeviceState.INVALID)
        await wait_until(lambda: hint_of(sim, "2001") is None, 2.0, "2001 removed")
        assert hint_of(sim, "1000") == "PJSIP/1000"
    finally:
        await link.close()


async def test_back_after_dialplan_reload_and_a_restart(sim: SimServer) -> None:
    cluster = FakeCluster()
    cluster.slots["PJSIP/2001"] = {"there": DeviceState.NOT_INUSE}
    link = await linked(sim, cluster)
    try:
        want = "PJSIP/2001&Custom:remote-PJSIP-2001"
        # known from the port's picture at the resync alone
        await wait_until(lambda: hint_of(sim, "2001") == want, 2.0, "kept")
        assert sim.pbx.command("dialplan reload") == (True, "Dialplan reloaded.\n")
        assert hint_of(sim, "2001") is None
        await wait_until(lambda: hint_of(sim, "2001") == want, 2.0, "back after the reload")
    finally:
        await link.close()
    # a new pbxmesh finds its hint there, takes it for its own and does not add it twice
    again = await linked(sim, cluster)
    try:
        await wait_until(lambda: again.hint_keeper is not None and bool(again.hint_keeper.kept))
        assert [h.kept for h in await again.hints() if h.exten == "2001"] == [True]
    finally:
        await again.close()


async def test_custom_presence_joins_the_hint_when_the_presentity_exists(
    sim: SimServer,
) -> None:
    link = await linked(sim)
    try:
        link.remote_device("PJSIP/2003", DeviceState.NOT_INUSE)
        plain = "PJSIP/2003&Custom:remote-PJSIP-2003"
        await wait_until(lambda: hint_of(sim, "2003") == plain, 2.0, "kept")
        link.remote_presence("CustomPresence:2003", PresenceState.AWAY, "", "", THERE)
        want = plain + ",CustomPresence:2003"
        await wait_until(lambda: hint_of(sim, "2003") == want, 2.0, "presence joined")
    finally:
        await link.close()


class _Answers:
    """What the control API answered for /hints (the CLI's client, minus the socket)."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows

    def request(self, method: str, path: str) -> list[dict[str, Any]]:
        assert (method, path) == ("GET", "/hints")
        return self.rows


def test_pbxmesh_hints_marks_the_kept_ones(capsys: pytest.CaptureFixture[str]) -> None:
    rows = [
        {"exten": "1000", "context": CONTEXT, "hint": "PJSIP/1000", "status": 0,
         "status_text": "Idle", "kept": False},
        {"exten": "2001", "context": CONTEXT, "hint": "PJSIP/2001", "status": 1,
         "status_text": "InUse", "kept": True},
    ]  # fmt: skip
    assert print_hints(_Answers(rows), False) == 0  # type: ignore[arg-type]
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["HINT", "DEVICES", "STATE", "KEPT"]
    assert lines[1].split() == ["1000@ext-local-custom", "PJSIP/1000", "Idle"]
    assert lines[2].split() == ["2001@ext-local-custom", "PJSIP/2001", "InUse", "pbxmesh"]
    assert print_hints(_Answers(rows), True) == 0  # type: ignore[arg-type]
    assert [r["kept"] for r in json.loads(capsys.readouterr().out)] == [False, True]


async def test_an_ami_user_without_system_is_told_once_what_to_add(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = await start_sim(DIALPLAN, system=False)
    try:
        link = await linked(server)
        try:
            link.remote_device("PJSIP/2001", DeviceState.INUSE)
            said = "add system to the write classes of pbxmesh's AMI user"
            await wait_until(lambda: said in caplog.text, 2.0, "the warning")
            await asyncio.sleep(1.5)  # another retry, not logged again
            assert caplog.text.count(said) == 1
            assert hint_of(server, "2001") is None
        finally:
            await link.close()
    finally:
        await server.close()


async def test_back_after_asterisk_restarts() -> None:
    server = await start_sim(DIALPLAN)
    link = await linked(server)
    try:
        want = "PJSIP/2001&Custom:remote-PJSIP-2001"
        link.remote_device("PJSIP/2001", DeviceState.RINGING)
        await wait_until(lambda: hint_of(server, "2001") == want, 2.0, "kept")
        port = server.port
        await server.close()
        await wait_until(lambda: not link.client.connected, 5.0, "link down")
        server = await start_sim(DIALPLAN, port=port)  # a restart forgets what AMI added
        assert hint_of(server, "2001") is None
        await wait_until(lambda: hint_of(server, "2001") == want, 5.0, "kept again")
    finally:
        await link.close()
        await server.close()
