"""The asyncio SIP endpoint over loopback: a PUBLISH client publishing to a server publication,
UDP and TCP, retransmission absorption, hostile datagrams, timeouts, digest both ways."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable

import pytest

from pbxmesh.eid import EID
from pbxmesh.links.sip.auth import DigestServer
from pbxmesh.links.sip.bodies import DeviceStateBody, MailboxStateBody, RefreshBody
from pbxmesh.links.sip.client import PublishClient, PublishConfig
from pbxmesh.links.sip.driver import PublishDriver
from pbxmesh.links.sip.endpoint import SipEndpoint, Source
from pbxmesh.links.sip.message import Request, Response, decode_datagram
from pbxmesh.links.sip.publication import PublicationServer, respond
from pbxmesh.links.sip.transaction import Timers, make_response
from pbxmesh.states import DeviceState

B = EID.parse("02:00:00:00:00:0b")
C = EID.parse("02:00:00:00:00:0c")


class Receiver:
    """The server side as a link would wire it: PUBLISH to the publications, else 405."""

    def __init__(self, digest: DigestServer | None = None) -> None:
        self.publications = PublicationServer()
        self.applied: list[object] = []
        self.calls = 0
        self.digest = digest

    def __call__(self, request: Request, source: Source) -> Response | None:
        self.calls += 1
        now = asyncio.get_running_loop().time()
        if request.method != "PUBLISH":
            return make_response(request, 405, "Method Not Allowed", (("Allow", "PUBLISH"),))
        if self.digest is not None:
            verdict = self.digest.check(request.get("Authorization"), request.method, now)
            if not verdict.ok:
                challenge = (("WWW-Authenticate", verdict.challenge or ""),)
                return make_response(request, 401, "Unauthorized", challenge)
        outcome = self.publications.handle(request, now)
        if outcome.body is not None:
            self.applied.append(outcome.body)
        return respond(request, outcome, source=source.address, server="pbxmesh-test")


def _refuse(request: Request, source: Source) -> Response:
    return make_response(request, 405, "Method Not Allowed")


@pytest.fixture
async def pair() -> AsyncIterator[tuple[SipEndpoint, SipEndpoint, Receiver]]:
    receiver = Receiver()
    server = SipEndpoint("127.0.0.1", 0, receiver, timers=Timers.fast())
    client = SipEndpoint("127.0.0.1", 0, _refuse, timers=Timers.fast())
    await server.start()
    await client.start()
    try:
        yield client, server, receiver
    finally:
        await client.close()
        await server.close()


async def _until(check: Callable[[], bool], deadline: float = 5.0) -> None:
    """Integration wait: poll a condition until a deadline (the endpoint has no event for it)."""
    async with asyncio.timeout(deadline):
        while not check():  # noqa: ASYNC110
            await asyncio.sleep(0.005)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_client_publication_to_server_publication(
    pair: tuple[SipEndpoint, SipEndpoint, Receiver], transport: str
) -> None:
    client_ep, server_ep, receiver = pair
    client = PublishClient(PublishConfig(f"sip:pbxmesh@127.0.0.1:{server_ep.port}", slots=4))
    driver = PublishDriver(client, client_ep, ("127.0.0.1", server_ep.port), transport)  # type: ignore[arg-type]
    driver.start()
    try:
        for round_ in range(3):
            for i in range(40):
                state = (DeviceState.INUSE, DeviceState.RINGING, DeviceState.NOT_INUSE)[round_]
                driver.publish(DeviceStateBody(f"PJSIP/{i}", state, B))
        driver.publish(DeviceStateBody("PJSIP/0", DeviceState.BUSY, C))
        driver.publish(MailboxStateBody("1000@default", 2, 1, B))
        driver.publish(RefreshBody(B))
        async with asyncio.timeout(10):
            await driver.wait_idle()
        final: dict[tuple[str, EID], DeviceState] = {}
        for body in receiver.applied:
            if isinstance(body, DeviceStateBody):
                final[(body.device, body.eid)] = body.state
        assert final[("PJSIP/0", C)] is DeviceState.BUSY
        assert {final[(f"PJSIP/{i}", B)] for i in range(40)} == {DeviceState.NOT_INUSE}
        assert MailboxStateBody("1000@default", 2, 1, B) in receiver.applied
        assert receiver.applied.count(RefreshBody(B)) == 2  # on both packages
        # Several publications per (package, EID) were used: 4 slots for B, 1 for C, MWI...
        assert len(receiver.publications) >= 5
        assert driver.failures == 0
        driver.unpublish()
        async with asyncio.timeout(10):
            await driver.wait_idle()
        assert len(receiver.publications) == 0
    finally:
        await driver.close()


def _raw_publish(port: int, branch: str = "z9hG4bKraw1") -> bytes:
    body = b'{"type":"refresh","eid":"02:00:00:00:00:0b"}'
    return (
        f"PUBLISH sip:pbxmesh@127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:9;rport;branch={branch}\r\n"
        "From: <sip:x@127.0.0.1>;tag=1\r\nTo: <sip:x@127.0.0.1>\r\nCall-ID: raw\r\n"
        "CSeq: 1 PUBLISH\r\nEvent: asterisk-devicestate\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def _udp_exchange(port: int, datagrams: list[bytes], answers: int) -> list[bytes]:
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.bind(("127.0.0.1", 0))
    try:
        for data in datagrams:
            await loop.sock_sendto(sock, data, ("127.0.0.1", port))
        got: list[bytes] = []
        async with asyncio.timeout(5):
            while len(got) < answers:
                got.append(await loop.sock_recv(sock, 65535))
        return got
    finally:
        sock.close()


async def test_retransmitted_request_gets_the_same_answer_once(
    pair: tuple[SipEndpoint, SipEndpoint, Receiver],
) -> None:
    _, server_ep, receiver = pair
    raw = _raw_publish(server_ep.port)
    first, second = await _udp_exchange(server_ep.port, [raw, raw], 2)
    assert first == second  # same tag, same ETag
    assert receiver.calls == 1
    assert server_ep.stats["retransmissions_absorbed"] == 1
    response = decode_datagram(first)
    assert isinstance(response, Response) and response.status == 200
    # RFC 3581: answered to the source port, which is written into rport.
    assert response.top_via.param("rport") not in (None, "", "9")


async def test_hostile_datagrams_are_dropped_and_the_endpoint_goes_on(
    pair: tuple[SipEndpoint, SipEndpoint, Receiver],
) -> None:
    _, server_ep, receiver = pair
    junk = [b"\x00" * 100, b"PUBLISH sip:x SIP/2.0\r\n\r\n", b"\r\n\r\n", b"A" * 65_000]
    bad_body = _raw_publish(server_ep.port, "z9hG4bKbad").replace(b'"refresh"', b'"Refresh"')
    answers = await _udp_exchange(
        server_ep.port, [*junk, bad_body, _raw_publish(server_ep.port, "z9hG4bKok")], 2
    )
    statuses = sorted(r.status for r in map(decode_datagram, answers))  # type: ignore[union-attr]
    assert statuses == [200, 400]
    assert server_ep.stats["malformed"] == 3  # the CRLF keep-alive is not an error
    assert receiver.calls == 2


async def test_handler_exception_becomes_500() -> None:
    def broken(request: Request, source: Source) -> Response:
        raise RuntimeError("bug")

    server = SipEndpoint("127.0.0.1", 0, broken, timers=Timers.fast())
    await server.start()
    try:
        (answer,) = await _udp_exchange(server.port, [_raw_publish(server.port)], 1)
        response = decode_datagram(answer)
        assert isinstance(response, Response) and response.status == 500
        assert server.stats["handler_errors"] == 1
    finally:
        await server.close()


async def test_timeout_is_a_408_after_timer_f(
    pair: tuple[SipEndpoint, SipEndpoint, Receiver],
) -> None:
    client_ep, _, _ = pair
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    silent.setblocking(False)
    try:
        port = silent.getsockname()[1]
        client = PublishClient(PublishConfig(f"sip:pbxmesh@127.0.0.1:{port}"))
        client.publish(DeviceStateBody("PJSIP/1", DeviceState.INUSE, B))
        ((_, request),) = client.outgoing(0.0)
        response = await client_ep.request(request, ("127.0.0.1", port))
        assert response.status == 408
        received = 0
        while True:
            try:
                silent.recv(65535)
                received += 1
            except BlockingIOError:
                break
        assert received >= 5  # Timer E retransmissions arrived
        assert client_ep.stats["timeouts"] == 1
        assert client_ep.client_transactions == 0
    finally:
        silent.close()


async def test_tcp_connect_failure_is_a_503(
    pair: tuple[SipEndpoint, SipEndpoint, Receiver],
) -> None:
    client_ep, _, _ = pair
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    client = PublishClient(PublishConfig(f"sip:pbxmesh@127.0.0.1:{port}"))
    client.publish(DeviceStateBody("PJSIP/1", DeviceState.INUSE, B))
    ((_, request),) = client.outgoing(0.0)
    assert (await client_ep.request(request, ("127.0.0.1", port), "tcp")).status == 503


async def test_tcp_stream_with_broken_framing_is_closed(
    pair: tuple[SipEndpoint, SipEndpoint, Receiver],
) -> None:
    _, server_ep, receiver = pair
    reader, writer = await asyncio.open_connection("127.0.0.1", server_ep.port)
    try:
        good = _raw_publish(server_ep.port).replace(b"UDP", b"TCP")
        writer.write(good + b"PUBLISH sip:x@y SIP/2.0\r\nVia: x\r\n\r\n")  # no Content-Length
        async with asyncio.timeout(5):
            data = await reader.read()  # the answer to the first, then EOF
        response = decode_datagram(data)
        assert isinstance(response, Response) and response.status == 200
        await _until(lambda: server_ep.stats["malformed"] == 1)
        assert receiver.calls == 1
    finally:
        writer.close()


async def test_digest_both_directions() -> None:
    receiver = Receiver(DigestServer("pbx", "s3cret"))
    server = SipEndpoint("127.0.0.1", 0, receiver, timers=Timers.fast())
    client_ep = SipEndpoint("127.0.0.1", 0, _refuse, timers=Timers.fast())
    await server.start()
    await client_ep.start()
    config = PublishConfig(f"sip:pbxmesh@127.0.0.1:{server.port}", username="pbx", secret="s3cret")
    driver = PublishDriver(PublishClient(config), client_ep, ("127.0.0.1", server.port))
    driver.start()
    try:
        for i in range(5):
            driver.publish(DeviceStateBody(f"PJSIP/{i}", DeviceState.INUSE, B))
        async with asyncio.timeout(10):
            await driver.wait_idle()
        assert len(receiver.applied) == 5
        assert driver.failures == 0
    finally:
        await driver.close()
        await client_ep.close()
        await server.close()
