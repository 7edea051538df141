"""The PBX simulator over real TCP: exact wire answers, as Asterisk gives them."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from ami_helpers import SECRET, USER, RawAmi, start_sim
from pbxmesh.links.ami.codec import Action, Event, Response
from pbxmesh.pbxsim.main import main, parse_listen

HINTS_HEADER = ["", "    -= Registered Asterisk Dial Plan Hints =-"]


def hint_line(key: str, app: str, state: str) -> str:
    return f"{key:<30}: {app:<60}  State:{state:<15} Presence:{'not_set':<15} Watchers  1"


@pytest.fixture
async def sim():
    server = await start_sim()
    try:
        yield server
    finally:
        await server.close()


async def test_banner_permission_and_login(sim) -> None:
    ami = await RawAmi.connect(sim.port, login=False)
    assert ami.raw.startswith(b"Asterisk Call Manager/13.0.0\r\n")
    denied = await ami.request(Action.of("Ping", ActionID="p"))
    assert denied.headers == (
        ("Response", "Error"),
        ("ActionID", "p"),
        ("Message", "Permission denied"),
    )
    ok = await ami.request(Action.of("Login", ActionID="1", Username=USER, Secret=SECRET))
    assert ok.headers == (
        ("Response", "Success"),
        ("ActionID", "1"),
        ("Message", "Authentication accepted"),
    )
    pong = await ami.request(Action.of("Ping", ActionID="2"))
    assert pong["Ping"] == "Pong" and "." in pong["Timestamp"]
    bye = await ami.request(Action.of("Logoff"))
    assert (bye.status, bye.message) == ("Goodbye", "Thanks for all the fish.")
    assert await ami.next() is None
    await ami.close()


async def test_failed_login_waits_then_errors_and_disconnects() -> None:
    server = await start_sim(login_fail_delay=0.2)
    try:
        ami = await RawAmi.connect(server.port, login=False)
        start = time.monotonic()
        answer = await ami.request(Action.of("Login", Username=USER, Secret="wrong"))
        assert time.monotonic() - start >= 0.2
        assert (answer.status, answer.message) == ("Error", "Authentication failed")
        assert await ami.next() is None
        await ami.close()
    finally:
        await server.close()


async def test_md5_login(sim) -> None:
    import hashlib

    ami = await RawAmi.connect(sim.port, login=False)
    ch = await ami.request(Action.of("Challenge", AuthType="MD5"))
    key = hashlib.md5((ch["Challenge"] + SECRET).encode()).hexdigest()
    ok = await ami.request(Action.of("Login", AuthType="MD5", Username=USER, Key=key))
    assert ok.ok
    await ami.close()


async def test_unknown_action(sim) -> None:
    ami = await RawAmi.connect(sim.port)
    answer = await ami.request(Action.of("Frobnicate"))
    assert answer.message == (
        "Invalid/unknown command: Frobnicate. Use Action: ListCommands to show available commands."
    )
    await ami.close()


async def test_tutorial_core_show_hints_exact_text(sim) -> None:
    ami = await RawAmi.connect(sim.port)
    out = (await ami.request(Action.of("Command", Command="core show hints"))).output
    assert out == [
        *HINTS_HEADER,
        hint_line("1234@devstate_test", "Custom:mystate", "Idle"),
        "----------------",
        "- 1 hints registered",
    ]
    set_ok = await ami.request(
        Action.of("Setvar", Variable="DEVICE_STATE(Custom:mystate)", Value="INUSE")
    )
    assert set_ok.message == "Variable Set"
    out = (await ami.request(Action.of("Command", Command="core show hints"))).output
    assert out[2] == hint_line("1234@devstate_test", "Custom:mystate", "InUse")
    one = (await ami.request(Action.of("Command", Command="core show hint 1234"))).output
    assert one == [
        hint_line("1234@devstate_test", "Custom:mystate", "InUse"),
        "1 hint matching extension 1234",
    ]
    none = (await ami.request(Action.of("Command", Command="core show hint 99"))).output
    assert none == ["No hints matching extension 99"]
    await ami.close()


async def test_no_hints_and_extension_state_list_error() -> None:
    server = await start_sim("")
    try:
        ami = await RawAmi.connect(server.port)
        out = (await ami.request(Action.of("Command", Command="core show hints"))).output
        assert out == ["There are no registered dialplan hints"]
        err = await ami.request(Action.of("ExtensionStateList"))
        assert (err.status, err.message) == ("Error", "No dialplan hints are available")
        await ami.close()
    finally:
        await server.close()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DEVICE_STATE(PJSIP/100)", "INUSE"),  # only Custom: may be set
        ("DEVICE_STATE(Custom:x)", "UNKNOWN"),  # UNKNOWN is refused
        ("DEVICE_STATE(Custom:x)", "bogus"),
        ("DEVICE_STATE(Custom:)", "INUSE"),  # empty name
    ],
)
async def test_setvar_validation(sim, variable: str, value: str) -> None:
    ami = await RawAmi.connect(sim.port)
    answer = await ami.request(Action.of("Setvar", Variable=variable, Value=value))
    assert (answer.status, answer.message) == ("Error", "Variable not set")
    await ami.close()


async def test_device_state_change_only_on_change_and_extension_status(sim) -> None:
    ami = await RawAmi.connect(sim.port)
    await ami.request(Action.of("Setvar", Variable="DEVICE_STATE(custom:mystate)", Value="inuse"))
    change = await ami.next_event("DeviceStateChange")
    assert change.headers == (
        ("Event", "DeviceStateChange"),
        ("Privilege", "call,all"),
        ("Device", "Custom:mystate"),
        ("State", "INUSE"),
    )
    status = await ami.next_event("ExtensionStatus")
    assert status.headers == (
        ("Event", "ExtensionStatus"),
        ("Privilege", "call,all"),
        ("Exten", "1234"),
        ("Context", "devstate_test"),
        ("Hint", "Custom:mystate"),
        ("Status", "1"),
        ("StatusText", "InUse"),
    )
    await ami.request(Action.of("Setvar", Variable="DEVICE_STATE(Custom:mystate)", Value="INUSE"))
    await ami.request(Action.of("Command", Command="devstate change Custom:other BUSY"))
    nxt = await ami.next_event("DeviceStateChange")
    assert nxt["Device"] == "Custom:other"  # the repeated INUSE raised nothing
    got = await ami.request(Action.of("Getvar", Variable="DEVICE_STATE(Custom:mystate)"))
    assert (got["Variable"], got["Value"]) == ("DEVICE_STATE(Custom:mystate)", "INUSE")
    await ami.close()


async def test_ringing_repeats_extension_status() -> None:
    server = await start_sim("[c]\nexten => 1,hint,Custom:a&Custom:b\n")
    try:
        ami = await RawAmi.connect(server.port)
        for dev, value in (("a", "RINGING"), ("b", "NOT_INUSE")):
            await ami.request(
                Action.of("Setvar", Variable=f"DEVICE_STATE(Custom:{dev})", Value=value)
            )
            status = await ami.next_event("ExtensionStatus")
            assert status["StatusText"] == "Ringing"
        await ami.close()
    finally:
        await server.close()


async def test_devstate_cli_and_name_cut(sim) -> None:
    ami = await RawAmi.connect(sim.port)
    out = await ami.request(Action.of("Command", Command="devstate change Custom:lamp1 busy"))
    assert out.output == ["Changing lamp1 to busy"]
    bad = await ami.request(Action.of("Command", Command="devstate change PJSIP/1 BUSY"))
    assert bad.output[0] == "The devstate command can only be used to set 'Custom:' device state!"
    listing = (await ami.request(Action.of("Command", Command="devstate list"))).output
    bar = "-" * 69
    assert listing == [
        "",
        bar,
        "--- Custom Device States " + "-" * 44,
        bar,
        "---",
        "--- Name: 'Custom:lamp1'  State: 'busy'",
        "---",
        bar,
        bar,
        "",
    ]
    long_name = "Custom:" + "x" * 100
    await ami.request(Action.of("Setvar", Variable=f"DEVICE_STATE({long_name})", Value="BUSY"))
    change = await ami.next_event("DeviceStateChange")
    assert change["Device"] in ("Custom:lamp1", long_name[:79])
    if change["Device"] == "Custom:lamp1":
        change = await ami.next_event("DeviceStateChange")
    assert change["Device"] == long_name[:79]
    await ami.close()


async def test_list_actions(sim) -> None:
    ami = await RawAmi.connect(sim.port)
    await ami.request(Action.of("Setvar", Variable="DEVICE_STATE(Custom:mystate)", Value="BUSY"))
    ami.send(Action.of("DeviceStateList", ActionID="L"))
    msgs = []
    while True:
        msg = await ami.next()
        if (isinstance(msg, Event) and msg.action_id == "L") or isinstance(msg, Response):
            msgs.append(msg)
        if isinstance(msg, Event) and msg.name == "DeviceStateListComplete":
            break
    assert msgs[0].headers == (
        ("Response", "Success"),
        ("ActionID", "L"),
        ("EventList", "start"),
        ("Message", "Device State Changes will follow"),
    )
    assert msgs[1].headers == (
        ("Event", "DeviceStateChange"),
        ("ActionID", "L"),
        ("Device", "Custom:mystate"),
        ("State", "BUSY"),
    )
    assert msgs[2].headers == (
        ("Event", "DeviceStateListComplete"),
        ("ActionID", "L"),
        ("EventList", "Complete"),
        ("ListItems", "1"),
    )
    state = await ami.request(Action.of("ExtensionState", Exten="1234", Context="devstate_test"))
    assert (state["Status"], state["StatusText"], state["Hint"]) == ("2", "Busy", "Custom:mystate")
    missing = await ami.request(Action.of("ExtensionState", Exten="9"))
    assert (missing["Status"], missing["StatusText"]) == ("-1", "Unknown")
    await ami.close()


async def test_mwi_flows(sim) -> None:
    ami = await RawAmi.connect(sim.port)
    upd = await ami.request(
        Action.of("MWIUpdate", ActionID="u", Mailbox="1000@default", NewMessages=3, OldMessages=1)
    )
    assert upd.headers == (("Response", "Success"), ("ActionID", "u"))
    mw = await ami.next_event("MessageWaiting")
    assert mw.headers == (
        ("Event", "MessageWaiting"),
        ("Privilege", "call,all"),
        ("Mailbox", "1000@default"),
        ("Waiting", "1"),
        ("New", "3"),
        ("Old", "1"),
    )
    ami.send(Action.of("MWIGet", ActionID="42", Mailbox="/.*/"))
    item = await ami.next_event("MWIGet")
    assert item.headers == (
        ("Event", "MWIGet"),
        ("Mailbox", "1000@default"),
        ("OldMessages", "1"),
        ("NewMessages", "3"),
        ("ActionID", "42"),
    )
    done = await ami.next_event("MWIGetComplete")
    assert done.headers == (
        ("Event", "MWIGetComplete"),
        ("ActionID", "42"),
        ("EventList", "Complete"),
        ("ListItems", "1"),
    )
    count = await ami.request(Action.of("MailboxCount", Mailbox="1000@default"))
    assert (count["NewMessages"], count["OldMessages"], count["UrgMessages"]) == ("3", "1", "0")
    status = await ami.request(Action.of("MailboxStatus", Mailbox="1000@default"))
    assert status["Waiting"] == "1"
    bad = await ami.request(Action.of("MWIUpdate", Mailbox="x", NewMessages="abc"))
    assert bad.message == "Invalid NewMessages: abc"
    missing = await ami.request(Action.of("MWIGet"))
    assert missing.message == "Missing mailbox parameter in request"
    badre = await ami.request(Action.of("MWIGet", Mailbox="/open"))
    assert badre.message == "Mailbox regex format invalid in: /open"
    deleted = await ami.request(Action.of("MWIDelete", Mailbox="1000@default"))
    assert deleted.ok
    zero = await ami.next_event("MessageWaiting")
    assert (zero["Waiting"], zero["New"], zero["Old"]) == ("0", "0", "0")
    await ami.close()


async def test_state_dir_survives_restart(tmp_path: Path) -> None:
    server = await start_sim(state_dir=tmp_path)
    ami = await RawAmi.connect(server.port)
    await ami.request(Action.of("Setvar", Variable="DEVICE_STATE(Custom:mystate)", Value="INUSE"))
    await ami.request(Action.of("MWIUpdate", Mailbox="7@default", NewMessages=2))
    await ami.close()
    await server.close()
    server = await start_sim(state_dir=tmp_path)
    try:
        ami = await RawAmi.connect(server.port)
        out = (await ami.request(Action.of("Command", Command="core show hints"))).output
        assert out[2] == hint_line("1234@devstate_test", "Custom:mystate", "InUse")
        count = await ami.request(Action.of("MailboxCount", Mailbox="7@default"))
        assert count["NewMessages"] == "2"
        await ami.close()
    finally:
        await server.close()


def test_main_argument_errors(capsys, tmp_path: Path) -> None:
    assert main(["--listen", "nonsense", "--username", "a", "--secret", "b"]) == 2
    assert "HOST:PORT" in capsys.readouterr().err
    assert main(["--listen", "127.0.0.1:1"]) == 2
    missing = tmp_path / "nope.conf"
    assert (
        main(
            [
                "--listen",
                "127.0.0.1:0",
                "--username",
                "a",
                "--secret",
                "b",
                "--dialplan",
                str(missing),
            ]
        )
        == 2
    )
    assert "cannot read dialplan" in capsys.readouterr().err
    assert parse_listen("[::1]:5038") == ("::1", 5038)
