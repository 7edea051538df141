"""What the node tells a link, by interest, over the in-memory transport: the aggregate of the
other origins, each other origin's slot, remote MWI with its writer; never its own origin."""

from __future__ import annotations

from pbxmesh.eid import EID
from pbxmesh.links.base import Interest, Link, LinkPort, LinkStatus
from pbxmesh.states import DeviceState
from tests.test_node import make_node, wait_for

S = DeviceState


class RecordingLink(Link):
    """A link with no Asterisk behind it: it records what it is told and reports on demand."""

    kind = "recording"

    def __init__(self, interest: Interest) -> None:
        self.interest = interest
        self.port: LinkPort | None = None
        self.remote: list[tuple[str, S]] = []
        self.slots: list[tuple[str, EID, S]] = []
        self.left: list[EID] = []
        self.mwi: list[tuple[str, int, int, EID]] = []

    async def start(self, port: LinkPort) -> None:
        self.port = port

    async def close(self) -> None:
        self.port = None

    def status(self) -> LinkStatus:
        return LinkStatus(kind=self.kind, address="-", connected=self.port is not None)

    async def wait_synced(self) -> None:
        return None

    async def wait_idle(self) -> None:
        return None

    def remote_device(self, device: str, state: S) -> None:
        self.remote.append((device, state))

    def origin_device(self, device: str, origin: EID, state: S) -> None:
        self.slots.append((device, origin, state))

    def origin_left(self, origin: EID) -> None:
        self.left.append(origin)

    def remote_mwi(self, mailbox: str, new: int, old: int, writer: EID) -> None:
        self.mwi.append((mailbox, new, old, writer))


async def test_each_link_is_told_what_its_interest_names_and_never_its_own_origin() -> None:
    from pbxmesh.transport.memory import MemoryNetwork

    net = MemoryNetwork()
    a, b, c = (make_node(net, n) for n in ("a", "b", "c"))
    aggregate = RecordingLink(Interest.REMOTE_DEVICES | Interest.MWI)
    slots = RecordingLink(Interest.ORIGIN_DEVICES)
    try:
        for n in (a, b, c):
            await n.start()
        await a.add_link(aggregate)
        await a.add_link(slots)
        assert a.links == [aggregate, slots]
        assert aggregate.port is not None and aggregate.port.origin == a.eid
        # The link reports through its port: the change is a's own, and told to nobody here.
        aggregate.port.device("PJSIP/100", S.INUSE)
        await wait_for(lambda: b.devices.slot_state("PJSIP/100", a.eid) is S.INUSE)
        b.publish_device("PJSIP/100", S.RINGING)
        c.publish_device("PJSIP/100", S.NOT_INUSE)
        await wait_for(lambda: len(slots.slots) == 2)
        await wait_for(lambda: aggregate.remote[-1:] == [("PJSIP/100", S.RINGING)])
        assert sorted(slots.slots, key=lambda x: x[1] == c.eid) == [
            ("PJSIP/100", b.eid, S.RINGING),
            ("PJSIP/100", c.eid, S.NOT_INUSE),
        ]
        assert all(o != a.eid for _, o, _ in slots.slots)
        assert aggregate.slots == [] and slots.remote == []
        # The same value again is not told again (dedup per slot and per aggregate).
        told = len(aggregate.remote)
        c.publish_device("PJSIP/100", S.NOT_INUSE)
        b.publish_mwi("1000@default", 3, 1)
        await wait_for(lambda: aggregate.mwi == [("1000@default", 3, 1, b.eid)])
        assert len(aggregate.remote) == told and len(slots.slots) == 2
        # MWI a writes itself is not told back; links without Interest.MWI hear none.
        aggregate.port.mwi("1000@default", 0, 4)
        assert aggregate.mwi == [("1000@default", 3, 1, b.eid)] and slots.mwi == []
        # The port reads back the whole picture for a resync.
        assert aggregate.port.remote_devices() == {"PJSIP/100": S.RINGING}
        assert sorted(slots.port.origin_devices(), key=lambda x: x[1] == c.eid) == [  # type: ignore[union-attr]
            ("PJSIP/100", b.eid, S.RINGING),
            ("PJSIP/100", c.eid, S.NOT_INUSE),
        ]
        # c leaves: its slot is told removed, then c itself as gone.
        await c.close()
        await wait_for(lambda: slots.left == [c.eid])
        assert slots.slots[-1] == ("PJSIP/100", c.eid, S.INVALID)
        await a.remove_link(slots)
        assert a.links == [aggregate] and slots.port is None
    finally:
        for n in (a, b, c):
            await n.close()
