"""The scenario ``pbxmesh demo`` plays (the steps listed in :mod:`pbxmesh.demo`), one
function per step, each printing what it does and what each server shows."""

from __future__ import annotations

import functools
import time

from .demo_cluster import NODES, Demo, say, show, step

__all__ = ["scenario"]


async def scenario(demo: Demo) -> None:
    """Steps 1 to 6, in order; each waits (with a deadline) until every server shows it."""
    await _members_and_hints(demo)
    await _device_in_use(demo)
    await _device_idle(demo)
    await _voicemail(demo)
    await _presence(demo)
    await _a_server_leaves(demo)


async def _members_and_hints(demo: Demo) -> None:
    step(1, "who is in the cluster (ais clm show members) — on pbx1")
    show("pbx1$ pbxmesh members:", [""])
    show("  ", demo.cli("pbx1", "members"))
    say("   Three servers, each with its own entity id (EID).")
    say("   The event channel (ais evt show event channels):")
    show("  ", demo.cli("pbx1", "channels"))

    say()
    if demo.sip:
        say("   Each simulated Asterisk has the tutorial's hint line, untouched: pbxmesh")
        say("   publishes the other servers' states over SIP under their own EIDs and the")
        say("   PBX aggregates them itself (`pbxmesh asterisk-config` prints its pjsip.conf):")
    else:
        say("   Each simulated Asterisk has the tutorial's hint, joined with the remote")
        say("   counterpart pbxmesh writes (see `pbxmesh dialplan-hints 1234=Custom:mystate`):")
    show("  ", (demo.dir / "pbx1" / "extensions.conf").read_text().splitlines()[-1:])
    for n in NODES:
        show(f"{n}*CLI> core show hints:", [""])
        show("  ", await demo.hints(n))


async def _device_in_use(demo: Demo) -> None:
    step(2, "on pbx1: Set(DEVICE_STATE(Custom:mystate)=INUSE)")
    await demo.clients["pbx1"].action(
        "Setvar", Variable="DEVICE_STATE(Custom:mystate)", Value="INUSE"
    )
    for n in ("pbx2", "pbx3"):
        took = await demo.until_hint(n, "InUse")
        show(f"{n}*CLI> core show hints  (InUse after {took * 1000:.0f} ms):", [""])
        show("  ", await demo.hints(n))
    say("   The lamp of extension 1234 is lit on every server, as in the tutorial.")


async def _device_idle(demo: Demo) -> None:
    step(3, "on pbx1: Set(DEVICE_STATE(Custom:mystate)=NOT_INUSE)")
    await demo.clients["pbx1"].action(
        "Setvar", Variable="DEVICE_STATE(Custom:mystate)", Value="NOT_INUSE"
    )
    for n in ("pbx2", "pbx3"):
        await demo.until_hint(n, "Idle")
        show(f"{n}*CLI> core show hints:", [""])
        show("  ", await demo.hints(n))


async def _voicemail(demo: Demo) -> None:
    step(4, "voicemail on pbx1: mailbox 1000@default gets 2 new messages")
    await demo.clients["pbx1"].action(
        "MWIUpdate", Mailbox="1000@default", NewMessages="2", OldMessages="1"
    )

    async def lamp(n: str) -> bool:
        if demo.sip:  # what phones get; MailboxCount reads only local voicemail
            return demo.waiting[n].get("1000@default") == ("2", "1")
        r = await demo.clients[n].action("MailboxCount", Mailbox="1000@default")
        return (r.get("NewMessages"), r.get("OldMessages")) == ("2", "1")

    for n in ("pbx2", "pbx3"):
        await demo.until(n, functools.partial(lamp, n))
        if demo.sip:
            say(f"   {n}: MessageWaiting 1000@default → 2 new, 1 old (what phones get)")
        else:
            say(f"   {n}: MailboxCount 1000@default → 2 new, 1 old (message lamp on)")
    show("pbx3$ pbxmesh mwi:", [""])
    show("  ", demo.cli("pbx3", "mwi"))


async def _presence(demo: Demo) -> None:
    step(5, "on pbx1: Set(PRESENCE_STATE(CustomPresence:alice)=dnd,,back at 3)")
    await demo.clients["pbx1"].action(
        "Setvar", Variable="PRESENCE_STATE(CustomPresence:alice)", Value="dnd,,back at 3"
    )
    for n in ("pbx2", "pbx3"):

        async def dnd(n: str = n) -> bool:
            return await demo.presence(n) == ("dnd", "back at 3")

        took = await demo.until(n, dnd)
        say(f"   {n}: alice is dnd, 'back at 3' ({took * 1000:.0f} ms later)")
    show("pbx2*CLI> core show hint 1000:", [""])
    show("  ", [ln for ln in await demo.hints("pbx2") if ln.startswith("1000@")])
    await demo.clients["pbx1"].action(
        "Setvar", Variable="PRESENCE_STATE(CustomPresence:alice)", Value="available"
    )

    async def back() -> bool:
        return await demo.presence("pbx3") == ("available", None)

    await demo.until("pbx3", back)
    say("   alice is back: pbx3 shows her available again. (pbxmesh presence lists them.)")
    show("pbx3$ pbxmesh presence:", [""])
    show("  ", demo.cli("pbx3", "presence"))


async def _a_server_leaves(demo: Demo) -> None:
    step(6, "what Asterisk's own clustering gets wrong: a server leaves")
    await demo.clients["pbx3"].action(
        "Setvar", Variable="DEVICE_STATE(Custom:mystate)", Value="BUSY"
    )
    await demo.until_hint("pbx1", "Busy")
    say("   pbx3 sets Custom:mystate BUSY: pbx1 shows State:Busy.")
    show("pbx1$ pbxmesh devices:", [""])
    show("  ", demo.cli("pbx1", "devices"))
    say("   Now pbx3's pbxmesh node stops (SIGTERM):")
    t0 = time.monotonic()
    demo.stop_node("pbx3")
    await demo.until_hint("pbx1", "Idle")
    say(
        f"   pbx1's hint is back to Idle {(time.monotonic() - t0) * 1000:.0f} ms later —"
        " Asterisk would have kept Busy."
    )
    show("pbx1*CLI> core show hints:", [""])
    show("  ", await demo.hints("pbx1"))
    say("   pbx3 comes back; its BUSY state (kept in its AstDB) is shared again:")
    demo.start_node("pbx3")
    took = await demo.until_hint("pbx1", "Busy", deadline=30)
    say(f"   pbx1 shows Busy again after {took:.1f} s.")
    await demo.clients["pbx3"].action(
        "Setvar", Variable="DEVICE_STATE(Custom:mystate)", Value="NOT_INUSE"
    )
    await demo.until_hint("pbx1", "Idle")
