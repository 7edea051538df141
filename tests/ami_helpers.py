"""Shared helpers for the AMI tests: a simulator on an ephemeral port, a raw AMI peer,
a fake LinkPort and condition waits with deadlines (no sleeps)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from pathlib import Path

from pbxmesh.eid import EID
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
from pbxmesh.pbxsim.dialplan import parse_hints
from pbxmesh.pbxsim.pbx import SimPbx
from pbxmesh.pbxsim.server import SimServer
from pbxmesh.presence import PresenceState, check_presence_text, check_presentity
from pbxmesh.states import DeviceState, aggregate

USER = "admin"
SECRET = "s3cret"

TUTORIAL_DIALPLAN = """
[devstate_test]
exten => 1234, hint, Custom:mystate
exten => set_inuse,1,Set(DEVICE_STATE(Custom:mystate)=INUSE)
exten => set_not_inuse,1,Set(DEVICE_STATE(Custom:mystate)=NOT_INUSE)
"""


async def start_sim(
    dialplan: str = TUTORIAL_DIALPLAN,
    state_dir: Path | None = None,
    *,
    port: int = 0,
    login_fail_delay: float = 0.05,
    system: bool = True,
    voicemail: dict[str, tuple[int, int]] | None = None,
    presence: bool = True,
) -> SimServer:
    server = SimServer(
        SimPbx(parse_hints(dialplan), state_dir, voicemail, presence=presence),
        USER,
        SECRET,
        login_fail_delay=login_fail_delay,
        system=system,
    )
    await server.start("127.0.0.1", port)
    return server


async def wait_until(
    predicate: Callable[[], bool | Awaitable[bool]], deadline: float = 5.0, what: str = ""
) -> None:
    """Poll ``predicate`` on every loop turn until true; fail after ``deadline`` seconds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while True:
        result = predicate()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if loop.time() > end:
            raise AssertionError(f"condition not met within {deadline}s: {what}")
        await asyncio.sleep(0.005)


class RawAmi:
    """A bare AMI peer on a socket, for exact-wire checks of the simulator."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.codec = AmiCodec(Role.CLIENT)
        self.banner: Banner | None = None
        self.raw = bytearray()

    @classmethod
    async def connect(cls, port: int, login: bool = True) -> RawAmi:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        peer = cls(reader, writer)
        first = await peer.next()
        assert isinstance(first, Banner)
        peer.banner = first
        if login:
            answer = await peer.request(Action.of("Login", Username=USER, Secret=SECRET))
            assert isinstance(answer, Response) and answer.ok, answer
        return peer

    async def next(self, deadline: float = 5.0) -> Banner | Response | Event | None:
        """The next message, or None at end of file."""
        async with asyncio.timeout(deadline):
            while True:
                msg = self.codec.next_event()
                if msg is CLOSED:
                    return None
                if msg is NEED_DATA:
                    data = await self.reader.read(65536)
                    self.raw += data
                    self.codec.receive_data(data)
                    continue
                assert not isinstance(msg, Action)
                return msg

    def send(self, action: Action) -> None:
        self.writer.write(self.codec.send(action))

    async def request(self, action: Action) -> Response:
        """Send and return the next Response (events in between are skipped)."""
        self.send(action)
        while True:
            msg = await self.next()
            assert msg is not None, "connection closed"
            if isinstance(msg, Response):
                return msg

    async def next_event(self, name: str) -> Event:
        while True:
            msg = await self.next()
            assert msg is not None, f"closed while waiting for {name}"
            if isinstance(msg, Event) and msg.name == name:
                return msg

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


#: the origin a FakeCluster reports for, and the one its remote slots and mailboxes come from
HERE = EID.parse("02:00:00:00:00:01")
THERE = EID.parse("02:00:00:00:00:02")


class FakeCluster:
    """A LinkPort keeping the other servers' slots in plain dicts."""

    origin = HERE

    def __init__(self) -> None:
        self.published: list[tuple[str, DeviceState]] = []
        self.published_mwi: list[tuple[str, int, int]] = []
        self.slots: dict[str, dict[str, DeviceState]] = {}  # device -> server -> state
        self.mailboxes: dict[str, tuple[int, int]] = {}  # written last by THERE
        self.published_presence: list[tuple[str, PresenceState, str, str]] = []
        self.presentities: dict[str, tuple[PresenceState, str, str]] = {}  # written by THERE
        self.withdrawals = 0

    def withdraw(self) -> int:
        self.withdrawals += 1
        return len({d for d, _ in self.published})

    def device(self, device: str, state: DeviceState) -> None:
        self.published.append((device, state))

    def mwi(self, mailbox: str, new: int, old: int) -> None:
        self.published_mwi.append((mailbox, new, old))

    def remote_state(self, device: str) -> DeviceState:
        return aggregate(self.slots.get(device, {}).values())

    def remote_devices(self) -> dict[str, DeviceState]:
        return {d: self.remote_state(d) for d, s in self.slots.items() if s}

    def origin_devices(self) -> list[tuple[str, EID, DeviceState]]:
        return [(d, THERE, self.remote_state(d)) for d, s in self.slots.items() if s]

    def remote_mwi(self) -> dict[str, tuple[int, int, EID]]:
        return {box: (new, old, THERE) for box, (new, old) in self.mailboxes.items()}

    def presence(
        self, presentity: str, state: PresenceState, subtype: str = "", message: str = ""
    ) -> None:
        check_presence_text("subtype", subtype)
        check_presence_text("message", message)
        self.published_presence.append((check_presentity(presentity), state, subtype, message))

    def remote_presence(self) -> dict[str, tuple[PresenceState, str, str, EID]]:
        return {p: (*v, THERE) for p, v in self.presentities.items()}

    def last(self, device: str) -> DeviceState | None:
        for name, state in reversed(self.published):
            if name == device:
                return state
        return None
