"""The SIP link's own rules, over real sockets on loopback, without an Asterisk: what it
answers to every kind of PUBLISH and other request, what it publishes (EIDs, neutral values,
the stand-in for Asterisk's own EID), the configuration it reads and the Asterisk
configuration it prints. (The link against a real Asterisk: tests/test_link_sip.py.)"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pbxmesh.cli import main as cli_main
from pbxmesh.config import load_config
from pbxmesh.eid import EID
from pbxmesh.errors import ConfigError
from pbxmesh.links.sip.asterisk_conf import pjsip_conf
from pbxmesh.links.sip.auth import authorization
from pbxmesh.links.sip.bodies import decode_body
from pbxmesh.links.sip.endpoint import SipEndpoint, Source
from pbxmesh.links.sip.link import SipLink, SipLinkConfig, neutral, stand_in, uri_hostport
from pbxmesh.links.sip.message import Request, Response
from pbxmesh.links.sip.publication import PublicationServer, respond
from pbxmesh.links.sip.transaction import Timers
from pbxmesh.states import DeviceState
from tests.ami_helpers import HERE, THERE, FakeCluster
from tests.harness.asterisk import free_port

S = DeviceState
ASTERISK_EID = EID.parse("02:00:00:00:0a:01")


@dataclass
class FakeAsterisk:
    """The receiving side of an Asterisk: RFC 3903 answers, bodies recorded."""

    bodies: list[dict[str, object]] = field(default_factory=list)
    server: PublicationServer = field(default_factory=PublicationServer)

    def handle(self, request: Request, source: Source) -> Response | None:
        if request.method != "PUBLISH":
            return respond(request, self.server.handle(request, 0.0), source=source.address)
        outcome = self.server.handle(request, asyncio.get_running_loop().time())
        if outcome.body is not None:
            self.bodies.append(json.loads(request.body))
        return respond(request, outcome, source=source.address)


@dataclass
class Rig:
    link: SipLink
    port: FakeCluster
    asterisk: FakeAsterisk
    client: SipEndpoint

    async def send(self, body: bytes | None = None, **headers: str) -> Response:
        base = {
            "From": f"<sip:ast@127.0.0.1>;tag={secrets.token_hex(4)}",
            "To": "<sip:pbxmesh@127.0.0.1>",
            "Call-ID": secrets.token_hex(8),
            "CSeq": "1 PUBLISH",
            "Event": "asterisk-devicestate",
            "Expires": "3600",
            "Content-Type": "application/json",
        }
        base.update({k.replace("_", "-"): v for k, v in headers.items()})
        method = base.pop("Method", "PUBLISH")
        uri = base.pop("Uri", f"sip:pbxmesh@127.0.0.1:{self.link.endpoint.port}")
        if body is None:
            base.pop("Content-Type")
        request = Request(method, uri, tuple(base.items()), body or b"")
        return await self.client.request(request, ("127.0.0.1", self.link.endpoint.port))


def devstate(device: str, state: str, eid: EID = ASTERISK_EID) -> bytes:
    return json.dumps(
        {"type": "devicestate", "device": device, "state": state, "cachable": 1, "eid": str(eid)}
    ).encode()


@pytest.fixture
async def rig(request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    extra = getattr(request, "param", {})
    asterisk = FakeAsterisk()
    ast_end = SipEndpoint("127.0.0.1", 0, asterisk.handle, timers=Timers.fast())
    await ast_end.start()
    config = SipLinkConfig(
        listen=("127.0.0.1", 0),
        uri=f"sip:pbxmesh@127.0.0.1:{ast_end.port}",
        keepalive=0.05,
        **extra,
    )
    link = SipLink(config, timers=Timers.fast())
    port = FakeCluster()
    client = SipEndpoint("127.0.0.1", 0, lambda r, s: None, timers=Timers.fast())
    await client.start()
    await link.start(port)
    try:
        async with asyncio.timeout(5):
            await link.wait_synced()
        yield Rig(link, port, asterisk, client)
    finally:
        await link.close()
        await client.close()
        await ast_end.close()


async def test_asterisks_devicestate_is_reported_and_answered_per_rfc3903(rig: Rig) -> None:
    first = await rig.send(devstate("Custom:mystate", "INUSE"))
    assert first.status == 200 and first.get("SIP-ETag") and first.get("Expires") == "3600"
    assert rig.port.published == [("Custom:mystate", S.INUSE)]
    assert rig.link.asterisk_eid == ASTERISK_EID
    etag = first.get("SIP-ETag") or ""
    modify = await rig.send(devstate("Custom:mystate", "BUSY"), SIP_If_Match=etag)
    assert modify.status == 200 and modify.get("SIP-ETag") not in (None, etag)
    assert rig.port.last("Custom:mystate") is S.BUSY
    refresh = await rig.send(None, SIP_If_Match=modify.get("SIP-ETag") or "")
    assert refresh.status == 200
    gone = await rig.send(None, SIP_If_Match=refresh.get("SIP-ETag") or "", Expires="0")
    assert gone.status == 200 and gone.get("Expires") == "0"
    assert (await rig.send(None, SIP_If_Match=etag)).status == 412
    assert rig.link.status().published == 2


async def test_every_bad_publish_gets_its_error(rig: Rig) -> None:
    body = devstate("Custom:x", "INUSE")
    assert (await rig.send(body, Event="presence")).status == 489
    assert (await rig.send(body, Content_Type="text/plain")).status == 415
    assert (await rig.send(b"{not json")).status == 400
    assert (await rig.send(devstate("Custom:x", "FOO"))).status == 400
    assert (await rig.send(None)).status == 400  # initial without a body
    assert (await rig.send(body, SIP_If_Match="nope")).status == 412
    assert (await rig.send(body, Uri="sip:stranger@127.0.0.1")).status == 404
    assert (await rig.send(body, Method="INVITE", CSeq="1 INVITE")).status == 405
    options = await rig.send(None, Method="OPTIONS", CSeq="1 OPTIONS")
    assert options.status == 200 and "PUBLISH" in (options.get("Allow") or "")
    assert rig.port.published == []
    assert rig.link.status().protocol_errors >= 7


async def test_mailboxes_and_refresh_from_asterisk(rig: Rig) -> None:
    mwi = json.dumps(
        {
            "type": "mailboxstate",
            "uniqueid": "1000@default",
            "old": 1,
            "new": 2,
            "eid": str(ASTERISK_EID),
        }
    ).encode()
    assert (await rig.send(mwi, Event="asterisk-mwi")).status == 200
    assert rig.port.published_mwi == [("1000@default", 2, 1)]
    rig.port.slots["Custom:far"] = {"there": S.RINGING}
    rig.port.mailboxes["2000@default"] = (5, 3)
    refresh = json.dumps({"type": "refresh", "eid": str(ASTERISK_EID)}).encode()
    assert (await rig.send(refresh)).status == 200

    def republished() -> bool:
        kinds = {(b["type"], b.get("device") or b.get("uniqueid")) for b in rig.asterisk.bodies}
        return {("devicestate", "Custom:far"), ("mailboxstate", "2000@default")} <= kinds

    await wait(republished, "Asterisk's refresh answered with every remote state")
    assert rig.link.status().extra["refreshes_answered"] >= 1


async def test_remote_states_go_under_their_servers_eid_and_are_neutralised(rig: Rig) -> None:
    rig.link.origin_device("Custom:a", THERE, S.RINGING)
    rig.link.origin_device("PJSIP/200", THERE, S.INUSE)
    rig.link.remote_mwi("3000@default", 4, 0, THERE)
    await wait(lambda: len(rig.asterisk.bodies) >= 4, "published")  # with the link-up refresh
    by_device = {b.get("device"): b for b in rig.asterisk.bodies if b["type"] == "devicestate"}
    assert by_device["Custom:a"]["eid"] == str(THERE) and by_device["Custom:a"]["cachable"] == 1
    assert any(b.get("uniqueid") == "3000@default" for b in rig.asterisk.bodies)
    rig.asterisk.bodies.clear()
    rig.link.origin_device("Custom:a", THERE, S.INVALID)  # the slot was removed
    rig.link.origin_device("PJSIP/200", THERE, S.INVALID)
    rig.link.origin_device("Custom:never", THERE, S.INVALID)  # never published: nothing to clear
    await wait(lambda: len(rig.asterisk.bodies) >= 2, "neutralised")
    async with asyncio.timeout(5):
        await rig.link.wait_idle()
    got = {b["device"]: b["state"] for b in rig.asterisk.bodies}
    assert got == {"Custom:a": "UNKNOWN", "PJSIP/200": "INVALID"}


async def test_never_the_receiving_asterisks_own_eid(rig: Rig) -> None:
    await rig.send(devstate("Custom:mine", "BUSY"))  # the link learns Asterisk's EID
    rig.link.origin_device("Custom:clash", ASTERISK_EID, S.INUSE)
    await wait(
        lambda: any(b.get("device") == "Custom:clash" for b in rig.asterisk.bodies), "published"
    )
    (body,) = [b for b in rig.asterisk.bodies if b.get("device") == "Custom:clash"]
    assert body["eid"] == str(stand_in(ASTERISK_EID)) != str(ASTERISK_EID)
    assert all(b["eid"] != str(ASTERISK_EID) for b in rig.asterisk.bodies)


@pytest.mark.parametrize("rig", [{"username": "pbxmesh", "secret": "s3cret"}], indirect=True)
async def test_digest_challenges_asterisks_publish(rig: Rig) -> None:
    body = devstate("Custom:auth", "INUSE")
    challenge = await rig.send(body)
    assert challenge.status == 401
    value = challenge.get("WWW-Authenticate") or ""
    uri = f"sip:pbxmesh@127.0.0.1:{rig.link.endpoint.port}"
    wrong = authorization(value, username="pbxmesh", secret="bad", method="PUBLISH", uri=uri, nc=1)
    assert wrong is not None and (await rig.send(body, Authorization=wrong)).status == 401
    cred = authorization(
        value, username="pbxmesh", secret="s3cret", method="PUBLISH", uri=uri, nc=2
    )
    assert cred is not None and (await rig.send(body, Authorization=cred)).status == 200
    assert rig.port.published == [("Custom:auth", S.INUSE)]


async def test_link_goes_down_and_up_with_asterisk() -> None:
    asterisk = FakeAsterisk()
    sip_port = free_port()
    config = SipLinkConfig(
        listen=("127.0.0.1", 0),
        uri=f"sip:pbxmesh@127.0.0.1:{sip_port}",
        keepalive=0.05,
        keepalive_timeout=0.2,
    )
    link = SipLink(config, timers=Timers.fast())
    await link.start(FakeCluster())
    try:
        await wait(lambda: link.status().extra["probes_failed"] >= 2, "probes unanswered")
        assert not link.status().connected and link.status().resyncs == 0
        ast_end = SipEndpoint("127.0.0.1", sip_port, asterisk.handle, timers=Timers.fast())
        await ast_end.start()
        async with asyncio.timeout(5):
            await link.wait_synced()
        assert link.status().connected and link.status().resyncs == 1
        refreshes = [b for b in asterisk.bodies if b["type"] == "refresh"]
        assert [b["eid"] for b in refreshes] == [str(HERE)] * 2  # one per event package
        await ast_end.close()
        await wait(lambda: not link.status().connected, "down")
        assert link.status().reconnects == 1
    finally:
        await link.close()


def test_neutral_values_and_stand_in() -> None:
    assert neutral("Custom:mystate") is S.UNKNOWN and neutral("custom:x") is S.UNKNOWN
    assert neutral("PJSIP/100") is S.INVALID
    eid = EID.parse("02:00:00:00:00:00")
    assert stand_in(eid) != eid and stand_in(stand_in(ASTERISK_EID)) == ASTERISK_EID
    assert uri_hostport("sip:pbxmesh@127.0.0.1:5060;transport=tcp") == ("127.0.0.1", 5060)
    assert uri_hostport("sip:pbxmesh@[::1]") == ("::1", 5060)
    with pytest.raises(ConfigError):
        SipLinkConfig(uri="sip:pbxmesh@127.0.0.1:99999")
    with pytest.raises(ConfigError):
        SipLinkConfig(username="only")


def test_config_and_asterisk_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = tmp_path / "pbxmesh.toml"
    conf.write_text(
        f'[node]\nstate_dir = "{tmp_path}"\n[asterisk.sip]\nlisten = "127.0.0.1:5071"\n'
        'uri = "sip:mesh@127.0.0.1:5061"\nusername = "u"\nsecret = "p"\ntransport = "tcp"\n'
    )
    cfg = load_config(conf)
    assert cfg.asterisk is not None and cfg.asterisk.ami is None
    assert cfg.asterisk.sip is not None and cfg.asterisk.sip.listen == ("127.0.0.1", 5071)
    assert cli_main(["-c", str(conf), "asterisk-config"]) == 0
    out = capsys.readouterr().out
    assert "server_uri = sip:mesh@127.0.0.1:5071;transport=tcp" in out
    assert "[mesh]   ; named by the user part" in out and "outbound_auth = mesh-auth" in out
    assert "load => res_pjsip_outbound_authenticator_digest.so" in out
    assert "manager.conf" not in out
    conf.write_text(conf.read_text() + 'transport2 = "x"\n')
    with pytest.raises(ConfigError, match="transport2"):
        load_config(conf)
    conf.write_text(
        f'[node]\nstate_dir = "{tmp_path}"\n[asterisk]\nami = "127.0.0.1:5038"\n'
        'username = "u"\nsecret = "p"\n[asterisk.sip]\nuri = "sip:pbxmesh@127.0.0.1"\n'
    )
    assert cli_main(["-c", str(conf), "asterisk-config", "--no-transport"]) == 0
    out = capsys.readouterr().out
    assert "type = transport" not in out and "[u]\nsecret = p" in out
    text = pjsip_conf(SipLinkConfig(listen=("0.0.0.0", 5070)))
    assert "match = 127.0.0.1" in text and "server_uri = sip:pbxmesh@127.0.0.1:5070" in text


def test_bodies_the_link_sends_parse_as_asterisks() -> None:
    # The link publishes only through the validated dataclasses: round trip of each kind.
    body = devstate("Custom:x", "RINGINUSE", THERE)
    assert decode_body("asterisk-devicestate", body).eid == THERE  # type: ignore[union-attr]


async def wait(check, what: str, within: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    end = loop.time() + within
    while not check():
        if loop.time() > end:
            raise AssertionError(f"not within {within}s: {what}")
        await asyncio.sleep(0.01)


_HEADER_NAMES = ["Event", "Expires", "SIP-If-Match", "Content-Type", "Authorization", "X-Junk"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    method=st.sampled_from(["PUBLISH", "OPTIONS", "INVITE", "ACK", "BYE", "NOTIFY"]),
    user=st.sampled_from(["pbxmesh", "other", ""]),
    headers=st.lists(
        st.tuples(
            st.sampled_from(_HEADER_NAMES),
            st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40).map(str.strip),
        ),
        max_size=6,
    ),
    body=st.one_of(
        st.binary(max_size=200),
        st.builds(
            lambda t, d, s, e: json.dumps({"type": t, "device": d, "state": s, "eid": e}).encode(),
            st.sampled_from(["devicestate", "mailboxstate", "refresh", "x"]),
            st.text(max_size=90),
            st.sampled_from(["INUSE", "FOO", "", "inuse"]),
            st.sampled_from([str(THERE), "zz", ""]),
        ),
    ),
)
def test_hostile_requests_get_an_answer_never_a_crash(
    method: str, user: str, headers: list[tuple[str, str]], body: bytes
) -> None:
    """Whatever a peer sends, the link answers with a SIP status (or nothing to an ACK) and
    reports only valid states."""

    async def one() -> None:
        link = SipLink(SipLinkConfig(listen=("127.0.0.1", 0)))
        port = FakeCluster()
        link.port = port
        base = (
            ("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKfuzz"),
            ("From", "<sip:a@127.0.0.1>;tag=1"),
            ("To", "<sip:b@127.0.0.1>"),
            ("Call-ID", "fuzz"),
            ("CSeq", f"1 {method}"),
        )
        uri = f"sip:{user}@127.0.0.1" if user else "sip:127.0.0.1"
        try:
            request = Request(method, uri, base + tuple((n, v) for n, v in headers if v), body)
        except ValueError:
            return  # not a request our codec would have produced from bytes either
        answer = link._handle(request, Source("udp", ("127.0.0.1", 5060)))
        if method == "ACK":
            assert answer is None
        else:
            assert answer is not None and 200 <= answer.status < 700
        for _, state in port.published:
            assert isinstance(state, DeviceState)

    asyncio.run(one())


async def test_a_restarted_link_neutralises_what_asterisk_still_holds(tmp_path: Path) -> None:
    """Asterisk kept running while pbxmesh restarted, and a server left meanwhile: its states
    are still in Asterisk, and the restarted link clears them from its state file."""
    asterisk = FakeAsterisk()
    ast_end = SipEndpoint("127.0.0.1", 0, asterisk.handle, timers=Timers.fast())
    await ast_end.start()
    config = SipLinkConfig(
        listen=("127.0.0.1", 0),
        uri=f"sip:pbxmesh@127.0.0.1:{ast_end.port}",
        keepalive=0.05,
        state_file=tmp_path / "sip-published.json",
    )
    try:
        first = SipLink(config, timers=Timers.fast())
        port = FakeCluster()
        port.slots["Custom:gone"] = {"there": S.BUSY}
        port.slots["PJSIP/kept"] = {"there": S.INUSE}
        await first.start(port)
        async with asyncio.timeout(5):
            await first.wait_synced()
        await first.close()  # (a kill -9 would lose at most one keep-alive tick of changes)
        assert config.state_file is not None and "Custom:gone" in config.state_file.read_text()
        asterisk.bodies.clear()
        del port.slots["Custom:gone"]  # THERE dropped the device while pbxmesh was down
        second = SipLink(config, timers=Timers.fast())
        await second.start(port)
        async with asyncio.timeout(5):
            await second.wait_synced()
        await second.close()
        got = {b["device"]: b["state"] for b in asterisk.bodies if b["type"] == "devicestate"}
        assert got == {"Custom:gone": "UNKNOWN", "PJSIP/kept": "INUSE"}
    finally:
        await ast_end.close()


async def test_an_unreadable_state_file_is_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "sip-published.json"
    path.write_text("{not json")
    link = SipLink(SipLinkConfig(listen=("127.0.0.1", 0), state_file=path))
    await link.start(FakeCluster())
    await link.close()
    assert path.read_text() == "{not json"  # nothing changed, nothing overwritten


async def test_only_asterisks_address_may_publish(rig: Rig) -> None:
    stranger = SipEndpoint("127.0.0.2", 0, lambda r, s: None, timers=Timers.fast())
    await stranger.start()
    try:
        request = Request(
            "PUBLISH",
            f"sip:pbxmesh@127.0.0.1:{rig.link.endpoint.port}",
            (
                ("From", "<sip:x@127.0.0.2>;tag=1"),
                ("To", "<sip:pbxmesh@127.0.0.1>"),
                ("Call-ID", "stranger"),
                ("CSeq", "1 PUBLISH"),
                ("Event", "asterisk-devicestate"),
                ("Content-Type", "application/json"),
            ),
            devstate("Custom:forged", "BUSY"),
        )
        answer = await stranger.request(request, ("127.0.0.1", rig.link.endpoint.port))
        assert answer.status == 403
        assert rig.port.published == []
    finally:
        await stranger.close()


def test_a_listener_off_loopback_needs_digest(tmp_path: Path) -> None:
    conf = tmp_path / "pbxmesh.toml"
    conf.write_text(
        f'[node]\nstate_dir = "{tmp_path}"\n[asterisk.sip]\nlisten = "10.0.0.5:5070"\n'
        'uri = "sip:pbxmesh@10.0.0.5:5060"\n'
    )
    with pytest.raises(ConfigError, match="not loopback: set username and secret"):
        load_config(conf)
    conf.write_text(conf.read_text() + 'username = "u"\nsecret = "p"\n')
    assert load_config(conf).asterisk is not None
