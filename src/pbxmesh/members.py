"""A member of the cluster as ``pbxmesh members`` shows it: a node of the mesh, or an
Asterisk of a res_corosync ring that a ring link sees. Its own module because both the node
(``node/membership.py``) and the links (``links/base.py``) speak of members, and the links
must not import the node."""

from __future__ import annotations

from dataclasses import dataclass, field

from .eid import EID

__all__ = ["MemberInfo"]


@dataclass(slots=True)
class MemberInfo:
    """A member as ``pbxmesh members`` shows it."""

    member_id: str
    name: str  # the pbxmesh node name (from its frames); the engine's name until then
    nodeid: int | None
    address: str | None
    eids: list[EID] = field(default_factory=list)
    host: str = ""  # the engine's name for the member's host (corosync nodelist name)
    joined_at: float = 0.0
    is_self: bool = False
    member: bool = True
    #: "pbxmesh" for a node of the mesh; "asterisk" for a server of a res_corosync ring that a
    #: ring link sees (it is not a member of the mesh's group)
    kind: str = "pbxmesh"
