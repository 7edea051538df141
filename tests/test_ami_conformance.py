"""The simulator held to the real thing: every AMI action and event pbxmesh uses, asked of the
PBX simulator and of a real Asterisk, with the same expected answers.

The expected headers below were read off a real Asterisk (the build the `asterisk` tests
start); both PBXs must give them exactly. What a real Asterisk does that the simulator does not
is listed in docs/asterisk.md §4, and each item there that can be observed is checked in
:func:`test_the_known_differences_are_still_true`, so the list cannot go stale.

Two things vary in a real Asterisk and are compared loosely on purpose: the order of the events
one action raises (DeviceStateChange and ExtensionStatus come from different threads; pbxmesh
must not depend on it), and the challenge number and time stamps.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable

import pytest

from pbxmesh.links.ami.codec import Action, Event
from tests.ami_helpers import SECRET, USER, RawAmi, start_sim
from tests.harness.asterisk import Asterisk, asterisk_missing_reason, eid_of, selected
from tests.harness.fixtures import pbx_params, skip_or_fail

DIALPLAN = (
    "[devstate_test]\nexten => 1234,hint,Custom:mystate\nexten => 1235,hint,Custom:a&Custom:b\n"
)
Headers = tuple[tuple[str, str], ...]


@pytest.fixture(params=pbx_params())
async def pbx(request) -> AsyncIterator[int]:
    """The AMI port of a fresh PBX of either kind, with the dialplan above."""
    if request.param == "simulator":
        sim = await start_sim(DIALPLAN)
        try:
            yield sim.port
        finally:
            await sim.close()
        return
    skip_or_fail(asterisk_missing_reason(), "real-Asterisk")
    star = Asterisk("conformance", eid_of(0x42), dialplan=DIALPLAN)
    try:
        await asyncio.to_thread(star.start)
        yield star.ami_port
    finally:
        await asyncio.to_thread(star.cleanup)


@contextlib.asynccontextmanager
async def session(port: int, login: bool = True) -> AsyncIterator[RawAmi]:
    ami = await RawAmi.connect(port, login=False)
    try:
        if login:
            answer = await ami.request(Action.of("Login", Username=USER, Secret=SECRET))
            assert answer.ok, answer
            await events(ami, 2)  # FullyBooted and SuccessfulAuth
        yield ami
    finally:
        await ami.close()


async def ask(ami: RawAmi, name: str, **fields: object) -> Headers:
    return (await ami.request(Action.of(name, ActionID="t", **fields))).headers


async def events(ami: RawAmi, count: int) -> list[Headers]:
    """The next ``count`` events, sorted (their order is not fixed in a real Asterisk)."""
    got: list[Headers] = []
    while len(got) < count:
        msg = await ami.next(deadline=5)
        assert msg is not None, "connection closed"
        if isinstance(msg, Event):
            got.append(msg.headers)
    return sorted(got)


async def listing(ami: RawAmi, name: str, **fields: object) -> tuple[Headers, list[Headers]]:
    """A list action: its ack, then its items and completion event, in order."""
    ack = await ask(ami, name, **fields)
    items: list[Headers] = []
    while True:
        msg = await ami.next(deadline=5)
        assert msg is not None, "connection closed"
        if isinstance(msg, Event) and msg.get("ActionID") == "t":
            items.append(msg.headers)
            if msg.get("EventList") == "Complete":
                return ack, items


def ok(*fields: tuple[str, str]) -> Headers:
    return (("Response", "Success"), ("ActionID", "t"), *fields)


def error(message: str) -> Headers:
    return (("Response", "Error"), ("ActionID", "t"), ("Message", message))


async def test_banner_login_and_the_security_event(pbx: int) -> None:
    async with session(pbx, login=False) as ami:
        assert ami.raw.startswith(b"Asterisk Call Manager/")
        assert await ask(ami, "Ping") == error("Permission denied")
        challenge = await ask(ami, "Challenge", AuthType="MD5")
        assert challenge[:2] == ok()[:2] and challenge[2][0] == "Challenge"
        assert re.fullmatch(r"\d+", challenge[2][1])
        login = await ask(ami, "Login", Username=USER, Secret=SECRET)
        assert login == ok(("Message", "Authentication accepted"))
        booted, auth = sorted(await events(ami, 2), key=lambda h: h[0][1])
        assert booted[:2] == (("Event", "FullyBooted"), ("Privilege", "system,all"))
        assert [k for k, _ in booted] == ["Event", "Privilege", "Uptime", "LastReload", "Status"]
        assert booted[-1] == ("Status", "Fully Booted")
        assert auth[:2] == (("Event", "SuccessfulAuth"), ("Privilege", "security,all"))
        assert dict(auth)["AccountID"] == USER and dict(auth)["Service"] == "AMI"
        pong = dict(await ask(ami, "Ping"))
        assert pong["Ping"] == "Pong" and re.fullmatch(r"\d+\.\d{6}", pong["Timestamp"])
        assert await ask(ami, "Frobnicate") == error(
            "Invalid/unknown command: Frobnicate. Use Action: ListCommands to show available "
            "commands."
        )
        bye = await ask(ami, "Logoff")
        assert bye == (
            ("Response", "Goodbye"),
            ("ActionID", "t"),
            ("Message", "Thanks for all the fish."),
        )
        assert await ami.next() is None


async def test_md5_login(pbx: int) -> None:
    import hashlib

    async with session(pbx, login=False) as ami:
        challenge = dict(await ask(ami, "Challenge", AuthType="MD5"))["Challenge"]
        key = hashlib.md5((challenge + SECRET).encode(), usedforsecurity=False).hexdigest()
        login = await ask(ami, "Login", AuthType="MD5", Username=USER, Key=key)
        assert login == ok(("Message", "Authentication accepted"))


async def test_setvar_device_state_raises_the_change_and_the_hint_events(pbx: int) -> None:
    async with session(pbx) as ami:
        set_ = await ask(ami, "Setvar", Variable="DEVICE_STATE(Custom:mystate)", Value="INUSE")
        assert set_ == ok(("Message", "Variable Set"))
        assert await events(ami, 2) == [
            (
                ("Event", "DeviceStateChange"),
                ("Privilege", "call,all"),
                ("Device", "Custom:mystate"),
                ("State", "INUSE"),
            ),
            (
                ("Event", "ExtensionStatus"),
                ("Privilege", "call,all"),
                ("Exten", "1234"),
                ("Context", "devstate_test"),
                ("Hint", "Custom:mystate"),
                ("Status", "1"),
                ("StatusText", "InUse"),
            ),
        ]
        # Lower case is accepted and published in Asterisk's spelling.
        assert await ask(
            ami, "Setvar", Variable="DEVICE_STATE(Custom:mystate)", Value="busy"
        ) == ok(("Message", "Variable Set"))
        changed = [dict(h) for h in await events(ami, 2)]
        assert changed[0]["State"] == "BUSY" and changed[1]["StatusText"] == "Busy"
        # A second device of a two-device hint: Asterisk's aggregation in the hint.
        await ask(ami, "Setvar", Variable="DEVICE_STATE(Custom:a)", Value="RINGING")
        got = [dict(h) for h in await events(ami, 2)]
        assert [h.get("StatusText", h.get("State")) for h in got] == ["RINGING", "Ringing"]
        await ask(ami, "Setvar", Variable="DEVICE_STATE(Custom:b)", Value="ONHOLD")
        got = [dict(h) for h in await events(ami, 2)]
        assert [h.get("StatusText", h.get("State")) for h in got] == ["ONHOLD", "InUse&Ringing"]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DEVICE_STATE(PJSIP/100)", "INUSE"),  # only Custom: devices can be set
        ("DEVICE_STATE(Custom:mystate)", "UNKNOWN"),  # func_devstate refuses UNKNOWN
        ("DEVICE_STATE(Custom:mystate)", "bogus"),
        ("DEVICE_STATE(Custom:)", "BUSY"),
    ],
)
async def test_setvar_refusals(pbx: int, variable: str, value: str) -> None:
    async with session(pbx) as ami:
        assert await ask(ami, "Setvar", Variable=variable, Value=value) == error("Variable not set")


async def test_getvar_device_state(pbx: int) -> None:
    async with session(pbx) as ami:
        await ask(ami, "Setvar", Variable="DEVICE_STATE(Custom:mystate)", Value="BUSY")
        for variable, value in (
            ("DEVICE_STATE(Custom:mystate)", "BUSY"),
            ("DEVICE_STATE(Custom:nothere)", "UNKNOWN"),
            ("DEVICE_STATE(PJSIP/100)", "INVALID"),  # no PJSIP loaded in either
        ):
            got = await ask(ami, "Getvar", Variable=variable)
            assert got == ok(("Variable", variable), ("Value", value))
        assert await ask(ami, "Getvar") == error("No variable specified")


async def test_device_state_list_and_extension_state_list(pbx: int) -> None:
    async with session(pbx) as ami:
        await ask(ami, "Setvar", Variable="DEVICE_STATE(Custom:mystate)", Value="BUSY")
        await events(ami, 2)
        ack, items = await listing(ami, "DeviceStateList")
        assert ack == ok(("EventList", "start"), ("Message", "Device State Changes will follow"))
        assert items == [
            (
                ("Event", "DeviceStateChange"),
                ("ActionID", "t"),
                ("Device", "Custom:mystate"),
                ("State", "BUSY"),
            ),
            (
                ("Event", "DeviceStateListComplete"),
                ("ActionID", "t"),
                ("EventList", "Complete"),
                ("ListItems", "1"),
            ),
        ]
        ack, items = await listing(ami, "ExtensionStateList")
        assert ack == ok(("EventList", "start"), ("Message", "Extension Statuses will follow"))
        assert by_name(items[:-1]) + items[-1:] == [
            (
                ("Event", "ExtensionStatus"),
                ("ActionID", "t"),
                ("Exten", "1234"),
                ("Context", "devstate_test"),
                ("Hint", "Custom:mystate"),
                ("Status", "2"),
                ("StatusText", "Busy"),
            ),
            (
                ("Event", "ExtensionStatus"),
                ("ActionID", "t"),
                ("Exten", "1235"),
                ("Context", "devstate_test"),
                ("Hint", "Custom:a&Custom:b"),
                ("Status", "0"),
                ("StatusText", "Idle"),
            ),
            (
                ("Event", "ExtensionStateListComplete"),
                ("ActionID", "t"),
                ("EventList", "Complete"),
                ("ListItems", "2"),
            ),
        ]


async def test_extension_state(pbx: int) -> None:
    async with session(pbx) as ami:
        got = await ask(ami, "ExtensionState", Exten="1234", Context="devstate_test")
        assert got == ok(
            ("Message", "Extension Status"),
            ("Exten", "1234"),
            ("Context", "devstate_test"),
            ("Hint", "Custom:mystate"),
            ("Status", "0"),
            ("StatusText", "Idle"),
        )
        for exten, context, fields in (
            ("9999", "devstate_test", {"Context": "devstate_test"}),
            ("1234", None, {}),  # the context defaults to "default", which has no hint
        ):
            asked = {"Exten": exten, **fields}
            got = await ask(ami, "ExtensionState", **asked)
            assert got == ok(
                ("Message", "Extension Status"),
                ("Exten", exten),
                ("Context", context or "default"),
                ("Hint", ""),
                ("Status", "-1"),
                ("StatusText", "Unknown"),
            )


async def test_mwi_update_get_count_status_delete(pbx: int) -> None:
    async with session(pbx) as ami:
        got = await ask(ami, "MWIUpdate", Mailbox="1000@default", NewMessages=3, OldMessages=1)
        assert got == ok()
        assert await events(ami, 1) == [
            (
                ("Event", "MessageWaiting"),
                ("Privilege", "call,all"),
                ("Mailbox", "1000@default"),
                ("Waiting", "1"),
                ("New", "3"),
                ("Old", "1"),
            )
        ]
        item = (
            ("Event", "MWIGet"),
            ("Mailbox", "1000@default"),
            ("OldMessages", "1"),
            ("NewMessages", "3"),
            ("ActionID", "t"),
        )
        ack = ok(("EventList", "start"), ("Message", "Mailboxes will follow"))

        def complete(n: int) -> Headers:
            return (
                ("Event", "MWIGetComplete"),
                ("ActionID", "t"),
                ("EventList", "Complete"),
                ("ListItems", str(n)),
            )

        for mailbox in ("1000@default", "/^10.*/"):
            assert await listing(ami, "MWIGet", Mailbox=mailbox) == (ack, [item, complete(1)])
        assert await ask(ami, "MailboxCount", Mailbox="1000@default") == ok(
            ("Message", "Mailbox Message Count"),
            ("Mailbox", "1000@default"),
            ("UrgMessages", "0"),
            ("NewMessages", "3"),
            ("OldMessages", "1"),
        )
        assert await ask(ami, "MailboxStatus", Mailbox="1000@default") == ok(
            ("Message", "Mailbox Status"), ("Mailbox", "1000@default"), ("Waiting", "1")
        )
        assert await ask(ami, "MWIDelete", Mailbox="1000@default") == ok()
        (cleared,) = await events(ami, 1)
        assert dict(cleared) | {} == {
            "Event": "MessageWaiting",
            "Privilege": "call,all",
            "Mailbox": "1000@default",
            "Waiting": "0",
            "New": "0",
            "Old": "0",
        }
        assert await listing(ami, "MWIGet", Mailbox="1000@default") == (ack, [complete(0)])


async def test_mwi_refusals(pbx: int) -> None:
    async with session(pbx) as ami:
        assert await ask(ami, "MWIUpdate", Mailbox="1000@default", NewMessages="x") == error(
            "Invalid NewMessages: x"
        )
        assert await ask(ami, "MWIUpdate", Mailbox="1000@default", OldMessages="many") == error(
            "Invalid OldMessages: many"
        )
        assert await ask(ami, "MWIUpdate") == error("Missing mailbox parameter in request")
        assert await ask(ami, "MWIGet", Mailbox="/bad") == error(
            "Mailbox regex format invalid in: /bad"
        )
        assert await ask(ami, "MailboxCount") == error("Mailbox not specified")


def by_name(rows: list[Headers]) -> list[Headers]:
    """Hint rows in name order: Asterisk 22 lists hints in the order of its hash table, master
    by name (docs/asterisk.md, "Asterisk versions"; test_real_asterisk.py pins each)."""
    return sorted(rows, key=lambda row: [v for _, v in row])


def idle_watchers() -> int:
    """The Watchers column of a hint no phone watches: 1 on master (and the simulator, which
    follows it), 0 on Asterisk 22 (docs/asterisk.md, "Asterisk versions")."""
    build = selected()
    return 0 if build is not None and build.name != "master" else 1


def hint_line(key: str, app: str, state: str) -> str:
    return (
        f"{key:<30}: {app:<60}  State:{state:<15} Presence:{'not_set':<15} "
        f"Watchers {idle_watchers():2d}"
    )


async def test_commands_core_show_hints_devstate_list_and_change(pbx: int) -> None:
    async with session(pbx) as ami:
        await ask(ami, "Setvar", Variable="DEVICE_STATE(Custom:mystate)", Value="BUSY")
        await events(ami, 2)
        out = ("Message", "Command output follows")
        hints = await ask(ami, "Command", Command="core show hints")
        assert hints[:5] + tuple(sorted(hints[5:7])) + hints[7:] == ok(  # see by_name
            out,
            ("Output", ""),
            ("Output", "    -= Registered Asterisk Dial Plan Hints =-"),
            ("Output", hint_line("1234@devstate_test", "Custom:mystate", "Busy")),
            ("Output", hint_line("1235@devstate_test", "Custom:a&Custom:b", "Idle")),
            ("Output", "----------------"),
            ("Output", "- 2 hints registered"),
        )
        one = await ask(ami, "Command", Command="core show hint 1234")
        assert one == ok(
            out,
            ("Output", hint_line("1234@devstate_test", "Custom:mystate", "Busy")),
            ("Output", "1 hint matching extension 1234"),
        )
        rule = "-" * 69
        listed = await ask(ami, "Command", Command="devstate list")
        assert listed == ok(
            out,
            ("Output", ""),
            ("Output", rule),
            ("Output", "--- Custom Device States " + "-" * 44),
            ("Output", rule),
            ("Output", "---"),
            ("Output", "--- Name: 'Custom:mystate'  State: 'BUSY'"),
            ("Output", "---"),
            ("Output", rule),
            ("Output", rule),
            ("Output", ""),
        )
        changed = await ask(ami, "Command", Command="devstate change Custom:mystate RINGING")
        assert changed == ok(out, ("Output", "Changing mystate to RINGING"))
        got = [dict(h) for h in await events(ami, 2)]
        assert [(h["Event"], h.get("State", h.get("StatusText"))) for h in got] == [
            ("DeviceStateChange", "RINGING"),
            ("ExtensionStatus", "Ringing"),
        ]
        bad = await ask(ami, "Command", Command="nonsense words")
        assert bad[:3] == (("Response", "Error"), ("ActionID", "t"), out)
        assert bad[3][1].startswith("No such command 'nonsense words'")


async def test_mwiget_regexes_are_posix_and_a_bad_one_lists_nothing(pbx: int) -> None:
    async with session(pbx) as ami:
        for mailbox in ("1000@default", "sales@work"):
            await ask(ami, "MWIUpdate", Mailbox=mailbox, NewMessages=1, OldMessages=0)
            await events(ami, 1)
        for regex, boxes in (
            ("/^[[:digit:]]+@default$/", ["1000@default"]),
            ("/^[[:alpha:]]+@/", ["sales@work"]),
            ("/[/", []),  # does not compile: Asterisk lists nothing rather than an error
        ):
            ack, items = await listing(ami, "MWIGet", Mailbox=regex)
            assert ack[0] == ("Response", "Success"), (regex, ack)
            assert [dict(i).get("Mailbox") for i in items[:-1]] == boxes, regex


async def test_login_events_select_the_classes_a_session_reads(pbx: int) -> None:
    async with session(pbx, login=False) as ami:
        login = await ask(ami, "Login", Username=USER, Secret=SECRET, Events="call")
        assert login == ok(("Message", "Authentication accepted"))
        await ask(ami, "Setvar", Variable="DEVICE_STATE(Custom:mystate)", Value="INUSE")
        # No FullyBooted (system) nor SuccessfulAuth (security): the first events are calls'.
        got = [dict(h)["Event"] for h in await events(ami, 2)]
        assert got == ["DeviceStateChange", "ExtensionStatus"]
    async with session(pbx, login=False) as ami:
        await ask(ami, "Login", Username=USER, Secret=SECRET, Events="off")
        await ask(ami, "Setvar", Variable="DEVICE_STATE(Custom:mystate)", Value="BUSY")
        pong = await ami.request(Action.of("Ping", ActionID="after"))
        assert pong.ok  # and nothing came before it: request() would have skipped events,
        assert b"Event:" not in bytes(ami.raw)  # so look at the bytes themselves


VOICEMAIL_CONF = "[general]\nformat = wav\n[default]\n1000 => 1234,1000\n1001 => 1234,1001\n"
VOICEMAIL_MODULES = (
    "pbx_config",
    "func_devstate",
    "res_manager_devicestate",
    "format_wav",
    "app_voicemail",
)


@pytest.fixture(params=pbx_params())
async def voicemail_pbx(request) -> AsyncIterator[tuple[int, Callable[[str], None]]]:
    """A PBX running app_voicemail (so no res_mwi_external), and a way to put one new message
    file in a mailbox's spool that Asterisk notices only at VoicemailRefresh."""
    if request.param == "simulator":
        boxes = {"1000@default": (0, 0), "1001@default": (0, 0)}
        sim = await start_sim(DIALPLAN, voicemail=boxes)
        try:
            yield sim.port, lambda box: sim.pbx.leave_message(box, notify=False)
        finally:
            await sim.close()
        return
    skip_or_fail(asterisk_missing_reason(), "real-Asterisk")
    star = Asterisk(
        "voicemail",
        eid_of(0x43),
        modules=VOICEMAIL_MODULES,
        dialplan=DIALPLAN,
        files={"voicemail.conf": VOICEMAIL_CONF},
    )

    def leave(box: str) -> None:
        number, _, context = box.partition("@")
        inbox = star.workdir / "spool/voicemail" / context / number / "INBOX"
        inbox.mkdir(parents=True, exist_ok=True)
        n = len(list(inbox.glob("*.txt")))
        (inbox / f"msg{n:04d}.txt").write_text(f"[message]\norigmailbox={number}\n")
        (inbox / f"msg{n:04d}.wav").write_bytes(b"RIFF")

    try:
        await asyncio.to_thread(star.start)
        yield star.ami_port, leave
    finally:
        await asyncio.to_thread(star.cleanup)


