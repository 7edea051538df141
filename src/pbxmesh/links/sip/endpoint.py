"""An asyncio SIP endpoint: UDP and TCP on one address, requests to a handler, responses to
client transactions.

Theory of operation
-------------------
:class:`SipEndpoint` binds ``listen`` for UDP and TCP (the same port number). Every message
that arrives goes through one inbound boundary, :meth:`SipEndpoint._inbound`:

* bytes that do not decode are dropped with a log line (rate-limited) and counted in
  ``stats["malformed"]``; a TCP connection whose framing broke is closed;
* a request is first looked up in :class:`~.transaction.ServerTransactions`: a retransmission
  gets the stored answer again and never reaches the handler twice; a new one is passed to
  the handler, a plain function ``(request, source) -> Response | None`` that must not block.
  Its answer is remembered and sent back (UDP: to the source address, RFC 3581 style, or to
  the Via port without ``rport``; TCP: on the same connection). A handler that raises is
  logged and answered ``500``; the endpoint never stops on a bad message;
* a response goes to the client transaction its top Via branch and CSeq method name, and is
  dropped otherwise.

:meth:`SipEndpoint.request` runs one client transaction: it adds the top Via with a fresh
branch (and ``rport``), sends, re-sends at Timer E over UDP, and returns the final response;
a timeout (Timer F) or a failed TCP connection comes back as a local ``408``/``503`` response,
so the caller has one path for every outcome. Outbound TCP connections are opened on demand
and reused; what arrives on them is handled like any inbound connection.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

from ...errors import RemoteProtocolError
from ...tasks import cancel_and_wait
from .headers import Via
from .message import CLOSED, NEED_DATA, Request, Response, SipStream, decode_datagram, encode
from .transaction import (
    ClientTransaction,
    ServerTransactions,
    Timers,
    TxEvent,
    make_response,
    new_branch,
)

__all__ = ["Handler", "SecondlyWarning", "SipEndpoint", "Source"]

log = logging.getLogger(__name__)


class SecondlyWarning:
    """Log at WARNING at most once a second, the rest at DEBUG: what a peer that sends garbage
    in a loop cannot flood the log with."""

    def __init__(self, logger: logging.Logger) -> None:
        self._log = logger
        self._last = -1e9

    def __call__(self, text: str, *args: object) -> None:
        now = asyncio.get_running_loop().time()
        if now - self._last >= 1.0:
            self._last = now
            self._log.warning(text, *args)
        else:
            self._log.debug(text, *args)


Transport = Literal["udp", "tcp"]
_MAX_TCP: Final = 64  # inbound connections at most
_READ: Final = 65_536


@dataclass(frozen=True, slots=True)
class Source:
    """Where a request came from."""

    transport: Transport
    address: tuple[str, int]


Handler = Callable[[Request, Source], Response | None]


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, endpoint: SipEndpoint) -> None:
        self.endpoint = endpoint
        # Set once the socket is closed: a transport's close() only schedules it, and the
        # port must be free when close() returns (a reload binds it again at once).
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.endpoint._datagram(data, (addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        log.debug("sip udp error=%s", exc)


@dataclass(slots=True)
class _Pending:
    tx: ClientTransaction
    future: asyncio.Future[Response]
    data: bytes
    send: Callable[[bytes], None]
    timer: asyncio.TimerHandle | None = None


class SipEndpoint:
    """One SIP address (UDP and TCP) of this node."""

    def __init__(
        self,
        host: str,
        port: int,
        handler: Handler,
        *,
        timers: Timers | None = None,
        max_server_transactions: int = 10_000,
    ) -> None:
        self.host, self.port = host, port
        self.handler = handler
        self.timers = timers or Timers()
        self._server_tx = ServerTransactions(self.timers, max_server_transactions)
        self._client_tx: dict[tuple[str, str], _Pending] = {}
        self._by_future: dict[asyncio.Future[Response], tuple[str, str]] = {}
        self._udp: asyncio.DatagramTransport | None = None
        self._udp_protocol: _Udp | None = None
        self._tcp_server: asyncio.Server | None = None
        self._tcp_out: dict[tuple[str, int], asyncio.StreamWriter] = {}
        self._tcp_in = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._warnings = SecondlyWarning(log)
        self.stats: dict[str, int] = {
            "malformed": 0,
            "requests": 0,
            "retransmissions_absorbed": 0,
            "responses": 0,
            "stray_responses": 0,
            "handler_errors": 0,
            "timeouts": 0,
        }

    # -- life cycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind UDP, then TCP on the same port (an ephemeral port when ``port`` is 0)."""
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_datagram_endpoint(
            lambda: _Udp(self), local_addr=(self.host, self.port)
        )
        self._udp, self._udp_protocol = transport, protocol
        self.port = transport.get_extra_info("sockname")[1]
        try:
            self._tcp_server = await asyncio.start_server(self._accept, self.host, self.port)
        except OSError:
            transport.close()
            await protocol.closed
            self._udp, self._udp_protocol = None, None
            raise
        log.info("sip endpoint listening host=%s port=%d (udp, tcp)", self.host, self.port)

    async def close(self) -> None:
        for pending in self._client_tx.values():
            if pending.timer:
                pending.timer.cancel()
            if not pending.future.done():
                pending.future.cancel()
        self._client_tx.clear()
        if self._tcp_server is not None:
            self._tcp_server.close()
        for writer in self._tcp_out.values():
            writer.close()
        await cancel_and_wait(*self._tasks)
        if self._tcp_server is not None:
            await self._tcp_server.wait_closed()
        if self._udp is not None:
            self._udp.close()
            if self._udp_protocol is not None:
                await self._udp_protocol.closed  # the port is free when close() returns
            self._udp, self._udp_protocol = None, None
        self._tcp_server = None
        log.info("sip endpoint closed host=%s port=%d", self.host, self.port)

    # -- inbound ----------------------------------------------------------------------------

    def _warn(self, text: str, *args: object) -> None:
        self._warnings(text, *args)

    def _datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        if not data.strip(b"\r\n"):
            return  # a keep-alive
        try:
            message = decode_datagram(data)
        except RemoteProtocolError as exc:
            self.stats["malformed"] += 1
            self._warn("sip malformed datagram dropped peer=%s:%d error=%s", *addr, exc)
            return
        self._inbound(message, Source("udp", addr), self._udp_sender(addr))

    def _udp_sender(self, addr: tuple[str, int]) -> Callable[[bytes], None]:
        def send(data: bytes) -> None:
            if self._udp is not None and not self._udp.is_closing():
                self._udp.sendto(data, addr)

        return send

    def _inbound(
        self, message: Request | Response, source: Source, reply: Callable[[bytes], None]
    ) -> None:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("sip <<- %s:%d %r", *source.address, message)
        if isinstance(message, Response):
            self._response(message)
            return
        now = asyncio.get_running_loop().time()
        new, previous = self._server_tx.receive(message, now)
        if not new:
            self.stats["retransmissions_absorbed"] += 1
            if previous is not None:
                reply(encode(previous))
            return
        self.stats["requests"] += 1
        try:
            response = self.handler(message, source)
        except Exception:
            self.stats["handler_errors"] += 1
            log.exception("sip handler failed on %s from %s:%d", message.method, *source.address)
            response = make_response(message, 500, "Server Internal Error", source=source.address)
        if response is None:
            return
        self._server_tx.answer(message, response)
        if source.transport == "udp":
            via = message.top_via
            if via.param("rport") is None:
                reply = self._udp_sender((source.address[0], via.port or 5060))
        if log.isEnabledFor(logging.DEBUG):
            log.debug("sip ->> %s:%d %r", *source.address, response)
        reply(encode(response))

    def _response(self, response: Response) -> None:
        try:
            key = (response.top_via.branch or "", response.cseq.method)
        except RemoteProtocolError:  # pragma: no cover - decode already checked both
            return
        pending = self._client_tx.get(key)
        if pending is None:
            self.stats["stray_responses"] += 1
            return
        self.stats["responses"] += 1
        now = asyncio.get_running_loop().time()
        final = pending.tx.on_response(response, now)
        if final is not None and final.status >= 200 and not pending.future.done():
            pending.future.set_result(final)
        self._arm(key, pending)

    # -- TCP --------------------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._tcp_in >= _MAX_TCP:
            log.warning("sip tcp connection refused: %d connections already", self._tcp_in)
            writer.close()
            return
        self._tcp_in += 1
        try:
            await self._serve_tcp(reader, writer)
        finally:
            self._tcp_in -= 1

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        addr = (str(peer[0]), int(peer[1])) if peer else ("?", 0)
        stream = SipStream()

        def reply(data: bytes) -> None:
            if not writer.is_closing():
                writer.write(data)

        try:
            while True:
                data = await reader.read(_READ)
                stream.receive_data(data)
                while True:
                    try:
                        event = stream.next_event()
                    except RemoteProtocolError as exc:
                        self.stats["malformed"] += 1
                        self._warn("sip malformed message peer=%s:%d error=%s", *addr, exc)
                        if stream.broken is not None:
                            return
                        continue
                    if event is NEED_DATA or event is CLOSED:
                        break
                    if isinstance(event, (Request, Response)):
                        self._inbound(event, Source("tcp", addr), reply)
                if not data:
                    return
        except (ConnectionError, OSError) as exc:
            log.debug("sip tcp connection peer=%s:%d ended error=%s", *addr, exc)
        finally:
            writer.close()

    async def _tcp_writer(self, dest: tuple[str, int]) -> asyncio.StreamWriter:
        writer = self._tcp_out.get(dest)
        if writer is not None and not writer.is_closing():
            return writer
        reader, writer = await asyncio.open_connection(dest[0], dest[1])
        self._tcp_out[dest] = writer
        task = asyncio.create_task(self._serve_tcp(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return writer

    # -- outbound ---------------------------------------------------------------------------

    async def request(
        self, request: Request, dest: tuple[str, int], transport: Transport = "udp"
    ) -> Response:
        """Send ``request`` (without Via) in a new client transaction; its final response."""
        if transport == "tcp":
            try:
                await self._tcp_writer(dest)
            except OSError as exc:
                log.debug("sip tcp connect dest=%s:%d error=%s", *dest, exc)
                return make_response(request, 503, "Service Unavailable")
        future = self.start_request(request, dest, transport)
        try:
            return await future
        finally:
            if future.cancelled():
                self.cancel_request(future)

    def start_request(
        self, request: Request, dest: tuple[str, int], transport: Transport = "udp"
    ) -> asyncio.Future[Response]:
        """:meth:`request` without a task: sends at once, returns the future of the final
        response. Over TCP a connection to ``dest`` must be open already (:meth:`request` opens
        one); without one the future holds a local 503."""
        loop = asyncio.get_running_loop()
        params = (("rport", None), ("branch", new_branch()))
        via = Via(transport.upper(), self.host, self.port, params)
        headers = (("Via", str(via)), *request.headers)
        request = Request(request.method, request.uri, headers, request.body)
        data = encode(request)
        send: Callable[[bytes], None]
        if transport == "tcp":
            writer = self._tcp_out.get(dest)
            if writer is None or writer.is_closing():
                future: asyncio.Future[Response] = loop.create_future()
                future.set_result(make_response(request, 503, "Service Unavailable"))
                return future
            tcp = writer

            def send(data: bytes) -> None:
                if not tcp.is_closing():
                    tcp.write(data)
        else:
            send = self._udp_sender(dest)
        reliable = transport == "tcp"
        tx = ClientTransaction(request, reliable=reliable, now=loop.time(), timers=self.timers)
        key = (tx.branch, request.method)
        pending = _Pending(tx, loop.create_future(), data, send)
        self._client_tx[key] = pending
        self._by_future[pending.future] = key
        pending.future.add_done_callback(self._future_done)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("sip ->> %s:%d %r", *dest, request)
        send(data)
        self._arm(key, pending)
        return pending.future

    def cancel_request(self, future: asyncio.Future[Response]) -> None:
        """Give up a request started with :meth:`start_request` (no more retransmissions)."""
        key = self._by_future.pop(future, None)
        if key is not None:
            self._forget(key)
        if not future.done():
            future.cancel()

    def _future_done(self, future: asyncio.Future[Response]) -> None:
        key = self._by_future.pop(future, None)
        if key is not None and future.cancelled():
            self._forget(key)

    def _arm(self, key: tuple[str, str], pending: _Pending) -> None:
        if pending.timer is not None:
            pending.timer.cancel()
            pending.timer = None
        deadline = pending.tx.next_deadline()
        if deadline is None:
            self._forget(key)
            return
        loop = asyncio.get_running_loop()
        pending.timer = loop.call_at(deadline, self._fire, key)

    def _fire(self, key: tuple[str, str]) -> None:
        pending = self._client_tx.get(key)
        if pending is None:
            return
        pending.timer = None
        event = pending.tx.on_timer(asyncio.get_running_loop().time())
        if event is TxEvent.RETRANSMIT:
            pending.send(pending.data)
        elif event is TxEvent.TIMEOUT:
            self.stats["timeouts"] += 1
            if not pending.future.done():
                pending.future.set_result(make_response(pending.tx.request, 408, "Request Timeout"))
        self._arm(key, pending)

    def _forget(self, key: tuple[str, str]) -> None:
        pending = self._client_tx.pop(key, None)
        if pending is not None and pending.timer is not None:
            pending.timer.cancel()

    def retransmit_now(self) -> int:
        """Re-send every pending request at once (the peer is back; Timer E may be seconds
        away). Returns how many were re-sent."""
        # Only those still waiting for a final answer: a completed transaction is kept a
        # while (Timer K) to absorb retransmitted answers, and must never go out again.
        pending = [p for p in self._client_tx.values() if not p.future.done()]
        for p in pending:
            p.send(p.data)
        return len(pending)

    @property
    def client_transactions(self) -> int:
        return len(self._client_tx)
