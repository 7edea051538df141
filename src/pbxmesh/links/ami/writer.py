"""The AMI link's writer: the cluster's values into Asterisk, one task, newest value per name.

Theory of operation
-------------------
Remote device states (to their ``Custom:`` counterparts, ``Setvar DEVICE_STATE``), remote MWI
(``MWIUpdate``) and remote presence (``Setvar PRESENCE_STATE``, through the
:class:`~.presence.PresenceMirror`) wait in queues that keep only the newest value per name, so
a burst of changes to one device costs one ``Setvar``. One task writes them, device states
first, then MWI, then presence, and only while the :class:`~.session.Session` allows it (not
between a reconnect and its resync, not during a resync).

Up to :data:`WRITE_WINDOW` counterpart writes are in flight at once, each name at most once per
batch, and every write of a batch has ended before the next batch begins: a name never has two
writes in flight. A write that fails is queued again unless a newer value for its name was
queued meanwhile; a timeout with the connection up is retried after :data:`WRITE_RETRY_PAUSE`.

Each ``MWIUpdate`` is remembered (:class:`~.echoes.Echoes`) so that the ``MessageWaiting`` it
raises is known for an echo, not a local change.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

from ...errors import AmiActionError, AmiError, PbxmeshError
from ...states import DeviceState
from ...tasks import cancel_and_wait
from .client import AmiClient
from .echoes import Echoes
from .presence import PresenceMirror
from .session import Session

__all__ = ["UNKNOWN_COMMAND", "WRITE_RETRY_PAUSE", "WRITE_WINDOW", "AmiWriter"]

#: the AMI link's logger: its writer's lines keep the name administrators filter on
log = logging.getLogger(__package__ + ".link")

UNKNOWN_COMMAND: Final = "invalid/unknown command"
#: Most counterpart writes (Setvar) in flight at once.
WRITE_WINDOW: Final = 64
#: seconds before writes that failed with the connection still up (a timeout) are retried
WRITE_RETRY_PAUSE: Final = 0.5

_V = TypeVar("_V")


class AmiWriter:
    """The queues of remote values and the one task that writes them; see the module
    docstring. Event loop only."""

    def __init__(self, client: AmiClient, presence: PresenceMirror, session: Session) -> None:
        self.client = client
        self.presence = presence
        self.session = session
        #: counterpart -> remote state waiting to be written (newest only)
        self.devices: dict[str, DeviceState] = {}
        #: mailbox@context -> remote counts waiting to be written (newest only)
        self.mwi: dict[str, tuple[int, int]] = {}
        #: counterpart -> state last written on this connection
        self.written: dict[str, DeviceState] = {}
        self.mwi_echo: Echoes[tuple[int, int]] = Echoes()
        self.wake = asyncio.Event()
        self.settled = asyncio.Event()
        self.writing = False
        #: Asterisk has MWIUpdate (res_mwi_external_ami); told again at every resync
        self.mwiupdate_ok = True
        #: remote mailboxes this Asterisk cannot show
        self.mwi_not_shown: list[str] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._write_loop(), name="ami link writer")

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    @property
    def queue_depth(self) -> int:
        """Remote states and MWI waiting to be written to Asterisk (superseded by name)."""
        return len(self.devices) + len(self.mwi) + len(self.presence.dirty)

    def busy(self) -> bool:
        return bool(
            self.devices or self.mwi or self.presence.dirty or self.session.syncing or self.writing
        )

    async def wait_idle(self) -> None:
        """Wait until no resync runs and every queued remote write was sent."""
        while self.busy():
            self.settled.clear()
            await self.settled.wait()

    def forget(self) -> None:
        """A resync begins: what this connection was written is not known any more."""
        self.written.clear()
        self.mwi_echo.clear()

    async def _write_loop(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            if not self.session.writable() or not self.client.connected:
                self.settled.set()
                continue  # the resync at (re)connect writes everything
            self.writing = True
            retry = False
            try:
                await self._write_round()
            except AmiError as exc:
                # The connection dropped (its resync rewrites everything) or an action timed
                # out with the connection up: what failed was queued again, retried shortly.
                log.debug("remote write interrupted error=%s", exc)
                retry = True
            except PbxmeshError as exc:  # e.g. a name AMI cannot carry: never end the writer
                log.warning("remote write refused error=%s", exc)
            finally:
                self.writing = False
                self.settled.set()
            if retry and self.client.connected:
                await asyncio.sleep(WRITE_RETRY_PAUSE)
                self.wake.set()

    async def _write_round(self) -> None:
        """Write what is queued. A write that fails is queued again unless a newer value for
        its name is queued meanwhile, and every write of a batch has ended before the next
        batch begins: a name never has two writes in flight (the later could be skipped as
        already written while the earlier, older one is still on its way)."""
        while self.devices and self.session.writable():
            # Up to WRITE_WINDOW Setvars in flight at once (each name at most once, so
            # per-device order holds): one round trip per batch, not per device.
            batch = []
            for _ in range(min(len(self.devices), WRITE_WINDOW)):
                name = next(iter(self.devices))
                batch.append((name, self.devices.pop(name)))
            results = await asyncio.gather(
                *(self.write_device(n, st) for n, st in batch), return_exceptions=True
            )
            failed: BaseException | None = None
            for (name, state), result in zip(batch, results, strict=True):
                if isinstance(result, BaseException):
                    self.devices.setdefault(name, state)
                    failed = failed or result
            if failed is not None:
                raise failed
        await self._drain(self.mwi, lambda box, counts: self.write_mwi(box, *counts))
        await self._drain(
            self.presence.dirty, lambda name, value: self.presence.write(self.client, name, value)
        )

    async def _drain(
        self, queue: dict[str, _V], write: Callable[[str, _V], Awaitable[None]]
    ) -> None:
        """Write a last-writer-wins queue (MWI, presence) in order, one at a time; what fails
        is queued again unless a newer value is."""
        while queue and self.session.writable():
            name = next(iter(queue))
            value = queue.pop(name)
            try:
                await write(name, value)
            except AmiError:
                queue.setdefault(name, value)
                raise

    async def write_device(self, name: str, state: DeviceState) -> None:
        if state is DeviceState.UNKNOWN:
            state = DeviceState.INVALID  # func_devstate refuses UNKNOWN
        if self.written.get(name) is state:
            return
        try:
            await self.client.action("Setvar", Variable=f"DEVICE_STATE({name})", Value=state.name)
        except AmiActionError as exc:
            log.warning(
                "cannot write counterpart device=%s state=%s error=%s",
                name,
                state.name,
                exc.message,
            )
            return
        self.written[name] = state

    async def write_mwi(self, mailbox: str, new: int, old: int) -> None:
        if not self.mwiupdate_ok:
            if mailbox not in self.mwi_not_shown and len(self.mwi_not_shown) < 10_000:
                self.mwi_not_shown.append(mailbox)
                log.info(
                    "remote mailbox %s cannot be shown on this server (no MWIUpdate on %s)",
                    mailbox,
                    self.client.peer,
                )
            return
        self.mwi_echo.wrote(mailbox, (new, old))
        try:
            await self.client.action("MWIUpdate", Mailbox=mailbox, NewMessages=new, OldMessages=old)
        except AmiActionError as exc:
            self.mwi_echo.failed(mailbox, (new, old))
            if UNKNOWN_COMMAND in exc.message.lower():
                self.mwiupdate_ok = False
                log.error(
                    "Asterisk has no MWIUpdate (load res_mwi_external_ami); remote "
                    "mailbox counts will not be shown on this server"
                )
            else:
                log.warning("cannot write remote MWI mailbox=%s error=%s", mailbox, exc.message)
