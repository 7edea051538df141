"""Stopping background tasks, the one way the package does it."""

from __future__ import annotations

import asyncio

__all__ = ["cancel_and_wait"]


async def cancel_and_wait(*tasks: asyncio.Task[None] | None) -> None:
    """Cancel the tasks and wait until they have ended.

    Their own cancellations and errors are collected, not raised (they are being stopped);
    a cancellation of the *caller* still propagates, which ``suppress(CancelledError)``
    around an ``await`` would swallow.
    """
    live = [t for t in tasks if t is not None]
    for task in live:
        task.cancel()
    if live:
        await asyncio.gather(*live, return_exceptions=True)
