"""A leaked socket, transport or file fails the test that leaked it; enabled from
tests/conftest.py with ``pytest_plugins = [..., "tests.harness.leaks"]``.

Why: an unclosed socket held in a reference cycle (an asyncio transport and its protocol, a
coroutine frame) is only found by the garbage collector, and the collector runs whenever it
likes: its ``ResourceWarning`` then lands in whatever test happens to be running, often in
another file, and only in some orderings of the suite (the leak of a fixture that skipped on
a machine without Asterisk surfaced in an unrelated SIP test). So after every test's teardown,
module- and session-scoped fixtures' teardowns included, this plugin runs the collector and
turns every ``ResourceWarning`` it sets off into an error in that test's teardown. (What
reference counting frees while a test runs is reported by pytest itself, in that test.)

An asyncio transport's ``__del__`` warns before it closes its socket; with warnings as
errors, the exception's frame keeps the transport, and so the socket, alive, and the socket's
own warning would come in a later test. Both hooks, ours and pytest's, therefore clear the
frames of what they report.

Cost: once collection is over, everything alive is frozen (:func:`gc.freeze`: modules,
classes, collected test items), so each collection after a test looks only at what tests
created since: about 3 ms a test instead of about 30 ms for a full collection.

Where a leaked socket was allocated is shown when tracemalloc is tracing: run the one test
again with ``PYTHONTRACEMALLOC=25``. It is not on by default: tracing every allocation makes
the suite several times slower (4x with one frame, over 10x with the frames it takes to reach
the test's own code).
"""

from __future__ import annotations

import contextlib
import gc
import linecache
import sys
import sysconfig
import traceback
import tracemalloc
import types
from collections.abc import Callable, Generator

import pytest

__all__ = ["collect_leaks"]


_STDLIB = sysconfig.get_paths()["stdlib"]


def _ours(filename: str) -> bool:
    return not (filename.startswith(("<", _STDLIB)) or "/site-packages/" in filename)


def _allocated_at(obj: object) -> str | None:
    """Where ``obj`` was allocated: the frames outside the standard library and installed
    packages (the test's and the project's), and the innermost one."""
    tb = tracemalloc.get_object_traceback(obj)
    if tb is None:
        return None
    frames = [f for f in tb if _ours(f.filename)]
    if not frames or frames[-1] != tb[-1]:
        frames.append(tb[-1])
    lines = []
    for f in frames:
        lines.append(f'  File "{f.filename}", line {f.lineno}')
        if source := linecache.getline(f.filename, f.lineno).strip():
            lines.append(f"    {source}")
    return "\n".join(lines)


def _forget_frames(exc: BaseException | None) -> None:
    """Drop the locals of the frames in ``exc``'s traceback. A ResourceWarning raised in a
    ``__del__`` holds that frame, and so ``self``: an unclosed asyncio transport would stay
    alive with its socket, whose own warning would then come in a later test."""
    if exc is not None and exc.__traceback__ is not None:
        with contextlib.suppress(RuntimeError):  # a frame still running keeps its locals
            traceback.clear_frames(exc.__traceback__)


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


def _collecting(found: list[BaseException]) -> Callable[[sys.UnraisableHookArgs], None]:
    def hook(args: sys.UnraisableHookArgs) -> None:
        # The report is built here: the object is only alive while the hook runs.
        try:
            found.append(_describe(args))
        except Exception as exc:  # a leak must never go unreported for a bug in the report
            found.append(args.exc_value or exc)
        _forget_frames(args.exc_value)

    return hook


def collect_leaks() -> list[BaseException]:
    """Run the garbage collector; return what it reported as unraisable (ResourceWarnings,
    with ``filterwarnings = error``), each with a note on where its object was allocated.
    A pass that freed something unclosed may have freed what holds another (a transport its
    socket): then one more pass, a few at most."""
    found: list[BaseException] = []
    previous = sys.unraisablehook
    sys.unraisablehook = _collecting(found)
    try:
        for _ in range(4):
            before = len(found)
            gc.collect()
            if len(found) == before:
                break
    finally:
        sys.unraisablehook = previous
    return found


@pytest.hookimpl(trylast=True)  # after pytest's unraisableexception plugin set its hook
def pytest_configure(config: pytest.Config) -> None:
    # pytest's own hook reports what is freed while a test runs (reference counting frees
    # most objects at once); wrapped so that such a report, too, lets go of the frames that
    # hold the object and what it owns.
    pytests = sys.unraisablehook

    def hook(args: sys.UnraisableHookArgs) -> None:
        try:
            pytests(args)
        finally:
            _forget_frames(args.exc_value)

    sys.unraisablehook = hook
    config.add_cleanup(lambda: setattr(sys, "unraisablehook", pytests))


def pytest_collection_finish(session: pytest.Session) -> None:
    gc.collect()  # what collection left as garbage is freed, not frozen
    gc.freeze()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if call.excinfo is not None and isinstance(call.excinfo.value, pytest.skip.Exception):
        # A session fixture that skips keeps its exception for every later test that asks
        # for it, and with it the frames of the first asker: a fixture that opened something
        # before it asked would have it freed, and reported, in some later test.
        _forget_frames(call.excinfo.value)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, None, None]:
    # A wrapper, so this runs after every fixture of the test has been torn down (the runner
    # tears down fixtures of wider scope in the teardown of the last test that uses them).
    try:
        return (yield)
    finally:
        # Also when the teardown failed: the leak is reported with that error as its context.
        leaks = collect_leaks()
        if len(leaks) == 1:
            raise leaks[0]
        if leaks:
            raise BaseExceptionGroup(f"{len(leaks)} objects leaked by {item.nodeid}", leaks)
