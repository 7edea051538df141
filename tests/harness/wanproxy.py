"""A userspace WAN for tests and benchmarks: TCP links between sites with delay, loss and cuts.

This kernel has no netem qdisc, so inter-site TCP links go through this proxy instead. It runs
in a process of its own (so its timers do not share an event loop with what it measures):

    python -m tests.harness.wanproxy SPEC.json

``SPEC.json`` is a list of links ``{"listen": PORT, "target": PORT, "delay": SECONDS,
"sites": ["a", "b"]}``: the proxy listens on 127.0.0.1:listen and forwards every connection to
127.0.0.1:target. It never listens or connects anywhere but loopback. It prints ``ready`` once
every link listens, then reads commands on stdin, one a line, and answers ``ok``:

* ``cut SITE`` -- every link touching SITE stops moving bytes, silently (no reset, no FIN),
  as a cut fibre does; a connection opened meanwhile is accepted and held, unanswered;
* ``heal SITE`` -- they move again: what was held is delivered (TCP would retransmit it);
* ``loss P RTO`` -- from now on each chunk is lost with probability P: it arrives RTO seconds
  late and holds back everything behind it, which is what a retransmission looks like to the
  application on top of TCP (P 0 ends the loss);
* ``delay F`` -- every link's delay times F from now on (``delay 0``: no delay, to measure
  what the stack itself costs; ``delay 1``: as specified);
* ``quit``.

Each direction of a connection is a FIFO: a chunk read at t is written at t + delay (later if
lost, never before the chunk ahead of it). The delay is one way; a round trip costs twice.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from dataclasses import dataclass, field
from selectors import SelectSelector
from typing import Any

__all__ = ["Link", "main"]


@dataclass
class Link:
    listen: int
    target: int
    delay: float
    sites: tuple[str, ...]
    flowing: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.flowing.set()


class Wan:
    def __init__(self, links: list[Link], seed: int = 1) -> None:
        self.links = links
        self.loss = 0.0
        self.rto = 0.2
        self.factor = 1.0
        self.rng = random.Random(seed)
        self.tasks: set[asyncio.Task[None]] = set()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _pump(
        self, link: Link, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def forward() -> None:
            while True:
                due, data = await queue.get()
                await link.flowing.wait()
                pause = due - time.monotonic()
                if pause > 0:
                    await asyncio.sleep(pause)
                if not data:
                    writer.close()
                    return
                writer.write(data)
                await writer.drain()

        sender = asyncio.get_running_loop().create_task(forward())
        last = 0.0
        try:
            while True:
                await link.flowing.wait()
                data = await reader.read(65536)
                due = time.monotonic() + link.delay * self.factor
                if data and self.loss and self.rng.random() < self.loss:
                    due += self.rto
                last = max(last, due)
                queue.put_nowait((last, data))
                if not data:
                    break
            await sender
        except (ConnectionError, OSError):
            sender.cancel()
            writer.close()

    async def _accept(
        self, link: Link, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await link.flowing.wait()  # a connection opened during a cut is held, unanswered
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", link.target)
        except OSError:
            writer.close()
            return
        self._spawn(self._pump(link, reader, up_writer))
        self._spawn(self._pump(link, up_reader, writer))

    async def serve(self) -> None:
        servers = []
        for link in self.links:

            async def accept(
                r: asyncio.StreamReader, w: asyncio.StreamWriter, lk: Link = link
            ) -> None:
                await self._accept(lk, r, w)

            servers.append(await asyncio.start_server(accept, "127.0.0.1", link.listen))
        print("ready", flush=True)
        loop = asyncio.get_running_loop()
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            words = line.split()
            if not words or words[0] == "quit":
                break
            if words[0] in ("cut", "heal"):
                for link in self.links:
                    if words[1] in link.sites:
                        (link.flowing.clear if words[0] == "cut" else link.flowing.set)()
            elif words[0] == "delay":
                self.factor = float(words[1])
            elif words[0] == "loss":
                self.loss, self.rto = float(words[1]), float(words[2])
            print("ok", flush=True)
        for server in servers:
            server.close()


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as f:
        spec = json.load(f)
    links = [Link(s["listen"], s["target"], float(s["delay"]), tuple(s["sites"])) for s in spec]
    # select(2) takes its timeout in microseconds, epoll in whole milliseconds (rounded up):
    # with epoll every delayed chunk would be up to a millisecond late, which is the size of
    # what the benchmark measures. The proxy has a few dozen sockets, well within select's.
    with asyncio.Runner(loop_factory=lambda: asyncio.SelectorEventLoop(SelectSelector())) as r:
        r.run(Wan(links).serve())


if __name__ == "__main__":
    main()
