"""The lamp page in a real browser: Debian's chromium, headless, driven by Playwright.

Two ``pbxmesh run`` daemons (pbx-a, pbx-b) share one corosync on 127.0.0.1 inside a network
namespace of the test's own (tests/harness/nodes.py ``private_loopback``), so no other corosync
on the host can collide with it. Chromium is started *inside that namespace* (a two-line
wrapper around ``ip netns exec``): it reaches the node's control listener on 127.0.0.1 and
nothing else at all, which also proves the page needs no network beyond its node (offline).
States are published with the real CLI (``python -m pbxmesh -c FILE publish …``) run in the
namespace too.

Playwright's own browser downloads are never used: ``executable_path`` is the system chromium.
Without chromium, playwright, corosync or root the tests are skipped with the reason, except
under ``CI=true``, where they fail.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness.browser import CHROMIUM_ARGS, chromium_in_netns, chromium_path
from tests.harness.fixtures import require_corosync, skip_or_fail
from tests.harness.nodes import NodeProcess, node_group, private_loopback, wait_until

pytestmark = [pytest.mark.integration]

LAMP_DEADLINE = 1.0  # seconds from the CLI's answer to the lamp showing the new state
PORT = 18765  # inside our own netns: nothing else listens there


def browser_missing_reason() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install playwright; never `playwright install`)"
    if chromium_path() is None:
        return "chromium is not installed (apt-get install chromium)"
    return None


def require_browser() -> None:
    """Skip (or, under CI=true, fail) unless chromium and playwright are here."""
    skip_or_fail(browser_missing_reason(), "the browser")


class Cluster:
    """The two nodes, their netns, and the CLI run the way an operator runs it."""

    def __init__(self, netns: str, nodes: list[NodeProcess]) -> None:
        self.netns = netns
        self.a, self.b = nodes
        self.nodes = nodes

    def cli(self, node: NodeProcess, *args: str) -> str:
        cmd = ["ip", "netns", "exec", self.netns, sys.executable, "-m", "pbxmesh"]
        res = subprocess.run(
            [*cmd, "-c", str(node.config_path), *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert res.returncode == 0, f"pbxmesh {' '.join(args)}: {res.stderr}{res.stdout}"
        return res.stdout

    def url(self, node: NodeProcess) -> str:
        return f"http://127.0.0.1:{node.port}/"


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    require_browser()
    require_corosync()
    with private_loopback() as coro:
        assert coro.netns is not None
        with node_group([("pbx-a", coro.netns), ("pbx-b", coro.netns)], base_port=PORT) as nodes:
            for n in nodes:
                n.start()
            wait_until(
                lambda: all(len(n.members()) == 2 for n in nodes), 30, "both nodes in the view"
            )
            yield Cluster(coro.netns, nodes)


@pytest.fixture(scope="module")
def browser(cluster: Cluster) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    tmp = Path(tempfile.mkdtemp(prefix="pbxm-chromium-"))
    wrapper = chromium_in_netns(cluster.netns, tmp)
    try:
        with sync_playwright() as pw:
            b = pw.chromium.launch(executable_path=str(wrapper), args=CHROMIUM_ARGS)
            try:
                yield b
            finally:
                b.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def page(browser: Any, cluster: Cluster) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    try:
        p = context.new_page()
        p.on("pageerror", lambda exc: errors.append(str(exc)))
        p.goto(cluster.url(cluster.a))
        p.wait_for_selector("#live:text('live')", timeout=10_000)
        yield p
        assert not errors, f"JavaScript errors on the page: {errors}"
    finally:
        context.close()


def lamp(page: Any, device: str) -> Any:
    return page.locator(f'#grid .lamp[data-name="{device}"]')


def wait_state(page: Any, device: str, state: str, timeout: float) -> float:
    """Seconds until the lamp shows ``state`` as text, class and data-state."""
    from playwright.sync_api import expect

    start = time.monotonic()
    loc = lamp(page, device)
    expect(loc).to_have_attribute("data-state", state, timeout=timeout * 1000)
    took = time.monotonic() - start
    expect(loc.locator(".st")).to_have_text(state, timeout=100)
    expect(loc).to_have_class(f"lamp {state}", timeout=100)
    return took


def filter_to(page: Any, pattern: str) -> None:
    page.fill("#filter", pattern)


# -- behaviour -----------------------------------------------------------------------------


def test_page_shows_members_channels_and_status(page: Any, cluster: Cluster) -> None:
    from playwright.sync_api import expect

    members = page.locator("#members")
    expect(members).to_contain_text("pbx-a")
    expect(members).to_contain_text("pbx-b")
    expect(members).to_contain_text("(this node)")
    expect(members.locator("td.up")).to_have_count(2)
    expect(members).to_contain_text("127.0.0.1")
    expect(members).to_contain_text(cluster.b.eid())
    expect(page.locator("#node")).to_contain_text(cluster.a.eid())
    expect(page.locator("#node")).to_contain_text("corosync")
    expect(page.locator("#channels")).to_contain_text("device_state")
    expect(page.locator("#link")).to_have_text("cluster link up")
    expect(page.locator("#quorum")).to_have_text("quorate")
    expect(page.locator("#view")).not_to_have_text("-")


def test_cli_publish_changes_the_lamp_within_a_second(page: Any, cluster: Cluster) -> None:
    cluster.cli(cluster.a, "publish", "device_state", "Custom:lamp1", "NOT_INUSE")
    wait_state(page, "Custom:lamp1", "NOT_INUSE", 5)
    for state in ("INUSE", "RINGING", "ONHOLD", "NOT_INUSE"):
        cluster.cli(cluster.a, "publish", "device_state", "Custom:lamp1", state)
        took = wait_state(page, "Custom:lamp1", state, LAMP_DEADLINE)
        assert took <= LAMP_DEADLINE
    # A change made on the other server is pushed through the cluster to this page too.
    cluster.cli(cluster.b, "publish", "device_state", "Custom:lamp-b", "BUSY")
    assert wait_state(page, "Custom:lamp-b", "BUSY", LAMP_DEADLINE) <= LAMP_DEADLINE


def test_event_rate_is_shown(page: Any, cluster: Cluster) -> None:
    for i in range(20):
        cluster.a.publish_device(f"Custom:rate{i}", "INUSE")

    def rate_shown() -> bool:
        text = page.locator("#avg").text_content() or "-"
        return text not in ("-", "0.0")

    wait_until(rate_shown, 15, "a non-zero 10 s event rate", interval=0.2)


def test_filter_by_glob_and_text(page: Any, cluster: Cluster) -> None:
    from playwright.sync_api import expect

    for dev in ("PJSIP/1001", "PJSIP/1002", "PJSIP/2001", "SIP/1001"):
        cluster.a.publish_device(dev, "NOT_INUSE")
    expect(lamp(page, "SIP/1001")).to_have_count(1)
    filter_to(page, "PJSIP/1*")
    expect(page.locator("#grid .lamp")).to_have_count(2)
    expect(lamp(page, "PJSIP/1001")).to_be_visible()
    expect(page.locator("#count")).to_contain_text("(2 shown of")
    filter_to(page, "1001")  # no wildcard: a substring, whatever the technology
    expect(page.locator("#grid .lamp")).to_have_count(2)
    filter_to(page, "pjsip/[!1]*")  # fnmatch classes, case-insensitive
    expect(page.locator("#grid .lamp")).to_have_count(1)
    expect(lamp(page, "PJSIP/2001")).to_be_visible()
    filter_to(page, "PJSIP/[")  # a half-typed pattern is text, not an error
    expect(page.locator("#grid")).to_contain_text("No device matches")
    filter_to(page, "")
    expect(lamp(page, "SIP/1001")).to_be_visible()


def test_click_and_keyboard_show_origins(page: Any, cluster: Cluster) -> None:
    from playwright.sync_api import expect

    a_eid, b_eid = cluster.a.eid(), cluster.b.eid()
    cluster.a.publish_device("Custom:shared", "INUSE")
    cluster.b.publish_device("Custom:shared", "NOT_INUSE")
    cluster.a.publish_device("Custom:shared2", "ONHOLD")
    filter_to(page, "Custom:shared*")
    wait_state(page, "Custom:shared", "INUSE", 5)
    lamp(page, "Custom:shared").click()
    detail = page.locator("#detail")
    expect(detail.locator("tr.origin")).to_have_count(2)
    expect(detail).to_contain_text(a_eid)
    expect(detail).to_contain_text(b_eid)
    expect(detail.locator("tr.origin", has_text="pbx-b")).to_contain_text("NOT_INUSE")
    expect(detail.locator("tr.origin", has_text="pbx-a")).to_contain_text("INUSE")
    # The detail follows the device live.
    cluster.b.publish_device("Custom:shared", "RINGING")
    expect(detail.locator("tr.origin", has_text="pbx-b")).to_contain_text("RINGING")
    # Keyboard: the focused lamp moves with the arrow keys, Enter opens its origins.
    lamp(page, "Custom:shared").focus()
    page.keyboard.press("ArrowRight")
    expect(lamp(page, "Custom:shared2")).to_be_focused()
    page.keyboard.press("Enter")
    expect(detail).to_contain_text("Custom:shared2")
    expect(detail.locator("tr.origin")).to_have_count(1)


def test_removed_device_leaves_the_grid(page: Any, cluster: Cluster) -> None:
    """A node that stops takes its lamps with it; the page must not show them any more."""
    from playwright.sync_api import expect

    b = cluster.b
    b.publish_device("Custom:only-on-b", "INUSE")
    filter_to(page, "Custom:only-on-b")
    wait_state(page, "Custom:only-on-b", "INUSE", 5)
    lamp(page, "Custom:only-on-b").click()
    b.stop()
    try:
        expect(lamp(page, "Custom:only-on-b")).to_have_count(0, timeout=10_000)
        expect(page.locator("#detail")).to_contain_text("removed")
        expect(page.locator("#members td.up")).to_have_count(1)
    finally:
        b.start()
        wait_until(lambda: len(cluster.a.members()) == 2, 30, "pbx-b back in the view")


def test_mwi_lamp_appears_after_cli_publish(page: Any, cluster: Cluster) -> None:
    from playwright.sync_api import expect

    cluster.cli(cluster.a, "publish", "mwi", "1234@default", "3", "1")
    box = page.locator('#mwi .mwi[data-mailbox="1234@default"]')
    expect(box).to_have_count(1, timeout=LAMP_DEADLINE * 1000)
    expect(box).to_have_class("mwi waiting")
    expect(box).to_contain_text("3 new, 1 old")
    expect(box).to_contain_text("waiting")
    cluster.cli(cluster.b, "publish", "mwi", "1234@default", "0", "4")
    expect(box).to_have_class("mwi", timeout=LAMP_DEADLINE * 1000)
    expect(box).to_contain_text("0 new, 4 old")


def test_presence_shows_state_and_message(page: Any, cluster: Cluster) -> None:
    from playwright.sync_api import expect

    cluster.cli(cluster.a, "publish", "presence_state", "alice", "dnd", "", "back at <3>")
    row = page.locator('#presence .pres[data-presentity="CustomPresence:alice"]')
    expect(row).to_have_count(1, timeout=LAMP_DEADLINE * 1000)
    expect(row).to_have_class("pres dnd")
    expect(row).to_contain_text("alice")
    expect(row).to_contain_text("back at <3>")  # shown as text, not markup
    cluster.cli(cluster.b, "publish", "presence_state", "alice", "available")
    expect(row).to_have_class("pres available", timeout=LAMP_DEADLINE * 1000)
    expect(row.locator(".msg")).to_have_text("")


def test_reconnects_after_the_node_restarts(page: Any, cluster: Cluster) -> None:
    from playwright.sync_api import expect

    a = cluster.a
    a.stop()
    try:
        expect(page.locator("#live")).to_have_text("not live", timeout=10_000)
        expect(page.locator("#banner")).to_be_visible()
    finally:
        a.start()
    wait_until(lambda: len(a.members()) == 2, 30, "pbx-a back in the view")
    expect(page.locator("#live")).to_have_text("live", timeout=15_000)
    a.publish_device("Custom:after-restart", "INUSE")
    wait_state(page, "Custom:after-restart", "INUSE", 5)


def test_token_from_the_address_and_a_clear_message_without_it(
    browser: Any, cluster: Cluster
) -> None:
    """A node with a [control] token: the page passes ``#token=`` on, and says when it lacks it."""
    from playwright.sync_api import expect

    a = cluster.a
    node = NodeProcess("pbx-t", a.workdir.parent / "pbx-t", a.group, PORT + 5, netns=a.netns)
    node.write_config()
    with open(node.config_path, "a", encoding="utf-8") as f:
        f.write('token = "test-token-&-more"\n')  # [control] is the file's last table
    # NodeProcess.start() polls /status without the token, so start the daemon by hand.
    with open(node.log_path, "ab") as err:
        cmd = ["ip", "netns", "exec", cluster.netns, sys.executable, "-m", "pbxmesh"]
        node.proc = subprocess.Popen(
            [*cmd, "-c", str(node.config_path), "run"],
            stdin=subprocess.DEVNULL,
            stdout=err,
            stderr=err,
            start_new_session=True,
        )
    context = browser.new_context()
    try:
        page = context.new_page()
        url = f"http://127.0.0.1:{node.port}/"
        wait_until(lambda: _loads(page, url), 30, "the token node's page")
        expect(page.locator("#banner")).to_contain_text("needs a token", timeout=10_000)
        page.goto(url + "#token=" + "test-token-%26-more")
        page.reload()  # a fragment change alone does not reload the page
        expect(page.locator("#live")).to_have_text("live", timeout=10_000)
        cluster.cli(node, "publish", "device_state", "Custom:with-token", "INUSE")
        wait_state(page, "Custom:with-token", "INUSE", LAMP_DEADLINE)
        lamp(page, "Custom:with-token").click()  # the on-demand origins use the token too
        expect(page.locator("#detail tr.origin")).to_have_count(1)
        page.goto(url + "#token=wrong")
        page.reload()
        expect(page.locator("#banner")).to_contain_text("refused the token", timeout=10_000)
    finally:
        context.close()
        node.stop()


