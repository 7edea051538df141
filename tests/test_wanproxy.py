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

import pytest

from tests.harness.nats import free_ports, nats_missing_reason

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
                    command("delay 0")
                    t = time.monotonic()
                    sock.sendall(b"fast")
                    assert sock.recv(4) == b"fast"
                    assert time.monotonic() - t < 0.03  # no delay at all now
            finally:
                proxy.stdin.write("quit\n")
                proxy.stdin.flush()
                proxy.wait(5)
            echo.shutdown()


def test_the_wan_benchmark_runs_through_the_proxy_only() -> None:
    """``bench/bench_wan.py --quick``: every route crosses the proxy, and every step ends.

    A NATS server tells the others its routes; without the benchmark's ``advertise`` trick
    they dialled each other directly, and a cut site was still heard through that route.
    """
    reason = nats_missing_reason()
    if reason:
        pytest.skip(reason)
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_wan.py"), "--quick"],
        check=False,
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    rows = out.stdout
    assert "b -> c, 80 ms one way, 100/s" in rows
    assert "site c cut off" in rows and "site c healed" in rows and "failover" in rows
    # the 80 ms path really is 80 ms: a bypass would show the stack's 1-2 ms
    line = next(x for x in rows.splitlines() if x.startswith("b -> c, 80 ms one way, 100/s"))
    p50 = float(line.split("p50 ")[1].split(" ms")[0])
    assert 80.0 <= p50 < 120.0, line
