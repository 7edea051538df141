"""The state of the simulated PBX: custom device states, hints, external MWI, and its AstDB.

Theory of operation
-------------------
This models the handful of Asterisk modules pbxmesh talks to, with the rules of the reference:

* **func_devstate** — ``Custom:NAME`` states are stored verbatim in AstDB family
  ``CustomDevstate`` (key ``NAME``) and published cachable under ``Custom:NAME`` cut to 79
  characters. At start every stored entry is republished, the key taken after its last ``/``
  as func_devstate does (so a name containing ``/`` comes back shortened after a restart).
* **device state cache** — one slot per device for the local server and one per remote EID
  (filled by the SIP subset, :mod:`pbxmesh.pbxsim.sip`), folded with Asterisk's aggregation.
  A publish equal to that EID's cached value is dropped (no slot reads UNKNOWN, so a first
  UNKNOWN is dropped too); a change of the aggregate raises ``DeviceStateChange``. Remote slots
  are never cleared, as in Asterisk. Reading a device not in the cache asks its provider: ``Custom``
  reads AstDB (missing → UNKNOWN); a name with ``/`` is ``Tech/resource`` and, with no channel
  driver here, INVALID; any other provider is INVALID.
* **hints** — after every device change, each hint listing that device is recomputed
  (aggregate of its devices → extension state). ``ExtensionStatus`` is raised when the value
  changes, and again on every update while the value has the RINGING bit.
* **res_mwi_external** — mailboxes in AstDB family ``mwi_external/mailboxes`` as JSON objects
  with string counts. Each update raises ``MessageWaiting`` (no de-duplication); ``Waiting``
  comes from this provider (1 when the stored new count is above 0). A delete of a mailbox with
  non-zero counts raises a 0/0 ``MessageWaiting`` first.
* **func_presencestate, res_manager_presencestate** — ``presence.py`` beside this file (AstDB
  family ``CustomPresence``), unless the PBX is made with ``presence=False`` (neither loaded).

AstDB lives in ``<state-dir>/astdb.json`` (rewritten atomically after every change). The model
is synchronous and I/O free apart from that file; it reports events to ``listeners``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Final

from ..errors import ConfigError
from ..links.ami.codec import Event
from ..states import (
    DeviceState,
    ExtensionState,
    aggregate,
    device_to_extension_state,
    hint_devices,
)
from .dialplan import (
    Hint,
    format_devstate_list,
    format_show_hint,
    format_show_hints,
)
from .presence import PRESENCE_FAMILY, SimPresence

__all__ = ["MAX_DEVICE_NAME", "SimPbx", "devstate_val", "ere_to_python"]

#: POSIX character classes inside bracket expressions, as Python character-set ranges.
_POSIX_CLASSES: Final = {
    "alnum": "0-9A-Za-z",
    "alpha": "A-Za-z",
    "blank": " \\t",
    "cntrl": "\\x00-\\x1f\\x7f",
    "digit": "0-9",
    "graph": "!-~",
    "lower": "a-z",
    "print": " -~",
    "punct": "!-/:-@\\[-`{-~",
    "space": " \\t\\n\\r\\f\\v",
    "upper": "A-Z",
    "xdigit": "0-9A-Fa-f",
}
_POSIX_CLASS: Final = re.compile(r"\[:([a-z]+):\]")


def ere_to_python(ere: str) -> re.Pattern[str] | None:
    """A POSIX extended regular expression as a Python pattern (None if it does not compile).

    The subset people write for mailbox ids: character classes such as ``[[:digit:]]`` become
    ranges; everything else in ERE means the same in Python for these inputs.
    """

    def cls(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in _POSIX_CLASSES:
            raise ValueError(name)
        return _POSIX_CLASSES[name]

    try:
        return re.compile(_POSIX_CLASS.sub(cls, ere))
    except (re.error, ValueError):
        return None


#: ast_devstate_changed formats names into an 80-byte buffer.
MAX_DEVICE_NAME: Final = 79
CUSTOM_FAMILY: Final = "CustomDevstate"
MWI_FAMILY: Final = "mwi_external/mailboxes"
_SETTABLE: Final = {s.name: s for s in DeviceState if s is not DeviceState.UNKNOWN}
_RINGING_BIT: Final = 8

_DEVSTATE_CHANGE_USAGE: Final = (
    "Usage: devstate change <device> <state>\n"
    "       Change a custom device to a new state.\n"
    "       The possible values for the state are:\n"
    "UNKNOWN | NOT_INUSE | INUSE | BUSY | INVALID | UNAVAILABLE | RINGING\n"
    "RINGINUSE | ONHOLD\n"
    "\n"
    "Examples:\n"
    "       devstate change Custom:mystate1 INUSE\n"
    "       devstate change Custom:mystate1 NOT_INUSE\n"
    "       \n"
)
_DEVSTATE_LIST_USAGE: Final = (
    "Usage: devstate list\n"
    "       List all custom device states that have been set by using\n"
    "       the DEVICE_STATE dialplan function.\n"
)
_SHOW_HINT_USAGE: Final = "Usage: core show hint <exten>\n       List registered hint.\n"

Listener = Callable[[Event], None]


def devstate_val(text: str) -> DeviceState:
    """``ast_devstate_val``: one of NOT_INUSE…ONHOLD (any case), anything else UNKNOWN."""
    return _SETTABLE.get(text.upper(), DeviceState.UNKNOWN)


def _strtoul32(text: str) -> int | None:
    """``sscanf("%u")``: blanks, optional sign, digits (rest ignored), wrapped to 32 bits."""
    match = re.match(r"\s*([+-]?)(\d+)", text)
    if match is None:
        return None
    value = int(match.group(2))
    if match.group(1) == "-":
        value = -value
    return value % 2**32


class SimPbx:
    """The simulated PBX's state; see the module docstring."""

    def __init__(
        self,
        hints: list[Hint],
        state_dir: Path | None = None,
        voicemail: dict[str, tuple[int, int]] | None = None,
        presence: bool = True,
    ) -> None:
        self.hints = hints
        #: app_voicemail's mailboxes (``box@context`` -> new, old) when the PBX runs it; then
        #: res_mwi_external cannot load (both would be the voicemail provider), so MWIUpdate,
        #: MWIGet and MWIDelete do not exist, as on a real Asterisk
        self.voicemail = dict(voicemail) if voicemail is not None else None
        self._db_path = state_dir / "astdb.json" if state_dir is not None else None
        self.custom_db: dict[str, str] = {}
        self.mwi_db: dict[str, tuple[int, int]] = {}
        self.cache: dict[str, DeviceState] = {}  # the aggregate, as DeviceStateChange shows it
        self.local: dict[str, DeviceState] = {}  # this server's own slot
        self.remote: dict[str, dict[str, DeviceState]] = {}  # device -> EID text -> slot
        #: called with (device, state) for every change of a local slot (SIP outbound-publish)
        self.local_device_listeners: list[Callable[[str, DeviceState], None]] = []
        #: called with (mailbox, new, old) for every local mailbox update
        self.local_mwi_listeners: list[Callable[[str, int, int], None]] = []
        self.globals: dict[str, str] = {}
        self.listeners: list[Listener] = []
        self._hint_values: dict[str, int] = {}
        #: ``exten@context`` of the hints added over AMI (gone at ``dialplan reload``)
        self.added: set[str] = set()
        self._dirty = False
        # Which hints list a device, so a change touches only its own hints.
        self._hints_of: dict[str, list[Hint]] = {}
        for hint in hints:
            for device in dict.fromkeys(hint_devices(hint.app)):
                self._hints_of.setdefault(device, []).append(hint)
        #: func_presencestate and res_manager_presencestate, when loaded
        self.presence = SimPresence(hints, self._emit, self._save) if presence else None
        self._load()
        if self.presence is not None:
            self.presence.start()
        for key, value in sorted(self.custom_db.items()):
            self._publish_device("Custom:" + key.rsplit("/", 1)[-1], devstate_val(value))
        for hint in self.hints:
            self._hint_values[hint.key] = self.hint_state(hint)

    # -- persistence ---------------------------------------------------------------------------

    def _load(self) -> None:
        if self._db_path is None or not self._db_path.exists():
            return
        try:
            data = json.loads(self._db_path.read_text(encoding="utf-8"))
            self.custom_db = {str(k): str(v) for k, v in data.get(CUSTOM_FAMILY, {}).items()}
            for box, obj in data.get(MWI_FAMILY, {}).items():
                new = _strtoul32(str(obj.get("msgs_new", "0"))) or 0
                old = _strtoul32(str(obj.get("msgs_old", "0"))) or 0
                self.mwi_db[str(box)] = (new, old)
            if self.presence is not None:
                found = data.get(PRESENCE_FAMILY, {})
                self.presence.db = {str(k): str(v) for k, v in found.items()}
        except (OSError, ValueError, AttributeError) as exc:
            raise ConfigError(
                f"simulator state file {self._db_path} is unreadable ({exc}); fix or delete it"
            ) from exc

    def _save(self) -> None:
        """Mark the state file stale; :meth:`flush` writes it (the server does so every
        ``FLUSH_INTERVAL`` and at close). Rewriting the whole file on every write made each
        Setvar cost O(devices), unlike Asterisk's AstDB, which writes one key."""
        self._dirty = True

    def flush(self) -> None:
        """Write the AstDB-like state file if anything changed since the last write."""
        if self._db_path is None or not self._dirty:
            return
        self._dirty = False
        data = {
            CUSTOM_FAMILY: self.custom_db,
            MWI_FAMILY: {
                box: {"msgs_new": str(new), "msgs_old": str(old)}
                for box, (new, old) in sorted(self.mwi_db.items())
            },
            PRESENCE_FAMILY: self.presence.db if self.presence is not None else {},
        }
        self._db_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._db_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, self._db_path)

    # -- device states -------------------------------------------------------------------------

    def _emit(self, event: Event) -> None:
        for listener in list(self.listeners):
            listener(event)

    def _provider_state(self, device: str) -> DeviceState:
        if "/" in device:
            return DeviceState.INVALID  # Tech/resource: no channel driver in the simulator
        provider, sep, data = device.partition(":")
        if not sep or provider.lower() != "custom":
            return DeviceState.INVALID
        return devstate_val(self.custom_db.get(data, ""))

    def device_state(self, device: str) -> DeviceState:
        """``ast_device_state``: the cached aggregate unless UNKNOWN, else the provider."""
        cached = self.cache.get(device, DeviceState.UNKNOWN)
        if cached is not DeviceState.UNKNOWN:
            return cached
        return self._provider_state(device)

    def hint_state(self, hint: Hint) -> int:
        states = (self.device_state(d) for d in hint_devices(hint.app))
        return int(device_to_extension_state(aggregate(states)))

    def _publish_device(self, device: str, state: DeviceState) -> None:
        """A change of the local slot (``ast_publish_device_state``)."""
        device = device[:MAX_DEVICE_NAME]
        if self.local.get(device, DeviceState.UNKNOWN) is state:
            return
        self.local[device] = state
        for listener in list(self.local_device_listeners):
            listener(device, state)
        self._aggregate(device)

    def publish_remote_device(self, device: str, state: DeviceState, eid: str) -> None:
        """Another server's slot (``ast_publish_device_state_full`` with its EID)."""
        device = device[:MAX_DEVICE_NAME]
        slots = self.remote.setdefault(device, {})
        if slots.get(eid, DeviceState.UNKNOWN) is state:
            return
        slots[eid] = state
        self._aggregate(device)

    def publish_remote_mwi(self, mailbox: str, new: int, old: int) -> None:
        """Another server's mailbox counts: Asterisk's MWI cache raises ``MessageWaiting``;
        res_mwi_external's own store (MWIGet, MailboxCount) does not see them."""
        self._message_waiting(mailbox, new, old)

    def _aggregate(self, device: str) -> None:
        states = [self.local[device]] if device in self.local else []
        states.extend(self.remote.get(device, {}).values())
        state = aggregate(states)
        if self.cache.get(device) is state:
            return
        self.cache[device] = state
        self._emit(
            Event.of("DeviceStateChange", Privilege="call,all", Device=device, State=state.name)
        )
        for hint in self._hints_of.get(device, ()):
            value = self.hint_state(hint)
            if value == self._hint_values.get(hint.key) and not value & _RINGING_BIT:
                continue
            self._hint_values[hint.key] = value
            self._emit(
                Event.of(
                    "ExtensionStatus",
                    Privilege="call,all",
                    Exten=hint.exten,
                    Context=hint.context,
                    Hint=hint.app,
                    Status=value,
                    StatusText=ExtensionState(value).text,
                )
            )

    def set_custom(self, device: str, value: str) -> bool:
        """``Set(DEVICE_STATE(device)=value)``; False where func_devstate returns an error."""
        if device[:7].lower() != "custom:" or not device[7:]:
            return False
        state = devstate_val(value)
        if state is DeviceState.UNKNOWN:
            return False
        self.custom_db[device[7:]] = value
        self._save()
        self._publish_device("Custom:" + device[7:], state)
        return True

    def extension_state(self, exten: str, context: str) -> tuple[Hint | None, int]:
        for hint in self.hints:
            if hint.exten == exten and hint.context == context:
                return hint, self._hint_values.get(hint.key, self.hint_state(hint))
        return None, -1

    # -- hints added over AMI (pbx_config's DialplanExtensionAdd/Remove) ------------------------

    def add_hint(self, hint: Hint, *, replace: bool = False) -> bool:
        """Add a hint at run time; False when the extension has one and ``replace`` is not set
        (Asterisk then refuses). ``dialplan reload`` drops it again."""
        old, _ = self.extension_state(hint.exten, hint.context)
        if old is not None:
            if not replace:
                return False
            self.remove_hint(hint.exten, hint.context)
        self.hints.append(hint)
        self.added.add(hint.key)
        for device in dict.fromkeys(hint_devices(hint.app)):
            self._hints_of.setdefault(device, []).append(hint)
        self._hint_values[hint.key] = self.hint_state(hint)
        if self.presence is not None:
            self.presence.add_hint(hint)
        return True

    def remove_hint(self, exten: str, context: str) -> bool:
        hint, _ = self.extension_state(exten, context)
        if hint is None:
            return False
        self.hints.remove(hint)
        self.added.discard(hint.key)
        for hints in self._hints_of.values():
            if hint in hints:
                hints.remove(hint)
        self._hint_values.pop(hint.key, None)
        if self.presence is not None:
            self.presence.remove_hint(hint)
        return True

    def reload_dialplan(self) -> None:
        """``dialplan reload``: the files' dialplan again, without what AMI added."""
        for hint in [h for h in self.hints if h.key in self.added]:
            self.remove_hint(hint.exten, hint.context)

    def hint_rows(self) -> list[tuple[Hint, str]]:
        return [(h, ExtensionState(self._hint_values[h.key]).text) for h in self.hints]

    def hint_presence(self) -> dict[str, str]:
        """Each hint's presence as ``core show hints`` prints it (``exten@context`` -> text)."""
        if self.presence is None:
            return {}
        return {h.key: self.presence.hint_text(h) for h in self.hints}

    # -- MWI (res_mwi_external) ----------------------------------------------------------------

    @property
    def _provider(self) -> dict[str, tuple[int, int]]:
        """The voicemail provider's counts: app_voicemail's, else res_mwi_external's."""
        return self.voicemail if self.voicemail is not None else self.mwi_db

    def has_voicemail(self, mailboxes: str) -> bool:
        boxes = [b for b in re.split(r"[,&]", mailboxes) if b]
        return any(self._provider.get(b, (0, 0))[0] > 0 for b in boxes)

    def inbox_count(self, mailboxes: str) -> tuple[int, int]:
        new = old = 0
        for box in re.split(r"[, ]", mailboxes):
            n, o = self._provider.get(box, (0, 0)) if box else (0, 0)
            new, old = new + n, old + o
        return new, old

    # -- app_voicemail ---------------------------------------------------------------------------

    def leave_message(self, mailbox: str, new: int = 1, old: int = 0, notify: bool = True) -> None:
        """A caller left a message: the counts go up by ``new`` and ``old``, and app_voicemail
        publishes them (AMI ``MessageWaiting``). ``notify=False`` is a message file put in the
        spool by something else, which Asterisk notices only at ``VoicemailRefresh``."""
        if self.voicemail is None or mailbox not in self.voicemail:
            raise ConfigError(f"no app_voicemail mailbox {mailbox!r} on this simulator")
        n, o = self.voicemail[mailbox]
        self.voicemail[mailbox] = (n + new, o + old)
        if notify:
            self._message_waiting(mailbox, *self.voicemail[mailbox])

    def voicemail_refresh(self, context: str | None, mailbox: str | None) -> None:
        """``VoicemailRefresh``: app_voicemail publishes the counts of the matching mailboxes."""
        for box, (new, old) in sorted((self.voicemail or {}).items()):
            number, _, ctx = box.partition("@")
            if (context is None or ctx == context) and (mailbox is None or number == mailbox):
                self._message_waiting(box, new, old)

    def mwi_match(self, selector: str) -> list[str]:
        """Mailbox ids for an exact id or ``/regex/`` (POSIX ERE, as Asterisk's regcomp reads it);
        ValueError for a bad wrapper. A regex that does not compile matches nothing, as in
        Asterisk (its answer is an empty list, not an error)."""
        if not selector.startswith("/"):
            return [selector] if selector in self.mwi_db else []
        if len(selector) < 2 or not selector.endswith("/"):
            raise ValueError(selector)
        pattern = ere_to_python(selector[1:-1])
        if pattern is None:
            return []
        return [box for box in sorted(self.mwi_db) if pattern.search(box)]

    def mwi_update(self, mailbox: str, new: int, old: int) -> None:
        self.mwi_db[mailbox] = (new, old)
        self._save()
        for listener in list(self.local_mwi_listeners):
            listener(mailbox, new, old)
        self._message_waiting(mailbox, new, old)

    def mwi_delete(self, selector: str) -> None:
        for box in self.mwi_match(selector):
            new, old = self.mwi_db.pop(box)
            self._save()
            if new or old:
                self._message_waiting(box, 0, 0)

    def _message_waiting(self, mailbox: str, new: int, old: int) -> None:
        self._emit(
            Event.of(
                "MessageWaiting",
                Privilege="call,all",
                Mailbox=mailbox,
                Waiting=int(self.has_voicemail(mailbox)),
                New=new,
                Old=old,
            )
        )

    # -- CLI -----------------------------------------------------------------------------------

    def command(self, line: str) -> tuple[bool, str]:
        """Run a CLI command; (success, printed text)."""
        args = line.split()
        low = [a.lower() for a in args]
        if low[:3] == ["core", "show", "hints"] and len(args) == 3:
            return True, format_show_hints(self.hint_rows(), self.hint_presence())
        if low[:3] == ["core", "show", "hint"]:
            if len(args) < 4:
                return False, _SHOW_HINT_USAGE
            return True, format_show_hint(self.hint_rows(), args[3], self.hint_presence())
        if low == ["dialplan", "reload"]:
            self.reload_dialplan()
            return True, "Dialplan reloaded.\n"
        if low[:2] == ["devstate", "list"]:
            if len(args) != 2:
                return False, _DEVSTATE_LIST_USAGE
            return True, format_devstate_list(sorted(self.custom_db.items()))
        if low[:2] == ["devstate", "change"]:
            return self._cli_devstate_change(args)
        return False, (
            f"No such command '{line.strip()}' "
            f"(type 'core show help {line.strip()}' for other possible commands)\n"
        )

    def _cli_devstate_change(self, args: list[str]) -> tuple[bool, str]:
        if len(args) != 4:
            return False, _DEVSTATE_CHANGE_USAGE
        dev, value = args[2], args[3]
        if dev[:7].lower() != "custom:":
            text = "The devstate command can only be used to set 'Custom:' device state!\n"
            return False, text + f"Command '{' '.join(args)}' failed.\n"
        if not dev[7:] or devstate_val(value) is DeviceState.UNKNOWN:
            return False, _DEVSTATE_CHANGE_USAGE
        text = f"Changing {dev[7:]} to {value}\n"
        self.set_custom(dev, value)
        return True, text

    @staticmethod
    def parse_count(text: str | None) -> int | None:
        """An MWIUpdate count: absent → 0, else ``%u`` parsing (None when invalid)."""
        if text is None or text == "":
            return 0
        return _strtoul32(text)
