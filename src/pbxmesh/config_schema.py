"""The TOML schema walker behind :func:`pbxmesh.config.load_config`.

tomllib reports syntax errors with a line and column but gives no positions for valid keys, so
:class:`Locator` finds the line of a key by scanning the text for its table header and
``key =`` line — enough to point an administrator at the right place. :class:`Table` is one
table being validated: typed getters, and unknown keys reported when it is ``done()``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .errors import ConfigError

__all__ = ["Locator", "Table", "hostport", "kind_name", "parse_hostport", "path_value", "positive"]


class Locator:
    """Finds the line of a table or key in the TOML text, for error messages."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.lines = text.splitlines()

    def line(self, table: str, key: str | None = None, index: int = 0) -> int | None:
        start = 0
        if table:
            header = re.compile(r"^\s*\[\[?\s*" + re.escape(table) + r"\s*\]\]?\s*(#.*)?$")
            seen = -1
            for n, text in enumerate(self.lines):
                if header.match(text):
                    seen += 1
                    if seen == index:
                        start = n
                        break
            else:
                return None
        if key is None:
            return start + 1
        if not table:  # a top-level key may be a table: [key], [[key]] or [key.sub]
            head = re.compile(r"^\s*\[\[?\s*" + re.escape(key) + r"\s*[\].]")
            for n, text in enumerate(self.lines):
                if head.match(text):
                    return n + 1
        pattern = re.compile(r"^\s*" + re.escape(key) + r"\s*=")
        for n in range(start if table else 0, len(self.lines)):
            if n > start and self.lines[n].lstrip().startswith("["):
                break
            if pattern.match(self.lines[n]):
                return n + 1
        return start + 1 if table else None

    def error(self, table: str, key: str | None, message: str, index: int = 0) -> ConfigError:
        line = self.line(table, key, index)
        where = f"{self.path}:{line}" if line else str(self.path)
        what = ".".join(p for p in (table, key) if p)
        return ConfigError(f"{where}: {what}: {message}" if what else f"{where}: {message}")


class Table:
    """One TOML table being validated: typed getters, and unknown keys reported at the end."""

    def __init__(self, loc: Locator, name: str, data: Any, index: int = 0) -> None:
        self.loc = loc
        self.name = name
        self.index = index
        if not isinstance(data, dict):
            raise loc.error("", name, "must be a table", index)
        self.data: dict[str, Any] = data
        self.used: set[str] = set()

    def err(self, key: str | None, message: str) -> ConfigError:
        return self.loc.error(self.name, key, message, self.index)

    def get(
        self,
        key: str,
        kind: type | tuple[type, ...],
        default: Any = None,
        *,
        required: bool = False,
    ) -> Any:
        self.used.add(key)
        if key not in self.data:
            if required:
                raise self.err(key, "is required")
            return default
        value = self.data[key]
        if isinstance(value, bool) and kind in (int, float, (int, float)):
            raise self.err(key, f"must be a number, not {value!r}")
        if not isinstance(value, kind):
            raise self.err(key, f"must be {kind_name(kind)}, not {type(value).__name__} {value!r}")
        return value

    def strings(self, key: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        value = self.get(key, list, None)
        if value is None:
            return default
        if not all(isinstance(v, str) for v in value):
            raise self.err(key, "must be a list of strings")
        return tuple(value)

    def sub(self, key: str) -> Table:
        self.used.add(key)
        name = f"{self.name}.{key}" if self.name else key
        return Table(self.loc, name, self.data.get(key, {}))

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            valid = ", ".join(sorted(self.used))
            raise self.err(unknown[0], f"unknown key; valid keys here are {valid}")


def kind_name(kind: type | tuple[type, ...]) -> str:
    names = {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "true or false",
        list: "a list",
        dict: "a table",
    }
    if isinstance(kind, tuple):
        return " or ".join(names.get(k, k.__name__) for k in kind)
    return names.get(kind, kind.__name__)


def parse_hostport(text: str, default_port: int | None = None) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` (or a bare host with ``default_port``)."""
    m = re.fullmatch(r"\[([^\]]+)\]:(\d+)|([^:\[\]]+):(\d+)|([^:\[\]]+)", text.strip())
    if not m:
        raise ValueError(f"{text!r} is not HOST:PORT")
    host = m.group(1) or m.group(3) or m.group(5)
    port_text = m.group(2) or m.group(4)
    if port_text is None:
        if default_port is None:
            raise ValueError(f"{text!r} has no port; write HOST:PORT")
        return host, default_port
    port = int(port_text)
    if not 0 < port < 65536:
        raise ValueError(f"port {port} is not between 1 and 65535")
    return host, port


def hostport(t: Table, key: str, default: str) -> tuple[str, int]:
    text = t.get(key, str, default)
    try:
        return parse_hostport(text)
    except ValueError as exc:
        raise t.err(key, str(exc)) from None


def positive(t: Table, key: str, default: float) -> float:
    value = float(t.get(key, (int, float), default))
    if value <= 0:
        raise t.err(key, f"must be greater than 0, not {value}")
    return value


def path_value(t: Table, key: str, base: Path) -> Path | None:
    value = t.get(key, str, None)
    if value is None:
        return None
    p = Path(value)
    return p if p.is_absolute() else (base / p)
