"""The simulator's SIP subset held to a real Asterisk: one suite, run over both.

Each case sends a crafted PUBLISH to "an Asterisk" configured as ``pbxmesh asterisk-config``
prints (the simulator: ``pbxsim/sip.py``) and checks the answer and its effect the way the
reference (sip-publish.md §6) saw them on a real one: what it files under which EID, what it
re-publishes to its peer, the status of every bad case. The peer is a recorder on the link's
listening address.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from pbxmesh.eid import EID
from pbxmesh.links.sip.endpoint import SipEndpoint, Source
from pbxmesh.links.sip.link import uri_hostport
from pbxmesh.links.sip.message import Request, Response
from pbxmesh.links.sip.publication import PublicationServer, respond
from pbxmesh.states import DeviceState
from tests.harness.asterisk import eid_of, free_port
from tests.harness.fixtures import pbx_params
from tests.harness.waits import eventually
from tests.sip_helpers import SimSipAsterisk, SipAsterisk, sip_asterisk

FOREIGN = EID.parse("02:00:00:00:77:01")


@dataclass
class Recorder:
    """The Asterisk's publication peer: answers as RFC 3903 asks and keeps every body."""

    bodies: list[dict[str, object]] = field(default_factory=list)
    server: PublicationServer = field(default_factory=PublicationServer)

    def handle(self, request: Request, source: Source) -> Response | None:
        outcome = self.server.handle(request, asyncio.get_running_loop().time())
        if outcome.body is not None:
            self.bodies.append(json.loads(request.body))
        return respond(request, outcome, source=source.address)


@dataclass
class Target:
    asterisk: SipAsterisk
    eid: EID
    sip: tuple[str, int]
    recorder: Recorder
    client: SipEndpoint

    async def publish(self, body: object | bytes | None, **headers: str) -> Response:
        h = {
            "From": f"<sip:pbxmesh@127.0.0.1>;tag={secrets.token_hex(4)}",
            "To": "<sip:pbxmesh@127.0.0.1>",
            "Call-ID": secrets.token_hex(8),
            "CSeq": "1 PUBLISH",
            "Event": "asterisk-devicestate",
            "Expires": "3600",
            "Content-Type": "application/json",
        }
        h.update({k.replace("_", "-"): v for k, v in headers.items()})
        uri = h.pop("Uri", f"sip:pbxmesh@{self.sip[0]}:{self.sip[1]}")
        for k in [k for k, v in h.items() if v == ""]:
            del h[k]
        data = (
            body if isinstance(body, bytes) else b"" if body is None else json.dumps(body).encode()
        )
        request = Request("PUBLISH", uri, tuple(h.items()), data)
        return await self.client.request(request, self.sip)

    async def is_(self, device: str, value: str) -> bool:
        return await self.state(device) == value

    async def state(self, device: str) -> str:
        r = await self.asterisk.ami.action("Getvar", Variable=f"DEVICE_STATE({device})")
        return r.get("Value") or ""


def devstate(device: str, state: str, eid: EID = FOREIGN) -> dict[str, object]:
    return {"type": "devicestate", "device": device, "state": state, "cachable": 1, "eid": str(eid)}


@pytest.fixture(params=pbx_params())
async def target(request: pytest.FixtureRequest, tmp_path) -> AsyncIterator[Target]:  # type: ignore[no-untyped-def]
    if request.param == "asterisk":
        # Before anything is opened: a skip from here leaves nothing to close.
        request.getfixturevalue("require_asterisk")
    recorder = Recorder()
    listen = free_port()
    eid_text = eid_of(90)
    ast: SipAsterisk
    if request.param == "asterisk":
        star, config = sip_asterisk("conf", eid_text, listen_port=listen)
        ast = SipAsterisk(star)
        sip = uri_hostport(config.uri)
    else:
        ast = SimSipAsterisk(tmp_path, eid_text, f"sip:pbxmesh@127.0.0.1:{listen}")
        sip = ("127.0.0.1", ast.sip_port)
    peer_end = SipEndpoint("127.0.0.1", listen, recorder.handle)
    client = SipEndpoint("127.0.0.1", 0, lambda r, s: None)
    async with contextlib.AsyncExitStack() as opened:  # each closed even if a later start fails
        opened.push_async_callback(peer_end.close)
        await peer_end.start()
        opened.push_async_callback(client.close)
        await client.start()
        opened.push_async_callback(ast.close)
        await ast.start()
        yield Target(ast, EID.parse(eid_text), sip, recorder, client)


