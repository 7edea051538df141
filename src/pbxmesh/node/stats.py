"""The node's counters, read by ``status`` and ``/metrics`` (never updated per scrape)."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["NodeStats", "count"]


@dataclass(slots=True)
class NodeStats:
    """Counters for metrics and ``status``."""

    frames_in: dict[str, int] = field(default_factory=dict)
    frames_out: dict[str, int] = field(default_factory=dict)
    changes_in: dict[str, int] = field(default_factory=dict)
    changes_out: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)
    resyncs: int = 0
    snapshots_merged: int = 0
    last_resync_seconds: float = 0.0
    link_up: bool = False
    link_changes: int = 0
    presence_changes: int = 0  # presentities whose value changed here (any origin)
    mwi_changes: int = 0  # mailboxes whose counts changed here (any origin)


def count(d: dict[str, int], key: str, n: int = 1) -> None:
    d[key] = d.get(key, 0) + n
