"""The simulator held to the real thing, for presence: ``PRESENCE_STATE()`` with and without
the ``e`` option, ``PresenceStateChange`` (escaped), ``PresenceStatus`` for hints and the
``Presence:`` column of ``core show hints`` (not escaped), ``PresenceState``,
``PresenceStateList``, AstDB across a restart, and an Asterisk without the presence modules.

Expected headers were read off the real build the ``asterisk`` tests start; both PBXs must give
them exactly (event order within one action is compared sorted, as in test_ami_conformance).
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.ami_helpers import start_sim
from tests.harness.asterisk import (
    AMI_MODULES,
    Asterisk,
    asterisk_missing_reason,
    eid_of,
    selected,
)
from tests.harness.fixtures import pbx_params, skip_or_fail
from tests.test_ami_conformance import Headers, ask, error, events, listing, ok, session

DIALPLAN = (
    "[p]\n"
    "exten => 1000,hint,Custom:alice,CustomPresence:alice\n"
    "exten => 1001,hint,,CustomPresence:bob\n"
    "exten => 1002,hint,Custom:x\n"
    "exten => 1003,hint,Custom:y,CustomPresence:alice&CustomPresence:bob\n"
)
ALICE_HINT = "Custom:alice,CustomPresence:alice"
BOTH_HINT = "Custom:y,CustomPresence:alice&CustomPresence:bob"


@dataclass
class Pbx:
    port: int
    restart: Callable[[], Awaitable[int]]  # returns the (same) AMI port


@pytest.fixture(params=pbx_params())
async def pbx(request, tmp_path: Path) -> AsyncIterator[Pbx]:
    """A fresh PBX of either kind with presence hints, that can be restarted keeping AstDB."""
    if request.param == "simulator":
        sims = [await start_sim(DIALPLAN, tmp_path)]

        async def restart_sim() -> int:
            port = sims[-1].port
            await sims[-1].close()
            sims.append(await start_sim(DIALPLAN, tmp_path, port=port))
            return port

        try:
            yield Pbx(sims[0].port, restart_sim)
        finally:
            await sims[-1].close()
        return
    skip_or_fail(asterisk_missing_reason(), "real-Asterisk")
    star = Asterisk("presence", eid_of(0x44), dialplan=DIALPLAN)

    async def restart_star() -> int:
        await asyncio.to_thread(star.restart)
        return star.ami_port

    try:
        await asyncio.to_thread(star.start)
        yield Pbx(star.ami_port, restart_star)
    finally:
        await asyncio.to_thread(star.cleanup)


def change(presentity: str, status: str, subtype: str = "", message: str = "") -> Headers:
    return (
        ("Event", "PresenceStateChange"),
        ("Privilege", "call,all"),
        ("Presentity", presentity),
        ("Status", status),
        ("Subtype", subtype),
        ("Message", message),
    )


def status(exten: str, hint: str, state: str, subtype: str = "", message: str = "") -> Headers:
    return (
        ("Event", "PresenceStatus"),
        ("Privilege", "call,all"),
        ("Exten", exten),
        ("Context", "p"),
        ("Hint", hint),
        ("Status", state),
        ("Subtype", subtype),
        ("Message", message),
    )


def aggregates_presence() -> bool:
    """Whether a hint of several presentities shows the highest of them: master (and the
    simulator, which follows it) does; Asterisk 22 shows the last change of any of them."""
    build = selected()
    return build is None or build.name == "master"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


async def test_set_presence_raises_the_change_and_each_hints_status(pbx: Pbx) -> None:
    async with session(pbx.port) as ami:
        got = await ask(
            ami, "Setvar", Variable="PRESENCE_STATE(CustomPresence:alice)", Value="dnd,,back at 3"
        )
        assert got == ok(("Message", "Variable Set"))
        assert await events(ami, 3) == sorted(
            [
                change("CustomPresence:alice", "dnd", "", "back at 3"),
                status("1000", ALICE_HINT, "dnd", "", "back at 3"),
                status("1003", BOTH_HINT, "dnd", "", "back at 3"),
            ]
        )
        assert await ask(ami, "PresenceState", Provider="CustomPresence:alice") == ok(
            ("Message", "Presence State"),
            ("State", "dnd"),
            ("Message", "back at 3"),  # Asterisk's deprecated second Message header
            ("PresenceMessage", "back at 3"),
        )
        # On master (and the simulator) the hint joining alice and bob shows the higher of the
        # two (dnd over away), and raises nothing while that does not change; Asterisk 22 shows
        # the last change of either (docs/asterisk.md, "Asterisk versions").
        both = aggregates_presence()
        await ask(ami, "Setvar", Variable="PRESENCE_STATE(CustomPresence:bob)", Value="away")
        assert await events(ami, 2 if both else 3) == sorted(
            [
                change("CustomPresence:bob", "away"),
                status("1001", ",CustomPresence:bob", "away"),
                *([] if both else [status("1003", BOTH_HINT, "away")]),
            ]
        )
        await ask(ami, "Setvar", Variable="PRESENCE_STATE(CustomPresence:alice)", Value="available")
        assert await events(ami, 3) == sorted(
            [
                change("CustomPresence:alice", "available"),
                status("1000", ALICE_HINT, "available"),
                status("1003", BOTH_HINT, "away" if both else "available"),
            ]
        )
        hints = [
            o for k, o in await ask(ami, "Command", Command="core show hints") if k == "Output"
        ]
        shown = {line.split()[0]: line.rsplit("Presence:", 1)[1].split()[0] for line in hints[2:-2]}
        assert shown == {
            "1000@p": "available",
            "1001@p": "away",
            "1002@p": "not_set",
            "1003@p": "away" if both else "available",
        }
        assert "State:Unavailable" in next(h for h in hints if h.startswith("1001@p"))


async def test_event_values_are_c_escaped_and_the_others_are_not(pbx: Pbx) -> None:
    text = 'say "hi" \\ it\'s ok?\tyes'
    async with session(pbx.port) as ami:
        variable = "PRESENCE_STATE(CustomPresence:alice)"
        await ask(ami, "Setvar", Variable=variable, Value=f"away,sub,{text}")
        escaped = 'say \\"hi\\" \\\\ it\\\'s ok\\?\\tyes'
        assert await events(ami, 3) == sorted(
            [
                change("CustomPresence:alice", "away", "sub", escaped),
                status("1000", ALICE_HINT, "away", "sub", text),
                status("1003", BOTH_HINT, "away", "sub", text),
            ]
        )
        state = dict(await ask(ami, "PresenceState", Provider="CustomPresence:alice"))
        assert state["PresenceMessage"] == text and state["Subtype"] == "sub"


async def test_the_e_option_carries_commas_and_reads_back_decoded(pbx: Pbx) -> None:
    async with session(pbx.port) as ami:
        value = f"xa,{b64('sub')},{b64('hello, world')},e"
        got = await ask(ami, "Setvar", Variable="PRESENCE_STATE(custompresence:bob)", Value=value)
        assert got == ok(("Message", "Variable Set"))
        # The presentity is named as it was written; the hints match it in any case.
        assert await events(ami, 3) == sorted(
            [
                change("custompresence:bob", "xa", "sub", "hello, world"),
                status("1001", ",CustomPresence:bob", "xa", "sub", "hello, world"),
                status("1003", BOTH_HINT, "xa", "sub", "hello, world"),
            ]
        )
        for provider in ("CustomPresence:bob", "custompresence:bob"):
            assert await ask(ami, "PresenceState", Provider=provider) == ok(
                ("Message", "Presence State"),
                ("State", "xa"),
                ("Subtype", "sub"),
                ("Message", "hello, world"),
                ("PresenceMessage", "hello, world"),
            )
        for args, expected in (
            ("value", "xa"),
            ("message", "hello, world"),
            ("message,e", b64("hello, world")),
            ("subtype,e", b64("sub")),
            ("", ""),  # no field: an error, which Getvar reads as ""
        ):
            variable = f"PRESENCE_STATE(CustomPresence:bob{',' + args if args else ''})"
            got = await ask(ami, "Getvar", Variable=variable)
            assert got == ok(("Variable", variable), ("Value", expected))


async def test_without_e_a_comma_in_a_message_fails_or_turns_to_garbage(pbx: Pbx) -> None:
    async with session(pbx.port) as ami:
        variable = "PRESENCE_STATE(CustomPresence:alice)"
        refused = await ask(ami, "Setvar", Variable=variable, Value="available,,in a meeting, back")
        assert refused == error("Variable not set")
        # " see you" is taken as the options; it holds an "e", so "lunch" is base64-decoded.
        taken = await ask(ami, "Setvar", Variable=variable, Value="away,,lunch, see you")
        assert taken == ok(("Message", "Variable Set"))
        got = [h for h in await events(ami, 3) if h[0][1] == "PresenceStateChange"]
        assert got == [change("CustomPresence:alice", "away", "", "\udc96\udce9\udcdc")]


async def test_a_message_is_cut_at_255_bytes_when_written_with_e(pbx: Pbx) -> None:
    long = "x" * 300
    async with session(pbx.port) as ami:
        variable = "PRESENCE_STATE(CustomPresence:alice)"
        await ask(ami, "Setvar", Variable=variable, Value=f"dnd,,{b64(long)},e")
        got = [dict(h) for h in await events(ami, 3)]
        assert {len(h["Message"]) for h in got} == {255}
        state = dict(await ask(ami, "PresenceState", Provider="CustomPresence:alice"))
        assert state["PresenceMessage"] == "x" * 255


async def test_not_set_publishes_what_the_provider_reads_back(pbx: Pbx) -> None:
    async with session(pbx.port) as ami:
        variable = "PRESENCE_STATE(CustomPresence:carol)"
        assert await ask(ami, "Setvar", Variable=variable, Value="not_set,,gone") == ok(
            ("Message", "Variable Set")
        )
        assert await events(ami, 1) == [change("CustomPresence:carol", "not_set", "", "gone")]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PRESENCE_STATE(CustomPresence:bob)", "bogus,,"),  # not a state
        ("PRESENCE_STATE(CustomPresence:bob)", "away,,x,q"),  # options without e
        ("PRESENCE_STATE(CustomPresence:bob)", ""),  # no state
        ("PRESENCE_STATE(Foo:bob)", "away"),  # only CustomPresence: can be set
        ("PRESENCE_STATE(CustomPresence:)", "away"),  # no name
    ],
)
async def test_setvar_refusals(pbx: Pbx, variable: str, value: str) -> None:
    async with session(pbx.port) as ami:
        assert await ask(ami, "Setvar", Variable=variable, Value=value) == error("Variable not set")


async def test_presence_state_answers_and_errors(pbx: Pbx) -> None:
    async with session(pbx.port) as ami:
        assert await ask(ami, "PresenceState", Provider="CustomPresence:nobody") == ok(
            ("Message", "Presence State"), ("State", "not_set")
        )
        for provider in ("Foo:x", "nocolon"):
            assert await ask(ami, "PresenceState", Provider=provider) == error(
                f"Invalid provider {provider} or provider in invalid state"
            )
        assert await ask(ami, "PresenceState") == error("No provider specified")


async def test_presence_state_list_and_astdb_across_a_restart(pbx: Pbx) -> None:
    async with session(pbx.port) as ami:
        quoted = b64('a "b"')
        for name, value in (("alice", "dnd,,back at 3"), ("bob", f"xa,,{quoted},e")):
            variable = f"PRESENCE_STATE(CustomPresence:{name})"
            await ask(ami, "Setvar", Variable=variable, Value=value)
            await events(ami, 3 if name == "alice" else 2)
        expected = [
            (
                ("Event", "PresenceStateChange"),
                ("ActionID", "t"),
                ("Presentity", "CustomPresence:alice"),
                ("Status", "dnd"),
                ("Subtype", ""),
                ("Message", "back at 3"),
            ),
            (
                ("Event", "PresenceStateChange"),
                ("ActionID", "t"),
                ("Presentity", "CustomPresence:bob"),
                ("Status", "xa"),
                ("Subtype", ""),
                ("Message", 'a \\"b\\"'),
            ),
        ]
        complete = (
            ("Event", "PresenceStateListComplete"),
            ("ActionID", "t"),
            ("EventList", "Complete"),
            ("ListItems", "2"),
        )
        ack, items = await listing(ami, "PresenceStateList")
        assert ack == ok(("EventList", "start"), ("Message", "Presence State Changes will follow"))
        assert sorted(items[:-1]) == expected and items[-1] == complete
    port = await pbx.restart()
    async with session(port) as ami:  # func_presencestate republished its AstDB entries
        _, items = await listing(ami, "PresenceStateList")
        assert sorted(items[:-1]) == expected
        state = dict(await ask(ami, "PresenceState", Provider="CustomPresence:bob"))
        assert state["PresenceMessage"] == 'a "b"'
        hints = [
            o for k, o in await ask(ami, "Command", Command="core show hint 1000") if k == "Output"
        ]
        assert "Presence:dnd " in hints[0]


NO_PRESENCE_MODULES = tuple(m for m in AMI_MODULES if "presence" not in m)


@pytest.fixture(params=pbx_params())
async def bare_pbx(request) -> AsyncIterator[int]:
    """A PBX without func_presencestate and res_manager_presencestate."""
    if request.param == "simulator":
        sim = await start_sim(DIALPLAN, presence=False)
        try:
            yield sim.port
        finally:
            await sim.close()
        return
    skip_or_fail(asterisk_missing_reason(), "real-Asterisk")
    star = Asterisk("nopresence", eid_of(0x45), modules=NO_PRESENCE_MODULES, dialplan=DIALPLAN)
    try:
        await asyncio.to_thread(star.start)
        yield star.ami_port
    finally:
        await asyncio.to_thread(star.cleanup)


async def test_without_the_presence_modules(bare_pbx: int) -> None:
    async with session(bare_pbx) as ami:
        assert await ask(ami, "PresenceStateList") == error(
            "Invalid/unknown command: PresenceStateList. Use Action: ListCommands to show "
            "available commands."
        )
        variable = "PRESENCE_STATE(CustomPresence:alice)"
        assert await ask(ami, "Setvar", Variable=variable, Value="dnd") == error("Variable not set")
        assert await ask(ami, "PresenceState", Provider="CustomPresence:alice") == error(
            "Invalid provider CustomPresence:alice or provider in invalid state"
        )
