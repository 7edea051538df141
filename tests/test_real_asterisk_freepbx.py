"""Two *real* Asterisk servers laid out as FreePBX lays out /etc/asterisk, configured for
pbxmesh only through FreePBX's custom files, each linked to its own pbxmesh daemon over SIP
PUBLISH (and AMI beside it, for presence), the daemons over a real corosync.

Each server's pjsip.conf, manager.conf and extensions.conf are written as FreePBX writes them
(tests/freepbx_helpers.py: the ``#include`` lines in FreePBX's order, one generated extension
with FreePBX's hint ``PJSIP/1001&Custom:DND1001,CustomPresence:1001``). The custom files hold
exactly what ``pbxmesh asterisk-config --freepbx --no-transport`` prints for the server's node
(FreePBX's own transport binds the link's port), and extensions_custom.conf the other server's
extension's hint, the same line as FreePBX generates there (docs/freepbx.md). Modules: what
the command lists, with chan_pjsip for the extensions (FreePBX autoloads them all).

DND is set as FreePBX sets it (``Custom:DND1001`` BUSY on, UNAVAILABLE off, over AMI as its
GUI and UCP do); the lamp for 1001 must be the same on both servers. Then a ``core reload`` on
the second server, which is what ``fwconsole reload`` ends with after rewriting the files, and
the lamp still follows.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pbxmesh.cli import main as cli_main
from tests.freepbx_helpers import freepbx_main_files, split_freepbx
from tests.harness.asterisk import AMI_SECRET, AMI_USER, Asterisk, free_port
from tests.harness.docs import doc_block
from tests.harness.nodes import NodeProcess, node_group
from tests.test_real_asterisk import Server, wait_until
from tests.test_real_asterisk_sip import sip_link_up

pytestmark = [pytest.mark.asterisk, pytest.mark.integration]

EXTENS = ("1001", "2001")
LINK_USER, LINK_SECRET = "pbxmesh", "mesh-secret"


def generated_hint(exten: str) -> str:
    """The page's hint as FreePBX generates it for 1001, for ``exten``."""
    return doc_block("docs/freepbx.md", "exten => 1001,hint").replace("1001", exten)


def custom_hints(other: str) -> str:
    """The page's extensions_custom.conf (2001's hint), for the other server's extension."""
    return doc_block("docs/freepbx.md", "[ext-local-custom]").replace("2001", other)


def printed_freepbx(node: NodeProcess) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli_main(
            ["-c", str(node.config_path), "asterisk-config", "--freepbx", "--no-transport"]
        )
    assert code == 0
    return out.getvalue()


def refreshes(node: NodeProcess) -> int:
    """How many refresh requests from Asterisk the node's SIP link has answered."""
    (sip,) = [link for link in node.status()["links"] if link["kind"] == "sip"]
    return int(sip["extra"]["refreshes_answered"])


@dataclass
class FreePbx:
    server: Server
    exten: str

    async def lamp(self, exten: str) -> tuple[str, str]:
        """(state, presence) of ``exten``'s hint, as ``core show hints`` shows it."""
        lines = await self.server.ami.command("core show hints")
        (line,) = [ln for ln in lines if ln.startswith(f"{exten}@")]
        state = re.search(r"State:(\S+)", line)
        presence = re.search(r"\sPresence:(\S+)", line)
        assert state and presence, line
        return state[1], presence[1]

    async def dnd(self, on: bool) -> None:
        """As FreePBX's DND does (donotdisturb_set over AMI; *78/*79 in the dialplan)."""
        var = f"DEVICE_STATE(Custom:DND{self.exten})"
        r = await self.server.ami.action(
            "Setvar", Variable=var, Value="BUSY" if on else "UNAVAILABLE"
        )
        assert r.ok, r.message

    async def presence(self, value: str) -> None:
        """As FreePBX's presence state module (UCP) sets it."""
        var = f"PRESENCE_STATE(CustomPresence:{self.exten})"
        r = await self.server.ami.action("Setvar", Variable=var, Value=value)
        assert r.ok, r.message


