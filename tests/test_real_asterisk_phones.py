"""The lamp on a phone: a desk phone played by SIPp (a real SIP user agent nobody here wrote,
tests/harness/phone.py) is subscribed on pbx2 to hint 1234 (dialog), to hint 1000 with
``CustomPresence:alice`` (presence, as a generic and as a Digium phone) and to mailbox
1000@default (message-summary), while the state, the DND and the voicemail change on pbx1.
Over each link the NOTIFY bodies the phone receives are asserted: the dialog ``<state>`` and
its transitions, the PIDF note and Digium presence, the ``Messages-Waiting`` and
``Voice-Message`` lines.

Marked ``asterisk``: without a real Asterisk or without sipp these tests skip with the reason
(and fail under CI=true).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import pytest

from pbxmesh.links.sip.asterisk_conf import MODULES as SIP_MODULES
from tests.harness.asterisk import free_port
from tests.harness.corosync import corosync_missing_reason
from tests.harness.fixtures import skip_or_fail
from tests.harness.nats import nats_missing_reason
from tests.harness.phone import (
    PHONE_MODULES,
    Desk,
    desk_phone,
    dialog_state,
    digium_presence,
    message_summary,
    phone_pjsip,
    pidf,
    pidf_note,
    sipp_missing_reason,
    voice_message,
)
from tests.harness.ring import asterisk_ring
from tests.test_real_asterisk import HINT, Server, servers
from tests.test_real_asterisk_presence import set_presence
from tests.test_real_asterisk_sip import sip_servers

pytestmark = [pytest.mark.asterisk, pytest.mark.integration]

ALICE = "CustomPresence:alice"
#: What each device state change on pbx1 lights on pbx2's phone: the dialog-info ``<state>``
#: (RFC 4235) and the PIDF note Asterisk writes for the same hint.
TRANSITIONS = (
    ("INUSE", "confirmed", "On the phone"),
    ("RINGING", "early", "Ringing"),
    ("NOT_INUSE", "terminated", "Ready"),
)


@pytest.fixture(scope="session")
def require_sipp() -> None:
    skip_or_fail(sipp_missing_reason(), "SIPp phone")


def dialplan(device: str) -> str:
    """Hint 1234 for BLF (dialog) and hint 1000 for presence, on the same device state."""
    return f"[devstate_test]\nexten => 1234,hint,{device}\nexten => 1000,hint,{device},{ALICE}\n"


def collapsed(states: Sequence[str | None]) -> list[str | None]:
    """The states with consecutive repeats merged (a NOTIFY may repeat the same state)."""
    out: list[str | None] = []
    for s in states:
        if not out or out[-1] != s:
            out.append(s)
    return out


@dataclass(frozen=True)
class Pbx1:
    """How a test changes things on pbx1: a device state, a mailbox, a presence (None where
    the link carries no presence)."""

    device: Callable[[str], Awaitable[object]]
    mailbox: Callable[[int, int], Awaitable[object]]
    presence: Callable[[str], Awaitable[object]] | None


def over_ami(a: Server) -> Pbx1:
    """pbx1 driven over the test's own AMI session."""

    async def mailbox(new: int, old: int) -> None:
        r = await a.ami.action(
            "MWIUpdate", Mailbox="1000@default", NewMessages=new, OldMessages=old
        )
        assert r.ok, r.message

    return Pbx1(a.set, mailbox, lambda value: set_presence(a, ALICE, value))


async def a_desk_phone_follows_pbx1(
    pbx1: Pbx1,
    sip: tuple[str, int],
    netns: str | None = None,
    blf: str = "1234",
    presence_hint: str = "1000",
) -> None:
    """The phone on pbx2's Asterisk (its PJSIP at ``sip``) follows what changes on pbx1."""
    with desk_phone(sip, netns=netns, blf=blf, presence=presence_hint) as desk:
        await desk.wait_subscribed()
        assert dialog_state(desk.dialog.notifies()[0].body) == "terminated"
        assert pidf(desk.presence.notifies()[0].body).note == "Ready"
        assert message_summary(desk.mwi.notifies()[0].body)["Messages-Waiting"] == "no"

        await device_states(pbx1, desk)
        if pbx1.presence is not None:
            await presence(pbx1.presence, desk)
        await mailbox(pbx1, desk)

        # The phone unsubscribes (Expires: 0); Asterisk ends each subscription with a last
        # NOTIFY, which SIPp's scenario requires: exit status 0 for each.
        assert desk.stop() == [0, 0, 0, 0], [p.log() for p in desk.all()]
        for p in desk.all():
            assert p.notifies()[-1].state.startswith("terminated"), p.notifies()[-1]


async def device_states(pbx1: Pbx1, desk: Desk) -> None:
    first = len(desk.dialog.notifies())
    for state, lamp, note in TRANSITIONS:
        before = (len(desk.dialog.notifies()), len(desk.presence.notifies()))
        await pbx1.device(state)
        why = f"{state} on pbx1"
        await desk.dialog.wait_value(
            dialog_state, lamp, 10, f"{why}: dialog {lamp}", after=before[0]
        )
        got = await desk.presence.wait_value(
            pidf_note, note, 10, f"{why}: PIDF note {note}", after=before[1]
        )
        assert pidf(got.body).basic == "open", got.body
    # No lamp flickered in between: exactly these transitions reached the phone.
    seen = [dialog_state(n.body) for n in desk.dialog.notifies()[first:]]
    assert collapsed(seen) == [lamp for _, lamp, _ in TRANSITIONS], seen


