"""Sans-IO client side: transaction timers, the PUBLISH client against the server state
machine, digest authentication both ways. Time is a number passed in; nothing sleeps."""

from __future__ import annotations

import itertools

import pytest

from pbxmesh.eid import EID
from pbxmesh.links.sip.auth import DigestServer, authorization, parse_digest
from pbxmesh.links.sip.bodies import DeviceStateBody, MailboxStateBody, RefreshBody
from pbxmesh.links.sip.client import Handle, PublishClient, PublishConfig
from pbxmesh.links.sip.headers import Via
from pbxmesh.links.sip.message import Request, Response, decode_datagram, encode
from pbxmesh.links.sip.publication import PublicationConfig, PublicationServer, respond
from pbxmesh.links.sip.transaction import (
    ClientTransaction,
    ServerTransactions,
    Timers,
    TxEvent,
    make_response,
    new_branch,
)
from pbxmesh.states import DeviceState

B = EID.parse("02:00:00:00:00:0b")
C = EID.parse("02:00:00:00:00:0c")
URI = "sip:pbxmesh@127.0.0.1:5060"


def with_via(request: Request, branch: str | None = None) -> Request:
    via = Via("UDP", "127.0.0.1", 5070, (("rport", None), ("branch", branch or new_branch())))
    return Request(request.method, request.uri, (("Via", str(via)), *request.headers), request.body)


def dev(name: str, state: DeviceState = DeviceState.INUSE, eid: EID = B) -> DeviceStateBody:
    return DeviceStateBody(name, state, eid)


# -- transactions ----------------------------------------------------------------------------


def _request() -> Request:
    client = PublishClient(PublishConfig(URI))
    client.publish(dev("PJSIP/1"))
    ((_, req),) = client.outgoing(0.0)
    return with_via(req)


def test_timer_e_doubles_to_t2_and_timer_f_times_out() -> None:
    tx = ClientTransaction(_request(), reliable=False, now=0.0, timers=Timers())
    sends = []
    while True:
        deadline = tx.next_deadline()
        assert deadline is not None
        event = tx.on_timer(deadline)
        if event is TxEvent.RETRANSMIT:
            sends.append(deadline)
        else:
            assert event is TxEvent.TIMEOUT
            assert deadline == pytest.approx(32.0)  # 64 * T1
            break
    gaps = [round(b - a, 3) for a, b in itertools.pairwise([0.0, *sends])]
    assert gaps[:5] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert tx.done


def test_provisional_moves_to_t2_and_final_stops_retransmission() -> None:
    req = _request()
    tx = ClientTransaction(req, reliable=False, now=0.0, timers=Timers())
    assert tx.on_response(make_response(req, 100, "Trying"), 0.1) is not None
    assert tx.on_timer(0.5) is TxEvent.RETRANSMIT
    assert tx.next_deadline() == pytest.approx(4.5)  # T2 in PROCEEDING
    final = make_response(req, 200, "OK")
    assert tx.on_response(final, 1.0) is final
    assert tx.on_response(final, 1.1) is None  # a retransmitted final is absorbed
    assert tx.next_deadline() == pytest.approx(6.0)  # Timer K = T4
    assert tx.on_timer(6.0) is TxEvent.TERMINATED


def test_reliable_transport_never_retransmits() -> None:
    tx = ClientTransaction(_request(), reliable=True, now=0.0, timers=Timers())
    assert tx.next_deadline() == pytest.approx(32.0)
    assert tx.on_timer(31.9) is None
    assert tx.on_timer(32.0) is TxEvent.TIMEOUT


def test_server_transactions_absorb_retransmissions() -> None:
    table = ServerTransactions(Timers(), max_entries=3)
    req = _request()
    assert table.receive(req, 0.0) == (True, None)
    assert table.receive(req, 0.1) == (False, None)  # handler has not answered yet
    answer = make_response(req, 200, "OK")
    table.answer(req, answer)
    assert table.receive(req, 0.2) == (False, answer)
    assert table.receive(req, 40.0) == (True, None)  # past Timer J: a new request
    for _ in range(5):
        table.receive(_request(), 40.0)
    assert len(table) == 3  # bounded


