"""A leaked socket, transport or file fails the test that leaked it; enabled from
tests/conftest.py with ``pytest_plugins = [..., "tests.harness.leaks"]``.

Why: an unclosed socket held in a reference cycle (an asyncio transport and its protocol, a
coroutine frame) is only found by the garbage collector, and the collector runs whenever it
likes: its ``ResourceWarning`` then lands in whatever test happens to be running, often in
another file, and only in some orderings of the suite (the leak of a fixture that skipped on
a machine without Asterisk surfaced in an unrelated SIP test). So after every test's teardown,
module- and session-scoped fixtures' teardowns included, this plugin runs the collector and
turns every ``ResourceWarning`` it sets off into an error in that test's teardown.

Cost: once collection is over, everything alive is frozen (:func:`gc.freeze`: modules,
classes, collected test items), so each collection after a test looks only at what tests
created since: about 3 ms a test instead of about 30 ms for a full collection.

Where a leaked socket was allocated is shown when tracemalloc is tracing: run the one test
again with ``PYTHONTRACEMALLOC=25``. It is not on by default: tracing every allocation makes
the suite several times slower (4x with one frame, over 10x with the frames it takes to reach
the test's own code).
"""

from __future__ import annotations

import gc
import sys
import tracemalloc
import types
from collections.abc import Generator
from pathlib import Path

import pytest

__all__ = ["collect_leaks"]

REPO = str(Path(__file__).resolve().parents[2])


def _allocated_at(obj: object) -> str | None:
    """Where ``obj`` was allocated: the project's frames and the innermost one."""
    tb = tracemalloc.get_object_traceback(obj)
    if tb is None:
        return None
    frames = [f for f in tb if f.filename.startswith(REPO)] + [tb[-1]]
    return "\n".join(tracemalloc.Traceback(tuple(frames)).format())


def _describe(args: sys.UnraisableHookArgs) -> BaseException:
    exc = args.exc_value
    if exc is None:  # never seen from CPython's collector; keep the report anyway
        exc = RuntimeError(f"{args.err_msg or 'Exception ignored in'}: {args.object!r}")
    if isinstance(args.object, types.FunctionType):
        # An asyncio transport reports from its __del__ function, not with itself; its socket
        # is reported next to it, with where it was opened.
        return exc
    if not tracemalloc.is_tracing():
        exc.add_note("Run this test with PYTHONTRACEMALLOC=25 to see where it was allocated.")
    elif (where := _allocated_at(args.object)) is not None:
        exc.add_note(f"{args.object!r} was allocated at:\n{where}")
    return exc


def collect_leaks() -> list[BaseException]:
    """Run the garbage collector; return what it reported as unraisable (ResourceWarnings,
    with ``filterwarnings = error``), each with a note on where its object was allocated."""
    found: list[BaseException] = []
    previous = sys.unraisablehook
    # The report is built inside the hook: the object is only alive while the hook runs.
    sys.unraisablehook = lambda args: found.append(_describe(args))
    try:
        gc.collect()
    finally:
        sys.unraisablehook = previous
    return found


def pytest_collection_finish(session: pytest.Session) -> None:
    gc.collect()  # what collection left as garbage is freed, not frozen
    gc.freeze()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, None, None]:
    # A wrapper, so this runs after every fixture of the test has been torn down (the runner
    # tears down fixtures of wider scope in the teardown of the last test that uses them).
    result = yield
    leaks = collect_leaks()
    if len(leaks) == 1:
        raise leaks[0]
    if leaks:
        raise BaseExceptionGroup(f"{len(leaks)} objects leaked by {item.nodeid}", leaks)
    return result