@contextlib.asynccontextmanager
async def freepbx_servers(group: str, base_port: int) -> AsyncIterator[list[FreePbx]]:
    stars: list[Asterisk] = []
    out: list[FreePbx] = []
    try:
        with node_group([(f"pbx{i + 1}", None) for i in range(2)], group, base_port) as nodes:
            for i, (node, exten) in enumerate(zip(nodes, EXTENS, strict=True)):
                sip_port, listen, ami_port = free_port(), free_port(), free_port()
                node.state_dir.mkdir(parents=True, exist_ok=True)
                node.config_path.write_text(
                    node.config_path.read_text() + f'[asterisk]\nami = "127.0.0.1:{ami_port}"\n'
                    f'username = "{LINK_USER}"\nsecret = "{LINK_SECRET}"\n'
                    f'[asterisk.sip]\nlisten = "127.0.0.1:{listen}"\n'
                    f'uri = "sip:pbxmesh@127.0.0.1:{sip_port}"\n'
                )
                custom = split_freepbx(printed_freepbx(node))
                entityid = re.search(r"^entityid = (\S+)$", custom.pop("asterisk.conf"), re.M)
                assert entityid, "asterisk-config printed no entityid"
                modules = re.findall(r"^;   (\S+)\.so$", custom.pop("modules.conf"), re.M)
                files = freepbx_main_files(
                    exten, generated_hint(exten), sip_port, ami_port, AMI_USER, AMI_SECRET
                )
                # Only custom files: never a file FreePBX writes.
                assert set(custom) <= {f for f, text in files.items() if text == ""}, custom
                files.update(custom)
                other = EXTENS[1 - i]
                files["extensions_custom.conf"] = custom_hints(other)
                star = Asterisk(
                    f"pbx{i + 1}",
                    entityid[1],
                    modules=(*modules, "chan_pjsip"),
                    files=files,
                    ami_port=ami_port,
                )
                star.sip_port = sip_port  # type: ignore[attr-defined]
                stars.append(star)
            for star in stars:
                star.write()
                await asyncio.to_thread(star.start)
            for star, node, exten in zip(stars, nodes, EXTENS, strict=True):
                await asyncio.to_thread(node.start)
                out.append(FreePbx(Server(star, node), exten))
            for f in out:
                await f.server.connect()
            servers = [f.server for f in out]
            await wait_until(
                lambda: all(len(s.node.members()) == 2 for s in servers), 20, "members"
            )
            await wait_until(lambda: all(sip_link_up(s.node) for s in servers), 20, "SIP links")
            yield out
    finally:
        for f in out:
            await f.server.ami.close()
        for star in stars:
            await asyncio.to_thread(star.stop)
            star.cleanup()


async def same_lamp(a: FreePbx, b: FreePbx, exten: str, want: tuple[str, str], why: str) -> None:
    for s in (a, b):
        await wait_until(
            lambda s=s: s.lamp(exten), 10, f"{s.server.asterisk.name}: {why}", expect=want
        )  # type: ignore[misc]


async def test_the_lamp_across_two_freepbx_servers_and_a_reload(
    require_asterisk, corosync_loopback, corosync_group, tmp_path: Path
) -> None:
    async with freepbx_servers(corosync_group, 23835) as (a, b):
        # The generated hint is FreePBX's, unchanged; the other server's is the same line.
        for s in (a, b):
            hints = await s.server.ami.command("core show hints")
            assert any(ln.startswith(f"{s.exten}@ext-local") for ln in hints), hints
        idle = await a.lamp("1001")
        await same_lamp(a, b, "1001", idle, "1001 before DND")
        await a.dnd(True)
        await same_lamp(a, b, "1001", ("Busy", idle[1]), "DND on pbx1 shows on pbx2")
        await a.presence("dnd,,back at 3")
        await same_lamp(a, b, "1001", ("Busy", "dnd"), "DND presence on pbx2")
        await a.dnd(False)
        await a.presence("available")
        await same_lamp(a, b, "1001", (idle[0], "available"), "DND off everywhere")
        # The other way: 2001's DND on pbx2 shows on pbx1.
        await b.dnd(True)
        await same_lamp(a, b, "2001", ("Busy", "not_set"), "DND on pbx2 shows on pbx1")

        # fwconsole reload on pbx2: files rewritten, then Asterisk reloaded.
        before = refreshes(b.server.node)
        b.server.asterisk.write()
        r = b.server.asterisk.cli("core reload")
        assert r.returncode == 0, r.stderr
        # res_pjsip_publish_asterisk's reload asks pbxmesh for a refresh: a re-handshake.
        await wait_until(lambda: refreshes(b.server.node) > before, 10, "refresh after reload")
        assert sip_link_up(b.server.node)
        await a.dnd(True)
        await same_lamp(a, b, "1001", ("Busy", "available"), "DND on pbx1 after pbx2's reload")
        await a.dnd(False)
        await same_lamp(a, b, "1001", (idle[0], "available"), "DND off after the reload")
        await b.dnd(False)
        await same_lamp(a, b, "2001", (idle[0], "not_set"), "pbx2's DND off reaches pbx1")
