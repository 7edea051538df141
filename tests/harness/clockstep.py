"""Run pbxmesh with its wall clock stepped at will, as an NTP step or an operator would.

    python tests/harness/clockstep.py OFFSET_FILE -c pbxmesh.toml run

``OFFSET_FILE`` holds seconds (a float, negative for a clock that went back) added to what
``time.time()`` and ``time.time_ns()`` return in this process; it is read again every 0.1 s,
so a harness steps the clock by rewriting the file. ``time.monotonic()`` is left alone, as a
real step leaves CLOCK_MONOTONIC alone. Only this process's view changes: the machine's clock
is shared and never touched. (libfaketime cannot do this here: with a fake CLOCK_REALTIME and
a real CLOCK_MONOTONIC its sleeps fail with EINVAL, and faking both steps asyncio's timers.)
"""

from __future__ import annotations

import os
import runpy
import sys
import threading
import time


def main() -> None:
    # Run as a script, this file's folder is first on sys.path, and its sibling nats.py (the
    # test harness) would hide the nats package from pbxmesh's NATS transport.
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    path, args = sys.argv[1], sys.argv[2:]
    real_time, real_time_ns = time.time, time.time_ns
    offset_ns = 0

    def read() -> None:
        nonlocal offset_ns
        try:
            with open(path, encoding="ascii") as f:
                offset_ns = int(float(f.read().strip() or "0") * 1e9)
        except (OSError, ValueError):
            pass

    def poll() -> None:
        while True:
            time.sleep(0.1)
            read()

    read()
    threading.Thread(target=poll, name="clockstep", daemon=True).start()
    time.time = lambda: (real_time_ns() + offset_ns) / 1e9
    time.time_ns = lambda: real_time_ns() + offset_ns
    del real_time
    sys.argv = ["pbxmesh", *args]
    runpy.run_module("pbxmesh", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
