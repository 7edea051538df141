"""Waiting in async tests: one poll loop for every test that waits for something to happen."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable

__all__ = ["eventually"]


async def eventually(check: Callable[[], object], what: str, within: float = 10.0) -> None:
    """Poll ``check`` (plain, or returning an awaitable) every 20 ms until it is true; fail
    with ``what`` after ``within`` seconds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + within
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if loop.time() > end:
            raise AssertionError(f"not within {within}s: {what}")
        await asyncio.sleep(0.02)