async def presence(change: Callable[[str], Awaitable[object]], desk: Desk) -> None:
    for value, kind, message in (
        ("dnd,,back at 3", "dnd", "back at 3"),
        ("away,,lunch", "away", "lunch"),
        ("available", "available", ""),
    ):
        before = (len(desk.digium.notifies()), len(desk.presence.notifies()))
        await change(value)
        got = await desk.digium.wait_value(
            digium_presence, kind, 10, f"{value} on pbx1: Digium presence {kind}", after=before[0]
        )
        assert pidf(got.body).message == message, got.body
        # A phone of any other make is notified too, but Asterisk puts the presence in the
        # PIDF only for a Digium phone: the generic PIDF says the line is Ready, nothing more.
        generic = await desk.presence.wait_for(
            lambda n: True, 10, f"{value} on pbx1: a NOTIFY to the generic phone", after=before[1]
        )
        assert pidf(generic.body) == pidf(desk.presence.notifies()[0].body), generic.body


async def mailbox(pbx1: Pbx1, desk: Desk) -> None:
    for new, old, waiting in ((2, 1, "yes"), (0, 0, "no")):
        before = len(desk.mwi.notifies())
        await pbx1.mailbox(new, old)
        voice = f"{new}/{old} (0/0)"  # new/old (urgent new/urgent old)
        got = await desk.mwi.wait_value(
            voice_message, voice, 10, f"MWI {new}/{old} on pbx1", after=before
        )
        assert message_summary(got.body)["Messages-Waiting"] == waiting, got.body


async def test_a_phone_follows_another_server_over_the_sip_link(
    require_asterisk: None, require_sipp: None, corosync_loopback: object, corosync_group: str
) -> None:
    """SIP link (AMI beside it for presence); pbx2 runs app_voicemail, as the SIP link's remote
    MWI needs, and has the phone on 127.0.0.2 (tests/test_real_asterisk_sip.py)."""
    async with sip_servers(
        2,
        corosync_group,
        23835,
        voicemail=[1],
        ami=True,
        dialplan=dialplan("Custom:mystate"),
        modules=(*PHONE_MODULES, "func_presencestate", "res_manager_presencestate"),
    ) as (a, b):
        sip = ("127.0.0.1", b.asterisk.sip_port)  # type: ignore[attr-defined]
        await a_desk_phone_follows_pbx1(over_ami(a), sip)


async def test_a_phone_follows_another_server_over_the_ami_link(
    require_asterisk: None, require_sipp: None, corosync_loopback: object, corosync_group: str
) -> None:
    """AMI link; pbx2's hints list the remote counterpart, its PJSIP serves only the phone."""
    port = free_port()
    pjsip = f"[udp]\ntype = transport\nprotocol = udp\nbind = 127.0.0.1:{port}\n" + phone_pjsip(
        "127.0.0.2", "devstate_test"
    )

    def extra(i: int) -> tuple[Sequence[str], dict[str, str]]:
        if i != 1:
            return (), {}
        modules = (*SIP_MODULES, *PHONE_MODULES)
        return modules, {"pjsip.conf": pjsip}

    async with servers(2, corosync_group, 22835, dialplan=dialplan(HINT), extra=extra) as (a, _b):
        await a_desk_phone_follows_pbx1(over_ami(a), ("127.0.0.1", port))


async def test_a_phone_on_the_ring_follows_the_second_site(
    require_asterisk: None, require_sipp: None, asterisk_build: object
) -> None:
    """Ring link (tests/harness/ring.py): the phone on ring Asterisk 2 (inside its network
    namespace) follows the second site's PBX, whose changes reach the ring through the site's
    pbxmesh, NATS, the bridge and res_corosync. res_corosync carries no presence: the
    presence subscription (hint 102, no presentity) reads the PIDF note only."""
    skip_or_fail(corosync_missing_reason(netns=True) or nats_missing_reason(), "ring")
    port = free_port()

    def extra(i: int) -> tuple[Sequence[str], dict[str, str]]:
        if i != 2:
            return (), {}
        pjsip = f"[udp]\ntype = transport\nprotocol = udp\nbind = 127.0.0.1:{port}\n" + phone_pjsip(
            "127.0.0.2", "ring"
        )
        return (*SIP_MODULES, *PHONE_MODULES), {"pjsip.conf": pjsip}

    with asterisk_ring(extra=extra) as ring:

        async def device(state: str) -> None:
            await asyncio.to_thread(
                ring.ami, 0, "Setvar", Variable="DEVICE_STATE(Custom:far)", Value=state
            )

        async def mailbox(new: int, old: int) -> None:
            await asyncio.to_thread(
                ring.ami, 0, "MWIUpdate", Mailbox="1000@default", NewMessages=new, OldMessages=old
            )

        await a_desk_phone_follows_pbx1(
            Pbx1(device, mailbox, None),
            ("127.0.0.1", port),
            netns=ring.cluster.netns(2),
            blf="102",
            presence_hint="102",
        )
