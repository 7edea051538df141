"""The asyncio AMI client against the simulator and a misbehaving fake server."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from ami_helpers import SECRET, USER, start_sim, wait_until
from pbxmesh.errors import AmiActionError, AmiError, ConfigError
from pbxmesh.links.ami.client import AmiClient, AmiConfig
from pbxmesh.links.ami.codec import (
    CLOSED,
    NEED_DATA,
    Action,
    AmiCodec,
    Banner,
    Event,
    Response,
    Role,
)


def config(port: int, **kw) -> AmiConfig:
    base = AmiConfig.local("127.0.0.1", port, USER, SECRET)
    fields = {f: getattr(base, f) for f in base.__dataclass_fields__}
    fields.update(kw)
    return AmiConfig(**fields)


async def test_actions_lists_commands_and_events() -> None:
    sim = await start_sim()
    seen: list[Event] = []
    client = AmiClient(config(sim.port), on_event=seen.append)
    try:
        await client.start()
        async with asyncio.timeout(5):
            await client.wait_connected()
        stream = client.events()
        first = asyncio.ensure_future(anext(stream))
        await client.action("Setvar", Variable="DEVICE_STATE(Custom:mystate)", Value="INUSE")
        async with asyncio.timeout(5):
            got = await first
        assert got.name in ("DeviceStateChange", "FullyBooted", "ExtensionStatus")
        await wait_until(lambda: any(e.name == "DeviceStateChange" for e in seen))
        listing = await client.list_action("DeviceStateList")
        assert [(i["Device"], i["State"]) for i in listing.items] == [("Custom:mystate", "INUSE")]
        out = await client.command("core show hints")
        assert "State:InUse" in out[2]
        with pytest.raises(AmiActionError, match="Invalid/unknown command"):
            await client.action("NoSuchAction")
        with pytest.raises(AmiActionError, match="No dialplan hints"):
            sim.pbx.hints.clear()
            await client.list_action("ExtensionStateList")
        await stream.aclose()
    finally:
        await client.close()
        await sim.close()


async def test_md5_login_and_config_validation() -> None:
    sim = await start_sim()
    client = AmiClient(config(sim.port, md5=True))
    try:
        await client.start()
        async with asyncio.timeout(5):
            await client.wait_connected()
        assert (await client.action("Ping"))["Ping"] == "Pong"
    finally:
        await client.close()
        await sim.close()
    with pytest.raises(ConfigError):
        AmiConfig("", 5038)
    with pytest.raises(ConfigError):
        AmiConfig("h", 5038, reconnect_min=5, reconnect_max=1)
    assert "s3cret" not in repr(config(1))


async def test_reconnects_and_runs_hook_after_every_connect() -> None:
    sim = await start_sim()
    port = sim.port
    hooks: list[int] = []

    async def on_connected(c: AmiClient) -> None:
        hooks.append(c.connections)

    client = AmiClient(config(port), on_connected=on_connected)
    try:
        await client.start()
        await wait_until(lambda: hooks == [1])
        await sim.close()
        await wait_until(lambda: not client.connected)
        with pytest.raises(AmiError):
            await client.action("Ping")
        sim = await start_sim(port=port)
        await wait_until(lambda: hooks == [1, 2], what="hook after reconnect")
    finally:
        await client.close()
        await sim.close()


async def test_bad_login_keeps_retrying_without_connecting() -> None:
    sim = await start_sim(login_fail_delay=0.0)
    client = AmiClient(config(sim.port, secret="wrong"))
    try:
        await client.start()
        await wait_until(lambda: len(sim._handlers) == 0 and client.connections == 0)
        assert not client.connected
    finally:
        await client.close()
        await sim.close()


class MuteServer:
    """Answers Login, then ignores Ping and sends one garbage block followed by an event."""

    def __init__(self) -> None:
        self.accepts = 0
        self.open = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepts += 1
        self.open += 1
        try:
            await self._serve(reader, writer)
        finally:
            writer.close()
            self.open -= 1

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        codec = AmiCodec(Role.SERVER)
        writer.write(codec.send(Banner("Asterisk Call Manager/13.0.0")))
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(4096):
                codec.receive_data(data)
                while (msg := codec.next_event()) not in (NEED_DATA, CLOSED):
                    assert isinstance(msg, Action)
                    if msg.name == "Login":
                        writer.write(
                            codec.send(
                                Response.of(
                                    "Success",
                                    ActionID=msg.action_id,
                                    Message="Authentication accepted",
                                )
                            )
                        )
                        writer.write(b"not a header line\r\n\r\n")
                        writer.write(codec.send(Event.of("Hello", Privilege="call,all")))


async def test_ping_timeout_reconnects_and_garbage_is_dropped() -> None:
    fake = MuteServer()
    server = await asyncio.start_server(fake.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    seen: list[str] = []
    client = AmiClient(
        config(port, ping_interval=0.05, ping_timeout=0.05),
        on_event=lambda e: seen.append(e.name),
    )
    try:
        await client.start()
        await wait_until(lambda: fake.accepts >= 2, what="reconnect after ping timeout")
        assert client.protocol_errors >= 1
        assert "Hello" in seen
    finally:
        await client.close()
        server.close()
        await server.wait_closed()
        await wait_until(lambda: fake.open == 0, what="fake server handlers ended")