# -- the PUBLISH client against the server state machine ------------------------------------


class Loop:
    """Client and server wired back to back through the codec (no network, no clock)."""

    def __init__(self, client: PublishClient, srv: PublicationServer | None = None) -> None:
        self.client = client
        self.server = srv if srv is not None else PublicationServer()
        self.applied: list[object] = []
        self.sent: list[Request] = []
        self.notes: list[str] = []  # each failure as the log shows it

    def answer(self, request: Request, now: float) -> Response:
        decoded = decode_datagram(encode(with_via(request)))
        assert isinstance(decoded, Request)
        request = decoded
        self.sent.append(request)
        outcome = self.server.handle(request, now)
        if outcome.body is not None:
            self.applied.append(outcome.body)
        response = respond(request, outcome, source=("127.0.0.1", 5070))
        return decode_datagram(encode(response))  # type: ignore[return-value]

    def run(self, now: float, rounds: int = 50) -> None:
        for _ in range(rounds):
            batch = self.client.outgoing(now)
            if not batch:
                return
            for handle, request in batch:
                note = self.client.on_response(handle, self.answer(request, now), now)
                if note:
                    self.notes.append(str(note))


def test_publish_initial_then_modify_with_if_match() -> None:
    loop = Loop(PublishClient(PublishConfig(URI, slots=1)))
    loop.client.publish(dev("PJSIP/1"))
    loop.run(0.0)
    loop.client.publish(dev("PJSIP/1", DeviceState.NOT_INUSE))
    loop.run(1.0)
    first, second = loop.sent
    assert first.get("SIP-If-Match") is None
    assert second.get("SIP-If-Match") is not None
    assert first.get("Call-ID") == second.get("Call-ID")
    assert second.cseq.seq == first.cseq.seq + 1
    assert first.get("From") != second.get("From")  # a new From tag per request
    assert first.get("To") == "<sip:pbxmesh@127.0.0.1>"  # the URI without its port
    assert loop.applied == [dev("PJSIP/1"), dev("PJSIP/1", DeviceState.NOT_INUSE)]
    assert loop.client.idle


def test_states_supersede_per_device_and_one_per_publication_in_flight() -> None:
    client = PublishClient(PublishConfig(URI, slots=1))
    client.publish(dev("PJSIP/1", DeviceState.RINGING))
    ((handle, _),) = client.outgoing(0.0)
    client.publish(dev("PJSIP/1", DeviceState.INUSE))
    client.publish(dev("PJSIP/1", DeviceState.NOT_INUSE))
    client.publish(dev("PJSIP/2"))
    assert client.outgoing(0.0) == []  # the publication is busy
    assert client.in_flight == 1
    loop = Loop(client)
    client.on_response(handle, make_response(with_via(_request()), 500, "Oops"), 0.0)
    # 500: retry after the back-off, with the newest state of PJSIP/1 only.
    assert client.outgoing(0.5) == []
    loop.run(1.0)
    states = [(b.device, b.state) for b in loop.applied]  # type: ignore[attr-defined]
    assert states == [("PJSIP/1", DeviceState.NOT_INUSE), ("PJSIP/2", DeviceState.INUSE)]


def test_slots_put_several_in_flight_and_keep_a_device_on_one() -> None:
    client = PublishClient(PublishConfig(URI, slots=8))
    for i in range(64):
        client.publish(dev(f"PJSIP/{i}"))
    batch = client.outgoing(0.0)
    assert 4 <= len(batch) <= 8
    assert len({h.key for h, _ in batch}) == len(batch)
    # Each (package, EID) has its own publications: another server's states go in parallel.
    client.publish(dev("PJSIP/0", eid=C))
    assert len(client.outgoing(0.0)) == 1
    # A device always maps to the same slot.
    assert client._slot(dev("PJSIP/7")) == client._slot(dev("PJSIP/7", DeviceState.BUSY))


