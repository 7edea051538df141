"""docs/asterisk.md and ``pbxmesh asterisk-config`` as printed, in a real Asterisk.

Each Asterisk gets ``autoload = no`` and exactly the modules ``asterisk-config`` prints, its
``entityid`` line, its manager.conf account or pjsip.conf sections, and the page's dialplan
blocks; then the link is driven the way pbxmesh drives it: over AMI (Setvar/Getvar, a hint,
presence) or over SIP (a PUBLISH from another server's EID lights a hint; Asterisk publishes
its own change to the listener). The page's SIP blocks must be what the command prints for the
page's pbxmesh.toml, and the way the page gives to check remote MWI is run too.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from pbxmesh.eid import EID
from pbxmesh.links.ami import AmiClient, AmiConfig
from pbxmesh.links.ami.codec import Event
from pbxmesh.links.sip.endpoint import SipEndpoint, Source
from pbxmesh.links.sip.message import Request, Response
from pbxmesh.links.sip.publication import PublicationServer, respond
from tests.harness.asterisk import AMI_SECRET, AMI_USER, Asterisk, free_port
from tests.harness.docs import doc_block
from tests.harness.waits import eventually

pytestmark = [pytest.mark.asterisk, pytest.mark.usefixtures("require_asterisk")]

BIN = Path(sys.executable).parent
DOC_EID = "02:00:00:00:0d:01"  # the entityid the page's example prints
FOREIGN = EID.parse("02:00:00:00:77:01")  # another server, as pbxmesh publishes it


def asterisk_config(tmp_path: Path, toml: str) -> dict[str, str]:
    """``pbxmesh asterisk-config``'s output, split by the file each part is for."""
    conf = tmp_path / "pbxmesh.toml"
    conf.write_text(f'[node]\nstate_dir = "{tmp_path}"\neid = "{DOC_EID}"\n\n{toml}')
    out = subprocess.run(
        [str(BIN / "pbxmesh"), "-c", str(conf), "asterisk-config"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    parts = {}
    for raw in out.split("\n\n; "):
        part = raw if raw.startswith("; ") else "; " + raw
        parts[part.split()[1].rstrip(",:")] = part if part.endswith("\n") else part + "\n"
    return parts


def modules_of(modules_conf: str) -> tuple[str, ...]:
    return tuple(m.removesuffix(".so") for m in re.findall(r"^load => (\S+)", modules_conf, re.M))


def entityid_of(asterisk_conf: str) -> str:
    m = re.search(r"^entityid = (\S+)$", asterisk_conf, re.M)
    assert m, asterisk_conf
    return m[1]


def hint_line(star: Asterisk, exten: str) -> str:
    out = star.cli("core show hints").stdout
    return next((ln for ln in out.splitlines() if ln.strip().startswith(exten)), "")


# -- AMI --------------------------------------------------------------------------------------
async def test_ami_link_as_printed_with_the_pages_manager_conf_and_dialplan(
    tmp_path: Path,
) -> None:
    port = free_port()
    printed = asterisk_config(
        tmp_path,
        f'[asterisk]\nami = "127.0.0.1:{port}"\nusername = "pbxmesh"\nsecret = "change-me"\n',
    )
    assert set(printed) == {"asterisk.conf", "modules.conf", "manager.conf"}, printed
    manager = doc_block("docs/asterisk.md", "[general]").replace("port = 5038", f"port = {port}")
    # the page's account is the printed one (plus its event filters)
    account = printed["manager.conf"].split("\n", 1)[1]
    assert all(line in manager for line in account.splitlines()), (manager, account)
    # an account for the test to start calls with (Originate), beside the page's
    manager += f"\n[{AMI_USER}]\nsecret = {AMI_SECRET}\nread = all\nwrite = all\n"
    dialplan = (
        doc_block("docs/asterisk.md", "[phones]")
        + doc_block("docs/asterisk.md", "exten => 1000,hint,PJSIP/1000&Custom:remote")
        + "\n[presence]\n"
        + doc_block("docs/asterisk.md", "exten => *78,1,Set(PRESENCE_STATE")
    )
    star = Asterisk(
        "docs-ami",
        entityid_of(printed["asterisk.conf"]),
        modules=modules_of(printed["modules.conf"]),
        dialplan=dialplan,
        manager_conf=manager,
        ami_port=port,
    )
    star.start()
    ami = AmiClient(AmiConfig.local("127.0.0.1", port, "pbxmesh", "change-me"))
    admin = AmiClient(AmiConfig.local("127.0.0.1", port, AMI_USER, AMI_SECRET))
    try:
        assert f"Entity ID:                   {DOC_EID}" in star.cli("core show settings").stdout
        await ami.start()
        await admin.start()
        async with asyncio.timeout(20):
            await ami.wait_connected()
            await admin.wait_connected()
        # the page's hints, with the remote counterpart pbxmesh writes
        r = await ami.action("Setvar", Variable="DEVICE_STATE(Custom:remote-Custom-mystate)",
                             Value="INUSE")  # fmt: skip
        assert r.ok, r.message
        r = await ami.action("Getvar", Variable="DEVICE_STATE(Custom:remote-Custom-mystate)")
        assert r.get("Value") == "INUSE"
        await eventually(lambda: "InUse" in hint_line(star, "1234@phones"), "hint 1234 InUse")
        assert "PJSIP/1001&Custom:remote-PJSIP-1001" in hint_line(star, "1001@phones")
        # the page's presence lines: loaded, and their Set() as the dialplan runs it
        presence = doc_block("docs/asterisk.md", "exten => *78,1,Set(PRESENCE_STATE")
        assert "*78" in star.cli("dialplan show presence").stdout
        m = re.search(r"^exten => \*78,1,Set\(([^=]+)=(.*)\)$", presence, re.M)
        assert m, presence
        r = await admin.action("Setvar", Variable=m[1], Value=m[2])
        assert r.ok, r.message
        await eventually(
            lambda: "Presence:dnd" in hint_line(star, "1000@phones"), "hint 1000 shows dnd"
        )
        r = await ami.action("Getvar", Variable="PRESENCE_STATE(CustomPresence:alice,value)")
        assert r.get("Value") == "dnd"
    finally:
        await ami.close()
        await admin.close()
        star.stop()
        star.cleanup()


# -- SIP --------------------------------------------------------------------------------------
def test_the_pages_sip_blocks_are_what_asterisk_config_prints(tmp_path: Path) -> None:
    printed = asterisk_config(tmp_path, doc_block("docs/asterisk.md", "[asterisk.sip]"))
    assert printed["asterisk.conf"] == doc_block("docs/asterisk.md", "; asterisk.conf, [options]")
    assert printed["modules.conf"] == doc_block("docs/asterisk.md", "; modules.conf, [modules]")
    assert printed["pjsip.conf"] == doc_block("docs/asterisk.md", "; pjsip.conf")
    assert set(printed) == {"asterisk.conf", "modules.conf", "pjsip.conf"}


class Listener:
    """pbxmesh's end of the link: answers Asterisk's PUBLISHes and keeps their bodies."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, object]] = []
        self.server = PublicationServer()

    def handle(self, request: Request, source: Source) -> Response | None:
        outcome = self.server.handle(request, asyncio.get_running_loop().time())
        if outcome.body is not None:
            self.bodies.append(json.loads(request.body))
        return respond(request, outcome, source=source.address)


async def publish(
    client: SipEndpoint, sip: tuple[str, int], event: str, body: dict[str, object]
) -> Response:
    headers = {
        "From": f"<sip:pbxmesh@127.0.0.1>;tag={secrets.token_hex(4)}",
        "To": "<sip:pbxmesh@127.0.0.1>",
        "Call-ID": secrets.token_hex(8),
        "CSeq": "1 PUBLISH",
        "Event": event,
        "Expires": "3600",
        "Content-Type": "application/json",
    }
    request = Request(
        "PUBLISH", f"sip:pbxmesh@{sip[0]}:{sip[1]}", tuple(headers.items()),
        json.dumps(body).encode(),
    )  # fmt: skip
    return await client.request(request, sip)


async def test_sip_link_as_printed_and_remote_mwi_as_the_page_checks_it(tmp_path: Path) -> None:
    listen, sip_port = free_port(), free_port()
    toml = doc_block("docs/asterisk.md", "[asterisk.sip]")
    toml = toml.replace("127.0.0.1:5070", f"127.0.0.1:{listen}")
    toml = toml.replace("127.0.0.1:5060", f"127.0.0.1:{sip_port}")
    printed = asterisk_config(tmp_path, toml)
    modules = modules_of(printed["modules.conf"])
    check = doc_block("docs/asterisk.md", "; check remote MWI")
    star = Asterisk(
        "docs-sip",
        entityid_of(printed["asterisk.conf"]),
        modules=modules,
        dialplan="[phones]\nexten => 1234,hint,Custom:mystate\n",
        files={"pjsip.conf": printed["pjsip.conf"]},
    )
    listener = Listener()
    peer = SipEndpoint("127.0.0.1", listen, listener.handle)
    client = SipEndpoint("127.0.0.1", 0, lambda r, s: None)
    events: list[Event] = []
    ami = AmiClient(
        AmiConfig.local("127.0.0.1", star.ami_port, AMI_USER, AMI_SECRET), on_event=events.append
    )
    await peer.start()
    await client.start()
    try:
        await asyncio.to_thread(star.start)
        await ami.start()
        async with asyncio.timeout(20):
            await ami.wait_connected()
        sip = ("127.0.0.1", sip_port)
        # cluster -> Asterisk: another server's state, aggregated into the unchanged hint
        r = await publish(client, sip, "asterisk-devicestate", {
            "type": "devicestate", "device": "Custom:mystate", "state": "INUSE",
            "cachable": 1, "eid": str(FOREIGN),
        })  # fmt: skip
        assert r.status == 200, r
        await eventually(lambda: "InUse" in hint_line(star, "1234@phones"), "hint 1234 InUse")
        # Asterisk -> cluster: its own change is published to the listener, under its EID
        r = await ami.action("Setvar", Variable="DEVICE_STATE(Custom:local1)", Value="BUSY")
        assert r.ok, r.message
        await eventually(
            lambda: any(
                b.get("device") == "Custom:local1" and b.get("eid") == DOC_EID
                for b in listener.bodies
            ),
            "Asterisk publishes Custom:local1 under its entityid",
        )
        # remote MWI, checked as the page says
        r = await publish(client, sip, "asterisk-mwi", {
            "type": "mailboxstate", "uniqueid": "1000@default", "new": 2, "old": 1,
            "eid": str(FOREIGN),
        })  # fmt: skip
        assert r.status == 200, r
        want = dict(line.split(": ", 1) for line in check.splitlines() if not line.startswith(";"))
        await eventually(
            lambda: any(
                {k: e.get(k) for k in want} == want for e in events if e.name == "MessageWaiting"
            ),
            f"a MessageWaiting event as the page shows: {want}",
        )
    finally:
        await ami.close()
        await client.close()
        await peer.close()
        await asyncio.to_thread(star.stop)
        star.cleanup()
