"""Presence over AMI: what the AMI link reads and writes for ``CustomPresence:`` presentities.

Theory of operation
-------------------
Asterisk's side (``func_presencestate`` + ``res_manager_presencestate``, reference
``presence.md``):

* **Local → cluster.** Every presence change raises ``PresenceStateChange`` (``Presentity``,
  ``Status``, ``Subtype``, ``Message``), and ``PresenceStateList`` lists the cached ones as the
  same events; in both, subtype and message are *C-escaped* (``ast_escape_c``: ``"`` arrives as
  ``\\"``, ``\\`` as ``\\\\``, a tab as ``\\t``, ...). :func:`unescape_c` undoes it; without that a
  quote would gain a backslash at every hop between servers.
* **Cluster → local.** :func:`setvar_fields` writes ``Setvar PRESENCE_STATE(CustomPresence:NAME)``
  with the value ``state,SUBTYPE,MESSAGE,e``: always with the ``e`` option, so subtype and
  message travel base64-encoded and a comma in a message is not a field separator. (Without
  ``e``, ``available,,in a meeting, back soon`` is refused, and ``away,,lunch, see you`` is
  taken with " see you" as its options: the "e" in it base64-decodes "lunch" into binary.)
* **No echo.** Each Setvar raises exactly one ``PresenceStateChange``. :class:`PresenceMirror`
  remembers every value it wrote per presentity and swallows the event that carries it back;
  any other value is a local change. At a resync, a listed value equal to the cluster's remote
  value for that presentity is our own copy, not a local assertion.

Which presentities are shared follows the link's include/exclude globs, matched against the
whole name (``CustomPresence:alice``). Only ``CustomPresence:`` can be written in Asterisk,
so no other provider is shared.

The class is I/O-free except for the AMI client handed to its coroutines.
"""

from __future__ import annotations

import base64
import fnmatch
import logging
import re
from collections.abc import Callable
from typing import Final

from ...errors import AmiActionError, StateError
from ...presence import PresenceState, check_presentity, parse_presence
from .client import AmiClient
from .codec import Event
from .echoes import Echoes

__all__ = ["EVENT", "PresenceMirror", "PresenceValue", "setvar_fields", "unescape_c"]

log = logging.getLogger(__name__)

#: the asynchronous event the link reads for presence
EVENT: Final = "PresenceStateChange"
_UNKNOWN_COMMAND: Final = "invalid/unknown command"

PresenceValue = tuple[PresenceState, str, str]
#: reports one local presence to the node: (presentity, state, subtype, message)
Report = Callable[[str, PresenceState, str, str], None]

# ast_escape_c's table, reversed: \a \b \f \n \r \t \v \\ \' \" \?
_UNESCAPE: Final = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "\\": "\\",
    "'": "'",
    '"': '"',
    "?": "?",
}
_ESCAPED: Final = re.compile(r"\\(.)", re.S)


def unescape_c(text: str) -> str:
    """Undo ``ast_escape_c`` (what ``PresenceStateChange`` does to subtype and message).

    A backslash before any other character is kept as it is (Asterisk never writes one).
    """
    if "\\" not in text:
        return text
    return _ESCAPED.sub(lambda m: _UNESCAPE.get(m.group(1), m.group(0)), text)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def setvar_fields(
    presentity: str, state: PresenceState, subtype: str, message: str
) -> dict[str, str]:
    """The ``Setvar`` headers that set a presence with the ``e`` option (base64 fields)."""
    return {
        "Variable": f"PRESENCE_STATE({presentity})",
        "Value": f"{state.text},{_b64(subtype)},{_b64(message)},e",
    }


