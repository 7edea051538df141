"""Runs a sans-IO :class:`~.client.PublishClient` over a :class:`~.endpoint.SipEndpoint`.

One task sends what the client has ready, one small task per request waits for its final
response (the endpoint retransmits and times out), feeds it back and wakes the loop, which
then sends the next queued state of that publication, a refresh when one is due, or a retry
after its back-off. Failures the client reports are logged once each; nothing here stops on
a bad answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from ...tasks import cancel_and_wait
from .bodies import Body
from .client import Handle, PublishClient
from .endpoint import SipEndpoint, Transport
from .message import Request

__all__ = ["PublishDriver"]

log = logging.getLogger(__name__)


class PublishDriver:
    """Sends one :class:`PublishClient`'s requests to ``dest``."""

    def __init__(
        self,
        client: PublishClient,
        endpoint: SipEndpoint,
        dest: tuple[str, int],
        transport: Transport = "udp",
    ) -> None:
        self.client, self.endpoint = client, endpoint
        self.dest, self.transport = dest, transport
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._requests: set[asyncio.Task[None]] = set()
        self.failures = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="sip-publish")

    async def close(self) -> None:
        await cancel_and_wait(self._task, *self._requests)

    def publish(self, body: Body) -> None:
        self.client.publish(body)
        self._idle.clear()
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

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            for handle, request in self.client.outgoing(loop.time()):
                task = asyncio.create_task(self._one(handle, request))
                self._requests.add(task)
                task.add_done_callback(self._requests.discard)
            if self.client.idle:
                self._idle.set()
            deadline = self.client.next_deadline()
            timeout = None if deadline is None else max(0.0, deadline - loop.time())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()

    async def _one(self, handle: Handle, request: Request) -> None:
        response = await self.endpoint.request(request, self.dest, self.transport)
        now = asyncio.get_running_loop().time()
        note = self.client.on_response(handle, response, now)
        if note is not None:
            self.failures += 1
            log.warning("sip publish dest=%s:%d %s", *self.dest, note)
        self._wake.set()
