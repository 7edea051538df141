"""Presence across three *real* Asterisk servers, each linked over AMI to its own pbxmesh
daemon over a real corosync: DND set on one server with ``PRESENCE_STATE()`` shows on the
others (``PresenceState`` and the hint's presence column in ``core show hints``) and clears
when changed back; commas, quotes and backslashes arrive unchanged.

Marked ``asterisk``: without a real Asterisk these tests skip with the reason (fail under CI).
"""

from __future__ import annotations

import asyncio
import base64

import pytest

from tests.test_real_asterisk import DIALPLAN, Server, servers, wait_until

pytestmark = [pytest.mark.asterisk, pytest.mark.integration]

#: extension 1000 watches alice's phone and her presence, as FreePBX-style hints do
PRESENCE_DIALPLAN = DIALPLAN + "exten => 1000,hint,Custom:alice,CustomPresence:alice\n"


async def presence(s: Server, presentity: str) -> tuple[str, str, str]:
    r = await s.ami.action("PresenceState", Provider=presentity)
    return r.get("State") or "", r.get("Subtype") or "", r.get("PresenceMessage") or ""


async def hint_presence(s: Server) -> str:
    lines = await s.ami.command("core show hints")
    (line,) = [ln for ln in lines if ln.startswith("1000@devstate_test")]
    return line.rsplit("Presence:", 1)[1].split()[0]


async def set_presence(s: Server, presentity: str, value: str) -> None:
    r = await s.ami.action("Setvar", Variable=f"PRESENCE_STATE({presentity})", Value=value)
    assert r.ok, r.message


async def test_presence_follows_a_person_to_every_server(
    require_asterisk, corosync_loopback, corosync_group
) -> None:
    async with servers(3, corosync_group, 22815, dialplan=PRESENCE_DIALPLAN) as (a, b, c):
        alice = "CustomPresence:alice"
        # As a dialplan's Set(PRESENCE_STATE(CustomPresence:alice)=dnd,,back at 3) does.
        await set_presence(a, alice, "dnd,,back at 3")
        for s in (b, c):
            await wait_until(
                lambda s=s: presence(s, alice), 10, "dnd elsewhere", expect=("dnd", "", "back at 3")
            )
            await wait_until(lambda s=s: hint_presence(s), 10, "the hint's presence", expect="dnd")
        # Changed back on its own server: cleared everywhere.
        await set_presence(a, alice, "available")
        for s in (b, c):
            await wait_until(
                lambda s=s: presence(s, alice), 10, "available again", expect=("available", "", "")
            )
            assert await hint_presence(s) == "available"

        # Set on another server, with what breaks naive writers: a comma (a field separator
        # without the e option), quotes and a backslash (escaped in PresenceStateChange).
        text = 'in a meeting, "urgent" only \\ thanks'
        encoded = [base64.b64encode(t.encode()).decode() for t in ("meeting", text)]
        await set_presence(b, alice, f"away,{encoded[0]},{encoded[1]},e")
        for s in (a, c):
            await wait_until(
                lambda s=s: presence(s, alice),
                10,
                "away with its message",
                expect=("away", "meeting", text),
            )
        # The cluster's record names pbx2 as the last writer, on every node: no server took
        # the copy it was written back as its own.
        for s in (a, b, c):
            await wait_until(
                lambda s=s: [(p["presentity"], p["origin"]) for p in s.node.get("/presence")],
                10,
                "pbx2 the last writer",
                expect=[(alice, b.node.eid())],
            )


async def test_a_restarted_asterisk_gets_remote_presence_back(
    require_asterisk, corosync_loopback, corosync_group
) -> None:
    async with servers(2, corosync_group, 22825, dialplan=PRESENCE_DIALPLAN) as (a, b):
        alice = "CustomPresence:alice"
        await set_presence(a, alice, "xa,,on holiday")
        expected = ("xa", "", "on holiday")
        await wait_until(lambda: presence(b, alice), 10, "xa on pbx2", expect=expected)
        await asyncio.to_thread(b.asterisk.stop)
        await set_presence(a, alice, "dnd,,back monday")  # while pbx2's Asterisk is down
        await asyncio.to_thread(b.asterisk.start)

        back = ("dnd", "", "back monday")
        await wait_until(lambda: presence(b, alice), 30, "pbx2 resynced", expect=back)
        await wait_until(lambda: hint_presence(b), 10, "hint after restart", expect="dnd")
