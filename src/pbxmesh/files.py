"""Small files in the state directory, written atomically and durably.

A write goes to a temporary file beside the target, is flushed and fsynced, then renamed over
the target, so a crash or power loss leaves either the old or the new content, never a
truncated file (which would stop the daemon at its next start).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["atomic_write"]


def atomic_write(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8), atomically and durably."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
