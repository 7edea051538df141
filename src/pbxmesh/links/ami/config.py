"""The AMI link's configuration, and how it reads Asterisk's hints."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ...errors import ConfigError
from ..base import Hint
from ..common import Selection
from .codec import Event
from .counterparts import DEFAULT_TEMPLATE, MAX_DEVICE_NAME, UNSAFE
from .hints import HintsConfig

__all__ = ["AmiLinkConfig", "hints_of"]


@dataclass(frozen=True, slots=True)
class AmiLinkConfig:
    """What one AMI link shares, and how remote states are named locally."""

    # fnmatch patterns (case-sensitive) of device names shared in both directions.
    include: tuple[str, ...] = ("*",)
    # Patterns removed from what include selected.
    exclude: tuple[str, ...] = ()
    # Counterpart device name; must start with "Custom:" and hold "{device}" once.
    template: str = DEFAULT_TEMPLATE
    # Share MWI at all (needs res_mwi_external_ami on Asterisk to write remote counts).
    share_mwi: bool = True
    # fnmatch patterns of mailbox@context ids shared in both directions, and exclusions.
    mwi_include: tuple[str, ...] = ("*",)
    mwi_exclude: tuple[str, ...] = ()
    # Share CustomPresence: presence (needs func_presencestate and res_manager_presencestate),
    # and fnmatch patterns of the presentities ("CustomPresence:alice") shared, and exclusions.
    share_presence: bool = True
    presence_include: tuple[str, ...] = ("*",)
    presence_exclude: tuple[str, ...] = ()
    # Seconds Asterisk may stay unreachable before this server's device states stop counting
    # in the cluster (LinkPort.withdraw). Longer rides out a slow Asterisk restart with the
    # old lamps lit; shorter clears a dead PBX's lamps sooner.
    down_grace: float = 5.0
    # Keep hints for the other servers' extensions in this context ([asterisk.hints]).
    hints: HintsConfig | None = None

    @property
    def selection(self) -> Selection:
        """The devices and mailboxes shared (presence has its own patterns)."""
        return Selection(
            self.include, self.exclude, self.share_mwi, self.mwi_include, self.mwi_exclude
        )

    def __post_init__(self) -> None:
        if not self.down_grace >= 0:
            raise ConfigError("down_grace must be zero or a positive number of seconds")
        if not self.template.startswith("Custom:") or self.template.count("{device}") != 1:
            raise ConfigError(
                f"counterpart template {self.template!r} must start with 'Custom:' and "
                "contain '{device}' exactly once, e.g. 'Custom:remote-{device}'"
            )
        fixed = len(self.template) - len("{device}")
        if fixed > MAX_DEVICE_NAME - 16:
            raise ConfigError(f"counterpart template {self.template!r} is too long")
        prefix, _, suffix = self.template.partition("{device}")
        if UNSAFE.search(prefix[len("Custom:") :] + suffix):
            raise ConfigError(f"counterpart template {self.template!r} has unsafe characters")


def hints_of(items: Iterable[Event]) -> list[Hint]:
    """Hints from ``ExtensionStatus`` list items, by context and extension: Asterisk 22 lists
    them in the order of its hint hash table, master by name."""
    hints = []
    for e in items:
        status = e.get("Status") or "-1"
        hints.append(
            Hint(
                exten=e.get("Exten") or "",
                context=e.get("Context") or "",
                hint=e.get("Hint") or "",
                status=int(status) if status.lstrip("-").isdigit() else -1,
                status_text=e.get("StatusText") or "",
            )
        )
    return sorted(hints, key=lambda h: (h.context, h.exten))
