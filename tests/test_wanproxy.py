"""The WAN proxy of the benchmarks (tests/harness/wanproxy.py) delays, cuts and heals as it says."""

from __future__ import annotations

import json
import socket
import socketserver
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.harness.nats import free_ports

ROOT = Path(__file__).resolve().parent.parent


class Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(1024):
            self.request.sendall(data)


def test_the_wan_proxy_delays_each_way_cuts_silently_and_heals(tmp_path: Path) -> None:
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), Echo) as echo:
        echo.daemon_threads = True
        threading.Thread(target=echo.serve_forever, daemon=True).start()
        (listen,) = free_ports(1)
        spec = tmp_path / "wan.json"
        link = {"listen": listen, "target": echo.server_address[1], "delay": 0.03}
        spec.write_text(json.dumps([{**link, "sites": ["a", "b"]}]))
        with subprocess.Popen(
            [sys.executable, "-m", "tests.harness.wanproxy", str(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        ) as proxy:
            assert proxy.stdin is not None and proxy.stdout is not None

            def command(line: str) -> None:
                proxy.stdin.write(line + "\n")  # type: ignore[union-attr]
                proxy.stdin.flush()  # type: ignore[union-attr]
                assert proxy.stdout.readline().strip() == "ok"  # type: ignore[union-attr]

            try:
                assert proxy.stdout.readline() == "ready\n"
                with socket.create_connection(("127.0.0.1", listen), timeout=2) as sock:
                    rtts = []
                    for _ in range(5):
                        t = time.monotonic()
                        sock.sendall(b"ping")
                        assert sock.recv(4) == b"ping"
                        rtts.append(time.monotonic() - t)
                    assert min(rtts) >= 0.06, rtts  # a round trip is two one-way delays
                    assert sorted(rtts)[2] < 0.09, rtts
                    command("cut b")
                    sock.sendall(b"held")
                    sock.settimeout(0.3)
                    try:
                        sock.recv(4)
                        raise AssertionError("a cut link answered")
                    except TimeoutError:
                        pass  # silent: no answer, no reset
                    command("heal b")
                    sock.settimeout(2)
                    assert sock.recv(4) == b"held"  # what was held is delivered
            finally:
                proxy.stdin.write("quit\n")
                proxy.stdin.flush()
                proxy.wait(5)
            echo.shutdown()
