#!/usr/bin/env python3
"""Take the README's screenshot of the lamp page: ``python scripts/screenshot.py [-o FILE]``.

Three ``pbxmesh run`` daemons (pbx1..pbx3) on one corosync on 127.0.0.1, inside a network
namespace of their own (the test harness's ``private_loopback``), publish a few dozen device
states and some mailboxes; headless chromium, started in the same namespace, opens pbx1's page,
selects a lamp asserted by two servers (so its per-origin states show) and saves a PNG.

Needs root, corosync, Debian's chromium (``apt-get install chromium``) and ``pip install
playwright`` — never ``playwright install``: the system chromium is used. Everything it starts
is stopped on exit. Default output: docs/lamps.png.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.harness.browser import CHROMIUM_ARGS, chromium_in_netns  # noqa: E402
from tests.harness.nodes import NodeProcess, node_group, private_loopback, wait_until  # noqa: E402

PORT = 18785  # inside our own netns

# (node index, device, state): what each "server" asserts. Custom:reception is asserted by two.
_EXTENSIONS = {  # server index -> prefix and the states of its extensions, in order
    0: (
        "PJSIP/10",
        "INUSE NOT_INUSE RINGING NOT_INUSE ONHOLD NOT_INUSE BUSY NOT_INUSE INUSE "
        "UNAVAILABLE NOT_INUSE RINGINUSE",
    ),
    1: (
        "PJSIP/20",
        "NOT_INUSE NOT_INUSE INUSE NOT_INUSE UNAVAILABLE RINGING NOT_INUSE INUSE NOT_INUSE ONHOLD",
    ),
    2: ("PJSIP/30", "INUSE NOT_INUSE NOT_INUSE BUSY NOT_INUSE INVALID NOT_INUSE RINGING"),
}
DEVICES: list[tuple[int, str, str]] = [
    *[
        (server, f"{prefix}{i:02d}", state)
        for server, (prefix, states) in _EXTENSIONS.items()
        for i, state in enumerate(states.split(), start=1)
    ],
    (0, "Custom:reception", "INUSE"),
    (1, "Custom:reception", "NOT_INUSE"),
    (0, "Custom:mystate", "INUSE"),
    (1, "Custom:night-mode", "NOT_INUSE"),
    (2, "Custom:fire-door", "UNAVAILABLE"),
    (2, "Custom:parking-701", "ONHOLD"),
    (0, "Custom:parking-702", "NOT_INUSE"),
]
MAILBOXES: list[tuple[int, str, int, int]] = [
    (0, "1000@default", 2, 5),
    (0, "1001@default", 0, 3),
    (1, "2001@default", 1, 0),
    (1, "2002@default", 0, 0),
    (2, "3001@sales", 7, 12),
    (2, "3002@sales", 0, 1),
]
SELECTED = "Custom:reception"


def populate(nodes: list[NodeProcess]) -> None:
    for i, device, state in DEVICES:
        nodes[i].publish_device(device, state)
    for i, mailbox, new, old in MAILBOXES:
        nodes[i].publish_mwi(mailbox, new, old)
    # A little traffic, so the event rate shows what a working day looks like.
    for n in range(3):
        for i, device, state in DEVICES[:12]:
            nodes[i].publish_device(device, "RINGING" if n < 2 else state)
        time.sleep(0.4)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", default=str(ROOT / "docs" / "lamps.png"))
    args = parser.parse_args()
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        raise SystemExit("screenshot: pip install playwright (not `playwright install`)") from None

    tmp = Path(tempfile.mkdtemp(prefix="pbxm-screenshot-"))
    try:
        with private_loopback() as coro:
            netns = coro.netns
            assert netns is not None
            with node_group([(f"pbx{i}", netns) for i in (1, 2, 3)], base_port=PORT) as nodes:
                for n in nodes:
                    n.start()
                wait_until(lambda: all(len(n.members()) == 3 for n in nodes), 30, "3 members")
                populate(nodes)
                wrapper = chromium_in_netns(netns, tmp)
                with sync_playwright() as pw:
                    browser = pw.chromium.launch(executable_path=str(wrapper), args=CHROMIUM_ARGS)
                    page = browser.new_page(viewport={"width": 1280, "height": 820})
                    page.emulate_media(reduced_motion="reduce")  # no blinking mid-capture
                    page.goto(f"http://127.0.0.1:{nodes[0].port}/")
                    expect(page.locator("#live")).to_have_text("live", timeout=10_000)
                    lamp = page.locator(f'#grid .lamp[data-name="{SELECTED}"]')
                    lamp.click()
                    expect(page.locator("#detail tr.origin")).to_have_count(2)
                    page.wait_for_timeout(1500)  # a tick or two: event rate and links
                    page.screenshot(path=args.output)
                    browser.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"screenshot: wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
