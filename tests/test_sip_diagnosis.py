"""What the SIP link tells an administrator when its Asterisk is not there or refuses it: one
line per cause at once (never one per probe or per change), reminders with a count, the state
(connected / degraded / disconnected) and its reason in ``status``; and an endpoint that frees
its port when it closes. Over real sockets on loopback, against a minimal Asterisk whose answer
to PUBLISH the test chooses (what a real Asterisk answers: tests/test_real_asterisk_sip_errors.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from pbxmesh.links.sip import health as health_module
from pbxmesh.links.sip.client import PublishFailure
from pbxmesh.links.sip.diagnosis import Throttle, no_answer, refused
from pbxmesh.links.sip.endpoint import SipEndpoint, Source
from pbxmesh.links.sip.link import SipLink, SipLinkConfig
from pbxmesh.links.sip.message import Request, Response
from pbxmesh.links.sip.publication import PublicationServer, respond
from pbxmesh.links.sip.transaction import Timers, make_response
from pbxmesh.states import DeviceState
from tests.ami_helpers import THERE, FakeCluster
from tests.harness.asterisk import free_port
from tests.harness.waits import eventually as until

LINK_LOG = "pbxmesh.links.sip.link"


@dataclass
class Refusing:
    """An Asterisk that answers OPTIONS and refuses every PUBLISH with ``status`` (None:
    accepts, per RFC 3903)."""

    status: int | None = 489
    reason: str = "Bad Event"
    publishes: int = 0
    server: PublicationServer = field(default_factory=PublicationServer)

    def handle(self, request: Request, source: Source) -> Response | None:
        if request.method == "OPTIONS":
            return make_response(request, 200, "OK", source=source.address)
        self.publishes += 1
        if self.status is not None:
            return make_response(request, self.status, self.reason, source=source.address)
        outcome = self.server.handle(request, asyncio.get_running_loop().time())
        return respond(request, outcome, source=source.address)


@pytest.fixture
async def refusing() -> AsyncIterator[tuple[SipLink, Refusing]]:
    asterisk = Refusing()
    ast_end = SipEndpoint("127.0.0.1", 0, asterisk.handle, timers=Timers.fast())
    await ast_end.start()
    config = SipLinkConfig(
        listen=("127.0.0.1", 0), uri=f"sip:pbxmesh@127.0.0.1:{ast_end.port}", keepalive=0.05
    )
    link = SipLink(config, timers=Timers.fast())
    try:
        await link.start(FakeCluster())
        yield link, asterisk
    finally:
        await link.close()
        await ast_end.close()


def lines(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == LINK_LOG and r.levelno >= logging.WARNING and text in r.getMessage()
    ]


async def test_a_refusing_asterisk_degrades_the_link_with_one_line_per_cause(
    refusing: tuple[SipLink, Refusing], caplog: pytest.LogCaptureFixture, monkeypatch
) -> None:
    caplog.set_level(logging.INFO)
    link, asterisk = refusing
    await until(lambda: link.state == "degraded", "degraded by the 489 on the refresh")
    for i in range(30):  # thirty changes: not thirty lines
        link.origin_device(f"Custom:d{i}", THERE, DeviceState.INUSE)
    await until(lambda: link.publishes_refused >= 30, "every change refused")
    st = link.status()
    assert not st.connected and st.extra["state"] == "degraded"
    assert "res_pjsip_publish_asterisk.so is not loaded" in st.extra["reason"]
    devicestate = lines(caplog, "refuses our PUBLISH on asterisk-devicestate with 489")
    assert len(devicestate) == 1, devicestate
    assert "load => res_pjsip_publish_asterisk.so" in devicestate[0]
    # No Python repr reaches the administrator.
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert not any("Body(" in w or "EID(" in w or "<DeviceState" in w for w in warnings)
    # The module is loaded: the next change is accepted, the link is connected again and
    # re-publishes what was dropped meanwhile.
    asterisk.status = None
    link.origin_device("Custom:again", THERE, DeviceState.BUSY)
    await until(lambda: link.state == "connected", "connected again")
    assert link.status().connected and link.status().extra["reason"] is None
    assert any("accepts our PUBLISH" in r.getMessage() for r in caplog.records)
    await until(lambda: asterisk.server and len(asterisk.server) > 0, "re-published")


async def test_a_degraded_link_tries_again_by_itself(
    refusing: tuple[SipLink, Refusing], monkeypatch
) -> None:
    """Nothing changes in the cluster: the link's own refresh finds Asterisk fixed."""
    link, asterisk = refusing
    await until(lambda: link.state == "degraded", "degraded")
    monkeypatch.setattr(health_module, "RETRY_MAX", 0.2)
    link.health.retry_at = 0.0  # the first retry is due now, the next ones within 0.2 s
    asterisk.status = None
    await until(lambda: link.state == "connected", "connected after its own refresh")


