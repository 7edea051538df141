"""The chaos drill's oracle: a model of what each PBX last asserted, and what every node's
store and every simulator must then hold.

The drill is the only writer of each simulated PBX's own states, so it knows exactly what every
PBX last asserted. Once every fault is over (every node, engine and AMI link up again), the
cluster must show exactly that:

* **device states** -- every node's ``/devices``: for each device, one slot per PBX that set
  it, under that PBX's node's *current* EID (a node restarted without its state directory has
  a new one, and its old slots must be gone), aggregated as Asterisk does. Every simulator's
  counterpart ``Custom:remote-…`` of a device: the aggregate of the *other* PBXs' slots
  (``INVALID`` when none); a counterpart of a device nobody asserts is ``INVALID`` or absent;
* **MWI** -- a mailbox owned by one PBX: the counts it last wrote, everywhere (every node's
  ``/mwi`` and every simulator's mailbox store); the origin must be one of the EIDs that
  PBX's node has had (a node's EID changes when it loses its state directory; the cluster may
  keep the old one where the counts did not change since). A mailbox several PBXs write
  (last-writer-wins): one value everywhere, and it is the last value one of its writers wrote;
* **presence** -- as MWI for owned presentities.

"Nothing lost" is a missing or older value, "nothing stale" an old value kept, "nothing
resurrected" a slot of a dead EID or a counterpart that should be ``INVALID``: each is a
divergence, named with the node or simulator, the key, what it holds and what it should.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pbxmesh.links.ami.counterparts import counterpart_name
from pbxmesh.pbxsim.pbx import SimPbx, devstate_val
from pbxmesh.pbxsim.presence import state_str
from pbxmesh.states import DeviceState, aggregate

__all__ = ["Model"]

#: at most this many divergences are listed per node or simulator
LIMIT = 8


@dataclass
class Model:
    """What ``size`` PBXs asserted; PBX ``i`` is linked to node ``i`` (0-based)."""

    size: int
    devices: list[dict[str, str]] = field(default_factory=list)
    #: mailbox -> (new, old, owner)
    mwi_owned: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    #: shared mailbox -> owner -> the last (new, old) that owner wrote
    mwi_shared: dict[str, dict[int, tuple[int, int]]] = field(default_factory=dict)
    #: presentity -> (state text, subtype, message, owner)
    presence: dict[str, tuple[str, str, str, int]] = field(default_factory=dict)
    #: each node's current EID, and every EID it has had
    eids: list[str] = field(default_factory=list)
    eids_ever: list[set[str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.devices = [{} for _ in range(self.size)]
        self.eids = [""] * self.size
        self.eids_ever = [set() for _ in range(self.size)]
        self._counterparts: dict[str, str] = {}  # counterpart AstDB key -> device

    # -- what the drill did ------------------------------------------------------------------
    def set_eid(self, i: int, eid: str) -> None:
        self.eids[i] = eid
        self.eids_ever[i].add(eid)

    def device(self, i: int, device: str, state: str) -> None:
        if device not in self._counterparts.values():
            self._counterparts[counterpart_name(device)[len("Custom:") :]] = device
        self.devices[i][device] = state

    def mwi(self, i: int, mailbox: str, new: int, old: int, shared: bool) -> None:
        if shared:
            self.mwi_shared.setdefault(mailbox, {})[i] = (new, old)
        else:
            self.mwi_owned[mailbox] = (new, old, i)

    def set_presence(self, i: int, presentity: str, state: str, subtype: str, message: str) -> None:
        self.presence[presentity] = (state, subtype, message, i)

    # -- what must be -----------------------------------------------------------------------
    def slots(self) -> dict[str, dict[str, str]]:
        """device -> {EID: state} over every PBX (all nodes are up when this is checked)."""
        out: dict[str, dict[str, str]] = {}
        for i, devices in enumerate(self.devices):
            for device, state in devices.items():
                out.setdefault(device, {})[self.eids[i]] = state
        return out

    def check_node(
        self,
        name: str,
        devices: Sequence[Mapping[str, Any]],
        mwi: Sequence[Mapping[str, Any]],
        presence: Sequence[Mapping[str, Any]],
        shared_values: dict[str, tuple[int, int]],
    ) -> list[str]:
        """Divergences of one node's store (``/devices``, ``/mwi``, ``/presence`` rows).

        ``shared_values`` collects the value each node holds for each shared mailbox, so that
        the caller can check they agree."""
        out: list[str] = []
        want = self.slots()
        got = {str(r["device"]): r for r in devices}
        for device in sorted(set(want) | set(got)):
            w, g = want.get(device), got.get(device)
            if g is None:
                out.append(f"{name}: lost device {device} (want {w})")
            elif w is None:
                out.append(f"{name}: resurrected device {device} = {dict(g['origins'])}")
            elif dict(g["origins"]) != w:
                out.append(f"{name}: device {device} slots {dict(g['origins'])}, want {w}")
            elif g["state"] != aggregate(DeviceState[s] for s in w.values()).name:
                out.append(f"{name}: device {device} aggregate {g['state']} of {w}")
            if len(out) >= LIMIT:
                return out
        got_mwi = {str(r["mailbox"]): r for r in mwi}
        for box, (new, old, owner) in sorted(self.mwi_owned.items()):
            r = got_mwi.get(box)
            if r is None:
                out.append(f"{name}: lost mailbox {box} (want {new}/{old})")
            elif (r["new"], r["old"]) != (new, old):
                out.append(
                    f"{name}: mailbox {box} = {r['new']}/{r['old']} from {r['origin_name']}, "
                    f"want {new}/{old} from pbx{owner + 1}"
                )
            elif r["origin"] not in self.eids_ever[owner]:
                out.append(
                    f"{name}: mailbox {box} claimed by {r['origin']}, owner is pbx{owner + 1}"
                )
        for box, writers in sorted(self.mwi_shared.items()):
            r = got_mwi.get(box)
            if r is None:
                out.append(f"{name}: lost shared mailbox {box}")
                continue
            value = (int(r["new"]), int(r["old"]))
            shared_values.setdefault(box, value)
            if value not in writers.values():
                out.append(
                    f"{name}: shared mailbox {box} = {value} from {r['origin_name']}, "
                    f"no writer's last {writers}"
                )
        extra = sorted(set(got_mwi) - set(self.mwi_owned) - set(self.mwi_shared))
        out += [f"{name}: resurrected mailbox {box}" for box in extra[:3]]
        got_presence = {str(r["presentity"]): r for r in presence}
        for p, (state, subtype, message, owner) in sorted(self.presence.items()):
            r = got_presence.get(p)
            if r is None:
                out.append(f"{name}: lost presentity {p}")
            elif (r["state"], r["subtype"], r["message"]) != (state, subtype, message):
                out.append(
                    f"{name}: presence {p} = {r['state']},{r['subtype']},{r['message']}, "
                    f"want {state},{subtype},{message}"
                )
            elif r["origin"] not in self.eids_ever[owner]:
                out.append(
                    f"{name}: presence {p} claimed by {r['origin']}, owner is pbx{owner + 1}"
                )
        return out[:LIMIT]

    def check_sim(
        self, j: int, pbx: SimPbx, shared_values: dict[str, tuple[int, int]]
    ) -> list[str]:
        """Divergences of simulator ``j``: its counterparts, its mailboxes, its presence."""
        name = f"sim{j + 1}"
        out: list[str] = []
        for key, value in sorted(pbx.custom_db.items()):
            if key in self._counterparts or not key.startswith("remote-"):
                continue
            if devstate_val(value) is not DeviceState.INVALID:
                out.append(f"{name}: resurrected counterpart {key} = {value}")
        slots = self.slots()
        for key, device in self._counterparts.items():
            mine = self.eids[j]
            others = [DeviceState[s] for e, s in slots.get(device, {}).items() if e != mine]
            want = aggregate(others).name if others else "INVALID"
            raw = pbx.custom_db.get(key)
            have = "INVALID" if raw is None else devstate_val(raw).name
            if have != want:
                out.append(f"{name}: counterpart of {device} = {have}, want {want}")
                if len(out) >= LIMIT:
                    return out
        for box, (new, old, _) in sorted(self.mwi_owned.items()):
            have_mwi = pbx.mwi_db.get(box)
            if have_mwi != (new, old):
                out.append(f"{name}: mailbox {box} = {have_mwi}, want {(new, old)}")
        for box in sorted(self.mwi_shared):
            have_mwi = pbx.mwi_db.get(box)
            if have_mwi != shared_values.get(box):
                out.append(f"{name}: shared mailbox {box} = {have_mwi}, nodes hold "
                           f"{shared_values.get(box)}")  # fmt: skip
        if pbx.presence is not None:
            for p, (state, subtype, message, _) in sorted(self.presence.items()):
                cached = pbx.presence.cache.get(p)
                have_p = None if cached is None else (state_str(cached[0]), cached[1], cached[2])
                if have_p != (state, subtype, message):
                    out.append(f"{name}: presence {p} = {have_p}, want {(state, subtype, message)}")
        return out[:LIMIT]

    def check_shared_agree(self, held: Iterable[dict[str, tuple[int, int]]]) -> list[str]:
        """Every node holds one value per shared mailbox."""
        values: dict[str, set[tuple[int, int]]] = {}
        for h in held:
            for box, v in h.items():
                values.setdefault(box, set()).add(v)
        return [f"shared mailbox {b} differs across nodes: {sorted(v)}"
                for b, v in sorted(values.items()) if len(v) > 1]  # fmt: skip

    def counts(self) -> dict[str, int]:
        return {
            "devices": len(self.slots()),
            "mailboxes": len(self.mwi_owned) + len(self.mwi_shared),
            "presentities": len(self.presence),
        }
