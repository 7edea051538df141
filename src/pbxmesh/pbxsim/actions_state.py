"""The simulator's AMI actions on device state, hints, presence, variables and filters.

Each handler takes the session and the action and returns the answer (or None when it wrote a
list itself); :class:`~pbxmesh.pbxsim.server.SimServer` dispatches to them by name.
"""

from __future__ import annotations

import time

from ..links.ami.codec import Action, Response
from ..states import extension_state_text
from .pbx import SimPbx, ere_to_python
from .presence import escape_c, state_str
from .session import Session, answer, error, func_arg, list_item, write_list

__all__ = ["StateActions"]


class StateActions:
    """``Ping``, ``Getvar``/``Setvar``, ``Filter``, ``DeviceStateList``, ``ExtensionState``
    (and its list) and ``PresenceState`` (and its list) on one :class:`SimPbx`."""

    def __init__(self, pbx: SimPbx, *, system: bool = True) -> None:
        self.pbx = pbx
        #: whether the user has manager.conf's "system" write class (Action: Filter needs it)
        self.system = system

    def ping(self, session: Session, action: Action) -> Response:
        now = time.time()
        stamp = f"{int(now)}.{int((now % 1) * 1e6):06d}"
        return answer(action, "Success", ("Ping", "Pong"), ("Timestamp", stamp))

    def getvar(self, session: Session, action: Action) -> Response:
        variable = action.get("Variable") or ""
        if not variable:
            return error(action, "No variable specified")
        if action.get("Channel"):
            return error(action, "No such channel")
        value = ""
        if (device := func_arg(variable, "DEVICE_STATE")) is not None:
            value = self.pbx.device_state(device).name
        elif (args := func_arg(variable, "PRESENCE_STATE")) is not None:
            value = self.pbx.presence.read_function(args) if self.pbx.presence else ""
        elif (hint := func_arg(variable, "HINT")) is not None:
            exten, _, context = hint.split(",", 1)[0].partition("@")
            found, _ = self.pbx.extension_state(exten, context or "default")
            value = found.app.split(",", 1)[0] if found else ""
        elif not variable.endswith(")"):
            value = self.pbx.globals.get(variable, "")
        return answer(action, "Success", ("Variable", variable), ("Value", value))

    def filter(self, session: Session, action: Action) -> Response:
        if not self.system:
            return error(action, "Permission denied")
        if (action.get("Operation") or "").lower() != "add":
            return error(action, "Unknown operation")
        text = action.get("Filter") or ""
        exclude = text.startswith("!")
        body = text[1:] if exclude else text
        if not body:
            return error(
                action, "Filter was formatted incorrectly.  Check the syntax of the filter given."
            )
        pattern = ere_to_python(body)
        if pattern is None:
            return error(action, "Filter did not compile.  Check the syntax of the filter given.")
        session.filters.append((exclude, pattern))
        return answer(action, "Success", ("Message", "Success"))

    def setvar(self, session: Session, action: Action) -> Response:
        variable = action.get("Variable") or ""
        if not variable:
            return error(action, "No variable specified")
        if action.get("Channel"):
            return error(action, "No such channel")
        value = action.get("Value") or ""
        if (device := func_arg(variable, "DEVICE_STATE")) is not None:
            if not self.pbx.set_custom(device, value):
                return error(action, "Variable not set")
        elif (data := func_arg(variable, "PRESENCE_STATE")) is not None and self.pbx.presence:
            if not self.pbx.presence.write(data, value):
                return error(action, "Variable not set")
        elif variable.endswith(")"):
            return error(action, "Variable not set")
        else:
            self.pbx.globals[variable] = value
        return answer(action, "Success", ("Message", "Variable Set"))

    def device_state_list(self, session: Session, action: Action) -> None:
        items = [
            list_item(action, "DeviceStateChange", ("Device", device), ("State", state.name))
            for device, state in self.pbx.cache.items()
        ]
        write_list(
            session, action, "Device State Changes will follow", "DeviceStateListComplete", items
        )

    def status_fields(
        self, hint_app: str, exten: str, context: str, value: int
    ) -> tuple[tuple[str, object], ...]:
        return (
            ("Exten", exten),
            ("Context", context),
            ("Hint", hint_app),
            ("Status", value),
            ("StatusText", extension_state_text(value)),
        )

    def extension_state_list(self, session: Session, action: Action) -> Response | None:
        if not self.pbx.hints:
            return error(action, "No dialplan hints are available")
        items = []
        for hint in self.pbx.hints:
            _, value = self.pbx.extension_state(hint.exten, hint.context)
            fields = self.status_fields(hint.app, hint.exten, hint.context, value)
            items.append(list_item(action, "ExtensionStatus", *fields))
        write_list(
            session, action, "Extension Statuses will follow", "ExtensionStateListComplete", items
        )
        return None

    def extension_state(self, session: Session, action: Action) -> Response:
        exten = action.get("Exten") or ""
        if not exten:
            return error(action, "Extension not specified")
        context = action.get("Context") or "default"
        hint, value = self.pbx.extension_state(exten, context)
        fields = self.status_fields(hint.app if hint else "", exten, context, value)
        return answer(action, "Success", ("Message", "Extension Status"), *fields)

    def presence_state(self, session: Session, action: Action) -> Response:
        provider = action.get("Provider") or ""
        if not provider:
            return error(action, "No provider specified")
        presence = self.pbx.presence
        state, subtype, message = presence.read(provider) if presence else (-1, "", "")
        if state < 0:
            return error(action, f"Invalid provider {provider} or provider in invalid state")
        fields: list[tuple[str, object]] = [
            ("Message", "Presence State"),
            ("State", state_str(state)),
        ]
        if subtype:
            fields.append(("Subtype", subtype))
        if message:  # Asterisk repeats it: a deprecated second Message, then PresenceMessage
            fields += [("Message", message), ("PresenceMessage", message)]
        return answer(action, "Success", *fields)

    def presence_state_list(self, session: Session, action: Action) -> None:
        assert self.pbx.presence is not None
        items = [
            list_item(
                action,
                "PresenceStateChange",
                ("Presentity", provider),
                ("Status", state_str(state)),
                ("Subtype", escape_c(subtype)),
                ("Message", escape_c(message)),
            )
            for provider, (state, subtype, message) in self.pbx.presence.cache.items()
        ]
        write_list(
            session,
            action,
            "Presence State Changes will follow",
            "PresenceStateListComplete",
            items,
        )
