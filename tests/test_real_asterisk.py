"""Against a real Asterisk (marked ``asterisk``): run only when one is given.

    PBXMESH_ASTERISK=/opt/asterisk/sbin/asterisk \\
    PBXMESH_ASTERISK_MODULES=/opt/asterisk/lib/asterisk/modules \\
    python -m pytest -m asterisk tests/test_real_asterisk.py

The test starts that Asterisk in the foreground with a private configuration (AMI on a free
loopback port, func_devstate, res_manager_devicestate, pbx_config, res_mwi_external(_ami)),
links a real pbxmesh daemon to it and a second daemon to the PBX simulator, over a real
corosync, and plays the tutorial's test in both directions. Asterisk is not packaged for the
machines pbxmesh is developed on; see docs/asterisk.md for what was and was not run.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from pbxmesh.links.ami.client import AmiClient, AmiConfig
from pbxmesh.links.ami.counterparts import counterpart_name
from tests.ami_helpers import SECRET, USER, start_sim, wait_until
from tests.harness.nodes import node_group

ASTERISK = os.environ.get("PBXMESH_ASTERISK", "")
MODULES = os.environ.get("PBXMESH_ASTERISK_MODULES", "")

pytestmark = [
    pytest.mark.asterisk,
    pytest.mark.integration,
    pytest.mark.skipif(not ASTERISK, reason="set PBXMESH_ASTERISK to an Asterisk binary"),
]

HINT = f"Custom:mystate&{counterpart_name('Custom:mystate')}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def asterisk_tree(root: Path, ami_port: int) -> Path:
    etc = root / "etc"
    etc.mkdir(parents=True)
    for d in ("lib", "db", "spool", "run", "log", "keys", "data"):
        (root / d).mkdir()
    (etc / "asterisk.conf").write_text(
        "[directories]\n"
        f"astetcdir => {etc}\nastmoddir => {MODULES}\nastvarlibdir => {root / 'lib'}\n"
        f"astdbdir => {root / 'db'}\nastkeydir => {root / 'keys'}\n"
        f"astdatadir => {root / 'data'}\nastspooldir => {root / 'spool'}\n"
        f"astrundir => {root / 'run'}\nastlogdir => {root / 'log'}\n"
        "[options]\nentityid = 02:00:00:00:0a:01\n"
    )
    (etc / "modules.conf").write_text(
        "[modules]\nautoload = no\n"
        + "".join(
            f"load = {m}.so\n"
            for m in (
                "func_devstate",
                "res_manager_devicestate",
                "pbx_config",
                "res_sorcery_astdb",
                "res_sorcery_config",
                "res_sorcery_memory",
                "res_mwi_external",
                "res_mwi_external_ami",
            )
        )
    )
    (etc / "manager.conf").write_text(
        f"[general]\nenabled = yes\nport = {ami_port}\nbindaddr = 127.0.0.1\n\n"
        f"[{USER}]\nsecret = {SECRET}\nread = all\nwrite = all\n"
    )
    (etc / "extensions.conf").write_text(
        f"[general]\nautofallthrough=yes\n\n[devstate_test]\nexten => 1234,hint,{HINT}\n"
    )
    (etc / "logger.conf").write_text("[logfiles]\nmessages => notice,warning,error\n")
    return etc / "asterisk.conf"


def start_asterisk(conf: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [ASTERISK, "-f", "-C", str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def test_a_real_asterisk_and_a_simulator_share_the_tutorials_state(
    corosync_loopback, corosync_group
) -> None:
    root = Path(tempfile.mkdtemp(prefix="pbxmesh-asterisk-"))
    ami_port = free_port()
    conf = asterisk_tree(root, ami_port)
    proc = await asyncio.to_thread(start_asterisk, conf, root / "asterisk.out")
    sim = await start_sim(f"[devstate_test]\nexten => 1234,hint,{HINT}\n")
    real = AmiClient(AmiConfig.local("127.0.0.1", ami_port, USER, SECRET))
    fake = AmiClient(AmiConfig.local("127.0.0.1", sim.port, USER, SECRET))
    try:
        with node_group([("real", None), ("sim", None)], corosync_group, 21765) as nodes:
            for node, port in zip(nodes, (ami_port, sim.port), strict=True):
                node.write_config()
                node.config_path.write_text(
                    node.config_path.read_text()
                    + f'[asterisk]\nami = "127.0.0.1:{port}"\nusername = "{USER}"\n'
                    f'secret = "{SECRET}"\n'
                )
                await asyncio.to_thread(node.start)
            for client in (real, fake):
                await client.start()
                async with asyncio.timeout(60):
                    await client.wait_connected()

            async def state(client: AmiClient, text: str) -> bool:
                lines = await client.command("core show hints")
                return any("1234@devstate_test" in ln and f"State:{text} " in ln for ln in lines)

            await real.action("Setvar", Variable="DEVICE_STATE(Custom:mystate)", Value="INUSE")
            await wait_until(lambda: state(fake, "InUse"), 20, "the simulator sees InUse")
            await real.action("Setvar", Variable="DEVICE_STATE(Custom:mystate)", Value="NOT_INUSE")
            await wait_until(lambda: state(fake, "Idle"), 20, "the simulator sees Idle")
            await fake.action("Setvar", Variable="DEVICE_STATE(Custom:mystate)", Value="BUSY")
            await wait_until(lambda: state(real, "Busy"), 20, "the real Asterisk sees Busy")
            await fake.action("MWIUpdate", Mailbox="1000@default", NewMessages=2, OldMessages=1)

            async def counts() -> bool:
                r = await real.action("MWIGet", Mailbox="1000@default")
                return r.ok

            await wait_until(counts, 20, "the real Asterisk has the mailbox")
            await asyncio.to_thread(nodes[1].kill)
            await wait_until(lambda: state(real, "Idle"), 20, "the real Asterisk back to Idle")
    finally:
        await real.close()
        await fake.close()
        await sim.close()
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(root, ignore_errors=True)
