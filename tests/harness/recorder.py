"""A list of events that coroutines can wait on, with a deadline (no polling, no sleeps)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["Recorder"]

T = TypeVar("T")
R = TypeVar("R")


class Recorder(Generic[T]):
    """Items in arrival order; ``wait_for`` wakes on every new item until a predicate holds."""

    def __init__(self) -> None:
        self.items: list[T] = []
        self.ended = False
        self._waiters: list[asyncio.Future[None]] = []

    def add(self, item: T) -> None:
        self.items.append(item)
        self._wake()

    def end(self) -> None:
        self.ended = True
        self._wake()

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    async def _changed(self) -> None:
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        await fut

    async def wait_for(self, pred: Callable[[list[T]], R | None], within: float, what: str) -> R:
        """The first non-None result of ``pred(items)``; AssertionError after ``within`` s."""
        try:
            async with asyncio.timeout(within):
                while True:
                    result = pred(self.items)
                    if result is not None:
                        return result
                    if self.ended:
                        raise AssertionError(f"stream ended while waiting for {what}")
                    await self._changed()
        except TimeoutError:
            tail = self.items[-5:]
            raise AssertionError(
                f"timed out after {within} s waiting for {what}; "
                f"{len(self.items)} items, last: {tail!r:.2000}"
            ) from None

    async def wait_ended(self, within: float, what: str = "end of stream") -> None:
        try:
            async with asyncio.timeout(within):
                while not self.ended:
                    await self._changed()
        except TimeoutError:
            raise AssertionError(f"timed out after {within} s waiting for {what}") from None
