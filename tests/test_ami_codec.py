"""The sans-IO AMI codec: a client codec and a server codec talking through memory."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pbxmesh.errors import LocalProtocolError, RemoteProtocolError
from pbxmesh.links.ami.codec import (
    CLOSED,
    NEED_DATA,
    Action,
    AmiCodec,
    Banner,
    Event,
    ListAssembler,
    ListResponse,
    Response,
    Role,
)


def drain(codec: AmiCodec) -> list[object]:
    """Every message until NEED_DATA/CLOSED; errors are collected as their type."""
    out: list[object] = []
    while True:
        try:
            msg = codec.next_event()
        except RemoteProtocolError:
            out.append(RemoteProtocolError)
            continue
        if msg is NEED_DATA or msg is CLOSED:
            return out
        out.append(msg)


def feed(codec: AmiCodec, data: bytes, *, bytewise: bool) -> list[object]:
    out: list[object] = []
    chunks = [data[i : i + 1] for i in range(len(data))] if bytewise else [data]
    for chunk in chunks:
        codec.receive_data(chunk)
        out += drain(codec)
    return out


class Pair:
    """h11-style ConnectionPair: what one end sends, the other decodes."""

    def __init__(self) -> None:
        self.client = AmiCodec(Role.CLIENT)
        self.server = AmiCodec(Role.SERVER)

    def to_client(self, *messages: Banner | Response | Event, bytewise: bool = False) -> list:
        data = b"".join(self.server.send(m) for m in messages)
        return feed(self.client, data, bytewise=bytewise)

    def to_server(self, *messages: Action, bytewise: bool = False) -> list:
        data = b"".join(self.client.send(m) for m in messages)
        return feed(self.server, data, bytewise=bytewise)


BANNER = Banner("Asterisk Call Manager/13.0.0")


@pytest.mark.parametrize("bytewise", [False, True])
def test_login_exchange_round_trips(bytewise: bool) -> None:
    pair = Pair()
    login = Action.of("Login", ActionID="1", Username="admin", Secret="s3cret")
    ok = Response.of("Success", ActionID="1", Message="Authentication accepted")
    booted = Event.of("FullyBooted", Privilege="system,all", Status="Fully Booted")
    assert pair.to_client(BANNER, bytewise=bytewise) == [BANNER]
    assert pair.to_server(login, bytewise=bytewise) == [login]
    assert pair.to_client(ok, booted, bytewise=bytewise) == [ok, booted]
    assert BANNER.version == "13.0.0"


def test_wire_layout_is_crlf_blocks() -> None:
    codec = AmiCodec(Role.CLIENT)
    data = codec.send(Action.of("Setvar", Variable="DEVICE_STATE(Custom:a)", Value="INUSE"))
    assert data == (b"Action: Setvar\r\nVariable: DEVICE_STATE(Custom:a)\r\nValue: INUSE\r\n\r\n")
    assert AmiCodec(Role.SERVER).send(BANNER) == b"Asterisk Call Manager/13.0.0\r\n"


def test_bare_lf_case_insensitive_first_match_and_duplicates() -> None:
    codec = AmiCodec(Role.CLIENT)
    codec.receive_data(b"Asterisk Call Manager/13.0.0\n")
    assert codec.next_event() == BANNER
    codec.receive_data(
        b"Response: Success\nactionid: 7\nMessage: Command output follows\n"
        b"Output: \nOutput:     -= Hints =-\nOUTPUT: x: y\n\n"
    )
    msg = codec.next_event()
    assert isinstance(msg, Response)
    assert msg.action_id == "7" and msg["ACTIONID"] == "7"
    assert msg.output == ["", "    -= Hints =-", "x: y"]  # indentation kept, one space eaten
    assert codec.next_event() is NEED_DATA


def test_server_role_skips_leading_blanks_and_ignores_lines_without_colon() -> None:
    codec = AmiCodec(Role.SERVER)
    codec.receive_data(b"Action:   Ping\r\ngarbage line\r\nActionID:\t9\r\n\r\n")
    msg = codec.next_event()
    assert isinstance(msg, Action)
    assert msg.name == "Ping" and msg.action_id == "9"


def test_stray_blank_lines_between_blocks_are_ignored() -> None:
    pair = Pair()
    pair.to_client(BANNER)
    ev = Event.of("DeviceStateChange", Privilege="call,all", Device="PJSIP/1", State="INUSE")
    assert feed(pair.client, b"\r\n\r\n" + pair.server.send(ev), bytewise=False) == [ev]


def test_line_too_long_is_one_error_then_resync() -> None:
    codec = AmiCodec(Role.CLIENT)
    codec.receive_data(b"Asterisk Call Manager/13.0.0\r\n")
    assert codec.next_event() == BANNER
    long_block = b"Event: X\r\nValue: " + b"a" * 2000 + b"\r\nMore: 1\r\n\r\n"
    good = b"Event: Good\r\nK: v\r\n\r\n"
    out = feed(codec, long_block + good, bytewise=False)
    assert out == [RemoteProtocolError, Event((("Event", "Good"), ("K", "v")))]
    codec2 = AmiCodec(Role.CLIENT)
    codec2.receive_data(b"Asterisk Call Manager/13.0.0\r\n")
    codec2.next_event()
    assert feed(codec2, long_block + good, bytewise=True) == out
    with pytest.raises(RemoteProtocolError, match="1024"):
        c = AmiCodec(Role.SERVER)
        c.receive_data(b"A" * 1100)
        c.next_event()


def test_garbage_block_is_dropped_and_link_survives() -> None:
    codec = AmiCodec(Role.CLIENT)
    data = (
        b"Asterisk Call Manager/13.0.0\r\n"
        b"this is not a header\r\nEvent: Lost\r\n\r\n"
        b"NoKind: 1\r\n\r\n"
        b"Event: Kept\r\n\r\n"
    )
    out = feed(codec, data, bytewise=False)
    assert out == [BANNER, RemoteProtocolError, RemoteProtocolError, Event.of("Kept")]


def test_wrong_banner_is_an_error_but_decoding_continues() -> None:
    codec = AmiCodec(Role.CLIENT)
    out = feed(codec, b"SSH-2.0-OpenSSH\r\nEvent: X\r\n\r\n", bytewise=False)
    assert out == [RemoteProtocolError, Event.of("X")]


def test_legacy_follows_command_output() -> None:
    codec = AmiCodec(Role.CLIENT)
    data = (
        b"Asterisk Call Manager/1.1\r\n"
        b"Response: Follows\r\nPrivilege: Command\r\nActionID: 3\r\n"
        b"\n    -= Registered Asterisk Dial Plan Hints =-\n"
        b"1234@devstate_test : Custom:mystate State:InUse\n"
        b"\n- 1 hints registered\n--END COMMAND--\r\n\r\n"
        b"Event: After\r\n\r\n"
    )
    for bytewise in (False, True):
        out = feed(AmiCodec(Role.CLIENT), data, bytewise=bytewise)
        assert len(out) == 3
        resp = out[1]
        assert isinstance(resp, Response) and resp.status == "Follows" and resp.ok
        assert resp.action_id == "3"
        assert resp.output == [
            "",
            "    -= Registered Asterisk Dial Plan Hints =-",
            "1234@devstate_test : Custom:mystate State:InUse",
            "",
            "- 1 hints registered",
        ]
        assert out[2] == Event.of("After")
    del codec


def test_legacy_follows_round_trip_through_send() -> None:
    pair = Pair()
    pair.to_client(BANNER)
    resp = Response.of(
        "Follows",
        [
            ("Privilege", "Command"),
            ("ActionID", "5"),
            ("Output", "a: b"),
            ("Output", ""),
            ("Output", "c"),
        ],
    )
    assert pair.to_client(resp) == [resp]


def test_eof_in_the_middle_of_a_block_loses_only_that_block() -> None:
    codec = AmiCodec(Role.CLIENT)
    codec.receive_data(b"Asterisk Call Manager/13.0.0\r\nEvent: A\r\n\r\nEvent: B\r\nX: ")
    assert codec.next_event() == BANNER
    assert codec.next_event() == Event.of("A")
    assert codec.next_event() is NEED_DATA
    codec.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="closed in the middle"):
        codec.next_event()
    assert codec.next_event() is CLOSED
    assert codec.next_event() is CLOSED
    with pytest.raises(LocalProtocolError):
        codec.receive_data(b"more")


def test_roles_and_validation() -> None:
    with pytest.raises(LocalProtocolError):
        AmiCodec(Role.CLIENT).send(Event.of("X"))
    with pytest.raises(LocalProtocolError):
        AmiCodec(Role.SERVER).send(Action.of("Ping"))
    with pytest.raises(LocalProtocolError):
        Action.of("Ping", Bad="a\r\nEvent: injected")
    with pytest.raises(LocalProtocolError):
        Response((("Message", "no status"),))
    with pytest.raises(LocalProtocolError):
        Banner("HTTP/1.1 200 OK")
    with pytest.raises(LocalProtocolError, match="1024"):
        AmiCodec(Role.CLIENT).send(Action.of("Setvar", Value="x" * 1100))
    action = Action.of("Ping", ActionID="old").with_action_id("new")
    assert action.get_all("ActionID") == ["new"] and action.name == "Ping"
    assert Action.of("X", Skip=None).headers == (("Action", "X"),)


def test_list_assembler_gathers_items_by_action_id() -> None:
    asm = ListAssembler()
    ack = Response.of("Success", ActionID="42", EventList="start", Message="Mailboxes will follow")
    item = Event.of("MWIGet", Mailbox="1000@default", OldMessages=1, NewMessages=3, ActionID="42")
    other = Event.of("MessageWaiting", Privilege="call,all", Mailbox="x")
    done = Event.of("MWIGetComplete", ActionID="42", EventList="Complete", ListItems=1)
    assert asm.feed(ack) is None
    assert asm.feed(item) is None
    assert asm.feed(other) is other  # unrelated events still flow
    result = asm.feed(done)
    assert result == ListResponse(ack, (item,), done)
    error = Response.of("Error", ActionID="9", Message="No dialplan hints are available")
    assert asm.feed(error) is error


# -- properties ----------------------------------------------------------------------------

_key = st.from_regex(r"[A-Za-z][A-Za-z0-9_-]{0,15}", fullmatch=True)
_value = st.text(
    st.characters(blacklist_categories=["Cs"], blacklist_characters="\r\n"), max_size=40
).filter(lambda v: not v[:1].isspace())
_fields = st.lists(st.tuples(_key, _value), max_size=6)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600), st.sampled_from([Role.CLIENT, Role.SERVER]))
def test_arbitrary_bytes_give_messages_or_remote_errors_only(data: bytes, role: Role) -> None:
    for chunked in (False, True):
        codec = AmiCodec(role)
        step = 7 if chunked else len(data) + 1
        for i in range(0, len(data), step):
            codec.receive_data(data[i : i + step])
            drain(codec)
        codec.receive_data(b"")
        drain(codec)
        assert codec.next_event() is CLOSED


@settings(max_examples=100)
@given(
    st.lists(st.tuples(st.sampled_from(["Event", "Response"]), _value, _fields), max_size=5),
    st.booleans(),
)
def test_server_to_client_round_trip(blocks: list, bytewise: bool) -> None:
    pair = Pair()
    msgs: list = [BANNER]
    for kind, first, fields in blocks:
        if kind == "Event":
            msgs.append(Event.of(first or "E", fields))
        else:
            msgs.append(Response.of(first or "Success", fields))
    msgs = [m for m in msgs if not (isinstance(m, Response) and m.status.lower() == "follows")]
    assert pair.to_client(*msgs, bytewise=bytewise) == msgs


@settings(max_examples=100)
@given(st.lists(st.tuples(_value, _fields), max_size=5), st.booleans())
def test_client_to_server_round_trip(blocks: list, bytewise: bool) -> None:
    pair = Pair()
    msgs = [Action.of(name or "Ping", fields) for name, fields in blocks]
    assert pair.to_server(*msgs, bytewise=bytewise) == msgs


@settings(max_examples=100)
@given(st.lists(st.tuples(_value, _fields), min_size=1, max_size=6), st.data())
def test_disconnect_anywhere_loses_only_the_cut_block(blocks: list, data: st.DataObject) -> None:
    """Cut the stream anywhere: what was decoded is an exact prefix, nothing is invented,
    and a fresh connection (the client's resync) decodes everything again."""
    server = AmiCodec(Role.SERVER)
    events = [Event.of(name or "E", fields) for name, fields in blocks]
    wire = server.send(BANNER) + b"".join(server.send(e) for e in events)
    cut = data.draw(st.integers(0, len(wire)))
    first = AmiCodec(Role.CLIENT)
    got = feed(first, wire[:cut], bytewise=False)
    first.receive_data(b"")
    tail = drain(first)
    assert tail in ([], [RemoteProtocolError])
    decoded = [m for m in got if m is not RemoteProtocolError]
    assert decoded == [BANNER, *events][: len(decoded)]
    again = AmiCodec(Role.CLIENT)
    assert feed(again, wire, bytewise=False) == [BANNER, *events]


@pytest.mark.slow
@settings(max_examples=1000)
@given(st.binary(max_size=3000))
def test_arbitrary_bytes_slow(data: bytes) -> None:
    codec = AmiCodec(Role.CLIENT)
    codec.receive_data(data)
    drain(codec)
    codec.receive_data(b"")
    drain(codec)
