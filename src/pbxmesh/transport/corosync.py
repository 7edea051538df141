"""The Corosync CPG transport: one process group per mesh, driven from asyncio.

Theory of operation
-------------------
``start()`` opens a CPG handle (model V1, with the initial totem confchg so the ring id is known
from the first view), a quorum handle and, briefly, a cmap handle to read the node list. It
joins the group and registers the CPG and quorum fds with ``loop.add_reader``. Each time an fd
is readable the loop calls ``dispatch(CS_DISPATCH_ALL)``, which drains the queued callbacks
without blocking; the callbacks only build events and put them on an unbounded queue that
``events()`` reads. (Corosync has no back-pressure from slow receivers: the consumer must
drain.) ``start()`` returns when our own JOIN confchg has arrived, so that event is the first
one ``events()`` yields.

*Member ids* are ``"<nodeid>:<pid>"`` in decimal, e.g. ``"2:81234"``: the pair CPG itself uses
to name a group member, readable in logs, and stable for the member's lifetime. ``name`` and
``address`` come from the ``nodelist {}`` of corosync.conf (``name``, ``ring0_addr``) when
present. ``view`` is the totem ring sequence number (``cpg_ring_id.seq``), the newest one known
when the dispatch that delivered the change ends: corosync sends the totem confchg just after
the CPG confchg, so a view can, rarely, still carry the previous ring's seq. It never
decreases. ``quorate`` comes from libquorum. A quorum change
without a CPG change is reported as a :class:`MembershipChange` with no joined or left member.
``clean`` is True for a member that left with ``cpg_leave`` (reason LEAVE) and False when its
process or node went down (PROCDOWN, NODEDOWN).

*Sending.* ``cpg_mcast_joined`` before our own JOIN confchg returns CS_OK but corosync drops
the message, so ``send`` first waits until joined. ``CS_ERR_TRY_AGAIN`` is retried after a
delay that doubles from ``send_retry_delay`` up to ``send_retry_max_delay``, so a full queue
never makes the loop spin; a lock keeps concurrent senders in call order. If the daemon goes
away mid-send the message is sent again after reconnecting. (A message corosync accepted just
before it died may still be lost: ``mcast`` is fire-and-forget.)

*Losing the daemon.* When corosync dies its fds stay readable and dispatch returns
CS_ERR_LIBRARY. The reader is removed at once (otherwise the loop spins), the handles are
finalized, ``LinkState(up=False)`` is queued, and a background task retries initialize + join
every ``reconnect_interval``. On success it queues ``LinkState(up=True)``; the JOIN confchg of
the new handle follows as a fresh :class:`MembershipChange` on which the node resynchronises.

*Closing.* ``close()`` calls ``cpg_leave`` and waits briefly for its own leave to be delivered,
so the others see reason LEAVE at once instead of PROCDOWN, then finalizes and ends
``events()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass

from ..errors import ConfigError, TransportClosed, TransportError
from ..tasks import cancel_and_wait
from . import _cpg, _csabi
from .base import (
    END,
    LinkState,
    Member,
    MembershipChange,
    Message,
    Transport,
    TransportEvent,
    drain,
)

__all__ = ["CorosyncConfig", "CorosyncTransport"]

log = logging.getLogger(__name__)

#: used when cpg_max_atomic_msgsize_get is not available (corosync 3.1: 1 MiB - 1024)
_FALLBACK_MAX_MESSAGE = 1024 * 1024 - 1024


@dataclass(frozen=True, slots=True)
class CorosyncConfig:
    """Settings of :class:`CorosyncTransport`; validated when built."""

    # CPG group name, 1..128 bytes of UTF-8. Every node of one mesh uses the same name; a test
    # uses a fresh one so that leftovers of other runs never share its group.
    group: str = "pbxmesh"
    # Seconds between reconnect attempts (initialize + join) while corosync is down. Lower
    # reconnects sooner after a restart; each attempt is one failed connect() on a unix socket.
    reconnect_interval: float = 0.2
    # Seconds to wait before retrying a send refused with CS_ERR_TRY_AGAIN. Doubles on each
    # retry of the same message up to send_retry_max_delay: short keeps latency low when the
    # totem queue drains quickly, the cap bounds the wake-ups while corosync is in sync.
    send_retry_delay: float = 0.002
    # Upper bound, in seconds, of the doubling retry delay above.
    send_retry_max_delay: float = 0.05
    # Seconds start() waits for corosync (join accepted and own JOIN confchg delivered) before
    # raising TransportError. A restarted node can answer TRY_AGAIN for a few seconds.
    start_timeout: float = 10.0
    # Seconds close() waits for its own leave to be delivered before finalizing anyway.
    leave_timeout: float = 2.0
    # Cap on one message, in bytes; the effective limit is the smaller of this and corosync's
    # largest atomic (unfragmented) message. 0 means "corosync's limit".
    max_message_size: int = 0

    def __post_init__(self) -> None:
        raw = self.group.encode()
        if not 1 <= len(raw) <= _csabi.CPG_MAX_NAME_LENGTH:
            raise ConfigError(f"corosync group must be 1..128 bytes of UTF-8, got {self.group!r}")
        for key in ("reconnect_interval", "send_retry_delay", "start_timeout", "leave_timeout"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"corosync {key} must be > 0, got {getattr(self, key)!r}")
        if self.send_retry_max_delay < self.send_retry_delay:
            raise ConfigError("corosync send_retry_max_delay must be >= send_retry_delay")
        if self.max_message_size < 0:
            raise ConfigError("corosync max_message_size must be >= 0")

    @classmethod
    def local(cls, group: str) -> CorosyncConfig:
        """Fast timers for tests against a corosync on the same host."""
        return cls(group=group, reconnect_interval=0.05, start_timeout=15.0)


class _Connection:
    """The handles of one connection to the daemon; replaced as a whole on reconnect."""

    def __init__(self, cpg: _cpg.CpgHandle, quorum: _cpg.QuorumHandle | None) -> None:
        self.cpg = cpg
        self.quorum = quorum
        self.joined = False
        self.left = asyncio.Event()

    def finalize(self) -> None:
        self.cpg.finalize()
        if self.quorum is not None:
            self.quorum.finalize()


class CorosyncTransport(Transport):
    """A member of one Corosync CPG group; see the module docstring."""

    kind = "corosync"

    def __init__(self, config: CorosyncConfig | None = None) -> None:
        self.config = config or CorosyncConfig()
        self._queue: asyncio.Queue[TransportEvent | object] = asyncio.Queue()
        self._conn: _Connection | None = None
        self._ready = asyncio.Event()  # set while joined, and for good once closed
        self._send_lock = asyncio.Lock()
        self._reconnect_task: asyncio.Task[None] | None = None
        self._started = False
        self._closed = False
        self._nodeid = 0
        self._pid = os.getpid()
        self._nodes: dict[int, _cpg.NodeInfo] = {}
        self._members: tuple[Member, ...] = ()
        self._ring_seq = 0
        self._quorate = True
        self._max_message = _FALLBACK_MAX_MESSAGE
        # events of the dispatch in progress, see _flush_batch
        self._batch: list[TransportEvent] | None = None

    # -- public API ------------------------------------------------------------------------------
    @property
    def max_message_size(self) -> int:
        cap = self.config.max_message_size
        return min(cap, self._max_message) if cap else self._max_message

    async def start(self) -> None:
        if self._closed:
            raise TransportClosed("corosync transport is closed")
        if self._started:
            return
        _csabi.load()  # TransportError naming the missing library
        self._started = True
        deadline = asyncio.get_running_loop().time() + self.config.start_timeout
        try:
            await self._connect(deadline)
            remaining = deadline - asyncio.get_running_loop().time()
            async with asyncio.timeout(max(remaining, 0)):
                await self._ready.wait()
        except TimeoutError as exc:
            await self._abort()
            raise TransportError(
                f"corosync: no JOIN confchg for group {self.config.group!r} within "
                f"{self.config.start_timeout} s; is corosync up and quorate?"
            ) from exc
        except BaseException:
            await self._abort()
            raise
        if self._closed:
            raise TransportClosed("corosync transport was closed while starting")
        log.info("corosync joined group=%s self=%s", self.config.group, self.self_id)

    async def send(self, data: bytes) -> None:
        if len(data) > self.max_message_size:
            raise ValueError(f"message of {len(data)} bytes exceeds {self.max_message_size}")
        if self._closed or not self._started:
            raise TransportClosed("corosync transport is not running")
        async with self._send_lock:
            delay = self.config.send_retry_delay
            while True:
                await self._ready.wait()
                conn = self._conn
                if self._closed:
                    raise TransportClosed("corosync transport is closed")
                assert conn is not None
                try:
                    conn.cpg.mcast(data)
                    return
                except _csabi.CsTryAgain:
                    await asyncio.sleep(delay)
                    delay = min(2 * delay, self.config.send_retry_max_delay)
                except _csabi.CsGone as exc:
                    self._lost(conn, str(exc))

    def events(self) -> AsyncIterator[TransportEvent]:
        return drain(self._queue)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await cancel_and_wait(self._reconnect_task)
        conn = self._conn
        if conn is not None and conn.joined:
            try:
                conn.cpg.leave()
                async with asyncio.timeout(self.config.leave_timeout):
                    await conn.left.wait()
            except (TransportError, TimeoutError) as exc:
                log.debug("corosync leave group=%s: %s", self.config.group, exc)
        self._drop(conn)
        self._ready.set()  # wake senders: they see _closed
        self._queue.put_nowait(END)
        log.info("corosync left group=%s self=%s", self.config.group, self.self_id)

    # -- connection ------------------------------------------------------------------------------
    async def _connect(self, deadline: float | None = None) -> None:
        """Open the handles and join; retries TRY_AGAIN until ``deadline`` (None: once)."""
        loop = asyncio.get_running_loop()
        cpg = _cpg.CpgHandle(self.config.group, self._on_deliver, self._on_confchg, self._on_totem)
        quorum: _cpg.QuorumHandle | None = None
        try:
            self._nodeid = cpg.local_nodeid()
            self.self_id = f"{self._nodeid}:{self._pid}"
            with contextlib.suppress(_csabi.CsError):
                self._max_message = cpg.max_atomic_msgsize()
            self._nodes = self._read_nodelist()
            try:
                quorum = _cpg.QuorumHandle(self._on_quorum)
                self._quorate = quorum.quorate()
            except _csabi.CsGone:
                raise
            except _csabi.CsError as exc:  # no quorum service: behave as always quorate
                log.warning("corosync quorum unavailable, assuming quorate: %s", exc)
                self._quorate = True
            delay = self.config.send_retry_delay
            while True:
                try:
                    cpg.join()
                    break
                except _csabi.CsTryAgain:
                    if deadline is None or loop.time() + delay > deadline:
                        raise
                    await asyncio.sleep(delay)
                    delay = min(2 * delay, self.config.send_retry_max_delay)
        except BaseException:
            cpg.finalize()
            if quorum is not None:
                quorum.finalize()
            raise
        conn = _Connection(cpg, quorum)
        self._conn = conn
        loop.add_reader(cpg.fd, self._on_readable, conn, cpg)
        if quorum is not None:
            loop.add_reader(quorum.fd, self._on_readable, conn, quorum)

    def _read_nodelist(self) -> dict[int, _cpg.NodeInfo]:
        try:
            with _cpg.CmapHandle() as cmap:
                return cmap.nodelist()
        except _csabi.CsError as exc:
            log.warning("corosync node list unavailable: %s", exc)
            return {}

    def _on_readable(self, conn: _Connection, handle: _cpg.CpgHandle | _cpg.QuorumHandle) -> None:
        if conn is not self._conn:
            return
        self._batch = []
        try:
            handle.dispatch()
        except _csabi.CsGone as exc:
            self._flush_batch()
            self._lost(conn, str(exc))
        except TransportError as exc:
            self._flush_batch()
            log.error("corosync dispatch failed, reconnecting: %s", exc)
            self._lost(conn, str(exc))
        finally:
            self._flush_batch()

    def _flush_batch(self) -> None:
        """Queue the events of one dispatch, views stamped with the ring seq known at its end.

        The totem confchg carrying the new ring id is delivered just *after* the CPG confchg
        it belongs to; when both arrive in one dispatch the view gets the new ring's seq.
        """
        batch, self._batch = self._batch, None
        for event in batch or ():
            if isinstance(event, MembershipChange) and event.view < self._ring_seq:
                self._emit(dataclasses.replace(event, view=self._ring_seq))
            else:
                self._emit(event)

    def _drop(self, conn: _Connection | None) -> None:
        """Stop polling and finalize ``conn`` (the current connection)."""
        if conn is None:
            return
        loop = asyncio.get_running_loop()
        loop.remove_reader(conn.cpg.fd)
        if conn.quorum is not None:
            loop.remove_reader(conn.quorum.fd)
        conn.finalize()
        if self._conn is conn:
            self._conn = None

    def _lost(self, conn: _Connection, reason: str) -> None:
        """The daemon went away under ``conn``: report it and reconnect in the background."""
        if conn is not self._conn or self._closed:
            return
        self._drop(conn)  # remove_reader first: the dead fd stays readable
        self._ready.clear()
        log.warning("corosync link down group=%s: %s", self.config.group, reason)
        self._emit(LinkState(up=False, reason=reason))
        self._reconnect_task = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        attempts = 0
        while not self._closed:
            await asyncio.sleep(self.config.reconnect_interval)
            attempts += 1
            try:
                await self._connect()
            except TransportError as exc:
                if attempts == 1 or log.isEnabledFor(logging.DEBUG):
                    log.info("corosync reconnect attempt=%d failed: %s", attempts, exc)
                continue
            log.info("corosync link up group=%s attempts=%d", self.config.group, attempts)
            # Queued before any callback of the new handle can run: the fresh
            # MembershipChange (our JOIN confchg) follows it.
            self._emit(LinkState(up=True))
            return

    async def _abort(self) -> None:
        self._drop(self._conn)
        self._started = False

    # -- callbacks (run inside dispatch, on the loop thread) ------------------------------------
    def _emit(self, event: TransportEvent) -> None:
        if self._batch is not None:
            self._batch.append(event)
        elif not self._closed:
            self._queue.put_nowait(event)

    def _member(self, nodeid: int, pid: int) -> Member:
        node = self._nodes.get(nodeid)
        return Member(
            member_id=f"{nodeid}:{pid}",
            name=node.name if node else "",
            nodeid=nodeid,
            address=(node.address or None) if node else None,
        )

    def _on_deliver(self, nodeid: int, pid: int, data: bytes) -> None:
        self._emit(Message(sender=f"{nodeid}:{pid}", data=data))

    def _on_confchg(
        self,
        members: tuple[_cpg.CpgAddress, ...],
        left: tuple[_cpg.CpgAddress, ...],
        joined: tuple[_cpg.CpgAddress, ...],
    ) -> None:
        conn = self._conn
        me = (self._nodeid, self._pid)
        if conn is not None and any((a.nodeid, a.pid) == me for a in left):
            conn.left.set()
            return  # our own leave: close() is finishing
        if conn is not None and not conn.joined:
            if not any((a.nodeid, a.pid) == me for a in joined):
                return  # a change before our own join took effect
            conn.joined = True
            self._ready.set()
        self._members = tuple(self._member(a.nodeid, a.pid) for a in members)
        change = MembershipChange(
            members=self._members,
            joined=tuple(self._member(a.nodeid, a.pid) for a in joined),
            left=tuple(self._member(a.nodeid, a.pid) for a in left),
            view=self._ring_seq,
            quorate=self._quorate,
            clean=tuple(a.reason == _csabi.REASON_LEAVE for a in left),
        )
        log.info(
            "corosync membership group=%s view=%d members=%d joined=%s left=%s quorate=%s",
            self.config.group,
            change.view,
            len(change.members),
            [m.member_id for m in change.joined],
            [m.member_id for m in change.left],
            change.quorate,
        )
        self._emit(change)

    def _on_totem(self, _ring_nodeid: int, seq: int, _nodeids: tuple[int, ...]) -> None:
        self._ring_seq = max(self._ring_seq, seq)

    def _on_quorum(self, quorate: bool, seq: int) -> None:
        self._ring_seq = max(self._ring_seq, seq)
        if quorate == self._quorate:
            return
        self._quorate = quorate
        conn = self._conn
        if conn is not None and conn.joined:
            log.info("corosync quorum group=%s quorate=%s", self.config.group, quorate)
            self._emit(MembershipChange(members=self._members, view=seq, quorate=quorate))