class PresenceMirror:
    """The AMI link's presence: selection, the queue of remote writes, and echo memory."""

    def __init__(self, include: tuple[str, ...], exclude: tuple[str, ...], enabled: bool) -> None:
        self.include = include
        self.exclude = exclude
        #: share presence at all ([asterisk] presence); cleared while Asterisk lacks the modules
        self.enabled = enabled
        #: Asterisk has res_manager_presencestate (read at every resync)
        self.available = True
        #: remote values waiting to be written, newest per presentity
        self.dirty: dict[str, PresenceValue] = {}
        self.echo: Echoes[PresenceValue] = Echoes()
        self._warned: set[str] = set()
        #: events that were our own writes coming back
        self.echoes = 0
        #: local changes reported to the node
        self.published = 0

    # -- selection -----------------------------------------------------------------------------
    def shares(self, presentity: str) -> bool:
        return (
            self.enabled
            and self.available
            and any(fnmatch.fnmatchcase(presentity, p) for p in self.include)
            and not any(fnmatch.fnmatchcase(presentity, p) for p in self.exclude)
        )

    # -- cluster → local -----------------------------------------------------------------------
    def remote(self, presentity: str, value: PresenceValue) -> bool:
        """Queue a remote value; True when it is to be written."""
        if not self.shares(presentity):
            return False
        self.dirty[presentity] = value
        return True

    async def write(self, client: AmiClient, presentity: str, value: PresenceValue) -> None:
        """Write one presence (``Setvar`` with ``e``); a refusal is logged, not raised."""
        self.echo.wrote(presentity, value)
        try:
            await client.action("Setvar", **setvar_fields(presentity, *value))
        except AmiActionError as exc:
            self.echo.failed(presentity, value)
            self._warn(
                "write:" + presentity,
                "cannot write presence %s on %s (%s): is func_presencestate loaded?",
                presentity,
                client.peer,
                exc.message,
            )

    # -- local → cluster -----------------------------------------------------------------------
    def parse(self, event: Event) -> tuple[str, PresenceValue] | None:
        """A ``PresenceStateChange`` (or list item) as ``(presentity, value)``; None when it
        is not shareable (another provider, a name or text the cluster cannot carry)."""
        raw = event.get("Presentity") or ""
        if not raw.lower().startswith("custompresence:"):
            return None  # another provider: nothing can write it elsewhere
        try:
            presentity = check_presentity(raw)
            state = parse_presence(event.get("Status") or "")
        except StateError as exc:
            self._warn("name:" + raw, "presence not shared: %s", exc)
            return None
        return presentity, (
            state,
            unescape_c(event.get("Subtype") or ""),
            unescape_c(event.get("Message") or ""),
        )

    def is_echo(self, presentity: str, value: PresenceValue) -> bool:
        """True when ``value`` is one this link wrote (and, if a change on Asterisk was
        overtaken by our writes meanwhile, that change is queued to be written back)."""
        echo, restore = self.echo.seen(presentity, value)
        if restore is not None:
            self.dirty.setdefault(presentity, restore)
        if echo:
            self.echoes += 1
        return echo

    def report(self, report: Report, presentity: str, value: PresenceValue) -> None:
        try:
            report(presentity, *value)
        except StateError as exc:  # a subtype or message too long or with control characters
            self._warn("text:" + presentity, "presence of %s not shared: %s", presentity, exc)
            return
        self.published += 1

    # -- resync --------------------------------------------------------------------------------
    async def resync_remote(
        self,
        client: AmiClient,
        remote: dict[str, PresenceValue],
        skip: Callable[[str], bool] = lambda presentity: False,
    ) -> dict[str, PresenceValue]:
        """Write every remote value (read from the node) but those ``skip`` names (changed on
        this Asterisk while the resync ran: newer than ``remote``); the ones written."""
        self.echo.clear()
        self.dirty.clear()
        self.available = True  # this Asterisk may differ from the last: read_local tells
        written: dict[str, PresenceValue] = {}
        for presentity, value in remote.items():
            if self.shares(presentity) and not skip(presentity):
                await self.write(client, presentity, value)
                written[presentity] = value
        return written

    async def read_local(self, client: AmiClient) -> tuple[Event, ...] | None:
        """``PresenceStateList``'s items; None (said once) without res_manager_presencestate."""
        try:
            listing = await client.list_action("PresenceStateList")
        except AmiActionError as exc:
            if _UNKNOWN_COMMAND not in exc.message.lower():
                raise
            self.available = False
            self._warn(
                "modules",
                "Asterisk at %s has no PresenceStateList: presence is not shared with this "
                "server. Load func_presencestate and res_manager_presencestate "
                "(docs/asterisk.md §1)",
                client.peer,
            )
            return None
        self.available = True
        return listing.items

    def _warn(self, key: str, text: str, *args: object) -> None:
        if key not in self._warned and len(self._warned) < 1000:
            self._warned.add(key)
            log.warning(text, *args)
