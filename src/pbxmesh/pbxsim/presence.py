"""Presence in the PBX simulator: func_presencestate, the presence cache, hints' presence.

Theory of operation
-------------------
The rules of Asterisk's ``funcs/func_presencestate.c``, ``main/presencestate.c``,
``res/res_manager_presencestate.c`` and the presence half of ``main/extension_state.c``, as
observed on the real build (reference ``presence.md``):

* **Writing** ``PRESENCE_STATE(CustomPresence:NAME)=state,subtype,message,options``: the prefix
  is matched in any case and ``NAME`` must not be empty; the value is cut at commas (``strsep``:
  a fourth comma's rest is ignored); the state is one of seven (any case), the options, when
  given, must contain ``e``. The value is stored verbatim in AstDB family ``CustomPresence``.
  With ``e``, subtype and message are base64-decoded (Asterisk's lenient decoder: it stops at
  ``=``, reads any other character as a digit, keeps at most 255 bytes, and a NUL ends the
  text) before the change is published; without it they are published as given. Writing
  ``not_set`` publishes what the provider then reads back from AstDB.
* **Publishing** puts ``(state, subtype, message)`` in the presence cache under the provider
  name exactly as written (case kept), and raises ``PresenceStateChange`` (subtype and message
  C-escaped, always present).
* **Reading** (``Action: PresenceState``, hints): the cache first, else the provider
  (``CustomPresence`` reads AstDB; an unknown name is ``not_set``; a label with ``/`` is a
  channel technology, none here; anything else is invalid). ``&`` joins several labels: the
  highest by Asterisk's order (not_set < available < unavailable < chat < away < xa < dnd) wins.
* **Hints** ``exten => X,hint,DEVICES,PRESENCE``: on every publish whose provider appears (any
  case) in a hint's presence part, the hint's presence is read again and, if state, subtype or
  message changed, ``PresenceStatus`` is raised (not escaped). ``core show hints`` shows the
  state (``not_set`` for a hint without presence).
* **At start** every AstDB entry is read back and published as ``CustomPresence:`` + the key
  after its last ``/``, cut to 79 bytes.

Bytes that are not UTF-8 (a message base64-decoded into binary) are kept as surrogate escapes,
so AMI sends them as the raw bytes Asterisk would.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final

from ..links.ami.codec import Event
from .dialplan import Hint

__all__ = ["PRESENCE_FAMILY", "SimPresence", "escape_c"]

PRESENCE_FAMILY: Final = "CustomPresence"
_PREFIX: Final = "custompresence:"
#: ast_presence_state2str; INVALID (-1) prints as ""
_STATES: Final = ("not_set", "unavailable", "available", "away", "xa", "chat", "dnd")
INVALID: Final = -1
#: ast_presence_state_helper's order: a higher rank wins when labels are joined with "&"
_RANK: Final = {-1: 0, 0: 1, 2: 2, 1: 3, 5: 4, 3: 5, 4: 6, 6: 7}
_B64: Final = {
    c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
}
_ESCAPES: Final = {
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
    "\\": "\\\\",
    "'": "\\'",
    '"': '\\"',
    "?": "\\?",
}
_ESCAPE_RE: Final = re.compile("[\a\b\f\n\r\t\v\\\\'\"?]")

Value = tuple[int, str, str]  # state, subtype, message
Emit = Callable[[Event], None]


def escape_c(text: str) -> str:
    """``ast_escape_c``: what ``PresenceStateChange`` does to subtype and message."""
    return _ESCAPE_RE.sub(lambda m: _ESCAPES[m.group()], text)


def state_val(text: str) -> int:
    """``ast_presence_state_val``: a state's number (any case), or INVALID."""
    low = text.lower()
    return _STATES.index(low) if low in _STATES else INVALID


def state_str(state: int) -> str:
    return _STATES[state] if 0 <= state < len(_STATES) else ""


def _c_text(raw: bytes) -> str:
    """Bytes as a C string (cut at the first NUL) in the codec's text form."""
    return raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def base64_decode(text: str, limit: int) -> str:
    """``ast_base64decode`` into a buffer of ``limit`` bytes, read back as a C string."""
    out = bytearray()
    byte = bits = 0
    for ch in text:
        if ch == "=" or len(out) >= limit:
            break
        byte = ((byte << 6) | _B64.get(ch, 0)) & 0xFFFFFF
        bits += 6
        if bits >= 8:
            bits -= 8
            out.append((byte >> bits) & 0xFF)
    return _c_text(bytes(out))


def parse_data(value: str) -> tuple[int, str, str, str] | None:
    """func_presencestate's ``parse_data``: (state, subtype, message, options), or None."""
    fields = value.split(",", 3)
    if not fields[0]:
        return None
    state = state_val(fields[0])
    if state == INVALID:
        return None
    subtype = fields[1] if len(fields) > 1 else ""
    message = fields[2] if len(fields) > 2 else ""
    options = fields[3].split(",", 1)[0] if len(fields) > 3 else ""
    if options and "e" not in options:
        return None
    return state, subtype, message, options


