"""Dialplan hints and CLI text for the PBX simulator.

Only what the simulator needs from ``extensions.conf``: ``[context]`` section headers and
``exten => EXTEN,hint,DEVICES[,PRESENCE]`` lines. Every other line (priorities, includes,
comments after ``;``) is ignored, as are ``same =>`` lines. Blanks around the fields are
stripped, as Asterisk's config parser does, so the 2009 tutorial's
``exten => 1234, hint, Custom:mystate`` works.

The CLI formatters reproduce Asterisk's printf layouts byte for byte (see the reference,
§1.5 and §3): ``core show hints``, ``core show hint X``, ``devstate list`` and
``devstate change``. They return the text as the CLI would print it, newlines included;
:func:`output_lines` splits it the way ``Action: Command`` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

from ..errors import ConfigError

__all__ = [
    "Hint",
    "format_devstate_list",
    "format_hint_line",
    "format_show_hint",
    "format_show_hints",
    "output_lines",
    "parse_hints",
]

_BAR: Final = "---------------------------------------------------------------------\n"


@dataclass(frozen=True, slots=True)
class Hint:
    """One ``exten => EXTEN,hint,APP`` line; ``app`` is the raw hint string."""

    exten: str
    context: str
    app: str

    def __post_init__(self) -> None:
        if not self.exten or not self.context:
            raise ConfigError("a hint needs an extension and a context")

    @property
    def key(self) -> str:
        """``exten@context`` as the CLI shows it."""
        return f"{self.exten}@{self.context}"


def parse_hints(text: str, source: str = "extensions.conf") -> list[Hint]:
    """The hints of an extensions.conf text, in file order; a later duplicate replaces one."""
    found: dict[tuple[str, str], Hint] = {}
    context: str | None = None
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split(";", 1)[0].strip()
        if not line:
            continue
        if line.startswith("["):
            end = line.find("]")
            if end < 2:
                raise ConfigError(f"{source}:{lineno}: bad section header {raw.strip()!r}")
            context = line[1:end].strip()
            continue
        key, sep, rest = line.partition("=>")
        if not sep:
            key, sep, rest = line.partition("=")
        if not sep or key.strip().lower() != "exten":
            continue
        fields = [f.strip() for f in rest.split(",", 2)]
        if len(fields) < 3 or fields[1].lower() != "hint":
            continue
        if context is None:
            raise ConfigError(f"{source}:{lineno}: hint outside of any [context] section")
        hint = Hint(fields[0], context, fields[2])
        found.pop((hint.exten, hint.context), None)
        found[(hint.exten, hint.context)] = hint
    return list(found.values())


def load_hints(path: Path) -> list[Hint]:
    """Read and parse a dialplan file; errors name the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read dialplan {path}: {exc.strerror}") from exc
    return parse_hints(text, str(path))


def format_hint_line(hint: Hint, state_text: str, presence: str = "not_set") -> str:
    """``%-30.30s: %-60.60s  State:%-15.15s Presence:%-15.15s Watchers %2zd``.

    One watcher: Asterisk's manager itself watches every hint (a real Asterisk with AMI loaded
    and no phone subscribed shows 1); the simulator has no SIP subscribers to add.
    """
    return (
        f"{hint.key[:30]:<30}: {hint.app[:60]:<60}  State:{state_text[:15]:<15} "
        f"Presence:{presence[:15]:<15} Watchers {1:2d}\n"
    )


def format_show_hints(rows: list[tuple[Hint, str]], presence: dict[str, str] | None = None) -> str:
    """``core show hints`` given each hint with its extension-state text (and presence text
    by ``exten@context``; ``not_set`` when not given)."""
    if not rows:
        return "There are no registered dialplan hints\n"
    shown = presence or {}
    text = "\n    -= Registered Asterisk Dial Plan Hints =-\n"
    text += "".join(
        format_hint_line(hint, state, shown.get(hint.key, "not_set")) for hint, state in rows
    )
    return text + "----------------\n" + f"- {len(rows)} hints registered\n"


def format_show_hint(
    rows: list[tuple[Hint, str]], prefix: str, presence: dict[str, str] | None = None
) -> str:
    """``core show hint PREFIX``: case-insensitive prefix match on ``exten@context``."""
    if not rows:
        return "There are no registered dialplan hints\n"
    low = prefix.lower()
    shown = presence or {}
    lines = [
        format_hint_line(h, s, shown.get(h.key, "not_set"))
        for h, s in rows
        if h.key.lower().startswith(low)
    ]
    if not lines:
        return f"No hints matching extension {prefix}\n"
    plural = "s" if len(lines) != 1 else ""
    return "".join(lines) + f"{len(lines)} hint{plural} matching extension {prefix}\n"


def format_devstate_list(entries: list[tuple[str, str]]) -> str:
    """``devstate list`` given (AstDB key, raw value) pairs of family CustomDevstate.

    Like func_devstate, the name shown is the key after its last ``/``.
    """
    text = "\n" + _BAR + "--- Custom Device States --------------------------------------------\n"
    text += _BAR + "---\n"
    for key, value in entries:
        name = key.rsplit("/", 1)[-1]
        text += f"--- Name: 'Custom:{name}'  State: '{value}'\n---\n"
    return text + _BAR + _BAR + "\n"


def output_lines(text: str) -> list[str]:
    """Split CLI text into the ``Output:`` lines of ``Action: Command``.

    Empty lines are kept; the newline that ends the text does not add an empty last line.
    """
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines
