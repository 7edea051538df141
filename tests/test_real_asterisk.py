"""The 2009 tutorial's test on three *real* Asterisk servers, each linked over AMI to its own
real pbxmesh daemon, the daemons over a real corosync; and the faults an AMI link meets:
a pbxmesh killed, an Asterisk restarted, the AMI connection cut.

Each Asterisk's hint 1234 lists ``Custom:mystate`` and its remote counterpart, as
docs/asterisk.md tells administrators to write it. Marked ``asterisk``: without a real Asterisk
(see tests/harness/asterisk.py) these tests skip with the reason, and fail under CI=true.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import re
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from pbxmesh.errors import AmiError
from pbxmesh.links.ami.client import AmiClient, AmiConfig
from pbxmesh.links.ami.counterparts import counterpart_name
from tests.harness.asterisk import AMI_MODULES, AMI_SECRET, AMI_USER, Asterisk, eid_of, free_port
from tests.harness.nodes import NodeProcess, node_group

pytestmark = [pytest.mark.asterisk, pytest.mark.integration]

HINT = f"Custom:mystate&{counterpart_name('Custom:mystate')}"
DOCS = Path(__file__).resolve().parents[1] / "docs" / "asterisk.md"


def documented_manager_conf(port: int) -> tuple[str, str, str]:
    """docs/asterisk.md's manager.conf block as an administrator copies it (port and secret
    changed), plus its user name and secret; the test's own sessions get a user of their own."""
    text = DOCS.read_text()
    section = text[text.index("## 1. An AMI user") :]
    block = section.split("```ini\n", 1)[1].split("```", 1)[0]
    assert "eventfilter" in block and "[general]" in block
    user = re.findall(r"^\[([\w-]+)\]", block, re.M)[1]  # the section after [general]
    secret = "pbxmesh-test-secret"
    conf = block.replace("port = 5038", f"port = {port}").replace("change-me", secret)
    conf += f"\n[{AMI_USER}]\nsecret = {AMI_SECRET}\nread = all\nwrite = all\n"
    return conf, user, secret


DIALPLAN = f"[devstate_test]\nexten => 1234,hint,{HINT}\n"


_NOTHING: Any = object()


async def wait_until(
    probe: Callable[[], Any], within: float, what: str, expect: Any = _NOTHING
) -> None:
    """Poll ``probe`` (sync or async) every 50 ms until it is true (or equals ``expect``)."""
    end = time.monotonic() + within
    last: Any = None
    while True:
        try:
            last = probe()
            if inspect.isawaitable(last):
                last = await last
        except AmiError as exc:  # our own AMI session reconnecting (e.g. Asterisk restarted)
            last = exc
        if isinstance(last, AmiError):
            pass
        elif (last == expect) if expect is not _NOTHING else bool(last):
            return
        if time.monotonic() > end:
            raise AssertionError(f"not within {within}s: {what} (last: {last!r})")
        await asyncio.sleep(0.05)


def link_up(node: NodeProcess) -> bool:
    link = node.status().get("asterisk") or {}
    return bool(link.get("connected"))


def link_config(node: NodeProcess, ami_port: int) -> None:
    """pbxmesh logs in as the user docs/asterisk.md tells administrators to create."""
    _, user, secret = documented_manager_conf(ami_port)
    node.write_config()
    node.config_path.write_text(
        node.config_path.read_text()
        + f'[asterisk]\nami = "127.0.0.1:{ami_port}"\nusername = "{user}"\n'
        f'secret = "{secret}"\n'
    )


class Server:
    """One PBX server: a real Asterisk, its pbxmesh daemon, and a test's own AMI session."""

    def __init__(self, asterisk: Asterisk, node: NodeProcess) -> None:
        self.asterisk = asterisk
        self.node = node
        self.ami = AmiClient(AmiConfig.local("127.0.0.1", asterisk.ami_port, AMI_USER, AMI_SECRET))

    async def connect(self) -> None:
        await self.ami.start()
        async with asyncio.timeout(20):
            await self.ami.wait_connected()

    async def hint(self) -> str:
        lines = await self.ami.command("core show hints")
        (line,) = [ln for ln in lines if ln.startswith("1234@devstate_test")]
        return line

    async def shows(self, text: str) -> bool:
        return f"State:{text} " in await self.hint()

    async def set(self, state: str, device: str = "Custom:mystate") -> None:
        await self.ami.action("Setvar", Variable=f"DEVICE_STATE({device})", Value=state)

    async def counts(self, mailbox: str) -> tuple[str | None, str | None]:
        r = await self.ami.action("MailboxCount", Mailbox=mailbox)
        return r.get("NewMessages"), r.get("OldMessages")

    async def mwiget(self, mailbox: str) -> list[tuple[str | None, str | None]]:
        r = await self.ami.list_action("MWIGet", Mailbox=mailbox)
        return [(e.get("NewMessages"), e.get("OldMessages")) for e in r.items]


#: app_voicemail instead of res_mwi_external (they cannot load together: both would be the
#: voicemail provider, and Asterisk declines whichever comes second)
VOICEMAIL_MODULES = (
    "pbx_config",
    "func_devstate",
    "res_manager_devicestate",
    "format_wav",
    "app_voicemail",
)
VOICEMAIL_CONF = "[general]\nformat = wav\n[default]\n1000 => 1234,Alice\n"


@contextlib.asynccontextmanager
async def servers(
    n: int,
    group: str,
    base_port: int,
    voicemail: Sequence[int] = (),
    dialplan: str = DIALPLAN,
    extra: Callable[[int], tuple[Sequence[str], dict[str, str]]] | None = None,
) -> AsyncIterator[list[Server]]:
    """``n`` servers; those whose index is in ``voicemail`` run app_voicemail. ``extra(i)``
    gives server i's further modules and configuration files (e.g. PJSIP for phones)."""
    ports = [free_port() for _ in range(n)]
    stars = []
    for i in range(n):
        modules, files = extra(i) if extra is not None else ((), {})
        if i in voicemail:
            modules = (*VOICEMAIL_MODULES, *modules)
            files = {**files, "voicemail.conf": VOICEMAIL_CONF}
        stars.append(
            Asterisk(
                f"pbx{i + 1}",
                eid_of(i + 1),
                dialplan=dialplan,
                ami_port=ports[i],
                manager_conf=documented_manager_conf(ports[i])[0],
                modules=(*(AMI_MODULES if i not in voicemail else ()), *modules),
                files=files,
            )
        )
    out: list[Server] = []
    try:
        with node_group([(f"pbx{i + 1}", None) for i in range(n)], group, base_port) as nodes:
            for star in stars:
                star.write()
                await asyncio.to_thread(star.start)
            for star, node in zip(stars, nodes, strict=True):
                link_config(node, star.ami_port)
                await asyncio.to_thread(node.start)
                out.append(Server(star, node))
            for s in out:
                await s.connect()
            await wait_until(
                lambda: all(len(s.node.members()) == n for s in out), 20, "every member"
            )
            await wait_until(
                lambda: all(link_up(s.node) for s in out),
                20,
                "every AMI link up",
            )
            yield out
    finally:
        for s in out:
            await s.ami.close()
        for star in stars:
            await asyncio.to_thread(star.stop)
            star.cleanup()


async def all_show(group: Sequence[Server], text: str, why: str, within: float = 10) -> None:
    for s in group:
        await wait_until(lambda s=s: s.shows(text), within, f"{s.asterisk.name}: {why}")


async def test_the_tutorials_test_on_three_real_asterisks(
    require_asterisk, corosync_loopback, corosync_group
) -> None:
    async with servers(3, corosync_group, 22765) as (a, b, c):
        for s in (a, b, c):
            assert await s.shows("Idle"), await s.hint()
        await a.set("INUSE")
        await all_show((b, c), "InUse", "InUse from pbx1")
        assert await a.shows("InUse")
        await a.set("NOT_INUSE")
        await all_show((b, c), "Idle", "back to Idle")

        # Asterisk's aggregation across servers: BUSY on one and RINGING on another.
        await a.set("BUSY")
        await b.set("RINGING")
        await all_show((a, b, c), "InUse&Ringing", "BUSY + RINGING")
        await a.set("NOT_INUSE")
        await b.set("NOT_INUSE")
        await all_show((a, b, c), "Idle", "Idle again")

        # MWI written on pbx1 is readable on the others, with MWIGet and MailboxCount.
        r = await a.ami.action("MWIUpdate", Mailbox="1000@default", NewMessages=3, OldMessages=1)
        assert r.ok
        for s in (b, c):
            await wait_until(
                lambda s=s: s.mwiget("1000@default"), 10, "MWIGet elsewhere", expect=[("3", "1")]
            )
            assert await s.counts("1000@default") == ("3", "1")

        # The documented eventfilter lines spared every link its own counterpart writes'
        # echoes (without them, each write above comes back as a DeviceStateChange): what is
        # left is the MessageWaiting echo of each remote MWIUpdate, which no filter can tell.
        echoes = [s.node.status()["links"][0]["extra"]["echoes"] for s in (a, b, c)]
        assert echoes == [0, 1, 1]


async def test_a_killed_pbxmesh_leaves_the_others_hints_at_once_and_returns(
    require_asterisk, corosync_loopback, corosync_group
) -> None:
    async with servers(3, corosync_group, 22775) as (a, b, c):
        await c.set("BUSY")
        await all_show((a, b), "Busy", "Busy from pbx3")
        await asyncio.to_thread(c.node.kill)  # kill -9: no goodbye
        await all_show((a, b), "Idle", "pbx3's state dropped", within=5)
        assert await c.shows("Busy")  # its own Asterisk keeps its own state
        await asyncio.to_thread(c.node.start)
        await all_show((a, b), "Busy", "pbx3's state back", within=20)