def test_412_resends_as_initial_on_a_new_call_id() -> None:
    srv = PublicationServer(PublicationConfig(grace=0.0))
    loop = Loop(PublishClient(PublishConfig(URI, slots=1, expires=60)), srv)
    loop.client.publish(dev("PJSIP/1"))
    loop.run(0.0)
    srv.expire(1000.0)  # the server forgot us (a restart)
    loop.client.publish(dev("PJSIP/1", DeviceState.BUSY))
    loop.run(30.0)
    initial, modify, again = loop.sent
    assert modify.get("SIP-If-Match") and again.get("SIP-If-Match") is None
    assert again.get("Call-ID") != initial.get("Call-ID")
    assert loop.applied[-1] == dev("PJSIP/1", DeviceState.BUSY)


def test_refresh_before_expiry_and_re_initial_after_a_lost_refresh() -> None:
    loop = Loop(PublishClient(PublishConfig(URI, slots=1, expires=100)))
    loop.client.publish(dev("PJSIP/1"))
    loop.run(0.0)
    assert loop.client.next_deadline() == pytest.approx(90.0)
    loop.run(89.0)
    assert len(loop.sent) == 1
    loop.run(90.0)
    refresh = loop.sent[-1]
    assert refresh.body == b"" and refresh.get("SIP-If-Match")
    # The server loses the publication; the next refresh gets 412 and the last state goes
    # again as an initial PUBLISH (a body-less initial would get 400).
    loop.server.expire(10_000.0)
    loop.run(180.0)
    assert [r.body != b"" for r in loop.sent[-2:]] == [False, True]
    assert loop.sent[-1].get("SIP-If-Match") is None
    assert loop.applied[-1] == dev("PJSIP/1")
    assert not loop.notes


def test_refresh_body_goes_on_both_packages_and_mwi_on_asterisk_mwi() -> None:
    loop = Loop(PublishClient(PublishConfig(URI)))
    loop.client.publish(RefreshBody(B))
    loop.client.publish(MailboxStateBody("1000@default", 2, 1, B))
    loop.run(0.0)
    events = sorted((r.get("Event"), r.body[:20]) for r in loop.sent)
    assert [e for e, _ in events] == ["asterisk-devicestate", "asterisk-mwi", "asterisk-mwi"]
    assert RefreshBody(B) in loop.applied


def test_unpublish_sends_expires_zero() -> None:
    loop = Loop(PublishClient(PublishConfig(URI, slots=1)))
    loop.client.publish(dev("PJSIP/1"))
    loop.run(0.0)
    loop.client.unpublish()
    loop.run(1.0)
    last = loop.sent[-1]
    assert (last.get("Expires"), last.body, bool(last.get("SIP-If-Match"))) == ("0", b"", True)
    assert len(loop.server) == 0


def test_423_takes_min_expires_and_4xx_drops_with_a_note() -> None:
    srv = PublicationServer(PublicationConfig(min_expires=600))
    loop = Loop(PublishClient(PublishConfig(URI, slots=1, expires=60)), srv)
    loop.client.publish(dev("PJSIP/1"))
    loop.run(0.0)
    assert [r.get("Expires") for r in loop.sent] == ["60", "600"]
    assert loop.applied == [dev("PJSIP/1")]
    client = PublishClient(PublishConfig(URI, slots=1))
    client.publish(dev("PJSIP/2"))
    ((handle, req),) = client.outgoing(0.0)
    note = client.on_response(handle, make_response(with_via(req), 403, "Forbidden"), 0.0)
    assert note and note.status == 403 and note.retry_in is None
    # What an administrator reads: no Python repr of the body.
    want = f"403 Forbidden on asterisk-devicestate for PJSIP/2 INUSE (EID {B}); dropped"
    assert str(note) == want
    assert client.idle


def test_stale_answers_are_ignored() -> None:
    client = PublishClient(PublishConfig(URI, slots=1))
    client.publish(dev("PJSIP/1"))
    ((handle, req),) = client.outgoing(0.0)
    stale = Handle(handle.key, handle.cseq - 1)
    assert client.on_response(stale, make_response(with_via(req), 200, "OK"), 0.0) is None
    assert client.in_flight == 1


# -- digest ----------------------------------------------------------------------------------