async def test_a_wrong_port_says_so_at_once_and_then_with_back_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    dead = free_port()  # nothing answers there
    config = SipLinkConfig(
        listen=("127.0.0.1", 0),
        uri=f"sip:pbxmesh@127.0.0.1:{dead}",
        keepalive=0.05,
        keepalive_timeout=0.1,
    )
    link = SipLink(config, timers=Timers.fast())
    try:
        await link.start(FakeCluster())
        await until(lambda: link.probes_failed >= 8, "eight probes failed")
        said = lines(caplog, "no answer to OPTIONS")
        assert said == [
            f"SIP link not up: no answer to OPTIONS from 127.0.0.1:{dead} (udp) - is Asterisk "
            "running with a PJSIP transport bound there? check [asterisk.sip] uri"
        ]
        st = link.status()
        assert st.extra["state"] == "disconnected" and not st.connected
        assert st.extra["reason"].startswith(f"no answer to OPTIONS from 127.0.0.1:{dead}")
    finally:
        await link.close()


def test_the_throttle_logs_at_once_then_at_a_doubling_interval() -> None:
    t = Throttle(first=10.0, cap=40.0)
    assert t.hit(0.0) == (1, 0.0)
    assert [t.hit(float(s)) for s in range(1, 10)] == [None] * 9
    assert t.hit(10.0) == (10, 10.0)  # nine held back and this one
    assert t.hit(25.0) is None  # the interval is now 20 s
    assert t.hit(30.0) == (2, 20.0)
    assert t.hit(70.0) == (1, 40.0)
    assert t.hit(100.0) is None  # capped at 40 s
    t.reset()
    assert t.hit(101.0) is not None  # a new occurrence after the condition ended: at once


def test_each_refusal_names_what_to_fix() -> None:
    def text(status: int, reason: str, credentials: bool = False) -> str:
        failure = PublishFailure(status, reason, "asterisk-mwi", "a refresh request", None)
        return refused(
            failure,
            dest=("127.0.0.1", 5060),
            resource="pbxmesh",
            listen_host="127.0.0.1",
            credentials=credentials,
        )

    assert "res_pjsip_publish_asterisk.so is not loaded" in text(489, "Bad Event")
    assert "no inbound-publication [pbxmesh]" in text(404, "Not Found")
    assert "event_asterisk-mwi" in text(404, "Not Found")
    assert "another endpoint than the one inbound-publication [pbxmesh]" in text(403, "Forbidden")
    assert "identify object with match = 127.0.0.1" in text(401, "Unauthorized")
    assert "username/secret must match" in text(401, "Unauthorized", credentials=True)
    assert text(500, "Server Error").endswith("Asterisk's log says why")
    assert "over TCP" in no_answer(("127.0.0.1", 5060), "tcp", refused=True)


async def test_a_closed_endpoint_frees_its_port_at_once() -> None:
    """A reload closes the SIP listener and binds the same address again right away."""
    first = SipEndpoint("127.0.0.1", 0, lambda r, s: None)
    await first.start()
    port = first.port
    await first.close()
    again = SipEndpoint("127.0.0.1", port, lambda r, s: None)
    await again.start()  # EADDRINUSE when the UDP socket is closed only on a later loop turn
    await again.close()