async def test_a_restarted_asterisk_gets_its_states_and_counterparts_back(
    require_asterisk, corosync_loopback, corosync_group
) -> None:
    async with servers(3, corosync_group, 22785) as (a, b, c):
        await a.set("INUSE")
        await b.set("RINGING")
        await all_show((a, b, c), "InUse&Ringing", "INUSE + RINGING")
        await a.ami.action("MWIUpdate", Mailbox="1000@default", NewMessages=2, OldMessages=0)
        await wait_until(lambda: c.counts("1000@default"), 10, "MWI on pbx3", expect=("2", "0"))

        await asyncio.to_thread(a.asterisk.stop)
        await b.set("NOT_INUSE")  # while pbx1 is down: its counterpart must not stay RINGING
        await wait_until(lambda: c.shows("Idle"), 20, "pbx1 down: its states stop counting")
        await asyncio.to_thread(a.asterisk.start)
        # No manual step: pbxmesh reconnects and resynchronises in both directions.
        await wait_until(lambda: a.shows("InUse"), 30, "pbx1's own INUSE and no stale RINGING")
        await all_show((b, c), "InUse", "pbx1's INUSE shared again", within=20)
        await b.set("RINGING")
        await all_show((a, c), "InUse&Ringing", "remote RINGING written on pbx1 again")


async def test_a_cut_ami_connection_loses_nothing(
    require_asterisk, corosync_loopback, corosync_group
) -> None:
    async with servers(2, corosync_group, 22795) as (a, b):
        # manager reload: Asterisk re-reads manager.conf; the link must carry on.
        a.asterisk.cli("manager reload")
        await a.set("BUSY")
        await wait_until(lambda: b.shows("Busy"), 10, "Busy after manager reload")

        # The TCP connection between pbx1's pbxmesh and its Asterisk is killed (ss -K), and
        # changes happen on both sides while the link is down.
        pid = a.node.pid
        assert pid is not None
        killed = await asyncio.to_thread(kill_ami_connection, pid, a.asterisk.ami_port)
        assert killed, "no AMI connection of pbxmesh found to kill"
        await a.set("RINGING")
        await b.set("INUSE")
        await wait_until(lambda: b.shows("InUse&Ringing"), 20, "pbx1's change after the cut")
        await wait_until(lambda: a.shows("InUse&Ringing"), 20, "pbx2's change written on pbx1")
        await a.ami.action("MWIUpdate", Mailbox="2000@default", NewMessages=1, OldMessages=4)
        await wait_until(
            lambda: b.counts("2000@default"), 10, "MWI after the cut", expect=("1", "4")
        )


async def test_voicemail_left_in_app_voicemail_lights_the_other_servers(
    require_asterisk, corosync_loopback, corosync_group
) -> None:
    """MWI whose source is app_voicemail: a message in mailbox 1000@default on pbx1 (the file
    Asterisk writes, then AMI VoicemailRefresh, which is how Asterisk notices a change made
    outside it) reaches the other servers' MWIGet and MailboxCount."""
    async with servers(3, corosync_group, 22805, voicemail=[0]) as (a, b, c):
        assert await a.counts("1000@default") == ("0", "0")
        inbox = a.asterisk.workdir / "spool/voicemail/default/1000/INBOX"
        inbox.mkdir(parents=True)
        for n in range(2):
            (inbox / f"msg{n:04d}.txt").write_text(
                "[message]\norigmailbox=1000\ncontext=default\ncallerid=Bob <2000>\n"
                f"origtime={int(time.time())}\nduration=5\n"
            )
            (inbox / f"msg{n:04d}.wav").write_bytes(b"RIFF")
        r = await a.ami.action("VoicemailRefresh", Context="default", Mailbox="1000")
        assert r.message == "Refresh sent"
        assert await a.counts("1000@default") == ("2", "0")
        for s in (b, c):
            await wait_until(
                lambda s=s: s.mwiget("1000@default"), 10, "MWIGet elsewhere", expect=[("2", "0")]
            )
            assert await s.counts("1000@default") == ("2", "0")

        # The other way: pbx2's mailbox cannot be shown on pbx1, where app_voicemail keeps
        # res_mwi_external out; pbx1's pbxmesh says so, naming the mailbox.
        await b.ami.action("MWIUpdate", Mailbox="2000@default", NewMessages=1, OldMessages=0)
        await wait_until(
            lambda: a.node.status()["links"][0]["extra"]["mwi_not_shown"], 10, "said unshowable"
        )
        assert "2000@default cannot be shown" in a.node.log_path.read_text()
        assert a.node.status()["links"][0]["extra"]["voicemail"] is True


def kill_ami_connection(pid: int, port: int) -> bool:
    """Kill pbxmesh's TCP connection to AMI ``port`` (``ss -K``); True if one was found."""
    listing = subprocess.run(
        ["ss", "-tnpH", "state", "established", "dst", f"127.0.0.1:{port}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    ours = [ln.split() for ln in listing.splitlines() if f"pid={pid}," in ln]
    for fields in ours:  # Recv-Q Send-Q Local Peer Process
        local = fields[2]
        subprocess.run(
            ["ss", "-K", "dst", f"127.0.0.1:{port}", "src", local],
            capture_output=True,
            check=True,
        )
    return bool(ours)
