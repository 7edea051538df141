"""The NATS transport's :class:`NatsTransport`: start and close, the timer, the inbound
boundary and the views it reports. The package docstring (``__init__.py``) has the theory of
operation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Final

from ...errors import RemoteProtocolError, TransportClosed, TransportError
from ...tasks import cancel_and_wait
from ..base import (
    END,
    LinkState,
    Member,
    MembershipChange,
    Message,
    Transport,
    TransportEvent,
    drain,
)
from .config import NatsConfig, group_subjects, member_token
from .errors import Busy, translate
from .failover import Failover, close_client
from .heartbeat import (
    Heartbeat,
    HeartbeatKind,
    LostNotice,
    decode_heartbeat,
    encode_heartbeat,
    encode_lost,
)
from .held import HeldFrames
from .liveness import EchoLost, Liveness, Unheard

if TYPE_CHECKING:
    from ...config import ClusterConfig

__all__ = ["NatsTransport"]

log = logging.getLogger(__name__)

_FALLBACK_MAX_PAYLOAD: Final = 1024 * 1024
#: a timer this late (seconds) means our event loop was busy: see NatsTransport._forgive
_STALL_SLACK: Final = 0.05


class NatsTransport(Transport):
    """A member of one pbxmesh group over NATS; see the package docstring."""

    kind = "nats"

    def __init__(self, config: NatsConfig) -> None:
        self.config = config
        self.self_id = member_token(config.name)
        self.member = Member(member_id=self.self_id, name=config.name)
        self._frames, self._hb_subject, self._sub_subject = group_subjects(
            config.prefix, config.group, self.self_id
        )
        self._base = f"{config.prefix}.{config.group}."
        self._instance = secrets.randbits(64)
        self._epoch = 0
        self._queue: asyncio.Queue[TransportEvent | object] = asyncio.Queue()
        self._nc: Any = None
        self._sub: Any = None
        self._live = Liveness(
            self.member,
            self._instance,
            failure_timeout=config.failure_timeout,
            echo_timeout=config.effective_echo_timeout,
            heartbeat_interval=config.heartbeat_interval,
        )
        self._peers = self._live.peers
        self._started = False
        self._closed = False
        self._joined = asyncio.Event()  # set once the first view is out (and for good on close)
        self._link = asyncio.Event()  # set while connected (and for good on close)
        self._gathering = True  # joins are collected, not reported, while gathering
        self._early: list[Message] | None = []  # messages before the first view
        self._send_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._ticker: asyncio.Task[None] | None = None
        self._max_payload = _FALLBACK_MAX_PAYLOAD
        self._warned_dup = False
        self._failover = Failover(
            config, fail=self._fail, closed=lambda: self._closed, link=self._link
        )
        #: frames of senders not (yet) in our view, held until a view has them
        self._held = HeldFrames()
        #: set when the transport gave up for good; ``fatal_error`` says why
        self.failed = asyncio.Event()
        self.fatal_error: TransportError | None = None

    @classmethod
    def from_config(cls, cluster: ClusterConfig, node_name: str) -> NatsTransport:
        """The transport for ``[cluster]`` of pbxmesh.toml (``transport = "nats"``)."""
        return cls(NatsConfig.from_cluster(cluster, node_name))

    # -- public API ------------------------------------------------------------------------------
    @property
    def dropped_from_non_members(self) -> int:
        """Frames dropped because their sender was not (yet) a member of our view."""
        return self._held.dropped

    @property
    def max_message_size(self) -> int:
        cap = self.config.max_message_size
        return min(cap, self._max_payload) if cap else self._max_payload

    @property
    def connected_url(self) -> str | None:
        """The server we are connected to now (for logs, tests and benchmarks)."""
        nc = self._nc
        if nc is None or not nc.is_connected or nc.connected_url is None:
            return None
        return f"{nc.connected_url.hostname}:{nc.connected_url.port}"

    async def start(self) -> None:
        if self._closed:
            raise TransportClosed("nats transport is closed")
        if self._started:
            return
        try:
            from nats.aio.client import Client
        except ImportError as exc:
            raise TransportError(
                f"the NATS transport needs nats-py: pip install 'pbxmesh[nats]' ({exc})"
            ) from exc
        self._started = True
        loop = asyncio.get_running_loop()
        nc = Client()
        self._nc = self._failover.nc = nc
        options = self._failover.connect_options(
            disconnected_cb=self._on_disconnected,
            reconnected_cb=self._on_reconnected,
            closed_cb=self._on_closed,
        )
        try:
            await self._failover.connect(options)
            async with asyncio.timeout(self.config.start_timeout):
                self._max_payload = int(nc.max_payload) or _FALLBACK_MAX_PAYLOAD
                self._sub = await nc.subscribe(
                    self._sub_subject,
                    cb=self._on_msg,
                    pending_msgs_limit=-1,
                    pending_bytes_limit=-1,
                )
                self._link.set()
                self._live.echoed(loop.time())
                await self._heartbeat(HeartbeatKind.PROBE)
                await nc.flush()
        except asyncio.CancelledError:
            await close_client(nc, self.config.leave_timeout)
            raise
        except TransportError:
            await close_client(nc, self.config.leave_timeout)
            raise
        except Exception as exc:
            await close_client(nc, self.config.leave_timeout)
            raise translate(exc, self.config.servers) from exc
        await asyncio.sleep(self.config.join_gather)  # probe answers arrive meanwhile
        if self._closed:
            raise TransportClosed("nats transport was closed while starting")
        self._gathering = False
        self._report(self._peers.change(joined=(*self._peers.members(), self.member)))
        early, self._early = self._early or [], None
        for msg in early:
            self._deliver(msg)
        self._joined.set()
        self._ticker = loop.create_task(self._tick(), name="pbxmesh-nats-heartbeat")
        self._failover.start_failback()
        log.info(
            "nats joined group=%s self=%s server=%s members=%d",
            self.config.group,
            self.self_id,
            self.connected_url,
            len(self._peers.peers) + 1,
        )

    async def send(self, data: bytes) -> None:
        if len(data) > self.max_message_size:
            raise ValueError(f"message of {len(data)} bytes exceeds {self.max_message_size}")
        if self._closed or not self._started:
            raise TransportClosed("nats transport is not running")
        async with self._send_lock:
            await self._joined.wait()
            while True:
                if self._closed:
                    raise TransportClosed("nats transport is closed")
                try:
                    await self._nc.publish(self._frames, data)
                    return
                except Exception as exc:
                    err = translate(exc, self.config.servers)
                    if not isinstance(err, Busy):
                        raise err from exc
                if self._link.is_set():
                    await asyncio.sleep(0.02)  # nats-py is reconnecting but has not said so yet
                else:
                    await self._link.wait()

    def events(self) -> AsyncIterator[TransportEvent]:
        return drain(self._queue)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await cancel_and_wait(self._ticker)
        await self._failover.stop()
        for task in list(self._tasks):
            task.cancel()
        nc = self._nc
        if nc is not None and nc.is_connected:
            try:
                async with asyncio.timeout(self.config.leave_timeout):
                    await self._heartbeat(HeartbeatKind.LEAVE)
                    await nc.flush()
            except Exception as exc:  # the leave is best effort; failure detection remains
                log.debug("nats leave group=%s: %s", self.config.group, exc)
        await close_client(nc, self.config.leave_timeout)
        self._joined.set()
        self._link.set()  # wake senders: they see _closed
        self._queue.put_nowait(END)
        log.info("nats left group=%s self=%s", self.config.group, self.self_id)

    # -- the link ---------------------------------------------------------------------------------
    async def _on_disconnected(self) -> None:
        if self._closed or not self._link.is_set():
            return
        self._link.clear()
        self._failover.disconnected(asyncio.get_running_loop().time())
        reason = str(getattr(self._nc, "last_error", None) or "disconnected from server")
        log.warning("nats link down group=%s self=%s: %s", self.config.group, self.self_id, reason)
        self._deliver(LinkState(up=False, reason=reason))

    async def _on_reconnected(self) -> None:
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        self._epoch = (self._epoch + 1) & 0xFFFFFFFF
        self._live.reconnected(now)  # everyone gets a full failure_timeout to show up again
        self._unheard_told = False
        self._gathering = True
        self._link.set()
        self._failover.reconnected()
        log.info(
            "nats link up group=%s self=%s server=%s epoch=%d",
            self.config.group,
            self.self_id,
            self.connected_url,
            self._epoch,
        )
        self._deliver(LinkState(up=True))
        self._spawn(self._resync_view())

    async def _resync_view(self) -> None:
        with contextlib.suppress(Exception):
            await self._heartbeat(HeartbeatKind.PROBE)
        await asyncio.sleep(self.config.join_gather)
        self._gathering = False
        if not self._closed:
            self._report(self._peers.change(joined=self._peers.members()))

    async def _on_closed(self) -> None:
        if self._closed:
            return
        # Only reached if nats-py gave up (it retries forever otherwise): report, stay closed.
        log.error("nats client closed by itself group=%s; transport is dead", self.config.group)
        self._deliver(LinkState(up=False, reason="nats client closed"))
        self._closed = True
        self._joined.set()
        self._link.set()
        self._queue.put_nowait(END)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _fail(self, err: TransportError) -> None:
        """Give up for good: the daemon stops with ``err`` (it waits on ``failed``)."""
        if self.fatal_error is not None or self._closed:
            return
        self.fatal_error = err
        log.error("%s", err)
        self.failed.set()
        if not self._failover.settle_start(err) and self._joined.is_set():  # start() raises it
            self._spawn(self.close())

    # -- heartbeats and failure detection --------------------------------------------------------
    async def _heartbeat(self, kind: HeartbeatKind) -> None:
        hb = Heartbeat(kind, self._instance, self._epoch, self.config.name)
        await self._nc.publish(self._hb_subject, encode_heartbeat(hb))

    async def _lost_notice(self, now: float) -> None:
        lost = self._live.lost(now)
        if lost:
            notice = LostNotice(self._instance, self._epoch, self.config.name, lost)
            await self._nc.publish(self._hb_subject, encode_lost(notice))

    async def _lost_notice_now(self, now: float) -> None:
        try:
            await self._lost_notice(now)
        except Exception as exc:  # the link is down: the next notice will do
            log.debug("nats lost notice not sent: %s", exc)

    async def _tick(self) -> None:
        """Publish heartbeats (and lost notices every other one), expire silent members and
        watch our own echo, on one timer."""
        loop = asyncio.get_running_loop()
        c = self.config
        next_hb = expected = loop.time()
        beat = 0
        while True:
            now = loop.time()
            if now - expected > _STALL_SLACK:
                self._forgive(now - expected)
            if now >= next_hb:
                next_hb = now + c.heartbeat_interval
                beat += 1
                if self._nc.is_connected:
                    try:
                        await self._heartbeat(HeartbeatKind.ALIVE)
                        if beat % 2 == 0:
                            await self._lost_notice(now)
                    except Exception as exc:
                        log.debug("nats heartbeat not sent: %s", exc)
            self._check(loop.time())
            delay = max(0.005, self._live.next_deadline(next_hb) - loop.time())
            expected = loop.time() + delay
            await asyncio.sleep(delay)

    def _forgive(self, seconds: float) -> None:
        """Our event loop ran us ``seconds`` late (a long merge, CPU starvation): time in
        which we could not read does not count against anybody, ourselves included."""
        self._live.forgive(seconds)
        if seconds > self.config.heartbeat_interval:
            log.info("nats: event loop stalled %.2f s; failure timers extended", seconds)

    def _check(self, now: float) -> None:
        if not self._link.is_set() or self._gathering:
            return
        if self._sub is not None and self._sub.pending_msgs > 0:
            return  # input is waiting to be read: silence is ours, judge after reading it
        verdict = self._live.judge(now)
        if isinstance(verdict, EchoLost):  # our own path is in doubt: nobody else is blamed
            self._spawn(
                self._failover.abandon(f"no echo of our heartbeats for {verdict.age:.1f} s")
            )
        elif isinstance(verdict, Unheard):
            self._spawn(self._failover.leave_unheard(list(verdict.by)))
        elif verdict is not None:
            self._report(verdict)
            # tell the failed members now, not at the next notice: one that was only frozen
            # or slow may be heard again within the second, and must announce its state again
            self._spawn(self._lost_notice_now(now))

    # -- inbound ---------------------------------------------------------------------------------
    async def _on_msg(self, msg: Any) -> None:
        """The single inbound boundary: every message of the group passes here, in order."""
        subject: str = msg.subject
        if not subject.startswith(self._base):
            return
        kind, _, sender = subject[len(self._base) :].partition(".")
        if kind == "frames":
            if log.isEnabledFor(logging.DEBUG):
                log.debug("<<- frame from=%s len=%d", sender, len(msg.data))
            if sender != self.self_id and sender not in self._peers.peers:
                # Not (yet, or no longer) in our view: a frame must never be merged ahead of
                # the membership that would drop it. It is held until a view has its sender
                # (then delivered after that view) and dropped if none does in HOLD_SECONDS:
                # the sender may have announced its whole state in it, and would not again.
                if self._held.hold(sender, msg.data, asyncio.get_running_loop().time()):
                    log.info("nats: frames from %s held until it is a member", sender)
                return
            self._peers.seen(sender, asyncio.get_running_loop().time())
            self._deliver(Message(sender=sender, data=msg.data))
        elif kind == "hb":
            try:
                hb = decode_heartbeat(msg.data)
            except RemoteProtocolError as exc:
                log.warning("nats: dropped bad heartbeat on %s: %s", subject, exc)
                return
            if member_token(hb.name) != sender:
                log.warning(
                    "nats: heartbeat of %r on %s dropped: name/subject differ", hb.name, subject
                )
                return
            if isinstance(hb, LostNotice):
                if sender != self.self_id:
                    now = asyncio.get_running_loop().time()
                    change = self._live.notice(sender, hb, now)
                    if change is not None:
                        log.info("nats: %s declared us failed; announcing our state again", sender)
                        self._report(change)
                return
            await self._on_heartbeat(sender, hb)

    async def _on_heartbeat(self, sender: str, hb: Heartbeat) -> None:
        now = asyncio.get_running_loop().time()
        if sender == self.self_id:
            if hb.instance == self._instance:
                self._live.echoed(now)
            elif not self._warned_dup:
                self._warned_dup = True
                log.error(
                    "nats: another process uses our member id %s (node name %r) in group %s; "
                    "every node needs its own [node] name",
                    sender,
                    self.config.name,
                    self.config.group,
                )
            return
        for change in self._peers.heartbeat(sender, hb, now, self._gathering):
            self._report(change)
        self._held.heard(sender)
        if hb.kind is HeartbeatKind.PROBE and self._nc is not None and self._nc.is_connected:
            with contextlib.suppress(Exception):
                await self._heartbeat(HeartbeatKind.ALIVE)

    # -- outbound events -------------------------------------------------------------------------
    def _deliver(self, event: TransportEvent) -> None:
        if self._closed:
            return
        if self._early is not None and isinstance(event, Message):
            self._early.append(event)
        else:
            self._queue.put_nowait(event)

    def _report(self, change: MembershipChange) -> None:
        log.info(
            "nats membership group=%s view=%d members=%d joined=%s left=%s clean=%s",
            self.config.group,
            change.view,
            len(change.members),
            [m.member_id for m in change.joined],
            [m.member_id for m in change.left],
            all(change.clean),
        )
        self._deliver(change)
        if self._held:
            for msg in self._held.release(change, asyncio.get_running_loop().time()):
                self._deliver(msg)
