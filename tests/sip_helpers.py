"""Real Asterisks linked over SIP PUBLISH, for the SIP link's tests (and its benchmark).

:func:`sip_asterisk` builds a private Asterisk whose pjsip.conf and modules are exactly what
``pbxmesh asterisk-config`` prints for a link (``links/sip/asterisk_conf.py``), plus test
modules: hints (pbx_config, func_devstate), AMI events, and either res_mwi_external (to set
local MWI with MWIUpdate) or app_voicemail. :class:`SipAsterisk` is the contract suite's
view of it (tests/link_contract.py): driven over AMI, remote MWI read from ``MessageWaiting``
events (MWIGet does not show remote MWI, even natively).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

from pbxmesh.eid import EID
from pbxmesh.links.ami.client import AmiClient, AmiConfig
from pbxmesh.links.ami.codec import Event
from pbxmesh.links.sip.asterisk_conf import MODULES, modules_conf, pjsip_conf
from pbxmesh.links.sip.link import SipLinkConfig
from pbxmesh.pbxsim.dialplan import parse_hints
from pbxmesh.pbxsim.pbx import SimPbx
from pbxmesh.pbxsim.server import SimServer
from pbxmesh.pbxsim.sip import SimSip
from pbxmesh.states import DeviceState, parse_state
from tests.harness.asterisk import AMI_SECRET, AMI_USER, Asterisk, free_port

__all__ = ["HINT_MODULES", "SimSipAsterisk", "SipAsterisk", "sip_asterisk"]

#: Hints, Custom: devices and AMI DeviceStateChange, for tests.
HINT_MODULES = ("pbx_config", "func_devstate", "res_manager_devicestate")
#: Local MWI set over AMI (MWIUpdate): res_mwi_external and its AMI actions.
MWI_EXTERNAL = ("res_mwi_external", "res_mwi_external_ami")
#: Phones subscribing to message-summary.
PHONE_MWI = ("res_pjsip_mwi", "res_pjsip_mwi_body_generator")


def sip_asterisk(
    name: str,
    eid: str,
    *,
    listen_port: int | None = None,
    dialplan: str = "",
    mwi: Sequence[str] = MWI_EXTERNAL,
    extra_pjsip: str = "",
    files: dict[str, str] | None = None,
    secret: str | None = None,
    transport: str = "udp",
) -> tuple[Asterisk, SipLinkConfig]:
    """An (unstarted) Asterisk configured for one SIP link, and that link's configuration."""
    sip_port = free_port()
    listen = listen_port or free_port()
    config = SipLinkConfig(
        listen=("127.0.0.1", listen),
        uri=f"sip:pbxmesh@127.0.0.1:{sip_port}",
        username="pbxmesh" if secret else None,
        secret=secret,
        transport="tcp" if transport == "tcp" else "udp",
    )
    modules = tuple(
        line.split("=>")[1].strip().removesuffix(".so")
        for line in modules_conf(config).splitlines()
        if line.startswith("load =>")
    )
    assert set(MODULES) <= set(modules)
    all_files = {"pjsip.conf": pjsip_conf(config) + extra_pjsip, **(files or {})}
    star = Asterisk(
        name,
        eid,
        modules=(*HINT_MODULES, *mwi, *PHONE_MWI, *modules),
        dialplan=dialplan,
        files=all_files,
    )
    star.sip_port = sip_port  # type: ignore[attr-defined]
    return star, config


class SipAsterisk:
    """A real Asterisk as the link contract suite drives it (see tests/link_contract.py)."""

    def __init__(self, star: Asterisk) -> None:
        self.star = star
        self.address = ("127.0.0.1", star.ami_port)
        self.waiting: dict[str, tuple[int, int]] = {}
        self.ami = AmiClient(
            AmiConfig.local("127.0.0.1", star.ami_port, AMI_USER, AMI_SECRET),
            on_event=self._event,
        )

    async def _start(self) -> None:
        await asyncio.to_thread(self.star.start)

    async def _stop(self) -> None:
        await asyncio.to_thread(self.star.stop)

    def _event(self, event: Event) -> None:
        if event.name == "MessageWaiting":
            box = event.get("Mailbox") or ""
            self.waiting[box] = (int(event.get("New") or 0), int(event.get("Old") or 0))

    async def start(self) -> None:
        await self._start()
        await self.ami.start()
        async with asyncio.timeout(20):
            await self.ami.wait_connected()

    async def set_device(self, device: str, state: DeviceState) -> None:
        r = await self.ami.action("Setvar", Variable=f"DEVICE_STATE({device})", Value=state.name)
        assert r.ok, r.message

    async def set_mailbox(self, mailbox: str, new: int, old: int) -> None:
        r = await self.ami.action("MWIUpdate", Mailbox=mailbox, NewMessages=new, OldMessages=old)
        assert r.ok, r.message

    async def remote_device(self, device: str) -> DeviceState:
        # Nothing local holds the contract's devices, so the aggregate Asterisk reads is the
        # other servers' (UNKNOWN when none counts: the link's neutral value).
        r = await self.ami.action("Getvar", Variable=f"DEVICE_STATE({device})")
        state = parse_state(r.get("Value") or "UNKNOWN")
        return DeviceState.INVALID if state is DeviceState.UNKNOWN else state

    async def mailbox(self, mailbox: str) -> tuple[int, int]:
        return self.waiting.get(mailbox, (0, 0))

    async def restart(self) -> None:
        await self._stop()
        await asyncio.sleep(1.0)  # long enough for the link's keep-alive to see it gone
        await self._start()

    async def close(self) -> None:
        await self.ami.close()
        await self._stop()
        self.star.cleanup()


class SimSipAsterisk(SipAsterisk):
    """The PBX simulator speaking the SIP subset (pbxsim/sip.py), driven the same way."""

    def __init__(self, state_dir: Path, eid: str, peer: str) -> None:
        self.state_dir, self.eid, self.peer = state_dir, EID.parse(eid), peer
        self.ami_port, self.sip_port = free_port(), free_port()
        self.sim: tuple[SimServer, SimSip] | None = None
        star = SimpleNamespace(ami_port=self.ami_port, cleanup=lambda: None)
        super().__init__(star)  # type: ignore[arg-type]

    async def _start(self) -> None:
        pbx = SimPbx(parse_hints(""), self.state_dir)
        server = SimServer(pbx, AMI_USER, AMI_SECRET)
        await server.start("127.0.0.1", self.ami_port)
        sip = SimSip(pbx, self.eid, ("127.0.0.1", self.sip_port), self.peer)
        try:
            await sip.start()
        except BaseException:  # e.g. its free port taken meanwhile: close what did start
            await sip.close()
            await server.close()
            raise
        self.sim = (server, sip)

    async def _stop(self) -> None:
        if self.sim is not None:
            server, sip = self.sim
            self.sim = None
            await sip.close()
            await server.close()
