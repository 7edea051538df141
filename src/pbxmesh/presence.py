"""Presence: a person's availability (available, away, dnd, ...) with a subtype and a message,
as Asterisk's presence state API keeps it, and the cluster's last-writer-wins store of it.

Theory of operation
-------------------
Asterisk keeps presence per *presentity*, named by its provider (``CustomPresence:alice``;
``func_presencestate`` is the provider that can be written, in AstDB family
``CustomPresence``). A presentity has one state of seven (``enum ast_presence_state``:
not_set, unavailable, available, away, xa, chat, dnd), a free-text subtype and a free-text
message. Hints carry it (``exten => 1000,hint,PJSIP/1000,CustomPresence:alice``) and PJSIP
sends it to phones in PIDF NOTIFYs.

Presence is not aggregated across servers: it is set where a person's phone lives and shown
everywhere, so the cluster keeps it as it keeps MWI: one record per presentity, the last writer
by ``(version, origin)`` wins, and the record stays when its writer leaves (Asterisk keeps it in
AstDB too). :class:`PresenceStore` is that rule, pure and order-independent.

What the cluster carries is what Asterisk can show, checked at the edge (the CLI, the API, the
AMI link, and the frame decoder for what a peer sends):

* presentity names are ``CustomPresence:NAME`` (the prefix is spelt that way whatever case it
  was given in), at most 79 bytes: ``func_presencestate`` republishes its AstDB entries at start
  through an 80-byte buffer, so a longer name would come back cut after a restart. ``NAME``
  holds no blank, control character nor any of ``, ( ) & / |``: hints split providers at
  ``&`` and ``,``, the presence API takes ``/`` for a channel technology, and ``PRESENCE_STATE()``
  reads ``,`` ``(`` ``)`` as syntax;
* subtype and message are UTF-8, at most 255 bytes each (``func_presencestate`` decodes them
  into 256-byte buffers), with no control character (they travel in AMI lines and PIDF bodies).

This module is pure: no I/O, no time, no logging.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Final

from .eid import EID
from .errors import StateError

__all__ = [
    "MAX_PRESENCE_TEXT",
    "MAX_PRESENTITY_BYTES",
    "PROVIDER",
    "PresenceChange",
    "PresenceRecord",
    "PresenceState",
    "PresenceStore",
    "check_presence_text",
    "check_presentity",
    "parse_presence",
]

#: the one provider Asterisk lets anyone write (func_presencestate)
PROVIDER: Final = "CustomPresence:"
#: func_presencestate's start-up republish formats names into an 80-byte buffer
MAX_PRESENTITY_BYTES: Final = 79
#: func_presencestate decodes subtype and message into 256-byte buffers
MAX_PRESENCE_TEXT: Final = 255

_BAD_NAME: Final = re.compile(r"[\x00-\x20\x7f,()&/|]")
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")


class PresenceState(enum.IntEnum):
    """Asterisk's ``enum ast_presence_state`` (without INVALID, which nobody can set).

    WARNING: the numbers travel on the wire; never change them.
    """

    NOT_SET = 0
    UNAVAILABLE = 1
    AVAILABLE = 2
    AWAY = 3
    XA = 4
    CHAT = 5
    DND = 6

    @property
    def text(self) -> str:
        """Asterisk's own spelling (``ast_presence_state2str``): ``dnd``, ``not_set``..."""
        return self.name.lower()

    def __str__(self) -> str:
        return self.text


_BY_TEXT: Final = {s.text: s for s in PresenceState}


def parse_presence(text: str) -> PresenceState:
    """A state as Asterisk spells it, any case (``ast_presence_state_val``); anything else is
    an error listing the valid ones."""
    state = _BY_TEXT.get(text.strip().lower())
    if state is None:
        valid = ", ".join(_BY_TEXT)
        raise StateError(f"{text!r} is not a presence state; valid states are {valid}")
    return state


