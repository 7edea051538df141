"""SIGHUP on a running daemon (in-process, over the in-memory transport): every key of every
section is changed in turn; the daemon keeps running, and each change either takes effect or
is refused with one clear log line while the running value is kept."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pbxmesh.config import Config, load_config
from pbxmesh.daemon import Daemon
from pbxmesh.links.sip.link import SipLink
from pbxmesh.transport.memory import MemoryNetwork
from tests.harness.asterisk import free_port
from tests.harness.waits import eventually as until

Section = dict[str, Any]


def toml(sections: dict[str, Section | list[Section]]) -> str:
    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'

    out: list[str] = []
    for name, body in sections.items():
        for table in body if isinstance(body, list) else [body]:
            out.append(f"[[{name}]]" if isinstance(body, list) else f"[{name}]")
            out += [f"{k} = {value(v)}" for k, v in table.items()]
    return "\n".join(out) + "\n"


def base(tmp_path: Path) -> dict[str, Section | list[Section]]:
    return {
        "node": {"name": "a", "state_dir": str(tmp_path / "a")},
        "cluster": {"transport": "corosync", "group": "pbxmesh", "frame_interval": 0.001},
        "cluster.corosync": {"reconnect_interval": 0.2},
        "cluster.nats": {"servers": ["nats://127.0.0.1:4222"], "heartbeat_interval": 0.5},
        "channel": [{"name": "device_state", "publish": ["device_state"]}],
        "asterisk": {
            "ami": f"127.0.0.1:{free_port()}",
            "username": "admin",
            "secret": "s3cret",
            "down_grace": 5.0,
        },
        "asterisk.sip": {
            "listen": f"127.0.0.1:{free_port()}",
            "uri": f"sip:pbxmesh@127.0.0.1:{free_port()}",
        },
        "control": {"listen": f"127.0.0.1:{free_port()}"},
    }


@dataclass
class Running:
    daemon: Daemon
    task: asyncio.Task[int]
    path: Path
    caplog: pytest.LogCaptureFixture

    async def hup(self, sections: dict[str, Section | list[Section]]) -> list[str]:
        """Write the file, send SIGHUP, wait for the reload; the log lines it wrote."""
        self.path.write_text(toml(sections))
        seen = len(self.caplog.records)
        done = self._count("reload done")
        os.kill(os.getpid(), signal.SIGHUP)
        await until(lambda: self._count("reload done") > done or self.task.done(), "reload")
        assert not self.task.done(), f"the daemon stopped: {self.task.result()}"
        return [
            f"{r.levelname} {r.getMessage()}"
            for r in self.caplog.records[seen:]
            if r.name == "pbxmesh.daemon"
        ]

    def _count(self, text: str) -> int:
        return sum(1 for r in self.caplog.records if text in r.getMessage())

    def sip(self) -> SipLink:
        (link,) = [x for x in self.daemon.links if isinstance(x, SipLink)]
        return link


@pytest.fixture
async def running(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> AsyncIterator[tuple[Running, dict[str, Section | list[Section]]]]:
    caplog.set_level(logging.INFO)
    sections = base(tmp_path)
    path = tmp_path / "pbxmesh.toml"
    path.write_text(toml(sections))
    daemon = Daemon(load_config(path), transport=MemoryNetwork().new_transport("a"))
    task = asyncio.create_task(daemon.run())
    try:
        await until(lambda: daemon.control is not None and daemon.control._runner, "started")
        yield Running(daemon, task, path, caplog), sections
    finally:
        daemon._stop.set()
        assert await asyncio.wait_for(task, 30) == 0


def changed(
    sections: dict[str, Section | list[Section]], section: str, **keys: Any
) -> dict[str, Section | list[Section]]:
    out = {k: (list(v) if isinstance(v, list) else dict(v)) for k, v in sections.items()}
    body = out.setdefault(section, {})
    if isinstance(body, list):
        body[0] = {**body[0], **keys}
    else:
        body.update(keys)
    return out


#: (section, key, new value, where the value shows in the Config; None: refused)
CASES: list[tuple[str, str, Any, Callable[[Config], Any] | None]] = [
    ("node", "name", "b", None),
    ("node", "state_dir", "/nonexistent/elsewhere", None),
    ("node", "eid", "02:00:00:00:00:99", None),
    ("cluster", "transport", "nats", None),
    ("cluster", "group", "other", None),
    ("cluster", "frame_interval", 0.01, None),
    ("cluster.corosync", "reconnect_interval", 0.5, None),
    ("cluster.nats", "servers", ["nats://127.0.0.1:4223"], None),
    ("cluster.nats", "user", "u", None),
    ("cluster.nats", "heartbeat_interval", 1.0, None),
    ("cluster.nats", "failure_timeout", 5.0, None),
    ("cluster.nats", "kv_bucket", "kv", None),
    ("cluster.nats", "password", "p", None),
    ("cluster.nats", "nkey_seed", "seed.nk", None),
    ("cluster.nats", "creds", "node.creds", None),
    ("cluster.nats", "tls_ca", "ca.pem", None),
    ("cluster.nats", "tls_cert", "cert.pem", None),
    ("cluster.nats", "tls_key", "key.pem", None),
    ("channel", "name", "other", lambda c: c.channels[0].name),
    ("channel", "publish", ["mwi"], lambda c: sorted(c.channels[0].publish)),
    ("channel", "subscribe", ["mwi"], lambda c: sorted(c.channels[0].subscribe)),
    ("asterisk", "username", "other", lambda c: c.asterisk and c.asterisk.username),
    ("asterisk", "secret", "other", lambda c: c.asterisk and c.asterisk.secret),
    ("asterisk", "include", ["PJSIP/*"], lambda c: c.asterisk and list(c.asterisk.include)),
    ("asterisk", "exclude", ["Local/*"], lambda c: c.asterisk and list(c.asterisk.exclude)),
    (
        "asterisk",
        "remote_template",
        "Custom:far-{device}",
        lambda c: c.asterisk and c.asterisk.remote_template,
    ),
    ("asterisk", "mwi", False, lambda c: c.asterisk and c.asterisk.mwi),
    ("asterisk", "presence", False, lambda c: c.asterisk and c.asterisk.presence),
    ("asterisk", "down_grace", 9.0, lambda c: c.asterisk and c.asterisk.down_grace),
    ("asterisk.sip", "uri", "sip:pbx@127.0.0.1:5999", lambda c: c.asterisk.sip.uri),  # type: ignore[union-attr]
    ("asterisk.sip", "transport", "tcp", lambda c: c.asterisk.sip.transport),  # type: ignore[union-attr]
    ("control", "token", "t0ken", lambda c: c.control.token),
    ("security", "require_signatures", True, None),
    ("security", "key", "node.key", None),
]


async def test_every_key_of_every_section_under_sighup(running) -> None:  # type: ignore[no-untyped-def]
    run, sections = running
    for section, key, new, shown in CASES:
        wanted = changed(sections, section, **{key: new})
        before = run.daemon.config
        logged = await run.hup(wanted)
        what = f"{section}.{key}"
        if shown is None:
            refusals = [line for line in logged if line.startswith("WARNING") and what in line]
            assert len(refusals) == 1, (what, logged)
            assert "restart" in refusals[0]
            assert run.daemon.config == before, what
        else:
            assert shown(run.daemon.config) == (list(new) if isinstance(new, list) else new), what
            assert not any(line.startswith(("WARNING", "ERROR")) for line in logged), logged
            sections = wanted
        # Whatever happened, the SIP link is up and listening where the file says.
        host, port = run.daemon.config.asterisk.sip.listen  # type: ignore[union-attr]
        assert run.sip().status().extra["listen"] == f"{host}:{port}"


async def test_the_sip_listener_and_the_ami_address_move_under_sighup(running) -> None:  # type: ignore[no-untyped-def]
    run, sections = running
    old_port = run.sip().endpoint.port
    new_listen = f"127.0.0.1:{free_port()}"
    wanted = changed(sections, "asterisk.sip", listen=new_listen)
    wanted = changed(wanted, "asterisk", ami=f"127.0.0.1:{free_port()}")
    await run.hup(wanted)
    assert run.sip().status().extra["listen"] == new_listen
    # The old port is free again: this process's old listener is gone.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", old_port))
    # Off loopback with digest, as the configuration demands.
    wanted = changed(
        wanted,
        "asterisk.sip",
        listen=f"127.0.0.2:{free_port()}",
        username="pbxmesh",
        secret="s3cr3t",
    )
    await run.hup(wanted)
    assert run.sip().status().extra["listen"].startswith("127.0.0.2:")


async def test_a_sip_listener_that_cannot_bind_keeps_the_running_one(running) -> None:  # type: ignore[no-untyped-def]
    run, sections = running
    running_listen = run.sip().status().extra["listen"]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        logged = await run.hup(changed(sections, "asterisk.sip", listen=f"127.0.0.1:{port}"))
    errors = [line for line in logged if line.startswith("ERROR")]
    assert len(errors) == 1 and f"cannot listen for SIP on 127.0.0.1:{port}" in errors[0], logged
    assert "the running link is kept" in errors[0]
    assert run.sip().status().extra["listen"] == running_listen
    assert run.daemon.config.asterisk.sip.listen[1] != port  # type: ignore[union-attr]


async def test_the_control_listener_moves_or_stays_under_sighup(running) -> None:  # type: ignore[no-untyped-def]
    run, sections = running
    new_port = free_port()
    await run.hup(changed(sections, "control", listen=f"127.0.0.1:{new_port}"))
    assert run.daemon.config.control.listen == ("127.0.0.1", new_port)
    with socket.create_connection(("127.0.0.1", new_port), timeout=5):
        pass
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        logged = await run.hup(changed(sections, "control", listen=f"127.0.0.1:{port}"))
    errors = [line for line in logged if line.startswith("ERROR")]
    assert len(errors) == 1, logged
    assert f"cannot listen for the control API on 127.0.0.1:{port}" in errors[0]
    assert run.daemon.config.control.listen == ("127.0.0.1", new_port)
    with socket.create_connection(("127.0.0.1", new_port), timeout=5):
        pass


async def test_channels_from_ais_conf_peers_and_a_ring_under_sighup(running, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from pbxmesh.security import keygen

    run, sections = running
    # [cluster] asterisk_conf names where the channels come from: they change in place.
    ais = tmp_path / "ais.conf"
    ais.write_text("[mwi]\ntype=event_channel\npublish_event=mwi\nsubscribe_event=mwi\n")
    wanted = {k: v for k, v in sections.items() if k != "channel"}
    wanted = changed(wanted, "cluster", asterisk_conf=str(ais))
    logged = await run.hup(wanted)
    assert [c.name for c in run.daemon.config.channels] == ["mwi"]
    assert not any(line.startswith(("WARNING", "ERROR")) for line in logged), logged
    # A peer list on a node that does not sign: refused, named, kept.
    public = keygen(tmp_path / "b.key")
    before = run.daemon.config.security
    logged = await run.hup(changed(wanted, "security.peers.b", public_key=public))
    assert [line for line in logged if "security.peers" in line and "restart" in line], logged
    assert run.daemon.config.security == before
    # [asterisk.ring]: the bridge starts, or is refused with one ERROR line (no corosync here).
    logged = await run.hup(changed(wanted, "asterisk.ring", group="asterisk"))
    ring = run.daemon.ring_link
    errors = [line for line in logged if line.startswith("ERROR")]
    assert (ring is not None and not errors) or (
        ring is None and len(errors) == 1 and "[asterisk.ring]" in errors[0]
    ), logged
    assert run.sip().status().extra["listen"]  # the SIP link kept running throughout
