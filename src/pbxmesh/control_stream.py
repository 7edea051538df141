"""The lamp page's live stream: ``GET /api/v1/events`` as Server-Sent Events.

Each ``/events`` client has a :class:`Subscriber`: a set of *keys* ("device", name),
("mwi", box), ("members", "") waiting to be sent, in arrival order. A key is rendered from the
store when it is written, so a burst of changes to one device costs one event carrying the
newest state (supersede by key), memory per client is bounded by the number of devices, and a
slow browser can never miss the last state of a lamp. The control server owns the set of
subscribers and what an event holds; this module owns the stream's pace.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from typing import Any, Final

from aiohttp import web

__all__ = ["Rate", "Subscriber", "sse", "stream_events"]

SSE_BATCH: Final = 500  # events per write: a burst of 10,000 is sent in slices
TICK_SECONDS: Final = 1.0  # the page's rate, link and keep-alive; also detects a dead stream


def sse(kind: str, payload: dict[str, Any]) -> str:
    return f"event: {kind}\ndata: {json.dumps(payload, separators=(',', ':'))}\n\n"


class Subscriber:
    """One ``/events`` client: the keys of what changed since its last write, newest wins."""

    __slots__ = ("closed", "pending", "wake")

    def __init__(self) -> None:
        self.pending: dict[tuple[str, str], None] = {}  # an ordered set
        self.wake = asyncio.Event()
        self.closed = False

    def mark(self, key: tuple[str, str]) -> None:
        self.pending[key] = None
        self.wake.set()

    def close(self) -> None:
        self.closed = True
        self.wake.set()


class Rate:
    """Events per second over the last 10 seconds."""

    def __init__(self) -> None:
        self._buckets: dict[int, int] = {}

    def hit(self) -> None:
        now = int(time.monotonic())
        self._buckets[now] = self._buckets.get(now, 0) + 1
        if len(self._buckets) > 20:
            for k in [k for k in self._buckets if k < now - 10]:
                del self._buckets[k]

    def value(self) -> float:
        now = int(time.monotonic())
        return sum(v for k, v in self._buckets.items() if now - 10 <= k < now) / 10.0

    def last_second(self) -> int:
        """Events in the last complete second (what the page shows as "now")."""
        return self._buckets.get(int(time.monotonic()) - 1, 0)


async def stream_events(
    request: web.Request,
    subscribers: set[Subscriber],
    snapshot: Callable[[], dict[str, Any]],
    render: Callable[[tuple[str, str]], str],
    tick: Callable[[], dict[str, Any]],
) -> web.StreamResponse:
    """``snapshot`` first, then the rendered changes and a ``tick`` a second.

    The subscriber is registered and the snapshot taken with no ``await`` in between, so
    every change after the snapshot is in the stream and none before it is lost.
    """
    resp = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",  # a reverse proxy must not hold the stream back
        }
    )
    await resp.prepare(request)
    sub = Subscriber()
    subscribers.add(sub)
    first = "retry: 1000\n\n" + sse("snapshot", snapshot())
    try:
        await resp.write(first.encode())
        next_tick = time.monotonic()
        while not sub.closed:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, next_tick - time.monotonic())):
                    await sub.wake.wait()
            sub.wake.clear()
            if sub.closed:
                break
            keys = list(sub.pending)
            sub.pending.clear()
            for i in range(0, len(keys), SSE_BATCH):
                text = "".join(render(k) for k in keys[i : i + SSE_BATCH])
                await resp.write(text.encode())  # waits while the client is slow
            if time.monotonic() >= next_tick:
                next_tick = time.monotonic() + TICK_SECONDS
                await resp.write(sse("tick", tick()).encode())
    except (ConnectionResetError, ConnectionError):
        pass
    finally:
        subscribers.discard(sub)
    with contextlib.suppress(ConnectionError):
        await resp.write_eof()
    return resp