def _utf8_size(what: str, text: str) -> int:
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise StateError(f"{what} {text[:40]!r} is not valid UTF-8") from None


def check_presentity(name: str) -> str:
    """``CustomPresence:NAME`` in its canonical spelling; a bare ``NAME`` gets the prefix.

    Raises :class:`StateError` for a name Asterisk could not carry (see the module docstring).
    """
    provider, sep, rest = name.partition(":")
    if not sep:
        rest = name
    elif provider.lower() + ":" != PROVIDER.lower():
        raise StateError(
            f"presentity {name[:40]!r}: only {PROVIDER}NAME presence can be set in Asterisk "
            "(func_presencestate), so only it is shared"
        )
    if not rest:
        raise StateError(f"presentity {name!r} has an empty name; expected {PROVIDER}NAME")
    bad = _BAD_NAME.search(rest)
    if bad:
        raise StateError(
            f"presentity {name[:40]!r} contains {bad.group()!r}; a presence name holds no "
            "blank, control character, nor any of , ( ) & / |"
        )
    full = PROVIDER + rest
    size = _utf8_size("presentity", full)
    if size > MAX_PRESENTITY_BYTES:
        raise StateError(
            f"presentity {full[:30]!r}… is {size} bytes; Asterisk cuts presence names at "
            f"{MAX_PRESENTITY_BYTES} when it restarts, so use a shorter one"
        )
    return full


def check_presence_text(what: str, text: str) -> str:
    """A subtype or message Asterisk can carry unchanged; returns it."""
    if _CONTROL.search(text):
        raise StateError(f"presence {what} {text[:40]!r} contains a control character")
    size = _utf8_size(f"presence {what}", text)
    if size > MAX_PRESENCE_TEXT:
        raise StateError(
            f"presence {what} {text[:20]!r}… is {size} bytes; Asterisk keeps at most "
            f"{MAX_PRESENCE_TEXT}, so shorten it"
        )
    return text


@dataclass(frozen=True, slots=True)
class PresenceRecord:
    """The presence of one presentity, and who wrote it when."""

    presentity: str
    state: PresenceState
    subtype: str
    message: str
    version: int
    origin: EID

    @property
    def value(self) -> tuple[PresenceState, str, str]:
        return self.state, self.subtype, self.message


@dataclass(frozen=True, slots=True)
class PresenceChange:
    """The presence of a presentity changed (``previous`` None: first seen)."""

    record: PresenceRecord
    previous: PresenceRecord | None


class PresenceStore:
    """One record per presentity; the last writer by ``(version, origin)`` wins.

    Guard clauses first: an older write, or the same write again, leaves the record; a newer
    write of the same value takes the record (its writer is the last one) without a change.
    """

    __slots__ = ("_records",)

    def __init__(self) -> None:
        self._records: dict[str, PresenceRecord] = {}

    def apply(
        self,
        origin: EID,
        presentity: str,
        state: PresenceState,
        subtype: str,
        message: str,
        version: int,
    ) -> PresenceChange | None:
        """Apply a write; the change of value, if any."""
        current = self._records.get(presentity)
        if current is not None and (version, origin.raw) <= (current.version, current.origin.raw):
            return None  # older, or the same write again
        record = PresenceRecord(presentity, PresenceState(state), subtype, message, version, origin)
        self._records[presentity] = record
        if current is not None and current.value == record.value:
            return None
        return PresenceChange(record, current)

    def get(self, presentity: str) -> PresenceRecord | None:
        return self._records.get(presentity)

    def records(self) -> list[PresenceRecord]:
        return list(self._records.values())

    def written_by(self, origin: EID) -> list[PresenceRecord]:
        """The records whose last writer is ``origin`` (what that node re-announces)."""
        return [r for r in self._records.values() if r.origin == origin]

    def __len__(self) -> int:
        return len(self._records)

    def canonical(self) -> dict[str, PresenceRecord]:
        return dict(self._records)
