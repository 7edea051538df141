"""This node's own assertions on disk: what a restarted node serves and announces again."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from .errors import ConfigError
from .files import atomic_write

__all__ = ["OwnStateFile"]

_T = TypeVar("_T")


class OwnStateFile:
    """This node's own assertions (device states published to be kept, every mailbox and
    presentity it wrote last), kept in the state directory so that a restarted node serves and
    announces them again, as Asterisk keeps ``devstate change`` values in its AstDB (see
    :meth:`~pbxmesh.node.core.Node.own_state` for what is saved and why). Written atomically;
    a file written before presence existed has no ``presence`` key and reads as none."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _parse(self, parse: Callable[[Any], _T]) -> _T | None:
        """``parse`` applied to the file's JSON; None if there is no file. A file that does
        not read, or does not have the shape ``parse`` expects, is a clear error."""
        try:
            return parse(json.loads(self.path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(
                f"{self.path}: this node's saved state is unreadable ({exc}); fix or delete it "
                "(deleting it forgets the states published with `pbxmesh publish`)"
            ) from None

    def load(self) -> tuple[list[tuple[str, int, int]], list[tuple[str, int, int, int]]]:
        loaded = self._parse(
            lambda data: (
                [(str(d), int(s), int(v)) for d, s, v in data["devices"]],
                [(str(m), int(n), int(o), int(v)) for m, n, o, v in data["mwi"]],
            )
        )
        if loaded is None:
            return [], []
        devices, mwi = loaded
        for _, state, _ in devices:
            if not 0 <= state <= 8:
                raise ConfigError(f"{self.path}: device state {state} is outside 0..8")
        return devices, mwi

    def load_presence(self) -> list[tuple[str, int, str, str, int]]:
        """The saved presence: ``(presentity, state, subtype, message, version)``."""
        presence = self._parse(
            lambda data: [
                (str(p), int(s), str(t), str(m), int(v))
                for p, s, t, m, v in data.get("presence", [])
            ]
        )
        if presence is None:
            return []
        for _, state, _, _, _ in presence:
            if not 0 <= state <= 6:
                raise ConfigError(f"{self.path}: presence state {state} is outside 0..6")
        return presence

    def load_cluster(
        self,
    ) -> tuple[list[tuple[str, int, int, int, str]], list[tuple[str, int, str, str, int, str]]]:
        """The other writers' mailboxes and presence (``cluster_mwi``, ``cluster_presence``;
        a file written before they were saved has neither)."""
        loaded = self._parse(
            lambda data: (
                [
                    (str(m), int(n), int(o), int(v), str(e))
                    for m, n, o, v, e in data.get("cluster_mwi", [])
                ],
                [
                    (str(p), int(s), str(t), str(m), int(v), str(e))
                    for p, s, t, m, v, e in data.get("cluster_presence", [])
                ],
            )
        )
        return loaded if loaded is not None else ([], [])

    def save(
        self,
        devices: list[tuple[str, int, int]],
        mwi: list[tuple[str, int, int, int]],
        presence: list[tuple[str, int, str, str, int]] | None = None,
        cluster: tuple[list[Any], list[Any]] | None = None,
    ) -> None:
        body: dict[str, Any] = {"devices": devices, "mwi": mwi}
        if presence:
            body["presence"] = presence
        if cluster is not None:
            body["cluster_mwi"], body["cluster_presence"] = cluster
        atomic_write(self.path, json.dumps(body))
