"""AMI messages: the frozen, validated blocks the codec (``codec.py``) reads and writes.

A block is ordered ``Key: Value`` headers; lookups are case-insensitive and the first match
wins, while every header is kept in order, duplicates included (``Output:`` lines of a
``Command``). Each message validates in its constructor, so an invalid one cannot exist.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final, TypeAlias

from ...errors import LocalProtocolError

__all__ = ["BANNER_RE", "Action", "AmiMessage", "Banner", "Event", "Headers", "Message", "Response"]

BANNER_RE: Final = re.compile(r"^.*Call Manager/(\S+)")

Headers: TypeAlias = tuple[tuple[str, str], ...]


def _check_text(what: str, text: str) -> None:
    if "\r" in text or "\n" in text:
        raise LocalProtocolError(f"AMI {what} {text[:60]!r} contains a line break")


def _to_headers(fields: Iterable[tuple[str, object]] | Mapping[str, object]) -> Headers:
    """Stringify header pairs; ``None`` values are left out (optional headers)."""
    items = fields.items() if isinstance(fields, Mapping) else fields
    return tuple((str(k), str(v)) for k, v in items if v is not None)


@dataclass(frozen=True, slots=True)
class Banner:
    """The greeting line, e.g. ``Asterisk Call Manager/13.0.0``."""

    text: str

    def __post_init__(self) -> None:
        _check_text("banner", self.text)
        if not BANNER_RE.match(self.text):
            raise LocalProtocolError(
                f"AMI banner {self.text[:80]!r} is not 'Asterisk Call Manager/X.Y.Z'"
            )

    @property
    def version(self) -> str:
        """The protocol version after the slash (``13.0.0``)."""
        match = BANNER_RE.match(self.text)
        assert match is not None  # checked in __post_init__
        return match.group(1)


@dataclass(frozen=True, slots=True)
class Message:
    """One block of ordered headers; lookups are case-insensitive, first match wins."""

    headers: Headers

    def __post_init__(self) -> None:
        if not self.headers:
            raise LocalProtocolError("an AMI message needs at least one header")
        for key, value in self.headers:
            if not key or ":" in key or key.strip() != key:
                raise LocalProtocolError(
                    f"AMI header name {key[:60]!r} is empty, has a ':' or surrounding blanks"
                )
            _check_text("header name", key)
            _check_text(f"value of {key}", value)

    def get(self, key: str, default: str | None = None) -> str | None:
        """The first value of ``key`` (any case), or ``default``."""
        low = key.lower()
        for k, v in self.headers:
            if k.lower() == low:
                return v
        return default

    def __getitem__(self, key: str) -> str:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None

    def get_all(self, key: str) -> list[str]:
        """Every value of ``key`` (any case), in order."""
        low = key.lower()
        return [v for k, v in self.headers if k.lower() == low]

    @property
    def action_id(self) -> str | None:
        """The ``ActionID`` header, if any."""
        return self.get("ActionID")


def _require(headers: Headers, key: str, kind: str) -> None:
    low = key.lower()
    if not any(k.lower() == low for k, _ in headers):
        raise LocalProtocolError(f"an AMI {kind} needs a {key!r} header")


@dataclass(frozen=True, slots=True)
class Action(Message):
    """A request; ``name`` is the first non-empty ``Action`` value (``""`` when none)."""

    @classmethod
    def of(
        cls,
        name: str,
        fields: Iterable[tuple[str, object]] | Mapping[str, object] = (),
        /,
        **kw: object,
    ) -> Action:
        """``Action.of("Setvar", Variable="X", Value="Y")``; ``None`` values are left out."""
        return cls((("Action", name), *_to_headers(fields), *_to_headers(kw)))

    @property
    def name(self) -> str:
        for value in self.get_all("Action"):
            if value.strip():
                return value.strip()
        return ""

    def with_action_id(self, action_id: str) -> Action:
        """A copy whose ``ActionID`` is ``action_id`` (replacing any present)."""
        kept = tuple((k, v) for k, v in self.headers if k.lower() != "actionid")
        return Action((kept[0], ("ActionID", action_id), *kept[1:]))


@dataclass(frozen=True, slots=True)
class Response(Message):
    """An answer to an action: ``Response: Success|Error|Goodbye|Follows``."""

    def __post_init__(self) -> None:
        Message.__post_init__(self)
        _require(self.headers, "Response", "response")

    @classmethod
    def of(
        cls,
        status: str,
        fields: Iterable[tuple[str, object]] | Mapping[str, object] = (),
        /,
        **kw: object,
    ) -> Response:
        return cls((("Response", status), *_to_headers(fields), *_to_headers(kw)))

    @property
    def status(self) -> str:
        return self["Response"]

    @property
    def ok(self) -> bool:
        """True unless the status is ``Error``."""
        return self.status.lower() != "error"

    @property
    def message(self) -> str:
        return self.get("Message") or ""

    @property
    def output(self) -> list[str]:
        """The ``Output`` lines of a ``Command`` (modern and legacy forms alike)."""
        return self.get_all("Output")

    @property
    def starts_list(self) -> bool:
        return (self.get("EventList") or "").lower() == "start"


@dataclass(frozen=True, slots=True)
class Event(Message):
    """An event (asynchronous, or an item of a list response)."""

    def __post_init__(self) -> None:
        Message.__post_init__(self)
        _require(self.headers, "Event", "event")

    @classmethod
    def of(
        cls,
        name: str,
        fields: Iterable[tuple[str, object]] | Mapping[str, object] = (),
        /,
        **kw: object,
    ) -> Event:
        return cls((("Event", name), *_to_headers(fields), *_to_headers(kw)))

    @property
    def name(self) -> str:
        return self["Event"]

    @property
    def completes_list(self) -> bool:
        return (self.get("EventList") or "").lower() == "complete"


AmiMessage: TypeAlias = Banner | Action | Response | Event
