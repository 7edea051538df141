# ruff: noqa: E501
"""The SIP message codec: Asterisk's real messages, compact forms, framing, limits, properties."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pbxmesh.errors import LocalProtocolError, RemoteProtocolError
from pbxmesh.links.sip.headers import CSeq, Via, header_param, uri_user
from pbxmesh.links.sip.message import (
    CLOSED,
    MAX_HEADERS,
    MAX_MESSAGE,
    NEED_DATA,
    Request,
    Response,
    SipStream,
    decode_datagram,
    encode,
)

BODY = (
    b'{"type":"devicestate","device":"Custom:mystate","state":"INUSE","cachable":1,'
    b'"eid":"02:00:00:00:00:0a"}'
)
# As captured between two real Asterisks (the reference), including the odd Content-Length
# padding.
ASTERISK_PUBLISH = (
    b"PUBLISH sip:asta@127.0.0.1:5062 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5061;rport;branch=z9hG4bKPjf297d1a4-d40e-44e6-b49f-b335d8a744df\r\n"
    b"From: <sip:asta@127.0.0.1>;tag=8e020294-4ade-4e4b-ba79-4475084e5dbd\r\n"
    b"To: <sip:asta@127.0.0.1>\r\n"
    b"Call-ID: dd235458-8275-425a-9705-0778ae3bedd8\r\n"
    b"CSeq: 286 PUBLISH\r\n"
    b"Event: asterisk-devicestate\r\n"
    b"SIP-If-Match: 0\r\n"
    b"Expires: 3600\r\n"
    b"Max-Forwards: 70\r\n"
    b"User-Agent: Asterisk PBX GIT-master-f0c1c1a7b7\r\n"
    b"Content-Type: application/json\r\n"
    b"Content-Length:   103\r\n"
    b"\r\n" + BODY
)
ASTERISK_200 = (
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5061;rport=5061;received=127.0.0.1;"
    b"branch=z9hG4bKPjf297d1a4-d40e-44e6-b49f-b335d8a744df\r\n"
    b"Call-ID: dd235458-8275-425a-9705-0778ae3bedd8\r\n"
    b"From: <sip:asta@127.0.0.1>;tag=8e020294-4ade-4e4b-ba79-4475084e5dbd\r\n"
    b"To: <sip:asta@127.0.0.1>;tag=z9hG4bKPjf297d1a4-d40e-44e6-b49f-b335d8a744df\r\n"
    b"CSeq: 286 PUBLISH\r\n"
    b"SIP-ETag: 2\r\n"
    b"Expires: 3600\r\n"
    b"Server: Asterisk PBX GIT-master-f0c1c1a7b7\r\n"
    b"Content-Length:  0\r\n"
    b"\r\n"
)
MANDATORY = (
    ("Via", "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKabc"),
    ("From", "<sip:a@h>;tag=1"),
    ("To", "<sip:a@h>"),
    ("Call-ID", "x"),
    ("CSeq", "1 PUBLISH"),
)


def test_asterisk_publish_decodes() -> None:
    msg = decode_datagram(ASTERISK_PUBLISH)
    assert isinstance(msg, Request)
    assert (msg.method, msg.uri, msg.body) == ("PUBLISH", "sip:asta@127.0.0.1:5062", BODY)
    via = msg.top_via
    assert (via.transport, via.host, via.port) == ("UDP", "127.0.0.1", 5061)
    assert via.branch == "z9hG4bKPjf297d1a4-d40e-44e6-b49f-b335d8a744df"
    assert via.param("rport") == ""
    assert msg.cseq == CSeq(286, "PUBLISH")
    assert msg.get("sip-if-match") == "0"
    assert msg.get("Content-Length") is None  # computed, never stored
    assert header_param(msg.get("From") or "", "tag") == "8e020294-4ade-4e4b-ba79-4475084e5dbd"
    assert uri_user(msg.uri) == "asta"


def test_asterisk_200_decodes() -> None:
    msg = decode_datagram(ASTERISK_200)
    assert isinstance(msg, Response)
    assert (msg.status, msg.reason, msg.get("SIP-ETag")) == (200, "OK", "2")
    assert msg.top_via.param("rport") == "5061"
    assert msg.top_via.param("received") == "127.0.0.1"


def test_round_trip_of_real_messages() -> None:
    for raw in (ASTERISK_PUBLISH, ASTERISK_200):
        msg = decode_datagram(raw)
        assert decode_datagram(encode(msg)) == msg


def test_compact_forms_and_case() -> None:
    raw = (
        b"PUBLISH sip:p@h SIP/2.0\r\nv: SIP/2.0/TCP h:1;branch=z9hG4bK1\r\n"
        b"F: <sip:a@h>;tag=1\r\nt: <sip:a@h>\r\ni: c\r\nCSEQ: 2 PUBLISH\r\n"
        b"o: asterisk-mwi\r\nc: application/json\r\nk: x\r\ns: subj\r\nm: <sip:a@h>\r\n"
        b"e: gzip\r\nl: 2\r\n\r\n{}"
    )
    msg = decode_datagram(raw)
    names = [name for name, _ in msg.headers]
    assert names == [
        "Via", "From", "To", "Call-ID", "CSeq", "Event", "Content-Type",
        "Supported", "Subject", "Contact", "Content-Encoding",
    ]  # fmt: skip
    assert msg.get("event") == msg.get("o") == "asterisk-mwi"
    assert msg.body == b"{}"


def test_multiple_values_and_folding() -> None:
    raw = (
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP a:1;branch=z9hG4bK1,\r\n SIP/2.0/UDP b:2;branch=z9hG4bK2\r\n"
        b'Via: SIP/2.0/UDP c;branch=z9hG4bK3\r\nFrom: "x, y" <sip:a@h>;tag=1\r\n'
        b"To: <sip:a@h>\r\nCall-ID: c\r\nCSeq: 2 PUBLISH\r\nContent-Length: 0\r\n\r\n"
    )
    msg = decode_datagram(raw)
    assert [v.host for v in msg.vias] == ["a", "b", "c"]
    assert msg.get_all("From") == ['"x, y" <sip:a@h>;tag=1']


def test_ipv6_via_and_params() -> None:
    via = Via.parse("SIP/2.0/udp [::1]:5070;branch=z9hG4bKx;rport=5;received=::1")
    assert (via.transport, via.host, via.port, via.param("received")) == (
        "UDP",
        "[::1]",
        5070,
        "::1",
    )
    assert Via.parse(str(via)) == via
    assert via.replace_params(rport="9").param("rport") == "9"


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"garbage",
        b"PUBLISH sip:p@h SIP/3.0\r\n\r\n",
        b"PUBLISH  SIP/2.0\r\n\r\n",
        b"SIP/2.0 99 Low\r\n\r\n",
        b"SIP/2.0 2000 OK\r\n\r\n",
        b"PUBLISH sip:p@h SIP/2.0\r\nNo colon\r\n\r\n",
        b"PUBLISH sip:p@h SIP/2.0\r\n\r\n",  # no mandatory headers
        b"PUBLISH sip:p@h SIP/2.0\r\nVia: nonsense\r\nFrom: a\r\nTo: b\r\nCall-ID: c\r\nCSeq: 1 PUBLISH\r\n\r\n",
        b"PUBLISH sip:p@h SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nFrom: a\r\nTo: b\r\nCall-ID: c\r\nCSeq: 1 NOTIFY\r\n\r\n",
        b"PUBLISH sip:p@h SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nFrom: a\r\nTo: b\r\nCall-ID: c\r\nCSeq: x PUBLISH\r\n\r\n",
        b"PUBLISH sip:p@h SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nFrom: a\r\nTo: b\r\nCall-ID: c\r\nCSeq: 1 PUBLISH\r\nContent-Length: 5\r\n\r\nab",
        b"PUBLISH sip:p@h SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nFrom: a\r\nTo: b\r\nCall-ID: c\r\nCSeq: 1 PUBLISH\r\nl: 1\r\nl: 1\r\n\r\nab",
        b"PUBLISH sip:p@h SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nFrom: \xff\r\nTo: b\r\nCall-ID: c\r\nCSeq: 1 PUBLISH\r\n\r\n",
        b"PUBLISH sip:p@h SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nFrom: a\x00\r\nTo: b\r\nCall-ID: c\r\nCSeq: 1 PUBLISH\r\n\r\n",
    ],
)
def test_malformed_datagrams_raise(raw: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_datagram(raw)


def test_datagram_size_and_header_limits() -> None:
    with pytest.raises(RemoteProtocolError):
        decode_datagram(ASTERISK_PUBLISH + b" " * MAX_MESSAGE)
    many = b"".join(b"X-H: %d\r\n" % i for i in range(MAX_HEADERS + 1))
    with pytest.raises(RemoteProtocolError):
        decode_datagram(ASTERISK_200.replace(b"\r\n\r\n", b"\r\n" + many + b"\r\n"))


def test_udp_body_without_content_length_runs_to_the_end() -> None:
    raw = ASTERISK_PUBLISH.replace(b"Content-Length:   103\r\n", b"")
    assert decode_datagram(raw).body == BODY
    # Extra bytes past Content-Length are ignored on UDP.
    assert decode_datagram(ASTERISK_PUBLISH + b"junk").body == BODY


def test_constructors_validate() -> None:
    with pytest.raises(LocalProtocolError):
        Request("PUB LISH", "sip:a@b")
    with pytest.raises(LocalProtocolError):
        Request("PUBLISH", "not a uri")
    with pytest.raises(LocalProtocolError):
        Response(700, "x")
    with pytest.raises(LocalProtocolError):
        Response(200, "O\r\nK")
    with pytest.raises(LocalProtocolError):
        Request("PUBLISH", "sip:a@b", (("X", "a\r\nInjected: 1"),))
    with pytest.raises(LocalProtocolError):
        Request("PUBLISH", "sip:a@b", (("Content-Length", "3"),))
    # Names are canonicalised, so equality does not depend on spelling.
    assert Request("PUBLISH", "sip:a@b", (("v", "x"),)) == Request(
        "PUBLISH", "sip:a@b", (("VIA", "x"),)
    )


def _feed(stream: SipStream, data: bytes, step: int) -> list[object]:
    out: list[object] = []
    for i in range(0, len(data), step):
        stream.receive_data(data[i : i + step])
        while (event := stream.next_event()) is not NEED_DATA:
            out.append(event)
    return out


@pytest.mark.parametrize("step", [1, 7, 10_000])
def test_stream_whole_and_byte_by_byte(step: int) -> None:
    publish, ok = decode_datagram(ASTERISK_PUBLISH), decode_datagram(ASTERISK_200)
    data = b"\r\n\r\n" + encode(publish) + b"\r\n" + encode(ok) + encode(publish)
    stream = SipStream()
    assert _feed(stream, data, step) == [publish, ok, publish]
    stream.receive_data(b"")
    assert stream.next_event() is CLOSED


def test_stream_bad_message_with_intact_framing_is_skipped() -> None:
    bad = b"PUBLISH sip:p@h SIP/2.0\r\nContent-Length: 2\r\n\r\nab"
    stream = SipStream()
    stream.receive_data(bad + ASTERISK_200)
    with pytest.raises(RemoteProtocolError):
        stream.next_event()
    assert stream.broken is None
    assert isinstance(stream.next_event(), Response)


@pytest.mark.parametrize(
    "data",
    [
        ASTERISK_200.replace(b"Content-Length:  0\r\n", b""),  # TCP needs Content-Length
        ASTERISK_200.replace(b"Content-Length:  0", b"Content-Length: -1"),
        b"X" * (MAX_MESSAGE + 1),
    ],
)
def test_stream_framing_errors_break_it(data: bytes) -> None:
    stream = SipStream()
    stream.receive_data(data)
    with pytest.raises(RemoteProtocolError):
        stream.next_event()
    assert stream.broken is not None
    with pytest.raises(RemoteProtocolError):
        stream.next_event()


def test_stream_eof_mid_message() -> None:
    stream = SipStream()
    stream.receive_data(ASTERISK_PUBLISH[:-10])
    assert stream.next_event() is NEED_DATA
    stream.receive_data(b"")
    with pytest.raises(RemoteProtocolError):
        stream.next_event()


# -- properties ------------------------------------------------------------------------------

_token = st.text(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~",
    min_size=1,
    max_size=12,
)
_value = st.text(
    st.characters(codec="utf-8", blacklist_characters="\r\n\x00\x7f"),
    max_size=30,
).map(lambda s: "".join(c for c in s if ord(c) >= 32 or c == "\t").strip())
_extra = st.lists(
    st.tuples(_token.filter(lambda n: n.lower() not in ("l", "content-length")), _value),
    max_size=8,
)


@st.composite
def messages(draw: st.DrawFn) -> Request | Response:
    headers = (*MANDATORY, *draw(_extra))
    body = draw(st.binary(max_size=200))
    if draw(st.booleans()):
        return Response(draw(st.integers(100, 699)), draw(_value), headers, body)
    return Request("PUBLISH", "sip:" + draw(_token) + "@h", headers, body)


@given(messages())
def test_round_trip_property(msg: Request | Response) -> None:
    data = encode(msg)
    assert decode_datagram(data) == msg
    stream = SipStream()
    assert _feed(stream, data, 1) == [msg]


@settings(max_examples=300)
@given(st.binary(max_size=600))
def test_arbitrary_bytes_give_messages_or_remote_protocol_error(data: bytes) -> None:
    with contextlib.suppress(RemoteProtocolError):
        decode_datagram(data)
    stream = SipStream()
    stream.receive_data(data)
    stream.receive_data(b"")
    for _ in range(100):
        try:
            if stream.next_event() is CLOSED:
                break
        except RemoteProtocolError:
            if stream.broken is not None:
                break


@given(messages(), st.binary(min_size=1, max_size=40), st.integers(0, 400))
def test_corrupted_messages_never_crash(msg: Request | Response, junk: bytes, at: int) -> None:
    data = bytearray(encode(msg))
    at = min(at, len(data))
    data[at : at + len(junk)] = junk
    with contextlib.suppress(RemoteProtocolError):
        decode_datagram(bytes(data))
