"""The link contract suite (tests/link_contract.py) over the AMI link.

``link_backend`` is parametrised by the Asterisk it starts: the PBX simulator here. An Asterisk
is driven and read only through AMI (``AmiAsterisk``), so a real Asterisk plugs in by giving a
starter that returns its AMI address and can restart it (a ``SimStarter`` twin).
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from ami_helpers import SECRET, USER, RawAmi, start_sim
from pbxmesh.links.ami import AmiConfig, AmiLink, counterpart_name
from pbxmesh.links.ami.codec import Action
from pbxmesh.pbxsim.server import SimServer
from pbxmesh.presence import PresenceState, parse_presence
from pbxmesh.states import DeviceState, parse_state
from tests.link_contract import *  # noqa: F403 - the contract's test functions
from tests.link_contract import Asterisk


class AmiAsterisk:
    """An Asterisk reached over AMI: set local states, read back what the link wrote."""

    def __init__(
        self,
        address: tuple[str, int],
        restart: Callable[[], Awaitable[None]],
        close: Callable[[], Awaitable[None]],
    ) -> None:
        self.address = address
        self._restart = restart
        self._close = close

    async def _ask(self, action: Action) -> dict[str, str]:
        ami = await RawAmi.connect(self.address[1])
        try:
            answer = await ami.request(action)
            assert answer.ok, f"{action.name} refused: {answer.message}"
            return {k: answer.get(k) or "" for k in ("Value", "NewMessages", "OldMessages")}
        finally:
            await ami.close()

    async def set_device(self, device: str, state: DeviceState) -> None:
        await self._ask(Action.of("Setvar", Variable=f"DEVICE_STATE({device})", Value=state.name))

    async def set_mailbox(self, mailbox: str, new: int, old: int) -> None:
        await self._ask(Action.of("MWIUpdate", Mailbox=mailbox, NewMessages=new, OldMessages=old))

    async def remote_device(self, device: str) -> DeviceState:
        # The AMI link writes the other servers' state to the device's Custom: counterpart;
        # an unwritten Custom: device reads UNKNOWN, and the link writes UNKNOWN as INVALID.
        name = counterpart_name(device)
        answer = await self._ask(Action.of("Getvar", Variable=f"DEVICE_STATE({name})"))
        state = parse_state(answer["Value"] or "UNKNOWN")
        return DeviceState.INVALID if state is DeviceState.UNKNOWN else state

    async def mailbox(self, mailbox: str) -> tuple[int, int]:
        answer = await self._ask(Action.of("MailboxCount", Mailbox=mailbox))
        return int(answer["NewMessages"] or 0), int(answer["OldMessages"] or 0)

    async def set_presence(
        self, presentity: str, state: PresenceState, subtype: str, message: str
    ) -> None:
        b64 = [base64.b64encode(t.encode()).decode() for t in (subtype, message)]
        value = f"{state.text},{b64[0]},{b64[1]},e"
        await self._ask(Action.of("Setvar", Variable=f"PRESENCE_STATE({presentity})", Value=value))

    async def presence(self, presentity: str) -> tuple[PresenceState, str, str]:
        ami = await RawAmi.connect(self.address[1])
        try:
            answer = await ami.request(Action.of("PresenceState", Provider=presentity))
            assert answer.ok, answer.message
            state = parse_presence(answer.get("State") or "")
            return state, answer.get("Subtype") or "", answer.get("PresenceMessage") or ""
        finally:
            await ami.close()

    async def restart(self) -> None:
        await self._restart()

    async def close(self) -> None:
        await self._close()


class SimStarter:
    """Starts the PBX simulator on an ephemeral port, with its AstDB in ``state_dir``."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.servers: list[SimServer] = []

    async def __call__(self) -> Asterisk:
        sim = await start_sim(state_dir=self.state_dir)
        self.servers.append(sim)
        port = sim.port

        async def restart() -> None:
            await self.servers[-1].close()
            self.servers.append(await start_sim(state_dir=self.state_dir, port=port))

        async def close() -> None:
            await self.servers[-1].close()

        return AmiAsterisk(("127.0.0.1", port), restart, close)


class AmiBackend:
    timeout = 5.0

    def __init__(self, start: Callable[[], Awaitable[Asterisk]]) -> None:
        self.asterisk = start

    def link(self, asterisk: Asterisk) -> AmiLink:
        host, port = asterisk.address
        return AmiLink(AmiConfig.local(host, port, USER, SECRET))


@pytest.fixture(params=["simulator"])
async def link_backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AmiBackend]:
    # A real Asterisk joins as another param whose starter returns an AmiAsterisk for it.
    assert request.param == "simulator"
    yield AmiBackend(SimStarter(tmp_path))