async def test_a_foreign_eids_state_is_filed_and_aggregated(target: Target) -> None:
    first = await target.publish(devstate("Custom:conf", "INUSE"))
    assert first.status == 200 and first.get("SIP-ETag") and first.get("Expires") == "3600"
    await eventually(lambda: target.is_("Custom:conf", "INUSE"), "aggregate INUSE")
    modify = await target.publish(
        devstate("Custom:conf", "RINGING"), SIP_If_Match=first.get("SIP-ETag") or ""
    )
    assert modify.status == 200 and modify.get("SIP-ETag") != first.get("SIP-ETag")
    await eventually(lambda: target.is_("Custom:conf", "RINGING"), "aggregate RINGING")
    # BUSY here + RINGING from the foreign EID: Asterisk's own aggregation.
    await target.asterisk.set_device(
        "Custom:conf", __import__("pbxmesh.states").states.DeviceState.BUSY
    )
    await eventually(lambda: target.is_("Custom:conf", "RINGINUSE"), "RINGINUSE")
    # Removal clears nothing: the remote state stays.
    gone = await target.publish(None, SIP_If_Match=modify.get("SIP-ETag") or "", Expires="0")
    assert gone.status == 200 and gone.get("Expires") == "0"
    assert await target.state("Custom:conf") == "RINGINUSE"
    # Only its own (local-EID) state went to its peer, never the foreign one.
    await eventually(
        lambda: any(b.get("device") == "Custom:conf" for b in target.recorder.bodies),
        "re-published",
    )
    assert all(b["eid"] == str(target.eid) for b in target.recorder.bodies)


async def test_its_own_eid_is_taken_as_local_and_re_published(target: Target) -> None:
    assert (await target.publish(devstate("Custom:own", "BUSY", target.eid))).status == 200
    await eventually(
        lambda: (
            {"device": "Custom:own", "state": "BUSY"}.items()
            <= next(
                (b for b in target.recorder.bodies if b.get("device") == "Custom:own"), {}
            ).items()
        ),
        "its own EID re-published to its peer as its own state",
    )


async def test_refresh_dumps_local_states_to_its_peer(target: Target) -> None:
    await target.asterisk.set_device("Custom:dumped", DeviceState.ONHOLD)
    await eventually(
        lambda: any(b.get("device") == "Custom:dumped" for b in target.recorder.bodies), "sent"
    )
    target.recorder.bodies.clear()
    r = await target.publish({"type": "refresh", "eid": str(FOREIGN)})
    assert r.status == 200
    await eventually(
        lambda: any(b.get("device") == "Custom:dumped" for b in target.recorder.bodies), "dumped"
    )


@pytest.mark.parametrize(
    ("case", "status"),
    [
        ("unknown user", 404),
        ("no Event", 489),
        ("unknown package", 489),
        ("not JSON", 500),
        ("JSON as text/plain", 500),
        ("no body, no SIP-If-Match", 400),
        ("unknown SIP-If-Match", 412),
    ],
)
async def test_bad_publishes(target: Target, case: str, status: int) -> None:
    body = devstate("Custom:bad", "INUSE")
    match case:
        case "unknown user":
            r = await target.publish(body, Uri=f"sip:stranger@{target.sip[0]}:{target.sip[1]}")
        case "no Event":
            r = await target.publish(body, Event="")
        case "unknown package":
            r = await target.publish(body, Event="presence")
        case "not JSON":
            r = await target.publish(b"{nope")
        case "JSON as text/plain":
            r = await target.publish(body, Content_Type="text/plain")
        case "no body, no SIP-If-Match":
            r = await target.publish(None)
        case _:
            r = await target.publish(body, SIP_If_Match="424242")
    assert r.status == status, f"{case}: {r.status} {r.reason}"
