"""The simulator's pbx_config AMI actions: ``DialplanExtensionAdd`` and
``DialplanExtensionRemove``, for hints (``Priority: hint``) as a real Asterisk answers them
(tests/test_ami_conformance_dialplan.py holds them to it). Other priorities are accepted and
not kept: the simulator has no dialplan applications.
"""

from __future__ import annotations

from ..links.ami.codec import Action, Response
from .dialplan import Hint
from .pbx import SimPbx
from .session import Session, answer, error

__all__ = ["DialplanActions"]


class DialplanActions:
    def __init__(self, pbx: SimPbx, *, system: bool = True) -> None:
        self.pbx = pbx
        #: both actions are of manager.conf's "system" write class
        self.system = system

    def add(self, session: Session, action: Action) -> Response:
        if not self.system:
            return error(action, "Permission denied")
        context = action.get("Context") or ""
        exten = action.get("Extension") or ""
        priority = (action.get("Priority") or "").lower()
        app = action.get("Application") or ""
        if not (context and exten and priority and app):
            return error(
                action,
                "Context, Extension, Priority, and Application must be defined"
                " for DialplanExtensionAdd.",
            )
        replace = (action.get("Replace") or "").lower() in ("yes", "true", "y", "t", "1", "on")
        if priority == "hint" and not self.pbx.add_hint(Hint(exten, context, app), replace=replace):
            return error(action, "That extension and priority already exist at that context")
        return answer(action, "Success", ("Message", "Added requested extension"))

    def remove(self, session: Session, action: Action) -> Response:
        if not self.system:
            return error(action, "Permission denied")
        context = action.get("Context") or ""
        exten = action.get("Extension") or ""
        priority = (action.get("Priority") or "").lower()
        if priority == "hint" and self.pbx.remove_hint(exten, context):
            return answer(
                action, "Success", ("Message", "Removed the requested priority from the extension")
            )
        return error(action, "Failed to remove requested extension")