class SimPresence:
    """func_presencestate and res_manager_presencestate; see the module docstring."""

    def __init__(self, hints: list[Hint], emit: Emit, save: Callable[[], None]) -> None:
        self._emit = emit
        self._save = save
        #: AstDB family CustomPresence: key -> the value as written
        self.db: dict[str, str] = {}
        #: the presence cache: provider name as published -> value
        self.cache: dict[str, Value] = {}
        #: hints with a presence part, and the presence each last showed
        self._hints = [h for h in hints if "," in h.app]
        self.hint_values: dict[str, Value] = {}

    def start(self) -> None:
        """What loading func_presencestate does: republish every AstDB entry, then the hints
        take their first presence."""
        for key in list(self.db):
            name = ("CustomPresence:" + key.rsplit("/", 1)[-1]).encode("utf-8", "surrogateescape")
            value = self._provider(key.rsplit("/", 1)[-1])
            if value is not None:
                self._changed(_c_text(name[:79]), value)
        for hint in self._hints:
            self.hint_values[hint.key] = self.read(_presence_part(hint))

    def add_hint(self, hint: Hint) -> None:
        if "," in hint.app:
            self._hints.append(hint)
            self.hint_values[hint.key] = self.read(_presence_part(hint))

    def remove_hint(self, hint: Hint) -> None:
        if hint in self._hints:
            self._hints.remove(hint)
        self.hint_values.pop(hint.key, None)

    # -- the provider and the cache --------------------------------------------------------------
    def _provider(self, name: str) -> Value | None:
        """``custom_presence_callback``: AstDB's value decoded (None: invalid)."""
        raw = self.db.get(name)
        if raw is None:
            return (0, "", "")
        parsed = parse_data(raw)
        if parsed is None:
            return None
        state, subtype, message, options = parsed
        if "e" in options:
            return state, base64_decode(subtype, 1300), base64_decode(message, 1300)
        return state, subtype, message

    def read(self, sources: str, cached: bool = True) -> Value:
        """``ast_presence_state``: labels joined by ``&``, the highest rank wins."""
        best: Value = (INVALID, "", "")
        for label in sources.split("&"):
            value = self.cache.get(label) if cached else None
            if value is None:
                value = self._label(label)
            if _RANK[value[0]] > _RANK[best[0]]:
                best = value
        return best

    def _label(self, label: str) -> Value:
        if "/" in label:
            return (INVALID, "", "")  # Tech/resource: no channel driver here has presence
        provider, sep, name = label.partition(":")
        if not sep or provider.lower() != "custompresence":
            return (INVALID, "", "")
        return self._provider(name) or (INVALID, "", "")

    def _changed(self, provider: str, value: Value) -> None:
        """Publish a presence: the cache, ``PresenceStateChange``, and every hint it feeds."""
        self.cache[provider] = value
        state, subtype, message = value
        self._emit(
            Event.of(
                "PresenceStateChange",
                Privilege="call,all",
                Presentity=provider,
                Status=state_str(state),
                Subtype=escape_c(subtype),
                Message=escape_c(message),
            )
        )
        low = provider.lower()
        for hint in self._hints:
            sources = _presence_part(hint)
            if low not in sources.lower():
                continue
            now = self.read(sources)
            if now[0] == INVALID or now == self.hint_values.get(hint.key):
                continue
            self.hint_values[hint.key] = now
            self._emit(
                Event.of(
                    "PresenceStatus",
                    Privilege="call,all",
                    Exten=hint.exten,
                    Context=hint.context,
                    Hint=hint.app,
                    Status=state_str(now[0]),
                    Subtype=now[1],
                    Message=now[2],
                )
            )

    # -- PRESENCE_STATE() ------------------------------------------------------------------------
    def write(self, data: str, value: str) -> bool:
        """``Set(PRESENCE_STATE(data)=value)``; False where func_presencestate refuses."""
        if data[: len(_PREFIX)].lower() != _PREFIX or not data[len(_PREFIX) :]:
            return False
        parsed = parse_data(value)
        if parsed is None:
            return False
        self.db[data[len(_PREFIX) :]] = value
        self._save()
        state, subtype, message, options = parsed
        if state == 0:  # not_set: what the provider reads back is published
            published = self.read(data, cached=False)
            if published[0] != INVALID:
                self._changed(data, published)
            return True
        if "e" in options:
            subtype, message = base64_decode(subtype, 255), base64_decode(message, 255)
        self._changed(data, (state, subtype, message))
        return True

    def read_function(self, args: str) -> str:
        """``${PRESENCE_STATE(provider,field[,options])}`` (an error reads as "")."""
        fields = [f.strip() for f in args.split(",")]
        if len(fields) < 2 or not fields[0] or not fields[1]:
            return ""
        state, subtype, message = self.read(fields[0], cached=False)
        if state == INVALID:
            return ""
        encode = len(fields) > 2 and "e" in fields[2]
        field = fields[1].lower()
        if field == "subtype" and subtype:
            return _b64(subtype) if encode else subtype
        if field == "message" and message:
            return _b64(message) if encode else message
        if field == "value":
            return state_str(state)
        return ""

    def hint_text(self, hint: Hint) -> str:
        """The hint's presence as ``core show hints`` prints it."""
        return state_str(self.hint_values.get(hint.key, (0, "", ""))[0])


def _presence_part(hint: Hint) -> str:
    return hint.app.split(",", 1)[1] if "," in hint.app else ""


def _b64(text: str) -> str:
    import base64

    return base64.b64encode(text.encode("utf-8", "surrogateescape")).decode("ascii")