async def test_app_voicemail_mailboxes_their_counts_and_no_res_mwi_external(voicemail_pbx) -> None:
    port, leave = voicemail_pbx
    async with session(port) as ami:
        for name in ("MWIUpdate", "MWIGet"):
            got = await ask(ami, name, Mailbox="1000@default")
            assert got == error(
                f"Invalid/unknown command: {name}. Use Action: ListCommands to show available "
                "commands."
            )
        leave("1000@default")
        ack, items = await listing(ami, "VoicemailUsersList")
        assert ack == ok(("EventList", "start"), ("Message", "Voicemail user list will follow"))
        fields = ("VMContext", "VoiceMailbox", "NewMessageCount", "OldMessageCount")
        assert [tuple(dict(i).get(f) for f in fields) for i in items[:-1]] == [
            ("default", "1000", "1", "0"),
            ("default", "1001", "0", "0"),
        ]
        assert [k for k, _ in items[0]][:4] == ["Event", "ActionID", "VMContext", "VoiceMailbox"]
        assert items[-1] == (
            ("Event", "VoicemailUserEntryComplete"),
            ("ActionID", "t"),
            ("EventList", "Complete"),
            ("ListItems", "2"),
        )
        refreshed = await ask(ami, "VoicemailRefresh", Context="default", Mailbox="1000")
        assert refreshed == ok(("Message", "Refresh sent"))
        assert await events(ami, 1) == [
            (
                ("Event", "MessageWaiting"),
                ("Privilege", "call,all"),
                ("Mailbox", "1000@default"),
                ("Waiting", "1"),
                ("New", "1"),
                ("Old", "0"),
            )
        ]
        assert dict(await ask(ami, "MailboxCount", Mailbox="1000@default"))["NewMessages"] == "1"