def _loads(page: Any, url: str) -> bool:
    try:
        page.goto(url)
    except Exception:  # playwright's Error: the daemon is not listening yet
        return False
    return True


def test_ten_thousand_devices_stay_responsive(page: Any, cluster: Cluster) -> None:
    """10,000 devices arrive while the page is open; it keeps up and stays usable."""
    from playwright.sync_api import expect

    total = 10_000
    # A probe of the page's main thread: the longest gap between 50 ms timers.
    page.evaluate(
        """() => { window.maxLag = 0; let t = performance.now();
                   window.lagProbe = setInterval(() => { const now = performance.now();
                     window.maxLag = Math.max(window.maxLag, now - t - 50); t = now; }, 50); }"""
    )
    publish_many(cluster, [f"Load:dev{i:05d}" for i in range(total)])
    expect(page.locator("#count")).to_contain_text(f"of {cluster.a.status()['devices']:,}")
    filter_to(page, "Load:*")
    expect(page.locator("#count")).to_contain_text(f"({total:,} shown of", timeout=15_000)
    lamps = page.locator("#grid .lamp").count()
    assert 0 < lamps < 500, f"{lamps} lamp elements for {total} devices: not virtualised"

    start = time.monotonic()
    filter_to(page, "Load:dev0999*")
    expect(page.locator("#count")).to_contain_text("(10 shown of", timeout=2_000)
    took = time.monotonic() - start
    assert took < 1.0, f"filtering 10,000 devices took {took:.2f} s"
    expect(page.locator("#grid .lamp")).to_have_count(10)

    filter_to(page, "Load:*")
    expect(page.locator("#count")).to_contain_text(f"({total:,} shown of")
    page.locator("#grid").evaluate("g => { g.scrollTop = g.scrollHeight / 2; }")
    expect(lamp(page, f"Load:dev{total // 2:05d}")).to_be_visible()
    page.locator("#grid .lamp").first.focus()
    page.keyboard.press("End")  # the keyboard reaches the last of 10,000 lamps too
    expect(lamp(page, f"Load:dev{total - 1:05d}")).to_be_focused()
    assert page.locator("#grid .lamp").count() < 500
    # A change to a lamp in view still arrives within the second with 10,000 loaded.
    cluster.cli(cluster.a, "publish", "device_state", f"Load:dev{total - 1:05d}", "RINGING")
    assert wait_state(page, f"Load:dev{total - 1:05d}", "RINGING", LAMP_DEADLINE) <= 1.0
    lag = page.evaluate("() => { clearInterval(window.lagProbe); return window.maxLag; }")
    assert lag < 1000, f"the page's main thread was blocked for {lag:.0f} ms"


def publish_many(cluster: Cluster, devices: list[str], threads: int = 4) -> None:
    """Publish through the control API over ``threads`` keep-alive connections."""
    a = cluster.a
    errors: list[BaseException] = []

    def worker(part: list[str]) -> None:
        conn = NodeProcess(a.name, a.workdir, a.group, a.port, netns=a.netns)
        try:
            for i, dev in enumerate(part):
                conn.publish_device(dev, ("NOT_INUSE", "INUSE", "RINGING", "UNAVAILABLE")[i % 4])
        except BaseException as exc:
            errors.append(exc)
        finally:
            conn._close_http()

    ts = [threading.Thread(target=worker, args=(devices[i::threads],)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors
