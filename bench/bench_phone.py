"""The number a user sees: from a device state change on PBX 1 to the NOTIFY that lights the
BLF key of a desk phone on PBX 2. Prints a table (p50/p99 over N changes per setup).

    python bench/bench_phone.py                     # needs root, corosync, Asterisk and sipp
    python bench/bench_phone.py --setups sip asterisk --changes 200

The phone is SIPp (tests/harness/phone.py) on 127.0.0.2, subscribed on PBX 2 to hint 1234
(``Event: dialog``). This process sends ``Setvar DEVICE_STATE(Custom:mystate)`` to PBX 1,
alternately INUSE and NOT_INUSE, one change at a time: each waits for its NOTIFY
(``confirmed`` / ``terminated``) before the next, 50 ms apart. The time is SIPp's own
reception time stamp of the NOTIFY minus the wall clock just before the Setvar was sent: one
clock, end to end, Asterisk's own NOTIFY included. Beside it, where the time goes: when this
process received PBX 2's AMI ``DeviceStateChange`` for the state (so that column includes the
AMI event's own delivery, and may exceed the NOTIFY's). Setups, as in bench/bench_ami.py:

* ``local``: one Asterisk, changed and watched by the phone itself: Asterisk's own floor.
* ``asterisk``: two Asterisks each linked over AMI to its own pbxmesh, over a real corosync;
  PBX 2's hint lists the remote counterpart.
* ``sip``: the same linked over SIP PUBLISH only; hints unchanged.
* ``pjsip_direct``: two Asterisks publishing to each other with res_pjsip_publish_asterisk,
  no pbxmesh.
* ``res_corosync``: two Asterisks sharing states with res_corosync, no pbxmesh.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import secrets
import statistics
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_ami import RES_COROSYNC_CONF, direct_pjsip

from pbxmesh.links.ami.client import AmiClient, AmiConfig
from pbxmesh.links.ami.codec import Event
from pbxmesh.links.ami.counterparts import counterpart_name
from pbxmesh.links.sip.asterisk_conf import MODULES as SIP_MODULES
from tests.harness.asterisk import (
    AMI_MODULES,
    AMI_SECRET,
    AMI_USER,
    Asterisk,
    asterisk_missing_reason,
    eid_of,
    free_port,
)
from tests.harness.corosync import loopback_corosync
from tests.harness.phone import (
    PHONE_MODULES,
    SippPhone,
    dialog_state,
    phone_pjsip,
    sipp_missing_reason,
)
from tests.test_real_asterisk import HINT, Server, servers
from tests.test_real_asterisk_sip import sip_servers

SETUPS = ("local", "asterisk", "sip", "pjsip_direct", "res_corosync")


def dialplan(device: str) -> str:
    return f"[devstate_test]\nexten => 1234,hint,{device}\n"


def transport(port: int) -> str:
    return f"[udp]\ntype = transport\nprotocol = udp\nbind = 127.0.0.1:{port}\n"


class _Node:
    """No pbxmesh: a Server whose node is never used."""


@contextlib.asynccontextmanager
async def plain(kind: str) -> AsyncIterator[tuple[Server, Server, int]]:
    """``local``, ``pjsip_direct`` or ``res_corosync``: PBX 1, PBX 2 and PBX 2's SIP port."""
    n = 1 if kind == "local" else 2
    ports = [free_port() for _ in range(n)]
    stars = []
    for i in range(n):
        phone = i == n - 1
        files: dict[str, str] = {}
        modules: list[str] = [*AMI_MODULES]
        pjsip = ""
        if kind == "pjsip_direct":
            pjsip = direct_pjsip(ports[i], ports[1 - i])
            modules += SIP_MODULES
        elif phone:
            pjsip = transport(ports[i])
            modules += SIP_MODULES
        if phone:
            pjsip += phone_pjsip("127.0.0.2", "devstate_test")
            modules += PHONE_MODULES
        if pjsip:
            files["pjsip.conf"] = pjsip
        if kind == "res_corosync":
            modules.append("res_corosync")
            files["res_corosync.conf"] = RES_COROSYNC_CONF
        stars.append(
            Asterisk(
                f"pbx{i + 1}",
                eid_of(i + 1),
                modules=modules,
                dialplan=dialplan("Custom:mystate"),
                files=files,
            )
        )
    out: list[Server] = []
    try:
        for star in stars:
            star.write()
            await asyncio.to_thread(star.start)
            out.append(Server(star, _Node()))  # type: ignore[arg-type]
        for s in out:
            await s.connect()
        yield out[0], out[-1], ports[-1]
    finally:
        for s in out:
            await s.ami.close()
        for star in stars:
            await asyncio.to_thread(star.stop)
            star.cleanup()


@contextlib.asynccontextmanager
async def setup(kind: str) -> AsyncIterator[tuple[Server, Server, int]]:
    group = f"pbxm-bench-{secrets.token_hex(3)}"
    if kind == "asterisk":
        port = free_port()

        def extra(i: int) -> tuple[Sequence[str], dict[str, str]]:
            if i != 1:
                return (), {}
            pjsip = transport(port) + phone_pjsip("127.0.0.2", "devstate_test")
            return (*SIP_MODULES, *PHONE_MODULES), {"pjsip.conf": pjsip}

        async with servers(2, group, 24765, dialplan=dialplan(HINT), extra=extra) as (a, b):
            yield a, b, port
    elif kind == "sip":
        async with sip_servers(2, group, 24775, voicemail=[1], modules=PHONE_MODULES) as (a, b):
            yield a, b, b.asterisk.sip_port  # type: ignore[attr-defined]
    else:
        async with plain(kind) as servers_and_port:
            yield servers_and_port


class Arrival:
    """When PBX 2's Asterisk itself had each state (its AMI DeviceStateChange for the device
    its hint reads for PBX 1: the counterpart with the AMI link, the device elsewhere)."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.at: dict[str, float] = {}

    def on_event(self, event: Event) -> None:
        if event.name == "DeviceStateChange" and event.get("Device") == self.device:
            self.at.setdefault(event.get("State") or "", time.time())


async def measure(kind: str, changes: int) -> list[tuple[float, float]]:
    """Per change, milliseconds from the Setvar on PBX 1 to PBX 2's Asterisk having the state
    and to the phone's NOTIFY on PBX 2."""
    device = counterpart_name("Custom:mystate") if kind == "asterisk" else "Custom:mystate"
    arrival = Arrival(device)
    async with setup(kind) as (a, b, port):
        watcher = AmiClient(
            AmiConfig.local("127.0.0.1", b.asterisk.ami_port, AMI_USER, AMI_SECRET),
            on_event=arrival.on_event,
        )
        phone = SippPhone("dialog", "1234", ("127.0.0.1", port))
        try:
            await watcher.start()
            async with asyncio.timeout(20):
                await watcher.wait_connected()
            phone.start()
            await phone.wait_subscribed()
            state = "NOT_INUSE"
            out = []
            for k in range(-5, changes):  # 5 to warm up: every path taken once
                state = "INUSE" if state == "NOT_INUSE" else "NOT_INUSE"
                lamp = "confirmed" if state == "INUSE" else "terminated"
                before = len(phone.notifies())
                arrival.at.clear()
                t0 = time.time()
                await a.set(state)
                got = await phone.wait_value(
                    dialog_state, lamp, 10, f"{kind}: change {k} {state}", after=before
                )
                end = time.monotonic() + 2
                while state not in arrival.at and time.monotonic() < end:  # noqa: ASYNC110
                    await asyncio.sleep(0.005)
                if k >= 0:
                    hop = arrival.at.get(state, float("nan")) - t0
                    out.append((hop * 1000, (got.at - t0) * 1000))
                await asyncio.sleep(0.05)
            if phone.stop() != 0:
                print(f"{kind}: the phone did not unsubscribe cleanly:\n{phone.log()}")
            return out
        finally:
            phone.close()
            await watcher.close()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


async def main_async(args: argparse.Namespace) -> None:
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"load average: {load}")
    rows = []
    for kind in args.setups:
        rows.append((kind, await measure(kind, args.changes)))
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
        print(f"{kind}: done; load average {load}")
    print()
    print("ms from the Setvar on PBX 1 to: PBX 2's AMI DeviceStateChange here / the NOTIFY")
    head = ("setup", "changes", "state p50", "p99", "NOTIFY p50", "p99", "max")
    print("{:<13} {:>7} {:>9} {:>7} {:>10} {:>7} {:>7}".format(*head))
    for kind, rows_ in rows:
        hop = [h for h, _ in rows_ if not math.isnan(h)]
        lat = [n for _, n in rows_]
        state_p = (statistics.median(hop), percentile(hop, 0.99))
        notify_p = (statistics.median(lat), percentile(lat, 0.99), max(lat))
        print(
            f"{kind:<13} {len(lat):>7} {state_p[0]:>9.2f} {state_p[1]:>7.2f} "
            f"{notify_p[0]:>10.2f} {notify_p[1]:>7.2f} {notify_p[2]:>7.2f}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--setups", nargs="+", choices=SETUPS, default=list(SETUPS))
    ap.add_argument("--changes", type=int, default=200)
    args = ap.parse_args()
    for reason in (asterisk_missing_reason(), sipp_missing_reason()):
        if reason:
            sys.exit(f"bench_phone: {reason}")
    with loopback_corosync():
        asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
