#!/usr/bin/env python3
"""Take the README's picture of the lamp page from the running demo:
``python scripts/lamps_screenshot.py [-o FILE] [--node pbx2]``.

It starts ``pbxmesh demo`` (corosync, three simulated Asterisk servers, three pbxmesh nodes),
waits until the demo's scenario has run, then sets a working day's states on the three PBXs
over their AMI, as an Asterisk's dialplan would: alice on do-not-disturb on pbx1
(``PRESENCE_STATE(CustomPresence:alice)=dnd``), bob away on pbx2, ``Custom:`` lamps on each
server, one asserted by two of them. Headless chromium (the system's, driven by playwright)
opens one node's live lamp page, selects the lamp two servers assert, and saves a PNG. On exit
the demo is stopped (SIGINT, as Ctrl-C), which stops everything it started.

Needs corosync, Debian's chromium (``apt-get install chromium``) and ``pip install
playwright`` (the dev extra; never ``playwright install``). The demo starts corosync itself
when none runs, which needs root; on a machine whose corosync others use, run it in a network
namespace of its own: ``unshare -n sh -c 'ip link set lo up; python
scripts/lamps_screenshot.py'``. Default output: docs/lamps.png.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from pbxmesh.links.ami import AmiClient, AmiConfig  # noqa: E402
from tests.harness.browser import CHROMIUM_ARGS, chromium_path  # noqa: E402

READY = "The demo cluster keeps running"
#: per PBX: (device, state) set with DEVICE_STATE(), (presentity, value) with PRESENCE_STATE()
DEVICES = {
    "pbx1": [
        ("Custom:mystate", "INUSE"),
        ("Custom:DND1001", "BUSY"),
        ("Custom:reception", "INUSE"),
        ("Custom:parking-702", "NOT_INUSE"),
    ],
    "pbx2": [
        ("Custom:reception", "NOT_INUSE"),
        ("Custom:parking-701", "ONHOLD"),
        ("Custom:DND2001", "UNAVAILABLE"),
        ("Custom:queue-sales", "RINGING"),
    ],
    "pbx3": [
        ("Custom:night-mode", "NOT_INUSE"),
        ("Custom:fire-door", "UNAVAILABLE"),
        ("Custom:DND3001", "UNAVAILABLE"),
    ],
}
PRESENCE = {
    "pbx1": [("CustomPresence:alice", "dnd,,back at 3")],
    "pbx2": [("CustomPresence:bob", "away,,lunch")],
    "pbx3": [("CustomPresence:carol", "available")],
}
MWI = {"pbx2": [("2001@default", 1, 0)], "pbx3": [("3001@sales", 7, 12)]}
SELECTED = "Custom:reception"  # asserted by two servers: its per-origin states show


def wait_for_demo(proc: subprocess.Popen[bytes], log: Path, within: float) -> str:
    deadline = time.monotonic() + within
    while True:
        text = log.read_text(errors="replace") if log.exists() else ""
        if READY in text:
            return text
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = "\n".join(text.splitlines()[-30:])
            raise SystemExit(f"lamps_screenshot: the demo did not get ready:\n{tail}")
        time.sleep(0.2)


async def set_states(demo_dir: Path) -> None:
    """Set the picture's states on each simulated PBX over its AMI."""
    for pbx in ("pbx1", "pbx2", "pbx3"):
        conf = tomllib.loads((demo_dir / pbx / "pbxmesh.toml").read_text())["asterisk"]
        host, port = conf["ami"].rsplit(":", 1)
        client = AmiClient(AmiConfig.local(host, int(port), conf["username"], conf["secret"]))
        await client.start()
        try:
            async with asyncio.timeout(20):
                await client.wait_connected()
            for device, state in DEVICES[pbx]:
                r = await client.action("Setvar", Variable=f"DEVICE_STATE({device})", Value=state)
                assert r.ok, r.message
            for presentity, value in PRESENCE[pbx]:
                var = f"PRESENCE_STATE({presentity})"
                r = await client.action("Setvar", Variable=var, Value=value)
                assert r.ok, r.message
            for mailbox, new, old in MWI.get(pbx, []):
                r = await client.action(
                    "MWIUpdate", Mailbox=mailbox, NewMessages=new, OldMessages=old
                )
                assert r.ok, r.message
        finally:
            await client.close()


def screenshot(url: str, output: str) -> None:
    from playwright.sync_api import expect, sync_playwright

    chromium = chromium_path()
    if chromium is None:
        raise SystemExit("lamps_screenshot: chromium is not installed (apt-get install chromium)")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            page.emulate_media(reduced_motion="reduce")  # no blinking mid-capture
            page.goto(url)
            expect(page.locator("#live")).to_have_text("live", timeout=10_000)
            expect(page.locator('#presence .pres.dnd[data-presentity*="alice"]')).to_have_count(
                1, timeout=10_000
            )
            page.locator(f'#grid .lamp[data-name="{SELECTED}"]').click()
            expect(page.locator("#detail tr.origin")).to_have_count(2, timeout=10_000)
            page.wait_for_timeout(1500)  # a tick or two: event rate and links
            page.screenshot(path=output)
        finally:
            browser.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("-o", "--output", default=str(ROOT / "docs" / "lamps.png"))
    parser.add_argument("--node", default="pbx2", help="whose lamp page (default pbx2)")
    args = parser.parse_args()
    try:
        import playwright  # noqa: F401
    except ImportError:
        raise SystemExit(
            "lamps_screenshot: pip install playwright (not `playwright install`)"
        ) from None
    tmp = Path(tempfile.mkdtemp(prefix="pbxm-lamps-"))
    demo_dir, log = tmp / "demo", tmp / "demo.out"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pbxmesh", "demo", "--dir", str(demo_dir)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        text = wait_for_demo(proc, log, 180)
        m = re.search(rf"{args.node}: pbxmesh .*\(lamps: (http://\S+)\)", text)
        if m is None:
            raise SystemExit(f"lamps_screenshot: the demo printed no lamp page for {args.node}")
        asyncio.run(set_states(demo_dir))
        screenshot(m[1], args.output)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # the demo stops what it started
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"lamps_screenshot: wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
