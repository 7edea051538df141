"""Kept hints: the AMI link gives the other servers' extensions a hint in Asterisk's dialplan.

Theory of operation
-------------------
``[asterisk.hints]`` names a dialplan ``context`` and a ``device`` template such as
``PJSIP/{exten}``. For every device some *other* server holds (the node's remote aggregate, as
:meth:`~pbxmesh.links.base.LinkPort.remote_devices` and ``remote_device`` give it) whose name
matches the template, the keeper adds ``exten => {exten},hint,<devices>`` to ``context`` with
``DialplanExtensionAdd`` (``Priority: hint``), and removes it with ``DialplanExtensionRemove``
once no other server holds the device (INVALID).

Which devices the hint names: when the AMI link shares the device, its remote state lands on the
local *counterpart* (``Custom:remote-PJSIP-2001``), so the hint is ``PJSIP/2001&<counterpart>``
(the local device is INVALID while absent, the identity of aggregation). When it does not (the
AMI session beside a SIP link, which shares presence only), Asterisk aggregates the remote EIDs'
states under the device's own name, so the hint is ``PJSIP/2001``. ``,CustomPresence:{exten}`` is
appended when that presentity exists in the cluster (a change of that re-adds the hint).

What real Asterisk does (22 and master alike, pinned in tests/test_hints_asterisk.py):
``DialplanExtensionAdd`` creates a missing context; without ``Replace: yes`` it never replaces
an existing hint (``That extension and priority already exist at that context``), so a hint
Asterisk already has is left alone and not kept; ``dialplan reload`` (and FreePBX's
``fwconsole reload``) drops every extension added over AMI. The keeper reads
``ExtensionStateList`` after every (re)connect, and once a second asks ``ExtensionState`` of one
kept hint: a missing or different hint means a reload, and everything is added again.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from ...errors import AmiActionError, ConfigError, PbxmeshError
from ...states import DeviceState
from ...tasks import cancel_and_wait
from .client import AmiClient
from .codec import Action
from .session import Session

__all__ = ["CHECK_INTERVAL", "HintKeeper", "HintsConfig"]

log = logging.getLogger(__package__ + ".link")

#: seconds between the checks for a dialplan reload (one ExtensionState action)
CHECK_INTERVAL: Final = 1.0
EXISTS: Final = "already exist"


@dataclass(frozen=True, slots=True)
class HintsConfig:
    """``[asterisk.hints]``: where the kept hints go, and which devices are extensions."""

    context: str
    device: str = "PJSIP/{exten}"

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_.+-]{1,79}", self.context):
            raise ConfigError(f"hints context {self.context!r} is not a dialplan context name")
        if self.device.count("{exten}") != 1:
            raise ConfigError(f"hints device {self.device!r} must hold {{exten}} exactly once")

    def exten_of(self, device: str) -> str | None:
        """The extension of ``device`` if it matches the template (digits, letters, ``*#+``)."""
        prefix, _, suffix = self.device.partition("{exten}")
        if not (device.startswith(prefix) and device.endswith(suffix)):
            return None
        exten = device[len(prefix) : len(device) - len(suffix)]
        return exten if re.fullmatch(r"[A-Za-z0-9*#+]{1,40}", exten) else None


class HintKeeper:
    """The hints this link keeps in ``context``; see the module docstring. Event loop only."""

    def __init__(
        self,
        config: HintsConfig,
        client: AmiClient,
        session: Session,
        hint_devices: Callable[[str], str],
    ) -> None:
        self.config = config
        self.client = client
        self.session = session
        #: device -> the devices its hint names (e.g. "PJSIP/2001&Custom:remote-PJSIP-2001")
        self.hint_devices = hint_devices
        #: exten -> device, for every remote device that matches the template
        self.remote: dict[str, str] = {}
        #: presentities ("CustomPresence:NAME") that exist in the cluster
        self.presentities: set[str] = set()
        #: exten -> hint text this keeper added and Asterisk holds
        self.kept: dict[str, str] = {}
        #: extensions whose hint Asterisk had already (never touched)
        self.foreign: set[str] = set()
        self.wake = asyncio.Event()
        self._full = True  # read Asterisk's hints before the next add
        #: the last failure logged (an unchanged one is not logged again)
        self.last_error = ""
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="ami link hints")

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    # -- what the cluster holds --------------------------------------------------------------

    def remote_device(self, device: str, state: DeviceState) -> None:
        exten = self.config.exten_of(device)
        if exten is None:
            return
        if state is DeviceState.INVALID:
            if self.remote.pop(exten, None) is not None:
                self.wake.set()
        elif self.remote.setdefault(exten, device) == device and exten not in self.kept:
            self.wake.set()

    def presentity(self, presentity: str) -> None:
        if presentity not in self.presentities:
            self.presentities.add(presentity)
            self.wake.set()

    def reset(self, remote: dict[str, DeviceState], presentities: set[str]) -> None:
        """A (re)connect: the cluster's picture (told by :meth:`remote_device` all along, this
        only completes it), and Asterisk's hints to be read again."""
        for device, state in remote.items():
            self.remote_device(device, state)
        self.presentities |= presentities
        self._full = True
        self.wake.set()

    def wanted(self) -> dict[str, str]:
        """exten -> the hint text it should have."""
        out = {}
        for exten, device in self.remote.items():
            text = self.hint_devices(device)
            if f"CustomPresence:{exten}" in self.presentities:
                text += f",CustomPresence:{exten}"
            out[exten] = text
        return out

    def is_kept(self, exten: str, context: str) -> bool:
        return context == self.config.context and exten in self.kept

    # -- the task ----------------------------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            try:
                async with asyncio.timeout(CHECK_INTERVAL):
                    await self.wake.wait()
            except TimeoutError:
                pass
            self.wake.clear()
            if not self.session.writable():
                continue
            try:
                await self.sync()
            except (PbxmeshError, TimeoutError) as exc:  # AMI errors and timeouts: retried
                text = str(exc) or "no answer in time"
                if text != self.last_error:  # said once, not every second
                    log.warning(
                        "kept hints not updated context=%s error=%s; retrying every %s s",
                        self.config.context,
                        text,
                        CHECK_INTERVAL,
                    )
                self.last_error = text
                self._full = True
            else:
                self.last_error = ""

    async def sync(self) -> None:
        """Bring Asterisk's kept hints in line with :meth:`wanted` (one pass)."""
        if not self._full and not await self._intact():
            log.info("kept hints gone (dialplan reload?); adding them again")
            self._full = True
        if self._full:
            await self._read_asterisk()
            self._full = False
        wanted = self.wanted()
        for exten, text in list(self.kept.items()):
            if wanted.get(exten) != text:
                await self._remove(exten)
        for exten, text in wanted.items():
            if exten not in self.kept and exten not in self.foreign:
                await self._add(exten, text)

    async def _intact(self) -> bool:
        """One kept hint still there as added (no reload since)."""
        if not self.kept:
            return True
        exten, text = next(iter(self.kept.items()))
        answer = await self.client.send_action(
            Action.of("ExtensionState", Exten=exten, Context=self.config.context)
        )
        return answer.get("Hint") == text

    async def _read_asterisk(self) -> None:
        """Which extensions of ``context`` have a hint already (ExtensionStateList)."""
        try:
            answer = await self.client.list_action("ExtensionStateList")
            items = answer.items
        except AmiActionError as exc:
            if "no dialplan hints" not in exc.message.lower():
                raise
            items = ()
        present = {
            e.get("Exten") or "": e.get("Hint") or ""
            for e in items
            if e.get("Context") == self.config.context
        }
        # Ours if it reads exactly as we would write it (a restart of pbxmesh, not a reload).
        wanted = self.wanted()
        self.kept = {x: t for x, t in present.items() if wanted.get(x) == t}
        self.foreign = set(present) - set(self.kept)

    async def _add(self, exten: str, text: str) -> None:
        answer = await self.client.send_action(
            Action.of(
                "DialplanExtensionAdd",
                Context=self.config.context,
                Extension=exten,
                Priority="hint",
                Application=text,
            )
        )
        if answer.ok:
            self.kept[exten] = text
        elif EXISTS in answer.message.lower():
            self.foreign.add(exten)  # Asterisk has a hint of its own: never replaced
        elif "permission denied" in answer.message.lower():
            raise AmiActionError(
                "DialplanExtensionAdd",
                "Permission denied: add system to the write classes of pbxmesh's AMI user in "
                "manager.conf (pbxmesh asterisk-config prints it)",
            )
        else:
            raise AmiActionError("DialplanExtensionAdd", answer.message)

    async def _remove(self, exten: str) -> None:
        del self.kept[exten]
        answer = await self.client.send_action(
            Action.of(
                "DialplanExtensionRemove",
                Context=self.config.context,
                Extension=exten,
                Priority="hint",
            )
        )
        if not answer.ok:
            log.info("kept hint already gone exten=%s context=%s", exten, self.config.context)