async def test_a_session_filters_its_own_events(pbx: int) -> None:
    """Action: Filter, which the AMI link uses to be spared its own writes' echoes."""
    async with session(pbx) as ami:
        for text, answer in (
            ("x", "Unknown operation"),  # no Operation
            ("", "Filter was formatted incorrectly.  Check the syntax of the filter given."),
            ("!(", "Filter did not compile.  Check the syntax of the filter given."),
        ):
            fields = {"Operation": "Add"} if text != "x" else {}
            if text != "x":
                fields["Filter"] = text
            assert await ask(ami, "Filter", **fields) == error(answer), text
        for text in ("Event: DeviceStateChange|Event: MessageWaiting", "!Device: Custom:remote-"):
            assert await ask(ami, "Filter", Operation="Add", Filter=text) == ok(
                ("Message", "Success")
            )
        for device in ("Custom:remote-x", "Custom:mystate"):
            ami.send(Action.of("Setvar", Variable=f"DEVICE_STATE({device})", Value="INUSE"))
        ami.send(Action.of("MWIUpdate", Mailbox="1@default", NewMessages=1, OldMessages=0))
        # Neither ExtensionStatus nor the excluded device's change come through.
        got = [dict(h) for h in await events(ami, 2)]
        assert [(h["Event"], h.get("Device", h.get("Mailbox"))) for h in got] == [
            ("DeviceStateChange", "Custom:mystate"),
            ("MessageWaiting", "1@default"),
        ]
        pong = await ami.request(Action.of("Ping", ActionID="last"))
        assert (
            pong.ok
            and b"remote-x" not in bytes(ami.raw)
            and b"ExtensionStatus" not in bytes(ami.raw)
        )
