"""Event channels read from Asterisk's own files: ``ais.conf`` or ``res_corosync.conf``.

``[cluster] asterisk_conf = "/etc/asterisk/ais.conf"`` lets a node take its channels from the
file the seed's Asterisk already has, instead of ``[[channel]]`` tables; errors name the file
and line of that file.
"""

from __future__ import annotations

import re
from pathlib import Path

from .errors import ConfigError, StateError
from .node import EVENT_TYPES, ChannelConfig

__all__ = ["read_asterisk_channels"]


def read_asterisk_channels(path: Path) -> tuple[ChannelConfig, ...]:
    """Channels from Asterisk's ``ais.conf`` (``[name] type=event_channel …``) or
    ``res_corosync.conf`` (``[general] publish_event=… subscribe_event=…``)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    channels = []
    for name, lineno, opts in _ini_sections(path, text):
        if name.lower() == "general" and ("publish_event" in opts or "subscribe_event" in opts):
            channel = "device_state"  # res_corosync.conf has one unnamed channel
        elif opts.get("type") == ["event_channel"]:
            channel = name
        else:
            continue
        _check_event_kinds(path, name, lineno, opts)
        try:
            channels.append(
                ChannelConfig(
                    channel,
                    frozenset(v for v in opts.get("publish_event", []) if v in EVENT_TYPES),
                    frozenset(v for v in opts.get("subscribe_event", []) if v in EVENT_TYPES),
                )
            )
        except StateError as exc:
            raise ConfigError(f"{path}:{lineno}: {exc}") from None
    if not channels:
        raise ConfigError(f"{path}: no event channel found (expected [name] type=event_channel)")
    return tuple(channels)


def _ini_sections(path: Path, text: str) -> list[tuple[str, int, dict[str, list[str]]]]:
    """An Asterisk .conf file as ``(section, line, {key: [values]})``, keys and values lower
    case, ``;`` comments dropped, template markers (``(!)``, ``=>``) ignored."""
    sections: list[tuple[str, int, dict[str, list[str]]]] = []
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.split(";", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"\[([^\]]+)\](\(.*\))?", line)
        if m:
            sections.append((m.group(1).strip(), n, {}))
            continue
        key, sep, value = line.partition("=")
        if not sep or not sections:
            raise ConfigError(f"{path}:{n}: expected [section] or key=value, got {raw.strip()!r}")
        key = key.strip().rstrip(">").strip().lower()
        sections[-1][2].setdefault(key, []).append(value.strip().lower())
    return sections


def _check_event_kinds(path: Path, name: str, lineno: int, opts: dict[str, list[str]]) -> None:
    # presence_state is pbxmesh's own: Asterisk's res_ais/res_corosync do not carry it
    kinds = {"device_state", "mwi", "presence_state", "ping", "cluster_discovery"}
    for key in ("publish_event", "subscribe_event"):
        for v in opts.get(key, []):
            if v not in kinds:
                raise ConfigError(
                    f"{path}:{lineno}: [{name}] {key}={v}: not an event type "
                    "(device_state, mwi, presence_state, ping, cluster_discovery)"
                )
