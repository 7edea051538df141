"""RFC 3903 server side and the res_pjsip_publish_asterisk JSON bodies."""

from __future__ import annotations

import contextlib
import itertools
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pbxmesh.eid import EID
from pbxmesh.errors import RemoteProtocolError, StateError
from pbxmesh.links.sip.bodies import (
    DEVICESTATE,
    MWI,
    DeviceStateBody,
    MailboxStateBody,
    RefreshBody,
    decode_body,
    encode_body,
)
from pbxmesh.links.sip.message import Request, decode_datagram, encode
from pbxmesh.links.sip.publication import PublicationConfig, PublicationServer, respond
from pbxmesh.states import DeviceState

A = EID.parse("02:00:00:00:00:0a")
DEV = (
    b'{"type":"devicestate","device":"Custom:mystate","state":"INUSE","cachable":1,'
    b'"eid":"02:00:00:00:00:0a"}'
)
MBX = b'{"type":"mailboxstate","uniqueid":"1000@default","old":1,"new":2,"eid":"02:00:00:00:00:0a"}'
REFRESH = b'{"type":"refresh","eid":"02:00:00:00:00:0a"}'


# -- bodies ----------------------------------------------------------------------------------


def test_bodies_are_byte_for_byte_asterisks() -> None:
    assert encode_body(DeviceStateBody("Custom:mystate", DeviceState.INUSE, A)) == DEV
    assert encode_body(MailboxStateBody("1000@default", new=2, old=1, eid=A)) == MBX
    assert encode_body(RefreshBody(A)) == REFRESH


def test_bodies_decode() -> None:
    assert decode_body(DEVICESTATE, DEV) == DeviceStateBody("Custom:mystate", DeviceState.INUSE, A)
    assert decode_body(MWI, MBX) == MailboxStateBody("1000@default", 2, 1, A)
    assert decode_body(DEVICESTATE, REFRESH) == decode_body(MWI, REFRESH) == RefreshBody(A)
    # Asterisk's reading of a missing cachable: not cachable.
    no_cache = json.loads(DEV)
    del no_cache["cachable"]
    decoded = decode_body(DEVICESTATE, json.dumps(no_cache).encode())
    assert isinstance(decoded, DeviceStateBody) and decoded.cachable is False
    # A uniqueid without '@' is mailbox@default here.
    mbx = json.loads(MBX) | {"uniqueid": "3000"}
    assert decode_body(MWI, json.dumps(mbx).encode()).uniqueid == "3000@default"  # type: ignore[union-attr]
    # Unknown keys are tolerated.
    extra = json.loads(DEV) | {"future": [1]}
    assert isinstance(decode_body(DEVICESTATE, json.dumps(extra).encode()), DeviceStateBody)


@pytest.mark.parametrize(
    ("package", "change"),
    [
        (DEVICESTATE, {"state": "FOO"}),
        (DEVICESTATE, {"state": "inuse"}),
        (DEVICESTATE, {"state": 2}),
        (DEVICESTATE, {"eid": "zz"}),
        (DEVICESTATE, {"eid": "00:00:00:00:00:00"}),
        (DEVICESTATE, {"device": ""}),
        (DEVICESTATE, {"device": "x" * 80}),
        (DEVICESTATE, {"device": "a\nb"}),
        (DEVICESTATE, {"cachable": 2}),
        (DEVICESTATE, {"cachable": True}),
        (DEVICESTATE, {"type": "mailboxstate"}),  # wrong type for the package
        (MWI, {"type": "devicestate"}),
        (MWI, {"new": -1}),
        (MWI, {"old": "1"}),
        (MWI, {"new": 2**31}),
        (MWI, {"uniqueid": "@ctx"}),
        (DEVICESTATE, {"type": "other"}),
        (DEVICESTATE, {"type": None}),
    ],
)
def test_bad_bodies_raise(package: str, change: dict[str, object]) -> None:
    obj = json.loads(DEV if package == DEVICESTATE else MBX) | change
    with pytest.raises(RemoteProtocolError):
        decode_body(package, json.dumps(obj).encode())


