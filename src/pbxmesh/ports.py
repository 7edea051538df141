"""Free ports for the demo and the test harness, below the kernel's ephemeral range.

A port the kernel gave out for ``bind((host, 0))`` and that was closed again is ephemeral:
another process's outgoing connection may take it before the listener meant for it binds
("Address already in use", seen in the demo and in the tests on a busy machine). Below the
ephemeral range only a listener can hold a port, each candidate is checked free for TCP and
UDP, and a port this process handed out is not handed out again.
"""

from __future__ import annotations

import random
import socket

__all__ = ["ephemeral_low", "free_ports"]

_issued: set[int] = set()


def ephemeral_low() -> int:
    """Where the kernel starts handing out ports for outgoing connections (Linux)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _free(port: int, host: str) -> bool:
    try:
        for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
            with socket.socket(socket.AF_INET, kind) as s:
                s.bind((host, port))
    except OSError:
        return False
    return True


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct ports free on ``host`` for both TCP and UDP, below the ephemeral range;
    raises OSError when none can be found."""
    low = ephemeral_low()
    first = 20000 if low > 21000 else 1024
    pool = range(first, low) if low - first >= 20 * n else range(first, 65536)
    ports: list[int] = []
    for port in random.sample(pool, k=min(len(pool), 50 * n)):
        if port in _issued or not _free(port, host):
            continue
        _issued.add(port)
        ports.append(port)
        if len(ports) == n:
            return ports
    raise OSError(f"found no {n} free ports on {host}")