def test_digest_known_answer_rfc2617() -> None:
    # The example of RFC 2617 §3.5 (HTTP GET), which fixes the algorithm byte for byte.
    challenge = (
        'Digest realm="testrealm@host.com", qop="auth,auth-int", '
        'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
    )
    value = authorization(
        challenge, username="Mufasa", secret="Circle Of Life", method="GET", uri="/dir/index.html"
    )
    assert value is not None
    params = parse_digest(value)
    assert params["nc"] == "00000001" and params["qop"] == "auth"
    # Recompute with the RFC's cnonce to check the formula.
    from pbxmesh.links.sip import auth

    assert (
        auth._response(
            "MD5", "Mufasa", "testrealm@host.com", "Circle Of Life", "GET", "/dir/index.html",
            "dcd98b7102dd2f0e8b11d0f600bfb0c093", "auth", "00000001", "0a4f113b",
        )
        == "6629fae49393a05397450978507c4ef1"
    )  # fmt: skip


def test_digest_server_accepts_right_and_refuses_wrong() -> None:
    srv = DigestServer("pbx", "s3cret", key=b"k" * 32)
    first = srv.check(None, "PUBLISH", 0.0)
    assert not first.ok and first.challenge
    good = authorization(
        first.challenge, username="pbx", secret="s3cret", method="PUBLISH", uri=URI
    )
    assert srv.check(good, "PUBLISH", 1.0).ok
    bad = authorization(first.challenge, username="pbx", secret="nope", method="PUBLISH", uri=URI)
    assert srv.check(bad, "PUBLISH", 1.0).reason == "wrong password"
    stale = srv.check(good, "PUBLISH", 1000.0)
    assert not stale.ok and "stale=true" in (stale.challenge or "")
    forged = (good or "").replace(parse_digest(good or "")["nonce"], "1.0.deadbeef")
    assert not srv.check(forged, "PUBLISH", 1.0).ok
    assert not srv.check("Basic abc", "PUBLISH", 1.0).ok
    sha = authorization(
        first.challenge.replace("MD5", "SHA-256"),
        username="pbx", secret="s3cret", method="PUBLISH", uri=URI,
    )  # fmt: skip
    assert sha and "SHA-256" in sha and srv.check(sha, "PUBLISH", 1.0).ok


def test_client_answers_401_and_reuses_the_challenge() -> None:
    digest = DigestServer("pbx", "s3cret")
    srv = PublicationServer()
    sent: list[Request] = []

    def answer(request: Request, now: float) -> Response:
        request = with_via(request)
        sent.append(request)
        verdict = digest.check(request.get("Authorization"), "PUBLISH", now)
        if not verdict.ok:
            challenge = (("WWW-Authenticate", verdict.challenge or ""),)
            return make_response(request, 401, "Unauthorized", challenge)
        return respond(request, srv.handle(request, now))

    client = PublishClient(PublishConfig(URI, slots=1, username="pbx", secret="s3cret"))
    for i in range(3):
        client.publish(dev(f"PJSIP/{i}"))
    for _ in range(10):
        for handle, request in client.outgoing(0.0):
            client.on_response(handle, answer(request, 0.0), 0.0)
    assert [r.get("Authorization") is not None for r in sent] == [False, True, True, True]
    nc = [parse_digest(r.get("Authorization") or "")["nc"] for r in sent[1:]]
    assert nc == ["00000001", "00000002", "00000003"]
    assert client.idle


def test_client_gives_up_on_a_wrong_password() -> None:
    digest = DigestServer("pbx", "right")
    client = PublishClient(PublishConfig(URI, slots=1, username="pbx", secret="wrong"))
    client.publish(dev("PJSIP/1"))
    notes = []
    for _ in range(5):
        for handle, bare in client.outgoing(0.0):
            request = with_via(bare)
            verdict = digest.check(request.get("Authorization"), "PUBLISH", 0.0)
            challenge = (("WWW-Authenticate", verdict.challenge or ""),)
            note = client.on_response(
                handle, make_response(request, 401, "Unauthorized", challenge), 0.0
            )
            notes.append(note)
    assert notes[0] is None and notes[1] and notes[1].status == 401
    assert client.idle
