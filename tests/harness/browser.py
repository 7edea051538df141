"""The system's chromium for the lamp page's browser tests and screenshot (never Playwright's
own browser download), started inside a test netns so it reaches only that netns's nodes."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

from .corosync import HarnessError

__all__ = ["CHROMIUM_ARGS", "chromium_in_netns", "chromium_path"]

#: headless, and none of the background connections a closed network would refuse
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str | None:
    """``$PBXMESH_CHROMIUM``, else the chromium on PATH."""
    return os.environ.get("PBXMESH_CHROMIUM") or shutil.which("chromium")


def chromium_in_netns(netns: str, workdir: Path) -> Path:
    """A wrapper script that runs chromium inside ``netns`` (Playwright execs it)."""
    chromium = chromium_path()
    if chromium is None:
        raise HarnessError("chromium is not installed (apt-get install chromium)")
    wrapper = workdir / "chromium-in-netns"
    wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {netns} {chromium} "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    return wrapper
