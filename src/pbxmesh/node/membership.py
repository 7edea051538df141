"""Membership bookkeeping: who is in the view, and which member speaks for which origin.

Theory of operation
-------------------
The transport reports views of *members* (its own ids); frames carry *origins* (EIDs). The
node learns which member speaks for an origin from the frames it receives
(:meth:`Membership.learn`). When a view no longer holds an origin's *current* member, the
origin is gone (left, failed, or across a partition) and :meth:`Membership.apply_view` names
it so the node drops its slots. A restarted node (same EID, new member) is not dropped by the
late leave of its previous incarnation, because only the current member counts.
"""

from __future__ import annotations

from ..eid import EID
from ..members import MemberInfo
from ..transport.base import Member, MembershipChange

__all__ = ["MemberInfo", "Membership"]


class Membership:
    """The current view, the member behind each origin and each origin's node name."""

    def __init__(self, eid: EID, name: str) -> None:
        self.eid = eid
        self.name = name
        self.members: dict[str, MemberInfo] = {}
        self.view = 0
        self.quorate = True
        self._eid_member: dict[EID, str] = {}
        self._names: dict[EID, str] = {}
        self._seen: set[EID] = set()

    def knows(self, origin: EID) -> bool:
        """True if ``origin`` was ever heard from as a pbxmesh node (even if gone since: a
        bridge cut off from the mesh must never be taken for one of its ring's Asterisks)."""
        return origin in self._seen

    def learn(self, sender: str, origin: EID, name: str) -> bool:
        """A frame from ``origin`` came from member ``sender``; True if a member gained its
        first origin (the members view changed)."""
        previous = self._eid_member.get(origin)
        self._eid_member[origin] = sender
        self._seen.add(origin)
        if name:
            self._names[origin] = name
        info = self.members.get(sender)
        if info is not None and origin not in info.eids:
            info.eids.append(origin)
            if name:
                info.name = name
            return previous is None
        return False

    def apply_view(self, change: MembershipChange, self_id: str, now: float) -> list[EID]:
        """Take a new view; the origins whose current member is no longer in it."""
        self.view = change.view
        self.quorate = change.quorate
        current = {m.member_id for m in change.members}
        for member_id in list(self.members):
            if member_id not in current:
                del self.members[member_id]
        for m in change.members:
            if m.member_id not in self.members:
                self.members[m.member_id] = _member_info(m, now, m.member_id == self_id)
        own = self.members.get(self_id)
        if own is not None and self.eid not in own.eids:
            own.eids.append(self.eid)
            own.name = self.name
        return [o for o, member_id in self._eid_member.items() if member_id not in current]

    def forget(self, origin: EID) -> None:
        """The origin was dropped: it speaks through no member now."""
        self._eid_member.pop(origin, None)

    def name_of(self, origin: EID) -> str:
        return self._names.get(origin, "")


def _member_info(m: Member, now: float, is_self: bool) -> MemberInfo:
    return MemberInfo(
        member_id=m.member_id,
        name=m.name,
        nodeid=m.nodeid,
        address=m.address,
        host=m.name,
        joined_at=now,
        is_self=is_self,
    )