@pytest.mark.parametrize("data", [b"", b"not json", b"[1]", b"\xff", b"[" * 100_000, b"{}"])
def test_non_json_raises(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_body(DEVICESTATE, data)


def test_outbound_bodies_cannot_be_invalid() -> None:
    with pytest.raises(StateError):
        DeviceStateBody("x" * 80, DeviceState.INUSE, A)
    with pytest.raises(StateError):
        DeviceStateBody("a\x01", DeviceState.INUSE, A)
    with pytest.raises(StateError):
        MailboxStateBody("3000", 1, 1, A)  # must be mailbox@context
    with pytest.raises(StateError):
        MailboxStateBody("3000@x", -1, 1, A)


_names = st.text(
    st.characters(min_codepoint=32, blacklist_characters="&,\x7f", codec="utf-8"),
    min_size=1,
    max_size=20,
)
_eids = st.binary(min_size=6, max_size=6).filter(any).map(EID)


@given(_names, st.sampled_from(list(DeviceState)), _eids, st.booleans())
def test_device_body_round_trip(name: str, state: DeviceState, eid: EID, cachable: bool) -> None:
    body = DeviceStateBody(name, state, eid, cachable)
    data = encode_body(body)
    assert data.isascii()
    assert decode_body(DEVICESTATE, data) == body


@given(_names, _names, st.integers(0, 2**31 - 1), st.integers(0, 2**31 - 1), _eids)
def test_mailbox_body_round_trip(box: str, ctx: str, new: int, old: int, eid: EID) -> None:
    box = box.replace("@", "_").strip() or "1"
    ctx = ctx.strip() or "default"
    body = MailboxStateBody(f"{box}@{ctx}", new, old, eid)
    assert decode_body(MWI, encode_body(body)) == body


@given(st.binary(max_size=300), st.sampled_from([DEVICESTATE, MWI]))
def test_arbitrary_body_bytes_decode_or_raise(data: bytes, package: str) -> None:
    with contextlib.suppress(RemoteProtocolError):
        decode_body(package, data)


# -- the server state machine ----------------------------------------------------------------


def publish(
    body: bytes = DEV,
    *,
    event: str | None = DEVICESTATE,
    if_match: str | None = None,
    expires: str | None = "3600",
    ctype: str | None = "application/json",
    uri: str = "sip:pbxmesh@127.0.0.1:5070",
) -> Request:
    headers = [
        ("Via", "SIP/2.0/UDP 127.0.0.1:5061;rport;branch=z9hG4bKx"),
        ("From", "<sip:pbxmesh@127.0.0.1>;tag=1"),
        ("To", "<sip:pbxmesh@127.0.0.1>"),
        ("Call-ID", "c"),
        ("CSeq", "1 PUBLISH"),
    ]
    for name, value in (("Event", event), ("SIP-If-Match", if_match), ("Expires", expires)):
        if value is not None:
            headers.append((name, value))
    if body and ctype:
        headers.append(("Content-Type", ctype))
    return Request("PUBLISH", uri, tuple(headers), body)


def server(**kw: object) -> PublicationServer:
    counter = itertools.count()
    return PublicationServer(PublicationConfig(**kw), new_etag=lambda: f"e{next(counter)}")  # type: ignore[arg-type]


def test_initial_modify_refresh_remove() -> None:
    srv = server()
    first = srv.handle(publish(), 0.0)
    assert (first.status, first.kind, first.etag, first.expires) == (200, "initial", "e0", 3600)
    assert first.body == DeviceStateBody("Custom:mystate", DeviceState.INUSE, A)
    mod = srv.handle(publish(MBX.replace(b"x", b"x"), event=MWI), 1.0)
    assert mod.kind == "initial"  # another package: another publication
    modify = srv.handle(publish(if_match="e0"), 2.0)
    assert (modify.status, modify.kind, modify.etag) == (200, "modify", "e2")
    assert srv.handle(publish(if_match="e0"), 3.0).status == 412  # the old tag is gone
    refresh = srv.handle(publish(b"", if_match="e2"), 4.0)
    assert (refresh.status, refresh.kind, refresh.body, refresh.etag) == (
        200,
        "refresh",
        None,
        "e3",
    )
    gone = srv.handle(publish(b"", if_match="e3", expires="0"), 5.0)
    assert (gone.status, gone.kind, gone.expires) == (200, "remove", 0)
    assert srv.handle(publish(b"", if_match="e3"), 6.0).status == 412
    assert len(srv) == 1  # the MWI publication


@pytest.mark.parametrize(
    ("request_", "status", "header"),
    [
        (publish(event=None), 489, "Allow-Events"),
        (publish(event="presence"), 489, "Allow-Events"),
        (publish(if_match="nope"), 412, None),
        (publish(expires="10"), 423, "Min-Expires"),
        (publish(expires="soon"), 400, None),
        (publish(b""), 400, None),  # initial without a body
        (publish(ctype="text/plain"), 415, "Accept"),
        (publish(ctype=None), 415, "Accept"),
        (publish(b"not json"), 400, None),
        (publish(MBX), 400, None),  # mailboxstate on the devicestate package
    ],
)
def test_every_bad_case_has_its_status(request_: Request, status: int, header: str | None) -> None:
    outcome = server().handle(request_, 0.0)
    assert outcome.status == status, outcome.detail
    assert outcome.detail
    response = respond(request_, outcome, source=("127.0.0.1", 5061))
    assert response.status == status
    assert response.get("SIP-ETag") is None
    if header:
        assert response.get(header)


def test_bad_body_on_a_valid_modify_keeps_the_publication() -> None:
    srv = server()
    srv.handle(publish(), 0.0)
    assert srv.handle(publish(b"{}", if_match="e0"), 1.0).status == 400
    assert srv.handle(publish(if_match="e0"), 2.0).status == 200


def test_expires_is_capped_and_defaulted() -> None:
    srv = server(default_expires=120, max_expires=600)
    assert srv.handle(publish(expires="99999999"), 0.0).expires == 600
    assert srv.handle(publish(expires="300"), 0.0).expires == 300
    assert srv.handle(publish(expires=None), 0.0).expires == 120


def test_grace_period_absorbs_asterisks_late_refresh() -> None:
    srv = server(grace=30.0)
    first = srv.handle(publish(expires="60"), 0.0)
    # Asterisk's body-less refresh arrives just after the 60 s expiry: still accepted.
    late = srv.handle(publish(b"", if_match=first.etag, expires="60"), 60.5)
    assert (late.status, late.kind) == (200, "refresh")
    # Past expiry plus grace, the publication is gone: 412.
    assert srv.handle(publish(b"", if_match=late.etag), 60.5 + 60 + 30).status == 412


def test_expire_sweeps_only_past_grace() -> None:
    srv = server(grace=10.0)
    srv.handle(publish(expires="60"), 0.0)
    assert srv.expire(65.0) == []
    assert [p.publisher for p in srv.expire(70.0)] == [str(A)]
    assert len(srv) == 0


def test_initial_with_expires_zero_applies_but_keeps_nothing() -> None:
    srv = server()
    outcome = srv.handle(publish(expires="0"), 0.0)
    assert (outcome.status, outcome.expires) == (200, 0)
    assert outcome.body is not None
    assert len(srv) == 0


def test_publications_are_bounded() -> None:
    srv = server(max_publications=2)
    assert srv.handle(publish(), 0.0).status == 200
    assert srv.handle(publish(), 0.0).status == 200
    full = srv.handle(publish(), 0.0)
    assert full.status == 503
    # A refresh of a live one still works.
    assert srv.handle(publish(b"", if_match="e0"), 1.0).status == 200


def test_etags_are_scoped_by_resource() -> None:
    srv = server()
    srv.handle(publish(uri="sip:one@h"), 0.0)
    assert srv.handle(publish(if_match="e0", uri="sip:two@h"), 0.0).status == 412


def test_response_matches_asterisks_shape() -> None:
    req = publish()
    srv = server()
    response = respond(req, srv.handle(req, 0.0), source=("127.0.0.1", 5061), server="pbxmesh")
    again = decode_datagram(encode(response))
    assert again == response
    assert response.get("SIP-ETag") == "e0"
    assert response.get("Expires") == "3600"
    assert response.top_via.param("rport") == "5061"
    assert response.top_via.param("received") == "127.0.0.1"
    assert ";tag=" in (response.get("To") or "")
    assert response.get("Call-ID") == "c"
    assert response.get("CSeq") == "1 PUBLISH"


def test_default_etags_are_unpredictable() -> None:
    srv = PublicationServer()
    tags = {srv.handle(publish(), 0.0).etag for _ in range(50)}
    assert len(tags) == 50
    assert all(tag and len(tag) >= 16 for tag in tags)
