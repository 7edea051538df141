"""The transport contract over NATS (a loopback nats-server), plus NATS-specific behaviour:
failure detection, restart detection, failover to another server of a cluster, and the
heartbeat codec and member tokens."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from pbxmesh.errors import ConfigError, RemoteProtocolError, TransportError
from pbxmesh.transport import LinkState, MembershipChange, Message
from pbxmesh.transport.nats import (
    Heartbeat,
    HeartbeatKind,
    NatsConfig,
    NatsTransport,
    decode_heartbeat,
    encode_heartbeat,
    member_token,
)
from tests.harness.nats import NatsCluster, NatsServer
from tests.transport_contract import (  # noqa: F401  (collected by pytest)
    EventLog,
    InProcessPeer,
    test_close_is_seen_as_clean_leave_and_ends_events,
    test_first_event_is_membership_with_self,
    test_large_message_up_to_max_message_size,
    test_peer_close_is_seen_as_clean_leave,
    test_per_sender_fifo_without_loss,
    test_second_member_is_seen_by_both,
    test_send_after_close_raises_transport_closed,
    test_send_delivers_to_every_member_including_self,
)

pytestmark = pytest.mark.integration


def local_transport(name: str, group: str, servers: tuple[str, ...], **kw: Any) -> NatsTransport:
    return NatsTransport(NatsConfig.local(name, group, servers, randomize=False, **kw))


class NatsBackend:
    timeout = 10.0
    prompt = 1.0  # a clean leave is one message; failure detection would take 1.25 s+

    def __init__(self, servers: tuple[str, ...], group: str) -> None:
        self.servers = servers
        self.group = group
        self.peers: list[InProcessPeer] = []
        self._n = 0

    def transport(self) -> NatsTransport:
        self._n += 1
        return local_transport(f"local-{self._n}", self.group, self.servers)

    async def peer(self) -> InProcessPeer:
        peer = InProcessPeer(
            local_transport(f"peer.{len(self.peers) + 1}", self.group, self.servers)
        )
        self.peers.append(peer)
        await peer.start()
        return peer


@pytest.fixture
async def transport_backend(nats_server: NatsServer, nats_group: str) -> AsyncIterator[NatsBackend]:
    backend = NatsBackend((nats_server.url,), nats_group)
    try:
        yield backend
    finally:
        for peer in backend.peers:
            await peer.aclose()


@contextlib.asynccontextmanager
async def member(
    name: str, group: str, servers: tuple[str, ...], **kw: Any
) -> AsyncIterator[tuple[NatsTransport, EventLog]]:
    transport = local_transport(name, group, servers, **kw)
    await transport.start()
    log = EventLog(transport)
    try:
        yield transport, log
    finally:
        await transport.close()
        await log.aclose()


def crash(transport: NatsTransport) -> None:
    """Make a member vanish without a leave, as kill -9 would (test-only: uses internals)."""
    transport._closed = True
    if transport._ticker is not None:
        transport._ticker.cancel()
    nc = transport._nc
    nc._transport.close()  # drop the TCP connection, no LEAVE heartbeat
    asyncio.get_running_loop().create_task(nc.close())


def left_of(member_id: str) -> Any:
    return lambda items: next(
        (
            e
            for e in items
            if isinstance(e, MembershipChange) and member_id in {m.member_id for m in e.left}
        ),
        None,
    )


def joined_of(member_id: str, after: int = 0) -> Any:
    return lambda items: next(
        (
            e
            for e in items[after:]
            if isinstance(e, MembershipChange) and member_id in {m.member_id for m in e.joined}
        ),
        None,
    )


# -- NATS specifics ----------------------------------------------------------------------------
async def test_failed_member_is_detected_within_failure_timeout(
    nats_server: NatsServer, nats_group: str
) -> None:
    servers = (nats_server.url,)
    async with member("watcher", nats_group, servers) as (_, log):
        victim = local_transport("victim", nats_group, servers)
        await victim.start()
        await log.wait_for(joined_of("victim"), 5, "victim joined")
        began = time.monotonic()
        crash(victim)
        change = await log.wait_for(left_of("victim"), 5, "victim failed")
        elapsed = time.monotonic() - began
        assert change.clean == (False,)
        # failure_timeout 1.25 s in the local profile (+ one heartbeat of jitter)
        assert 1.0 < elapsed < 2.5, f"failure seen after {elapsed:.2f} s"


async def test_default_failure_detection_within_three_seconds(
    nats_server: NatsServer, nats_group: str
) -> None:
    servers = (nats_server.url,)
    async with member("watcher", nats_group, servers) as (_, log):
        victim = NatsTransport(NatsConfig(name="victim", group=nats_group, servers=servers))
        await victim.start()
        await log.wait_for(joined_of("victim"), 5, "victim joined")
        began = time.monotonic()
        crash(victim)
        await log.wait_for(left_of("victim"), 6, "victim failed")
        elapsed = time.monotonic() - began
        assert elapsed <= 3.2, f"default detection took {elapsed:.2f} s"


async def test_restarted_member_is_reported_left_then_joined(
    nats_server: NatsServer, nats_group: str
) -> None:
    servers = (nats_server.url,)
    async with member("watcher", nats_group, servers) as (_, log):
        first = local_transport("pbx", nats_group, servers)
        await first.start()
        await log.wait_for(joined_of("pbx"), 5, "first incarnation")
        crash(first)
        mark = len(log.items)
        second = local_transport("pbx", nats_group, servers)
        await second.start()  # restarted at once, well within failure_timeout
        try:
            await log.wait_for(joined_of("pbx", mark), 5, "second incarnation")
            changes = [e for e in log.items[mark:] if isinstance(e, MembershipChange)]
            left_at = next(i for i, c in enumerate(changes) if c.left)
            assert "pbx" not in {m.member_id for m in changes[left_at].members}
            joined_at = next(i for i, c in enumerate(changes) if c.joined)
            assert left_at < joined_at
        finally:
            await second.close()


async def test_failover_to_another_server_and_fresh_view(
    nats_cluster: NatsCluster, nats_group: str
) -> None:
    async with (
        member("a", nats_group, nats_cluster.urls_from(0)) as (a, alog),
        member("b", nats_group, nats_cluster.urls_from(1)) as (_b, blog),
    ):
        await alog.wait_for(joined_of("b"), 5, "b seen by a")
        assert a.connected_url is not None and a.connected_url.endswith(
            f":{nats_cluster.servers[0].port}"
        )
        mark_b = len(blog.items)
        killed = time.monotonic()
        nats_cluster.servers[0].kill()
        await alog.wait_for(
            lambda items: next((e for e in items if isinstance(e, LinkState) and e.up), None),
            5,
            "link up again",
        )
        failover = time.monotonic() - killed
        up_at = next(i for i, e in enumerate(alog.items) if isinstance(e, LinkState) and e.up)
        assert any(isinstance(e, LinkState) and not e.up for e in alog.items[:up_at])
        view = await alog.wait_for(joined_of("b", up_at), 5, "fresh view after reconnect")
        assert {"a", "b"} <= {m.member_id for m in view.members}
        # b sees a rejoin (epoch grew): its node would resync too; a never left b's view
        await blog.wait_for(joined_of("a", mark_b), 5, "a rejoined at b")
        assert not any(isinstance(e, MembershipChange) and e.left for e in blog.items[mark_b:]), (
            "a fast failover must not look like a failure"
        )
        await a.send(b"after failover")
        await blog.wait_for(
            lambda items: next(
                (e for e in items if isinstance(e, Message) and e.data == b"after failover"), None
            ),
            5,
            "message after failover",
        )
        assert failover < 1.0, f"failover took {failover:.2f} s"
        print(f"\nfailover to another server in {failover * 1000:.0f} ms")


async def test_member_appearing_while_disconnected_is_in_fresh_view(
    nats_cluster: NatsCluster, nats_group: str
) -> None:
    async with member("a", nats_group, nats_cluster.urls_from(0)) as (_a, alog):
        nats_cluster.servers[0].freeze()  # a's server hangs: no reset, no answers
        try:
            async with member("c", nats_group, nats_cluster.urls_from(2)) as (_c, _clog):
                view = await alog.wait_for(joined_of("c"), 10, "c seen by a after failover")
                assert any(isinstance(e, LinkState) and e.up for e in alog.items)
                assert "c" in {m.member_id for m in view.members}
        finally:
            nats_cluster.servers[0].thaw()


async def test_unreachable_servers_raise_transport_error(nats_group: str) -> None:
    from tests.harness.nats import free_ports
    from tests.harness.nats_fixtures import require_nats

    require_nats()
    (port,) = free_ports(1)
    transport = local_transport("x", nats_group, (f"nats://127.0.0.1:{port}",), start_timeout=1.0)
    with pytest.raises(TransportError, match=r"no server reachable|nats"):
        await transport.start()


# -- codec and names (no server needed) --------------------------------------------------------
@pytest.mark.parametrize(
    "name", ["pbx1", "pbx1.example.com", "Custom:DND1001", "PJSIP/100", "1000@default", "ä %"]
)
def test_member_token_is_one_legal_token_and_reversible(name: str) -> None:
    import re
    from urllib.parse import unquote

    token = member_token(name)
    assert re.fullmatch(r"[A-Za-z0-9_%-]+", token)
    assert unquote(token) == name


def test_heartbeat_round_trip_and_garbage() -> None:
    hb = Heartbeat(HeartbeatKind.PROBE, 2**64 - 1, 7, "pbx1.example.com")
    assert decode_heartbeat(encode_heartbeat(hb)) == hb
    for bad in (b"", b"PBXH", b"XXXX" + encode_heartbeat(hb)[4:], encode_heartbeat(hb)[:15]):
        with pytest.raises(RemoteProtocolError):
            decode_heartbeat(bad)
    with pytest.raises(RemoteProtocolError):
        decode_heartbeat(encode_heartbeat(hb)[:5] + b"\x09" + encode_heartbeat(hb)[6:])


def test_config_validation() -> None:
    with pytest.raises(ConfigError):
        NatsConfig(name="")
    with pytest.raises(ConfigError):
        NatsConfig(name="a", heartbeat_interval=1.0, failure_timeout=2.0)
    with pytest.raises(ConfigError):
        NatsConfig(name="a", group="a.b")
    with pytest.raises(ConfigError):
        NatsConfig(name="a", user="u", nkey_seed=None, creds=__import__("pathlib").Path("x"))


async def test_connect_errors_name_the_server_and_come_fast() -> None:
    """A refused password fails the start at once with one line naming the server; a server
    that does not answer gets its own line."""
    from pbxmesh.nats_accounts import parse_spec, render
    from tests.harness.nats import free_ports, single_server
    from tests.harness.nats_fixtures import require_nats

    require_nats()
    spec = {"tenant": [{"account": "A", "group": "g", "nodes": [{"name": "n1", "password": "p"}]}]}
    with single_server(jetstream=False, extra_conf=render(parse_spec(spec, "t"))) as server:
        (dead,) = free_ports(1)
        servers = (server.url, f"nats://127.0.0.1:{dead}")
        t = NatsTransport(
            NatsConfig.local("n1", "g", servers, randomize=False, user="A-n1", password="wrong")
        )
        began = time.monotonic()
        with pytest.raises(TransportError) as err:
            await t.start()
        took = time.monotonic() - began
        await t.close()
        text = str(err.value)
        lines = text.splitlines()
        assert f"127.0.0.1:{server.port} refused our credentials (user A-n1)" in text
        assert any(f"127.0.0.1:{dead} unreachable" in ln for ln in lines), text
        assert len(lines) == 2 and took < 5.0, (took, text)


async def test_frames_of_a_sender_not_yet_in_the_view_are_held_until_it_joins(
    nats_server: NatsServer, nats_group: str
) -> None:
    """A frame (a join snapshot, say) may arrive before its sender's first heartbeat: it is
    never merged ahead of the membership, and never lost either: it comes right after the view
    that has its sender."""
    import nats

    from pbxmesh.transport.nats import member_token

    async with member("early.a", nats_group, (nats_server.url,)) as (_a, log):
        raw = await nats.connect(nats_server.url)
        try:
            token = member_token("early.b")
            await raw.publish(f"pbxmesh.{nats_group}.frames.{token}", b"snapshot of b")
            await raw.flush()
            await asyncio.sleep(0.3)  # a, heartbeating, has seen it by now: held, not given
            assert not [e for e in log.items if isinstance(e, Message)]
            async with member("early.b", nats_group, (nats_server.url,)):
                view = await log.wait_for(joined_of(token), 5, "b joined")
                message = await log.wait_for(
                    lambda items: next((e for e in items if isinstance(e, Message)), None),
                    5,
                    "the held frame",
                )
                assert message.data == b"snapshot of b" and message.sender == token
                assert log.items.index(view) < log.items.index(message)
        finally:
            await raw.close()
