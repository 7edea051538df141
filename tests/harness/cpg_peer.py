"""A second CPG member in its own process, and the driver the tests use to talk to it.

Corosync lets one process join a group only once (CS_ERR_EXIST), so the contract suite's
second member runs here, as ``python cpg_peer.py GROUP`` (inside a node's netns for the
cluster). It uses :class:`CorosyncTransport` itself and speaks JSON lines:

* stdin, one command per line: ``{"op": "send", "b64": ...}``, ``{"op": "send_seq",
  "prefix": "p", "count": 2000}`` (sends ``p0``, ``p1``, …), ``{"op": "close"}``.
  EOF closes too.
* stdout, one event per line: ``{"ev": "ready", "self_id": ...}`` once joined, then
  ``{"ev": "members", "members": [...], "joined": [...], "left": [...], "clean": [...],
  "view": n, "quorate": b}``, ``{"ev": "msg", "sender": ..., "sha": sha256 hex, "len": n}``,
  ``{"ev": "link", "up": b, "reason": ...}``, ``{"ev": "closed"}`` — the same dicts the
  in-memory peer of the contract suite records.

The script part imports only the standard library and pbxmesh.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from pbxmesh.transport.base import LinkState, MembershipChange, Message, TransportEvent

__all__ = ["CpgPeerProcess", "event_dict"]


def event_dict(event: TransportEvent) -> dict[str, Any]:
    """The JSON form of a transport event that the contract suite checks."""
    match event:
        case Message(sender=sender, data=data):
            return {
                "ev": "msg",
                "sender": sender,
                "sha": hashlib.sha256(data).hexdigest(),
                "len": len(data),
            }
        case MembershipChange():
            return {
                "ev": "members",
                "members": [m.member_id for m in event.members],
                "joined": [m.member_id for m in event.joined],
                "left": [m.member_id for m in event.left],
                "clean": list(event.clean),
                "view": event.view,
                "quorate": event.quorate,
            }
        case LinkState(up=up, reason=reason):
            return {"ev": "link", "up": up, "reason": reason}
    raise TypeError(f"not a transport event: {event!r}")


# -- the peer process ------------------------------------------------------------------------------
def _out(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def _peer_main(group: str) -> None:
    from pbxmesh.transport.corosync import CorosyncConfig, CorosyncTransport

    transport = CorosyncTransport(CorosyncConfig.local(group))
    await transport.start()
    _out({"ev": "ready", "self_id": transport.self_id, "max": transport.max_message_size})

    async def pump() -> None:
        async for event in transport.events():
            _out(event_dict(event))

    pump_task = asyncio.create_task(pump())
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=64 * 1024 * 1024)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        while line := await reader.readline():
            cmd = json.loads(line)
            if cmd["op"] == "send":
                await transport.send(base64.b64decode(cmd["b64"]))
            elif cmd["op"] == "send_seq":
                for i in range(int(cmd["count"])):
                    await transport.send(f"{cmd['prefix']}{i}".encode())
            elif cmd["op"] == "close":
                break
    finally:
        await transport.close()
        await pump_task
        _out({"ev": "closed"})


# -- the driver, used by the tests -----------------------------------------------------------------
class CpgPeerProcess:
    """Runs this script as a subprocess (optionally via a command prefix such as
    ``ip netns exec NS``) and records its events in ``log``."""

    _SCRIPT = str(Path(__file__).resolve())

    def __init__(self, group: str, prefix: list[str] | None = None) -> None:
        from .recorder import Recorder

        self.group = group
        self.prefix = prefix or []
        self.log: Recorder[dict[str, Any]] = Recorder()
        self.member_id = ""
        self.max_message_size = 0
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self.stderr = b""

    async def start(self, within: float = 20.0) -> None:
        self._proc = await asyncio.create_subprocess_exec(
            *self.prefix,
            sys.executable,
            self._SCRIPT,
            self.group,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=64 * 1024 * 1024,
        )
        self._reader = asyncio.create_task(self._read())
        try:
            ready = await self.log.wait_for(
                lambda items: next((e for e in items if e["ev"] == "ready"), None),
                within,
                f"cpg_peer ready in group {self.group}",
            )
        except AssertionError as exc:
            await self.kill()
            raise AssertionError(f"cpg_peer did not start: {self.stderr.decode()[-2000:]}") from exc
        self.member_id = ready["self_id"]
        self.max_message_size = ready["max"]

    async def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        try:
            while line := await self._proc.stdout.readline():
                self.log.add(json.loads(line))
        finally:
            if self._proc.stderr is not None:
                with contextlib.suppress(Exception):
                    self.stderr = await self._proc.stderr.read()
            self.log.end()

    async def _command(self, **cmd: Any) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        self._proc.stdin.write(json.dumps(cmd).encode() + b"\n")
        await self._proc.stdin.drain()

    async def send(self, data: bytes) -> None:
        await self._command(op="send", b64=base64.b64encode(data).decode())

    async def send_seq(self, prefix: str, count: int) -> None:
        await self._command(op="send_seq", prefix=prefix, count=count)

    async def close(self, within: float = 10.0) -> None:
        """Leave cleanly (cpg_leave) and wait for the process to exit."""
        if self._proc is None or self._proc.returncode is not None:
            return
        with contextlib.suppress(ConnectionError):
            await self._command(op="close")
        try:
            async with asyncio.timeout(within):
                await self._proc.wait()
        finally:
            await self.kill()

    async def kill(self) -> None:
        """End the process at once (kill -9 if still running); always safe to call."""
        proc = self._proc
        if proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await self._reader


if __name__ == "__main__":
    asyncio.run(_peer_main(sys.argv[1]))
