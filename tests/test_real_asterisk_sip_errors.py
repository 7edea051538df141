"""The first hour on the SIP link against a *real* Asterisk: what an administrator reads when
the configuration is wrong. A pbxmesh daemon runs in-process (in-memory transport) with
``[asterisk.sip]``; the assertions are on its log lines and on ``pbxmesh status`` (text and
``--json``), as the administrator sees them.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pbxmesh.cli import main as cli_main
from pbxmesh.config import load_config
from pbxmesh.daemon import Daemon
from pbxmesh.links.sip.link import SipLink, SipLinkConfig
from pbxmesh.states import DeviceState
from pbxmesh.transport.memory import MemoryNetwork
from tests.ami_helpers import THERE
from tests.harness.asterisk import Asterisk, eid_of, free_port
from tests.harness.waits import eventually
from tests.sip_helpers import sip_asterisk

pytestmark = [pytest.mark.asterisk, pytest.mark.integration]

LINK_LOG = "pbxmesh.links.sip.link"


async def status(path: Path, capsys: pytest.CaptureFixture[str], *more: str) -> tuple[int, str]:
    """``pbxmesh -c FILE status`` as the administrator runs it: exit code and output."""
    capsys.readouterr()
    code = await asyncio.to_thread(cli_main, ["-c", str(path), "status", *more])
    return code, capsys.readouterr().out


def warnings(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == LINK_LOG and r.levelno >= logging.WARNING and text in r.getMessage()
    ]


async def daemon_for(tmp_path: Path, link: SipLinkConfig, uri: str) -> tuple[Daemon, Path]:
    path = tmp_path / "pbxmesh.toml"
    path.write_text(
        f'[node]\nname = "pbx1"\nstate_dir = "{tmp_path / "state"}"\n'
        f'[control]\nlisten = "127.0.0.1:{free_port()}"\n'
        f'[asterisk.sip]\nlisten = "127.0.0.1:{link.listen[1]}"\nuri = "{uri}"\n'
    )
    daemon = Daemon(load_config(path), transport=MemoryNetwork().new_transport("pbx1"))
    await daemon.start()
    return daemon, path


@pytest.fixture
async def without_publish_module(
    require_asterisk: None,
) -> AsyncIterator[tuple[Asterisk, SipLinkConfig]]:
    star, link = sip_asterisk("nomod", eid_of(61))
    star.modules = tuple(m for m in star.modules if m != "res_pjsip_publish_asterisk")
    star.write()
    await asyncio.to_thread(star.start)
    try:
        yield star, link
    finally:
        await asyncio.to_thread(star.stop)
        star.cleanup()


async def test_a_missing_publish_module_is_named_and_the_link_is_degraded(
    without_publish_module: tuple[Asterisk, SipLinkConfig],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.INFO)
    star, link = without_publish_module
    daemon, path = await daemon_for(tmp_path, link, link.uri)
    try:
        (sip,) = [x for x in daemon.links if isinstance(x, SipLink)]
        await eventually(lambda: sip.state == "degraded", "degraded", 20)
        for state in (DeviceState.INUSE, DeviceState.BUSY, DeviceState.RINGING, DeviceState.ONHOLD):
            sip.origin_device("Custom:mystate", THERE, state)  # four changes from the cluster
        await eventually(
            lambda: sip.publishes_refused >= 6, "refresh x2 and four changes refused", 20
        )
        said = warnings(caplog, "refuses our PUBLISH on asterisk-devicestate")
        assert len(said) == 1, said  # one line for the cause, not one per change
        assert said[0].startswith(
            f"SIP link degraded: Asterisk at {link.dest[0]}:{link.dest[1]} refuses our PUBLISH "
            "on asterisk-devicestate with 489 Bad Event: res_pjsip_publish_asterisk.so is not "
            "loaded there"
        ), said
        assert not [r for r in caplog.records if "Body(" in r.getMessage()]
        code, out = await status(path, capsys)
        assert code != 0
        assert f"asterisk   DEGRADED to 127.0.0.1:{link.dest[1]}" in out, out
        assert "reason     Asterisk at" in out and "res_pjsip_publish_asterisk.so" in out, out
        code, out = await status(path, capsys, "--json")
        ast = json.loads(out)["asterisk"]
        assert ast["state"] == "degraded" and not ast["connected"]
        assert "res_pjsip_publish_asterisk.so is not loaded" in ast["reason"]
        # The administrator loads the module: the link finds it by itself.
        await asyncio.to_thread(star.cli, "module load res_pjsip_publish_asterisk.so")
        await eventually(
            lambda: sip.state == "connected", "connected once the module is loaded", 40
        )
        code, out = await status(path, capsys)
        assert f"asterisk   connected to 127.0.0.1:{link.dest[1]}" in out and code == 0, out
    finally:
        await daemon.stop()


async def test_a_wrong_port_in_the_uri_is_said_at_once_and_shown_in_status(
    require_asterisk: None,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.INFO)
    star, link = sip_asterisk("wrongport", eid_of(62))
    star.write()
    await asyncio.to_thread(star.start)
    wrong = free_port()  # Asterisk's transport is on link.dest[1]
    daemon = None
    try:
        daemon, path = await daemon_for(tmp_path, link, f"sip:pbxmesh@127.0.0.1:{wrong}")
        (sip,) = [x for x in daemon.links if isinstance(x, SipLink)]
        # The first probe times out after 2 s: the line comes then, not after a minute.
        await eventually(lambda: warnings(caplog, "no answer to OPTIONS"), "the first line", 5)
        await eventually(lambda: sip.probes_failed >= 3, "three probes failed", 20)
        said = warnings(caplog, "no answer to OPTIONS")
        assert said == [
            f"SIP link not up: no answer to OPTIONS from 127.0.0.1:{wrong} (udp) - is Asterisk "
            "running with a PJSIP transport bound there? check [asterisk.sip] uri"
        ]
        code, out = await status(path, capsys)
        assert code != 0
        assert f"asterisk   DISCONNECTED to 127.0.0.1:{wrong}" in out, out
        assert f"reason     no answer to OPTIONS from 127.0.0.1:{wrong}" in out, out
        code, out = await status(path, capsys, "--json")
        ast = json.loads(out)["asterisk"]
        assert ast["state"] == "disconnected" and "check [asterisk.sip] uri" in ast["reason"]
    finally:
        if daemon is not None:
            await daemon.stop()
        await asyncio.to_thread(star.stop)
        star.cleanup()
