"""Runs a sans-IO :class:`~.client.PublishClient` over a :class:`~.endpoint.SipEndpoint`.

Over UDP a state is sent the moment it is published when its publication is idle, and each
final response (the endpoint retransmits and times out) is fed back by a callback that sends
that publication's next queued state at once: no task between a change and its PUBLISH. One
task wakes for refreshes and retries after a back-off; over TCP (where a connection may have
to be opened first) one small task per request waits for its answer. Every final answer goes
to ``on_answer`` when one is given (the SIP link explains refusals to the administrator and
counts them); without one each failure is logged. Nothing here stops on a bad answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable

from ...tasks import cancel_and_wait
from .bodies import Body
from .client import Handle, PublishClient, PublishFailure
from .endpoint import SipEndpoint, Transport
from .message import Request, Response

__all__ = ["AnswerCallback", "PublishDriver"]

#: ``(event package, status, failure)`` for every final answer; ``failure`` is None unless
#: the client gave up on that state or retries it after a back-off (see PublishClient).
AnswerCallback = Callable[[str, int, PublishFailure | None], None]

log = logging.getLogger(__name__)


class PublishDriver:
    """Sends one :class:`PublishClient`'s requests to ``dest``."""

    def __init__(
        self,
        client: PublishClient,
        endpoint: SipEndpoint,
        dest: tuple[str, int],
        transport: Transport = "udp",
        on_answer: AnswerCallback | None = None,
    ) -> None:
        self.client, self.endpoint = client, endpoint
        self.on_answer = on_answer
        self.dest, self.transport = dest, transport
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._requests: set[asyncio.Task[None]] = set()
        self._futures: set[asyncio.Future[Response]] = set()
        self.failures = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="sip-publish")

    async def close(self) -> None:
        for future in list(self._futures):
            self.endpoint.cancel_request(future)
        self._futures.clear()
        await cancel_and_wait(self._task, *self._requests)
        self._task = None

    def publish(self, body: Body) -> None:
        self.client.publish(body)
        self._idle.clear()
        if self._task is not None and self.transport == "udp":
            self._send_ready()  # at once: no task hop between a change and its PUBLISH
        else:
            self._wake.set()

    def retry_now(self) -> None:
        """The server is back: send what waits for a back-off now."""
        self.client.retry_now()
        self._wake.set()

    def unpublish(self) -> None:
        self.client.unpublish()
        self._idle.clear()
        self._wake.set()

    async def wait_idle(self) -> None:
        """Wait until nothing is queued or in flight (bound it with ``asyncio.timeout``)."""
        while not self.client.idle:
            self._idle.clear()
            await self._idle.wait()

    def _send_ready(self) -> None:
        """Start every request the client has ready; UDP ones without a task each."""
        now = asyncio.get_running_loop().time()
        for handle, request in self.client.outgoing(now):
            if self.transport == "udp":
                future = self.endpoint.start_request(request, self.dest, "udp")
                self._futures.add(future)
                future.add_done_callback(functools.partial(self._answered, handle))
            else:  # TCP may have to connect first
                task = asyncio.create_task(self._one(handle, request))
                self._requests.add(task)
                task.add_done_callback(self._requests.discard)

    def _answered(self, handle: Handle, future: asyncio.Future[Response]) -> None:
        self._futures.discard(future)
        if future.cancelled():
            return
        self._take(handle, future.result())
        self._send_ready()  # the next state of that publication, at once
        if self.client.idle:
            self._idle.set()
        self._wake.set()  # deadlines may have moved

    def _take(self, handle: Handle, response: Response) -> None:
        failure = self.client.on_response(handle, response, asyncio.get_running_loop().time())
        if failure is not None:
            self.failures += 1
        if self.on_answer is not None:
            if response.status >= 200:
                self.on_answer(handle.key[0], response.status, failure)
        elif failure is not None:
            log.warning("sip publish dest=%s:%d %s", *self.dest, failure)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            self._send_ready()
            if self.client.idle:
                self._idle.set()
            deadline = self.client.next_deadline()
            timeout = None if deadline is None else max(0.0, deadline - loop.time())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()

    async def _one(self, handle: Handle, request: Request) -> None:
        response = await self.endpoint.request(request, self.dest, self.transport)
        self._take(handle, response)
        self._wake.set()
