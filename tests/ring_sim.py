"""A res_corosync member that behaves as Asterisk does (reference §5.7-5.8, §12), for unit tests.

It speaks ``ast_event`` over any transport (the in-memory one here) with Asterisk's rules:
announce with CLUSTER_DISCOVERY at start and to every node id it does not know; node table
filled from announcements only; on a member leaving, drop every state of the EID announced
for that member's *node id*; on any join, re-send its own cache (type 6 and MWI, no type 5);
a local change sends type 5 (its new aggregate) then type 6; drop frames with its own EID and
type 5; MWI last writer wins. Hints read the aggregate of every EID's slot.

It is driven as the link contract suite drives an Asterisk (``tests/link_contract.py``).
"""

from __future__ import annotations

import asyncio
import contextlib

from pbxmesh.eid import EID
from pbxmesh.errors import RemoteProtocolError
from pbxmesh.states import DeviceState, aggregate
from pbxmesh.transport.base import MembershipChange, Message
from pbxmesh.transport.memory import MemoryNetwork, MemoryTransport
from pbxmesh.wire.asterisk import (
    AstClusterDiscovery,
    AstDeviceState,
    AstDeviceStateChange,
    AstMwi,
    decode_event,
    encode_event,
)

S = DeviceState


class SimRingAsterisk:
    """One simulated Asterisk with res_corosync on a :class:`MemoryNetwork` ring."""

    def __init__(self, net: MemoryNetwork, eid: EID | None = None) -> None:
        self.net = net
        self.eid = eid or EID.generate()
        self.address = ("ring", 0)
        self.transport: MemoryTransport | None = None
        self.node_id = 0
        #: (device, eid) -> state: Asterisk's per-EID device-state cache
        self.cache: dict[tuple[str, EID], DeviceState] = {}
        #: mailbox@context -> (new, old, writer)
        self.mwi: dict[str, tuple[int, int, EID]] = {}
        self.nodes: dict[int, EID] = {}  # node table, from announcements only
        self.received: list[object] = []
        self._task: asyncio.Task[None] | None = None
        self.joined = asyncio.Event()
        self.restart_seconds = 0.2

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        self.transport = self.net.new_transport("asterisk")
        self.joined.clear()
        await self.transport.start()
        self.node_id = self.transport.member.nodeid or 0
        self._task = asyncio.create_task(self._loop(self.transport))
        await self.joined.wait()

    async def close(self) -> None:
        if self.transport is not None:
            await self.transport.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.transport = None
        # As Asterisk at unload: every state of another EID is cleared.
        self.cache = {k: v for k, v in self.cache.items() if k[1] == self.eid}
        self.nodes.clear()

    async def restart(self) -> None:
        await self.close()
        # A real Asterisk takes a second or so to come back; the link must see it gone.
        await asyncio.sleep(self.restart_seconds)
        await self.start()

    # -- driven like an Asterisk -------------------------------------------------------------
    async def set_device(self, device: str, state: DeviceState) -> None:
        self.cache[(device, self.eid)] = state
        await self._send(encode_event(AstDeviceState(device, int(self.hint(device)), 1, self.eid)))
        await self._send(encode_event(AstDeviceStateChange(device, int(state), 1, self.eid)))

    async def set_mailbox(self, mailbox: str, new: int, old: int) -> None:
        box, _, context = mailbox.partition("@")
        self.mwi[f"{box}@{context or 'default'}"] = (new, old, self.eid)
        await self._send(encode_event(AstMwi(box, context or "default", new, old, self.eid)))

    def hint(self, device: str) -> DeviceState:
        """The aggregate a hint on ``device`` shows (INVALID when nobody holds it)."""
        return aggregate(s for (d, _), s in self.cache.items() if d == device)

    async def remote_device(self, device: str) -> DeviceState:
        """What the other ring members hold for ``device`` (for the contract: the bridge)."""
        return aggregate(s for (d, e), s in self.cache.items() if d == device and e != self.eid)

    async def mailbox(self, mailbox: str) -> tuple[int, int]:
        new, old, _ = self.mwi.get(mailbox, (0, 0, self.eid))
        return new, old

    # -- res_corosync --------------------------------------------------------------------------
    async def _send(self, frame: bytes) -> None:
        if self.transport is not None:
            await self.transport.send(frame)

    def _discovery(self) -> bytes:
        return encode_event(AstClusterDiscovery(self.node_id, f"10.0.0.{self.node_id}", self.eid))

    def _dump(self) -> list[bytes]:
        out = [
            encode_event(AstDeviceStateChange(d, int(s), 1, self.eid))
            for (d, e), s in self.cache.items()
            if e == self.eid
        ]
        for box, (new, old, writer) in self.mwi.items():
            if writer == self.eid:
                b, _, c = box.partition("@")
                out.append(encode_event(AstMwi(b, c, new, old, self.eid)))
        return out

    async def _loop(self, transport: MemoryTransport) -> None:
        async for event in transport.events():
            match event:
                case MembershipChange(joined=joined, left=left):
                    for m in left:
                        eid = self.nodes.pop(m.nodeid or -1, None)
                        if eid is not None:
                            self.cache = {k: v for k, v in self.cache.items() if k[1] != eid}
                    if any(m.member_id == transport.self_id for m in joined):
                        await self._send(self._discovery())
                        self.joined.set()
                    if joined:
                        for frame in self._dump():
                            await self._send(frame)
                case Message(data=data):
                    await self._receive(data)

    async def _receive(self, data: bytes) -> None:
        try:
            ev = decode_event(data)
        except RemoteProtocolError:
            return
        if ev.eid == self.eid:
            return
        self.received.append(ev)
        match ev:
            case AstDeviceState():
                pass
            case AstDeviceStateChange(device, state, _c, eid):
                self.cache[(device, eid)] = DeviceState(state)
            case AstMwi(box, context, new, old, eid) if box and context:
                self.mwi[f"{box}@{context}"] = (new, old, eid)
            case AstClusterDiscovery(node_id, _a, eid):
                if node_id not in self.nodes:
                    self.nodes[node_id] = eid
                    await self._send(self._discovery())
