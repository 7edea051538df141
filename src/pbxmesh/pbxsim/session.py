"""One AMI session of the PBX simulator, and the shapes of its answers.

A :class:`Session` is one logged-in (or not yet) TCP connection: its codec, its event classes
and filters (which events it reads, as manager.c decides) and the events waiting to be flushed
after the current action's answer. The functions lay answers out as Asterisk writes them:
``Response``, then ``ActionID`` if the request had one, then ``EventList``/``Message``, then
the action's fields; list items carry the request's ``ActionID`` and no ``Privilege``.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field

from ..links.ami.codec import Action, AmiCodec, Banner, Event, Response

__all__ = [
    "Session",
    "answer",
    "error",
    "event_mask",
    "event_tv",
    "func_arg",
    "list_item",
    "passes",
    "wants",
    "write_list",
]


@dataclass(slots=True, eq=False)
class Session:
    writer: asyncio.StreamWriter
    codec: AmiCodec
    peer: str
    local: str = "?"
    authed: bool = False
    #: the event classes this session reads (Login's ``Events:``); None: every class
    events: frozenset[str] | None = None
    challenge: str | None = None
    #: the session's own event filters (Action: Filter): (exclude, pattern)
    filters: list[tuple[bool, re.Pattern[str]]] = field(default_factory=list)
    pending: list[Event] = field(default_factory=list)
    closing: bool = False

    def write(self, message: Response | Event | Banner) -> None:
        if not self.writer.is_closing():
            self.writer.write(self.codec.send(message))


def event_mask(value: str | None) -> frozenset[str] | None:
    """Login's ``Events:`` as the set of classes read (None: all), as manager.c reads it:
    on/yes/true (or absent) all, off/no/false none, else a comma list of class names."""
    text = (value or "on").strip().lower()
    if text in {"on", "yes", "true", "1"}:
        return None
    if text in {"off", "no", "false", "0"}:
        return frozenset()
    return frozenset(c.strip() for c in text.split(",") if c.strip())


def wants(mask: frozenset[str] | None, event: Event) -> bool:
    """Whether a session reading ``mask`` gets ``event``: all of the event's classes."""
    if mask is None:
        return True
    classes = {c for c in (event.get("Privilege") or "").split(",") if c and c != "all"}
    return bool(classes) and classes <= mask


def passes(session: Session, event: Event) -> bool:
    """The session's filters, as manager.c applies them to the event's text: with include
    filters, one must match; no exclude filter may match."""
    if not session.filters:
        return True
    text = "".join(f"{k}: {v}\r\n" for k, v in event.headers)
    includes = [p for neg, p in session.filters if not neg]
    if includes and not any(p.search(text) for p in includes):
        return False
    return not any(p.search(text) for neg, p in session.filters if neg)


def event_tv() -> str:
    """Asterisk's EventTV: ISO 8601 with milliseconds and a numeric zone."""
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}+0000"


def answer(action: Action, status: str, *fields: tuple[str, object]) -> Response:
    headers: list[tuple[str, object]] = [("Response", status)]
    if action.action_id is not None:
        headers.append(("ActionID", action.action_id))
    headers.extend(fields)
    return Response(tuple((k, str(v)) for k, v in headers))


def error(action: Action, message: str) -> Response:
    return answer(action, "Error", ("Message", message))


def func_arg(variable: str, name: str) -> str | None:
    """The argument of ``NAME(arg)`` (name any case), or None."""
    if variable.endswith(")") and variable[: len(name) + 1].upper() == name + "(":
        return variable[len(name) + 1 : -1]
    return None


def write_list(
    session: Session,
    action: Action,
    message: str,
    complete: str,
    items: list[Event],
) -> None:
    session.write(answer(action, "Success", ("EventList", "start"), ("Message", message)))
    for item in items:
        session.write(item)
    tail: list[tuple[str, object]] = [("Event", complete)]
    if action.action_id is not None:
        tail.append(("ActionID", action.action_id))
    tail += [("EventList", "Complete"), ("ListItems", len(items))]
    session.write(Event(tuple((k, str(v)) for k, v in tail)))


def list_item(action: Action, name: str, *fields: tuple[str, object]) -> Event:
    headers: list[tuple[str, object]] = [("Event", name)]
    if action.action_id is not None:
        headers.append(("ActionID", action.action_id))
    headers.extend(fields)
    return Event(tuple((k, str(v)) for k, v in headers))
