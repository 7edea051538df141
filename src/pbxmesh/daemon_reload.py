"""What SIGHUP may change in a running node without a restart: ``[control]`` and
``[security]`` applied in place, and the list of keys that need a restart.

The daemon owns the order of a reload (:meth:`pbxmesh.daemon.Daemon.reload`); these functions
each take the collaborator they change and the old and new section, and say whether the new
one was applied. Links and the ring bridge are replaced by the daemon itself, which owns them.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING, Any

from .errors import ConfigError

if TYPE_CHECKING:
    from .config import ControlConfig, SecurityConfig
    from .control import ControlServer
    from .node import Node

__all__ = ["changed_keys", "reload_control", "reload_security"]

log = logging.getLogger("pbxmesh.daemon")


def changed_keys(section: str, old: Any, new: Any) -> list[str]:
    """``section.key`` for every field that differs between two configs of one section
    (nested sections as ``section.sub.key``)."""
    if old == new:
        return []
    if not dataclasses.is_dataclass(old) or not dataclasses.is_dataclass(new):
        return [section]
    keys: list[str] = []
    for f in dataclasses.fields(old):
        a, b = getattr(old, f.name), getattr(new, f.name)
        if a != b:
            both = dataclasses.is_dataclass(a) and dataclasses.is_dataclass(b)
            keys += changed_keys(f"{section}.{f.name}", a, b) if both else [f"{section}.{f.name}"]
    return keys


async def reload_control(
    control: ControlServer | None, old: ControlConfig, new: ControlConfig
) -> bool:
    """A changed ``[control]``: a new token at once; a new listen address by rebinding
    the control server (if that fails, it listens on the old address again)."""
    if control is None or new == old:
        return False
    if new.listen == old.listen:
        control.token = new.token
        log.info("reload: [control] token %s", "set" if new.token else "removed")
        return True
    await control.close()
    control.host, control.port = new.listen
    control.token = new.token
    try:
        await control.start()
    except OSError as exc:
        await control.close()
        control.host, control.port = old.listen
        control.token = old.token
        log.error(
            "reload: cannot listen for the control API on %s:%d (%s); it stays on %s:%d",
            *new.listen,
            exc.strerror or exc,
            *old.listen,
        )
        try:
            await control.start()
        except OSError as again:
            log.error(
                "reload: the control API cannot listen on %s:%d again either (%s); restart pbxmesh",
                *old.listen,
                again.strerror or again,
            )
        return False
    log.info("reload: [control] now listening on %s:%d", *new.listen)
    return True


def reload_security(
    guard: object | None, node: Node, node_name: str, old: SecurityConfig, new: SecurityConfig
) -> bool:
    """Apply a changed list of nodes and grants at once (same key); True if applied."""
    if new == old:
        return False
    if guard is None or new.key != old.key:
        return False  # signing switched on/off or a new identity: restart
    from .security import build_peers

    try:
        peers, require = build_peers(new, node_name)
    except ConfigError as exc:
        log.error("reload: [security] refused, keeping the running one: %s", exc)
        return False
    replace = getattr(guard, "replace_peers", None)
    if replace is None:
        return False
    replace(peers, require, node_name)
    was = {p.name for p in old.peers}
    now = {p.name for p in new.peers}
    revoked = node.revoke()
    log.info(
        "reload: [security] applied peers=%d added=%s removed=%s revoked_states=%d",
        len(peers),
        ",".join(sorted(now - was)) or "-",
        ",".join(sorted(was - now)) or "-",
        revoked,
    )
    return True
