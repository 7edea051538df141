"""Configuration files: every mistake is one clear message with file:line and key, exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pbxmesh.config import load_config, read_asterisk_channels
from pbxmesh.errors import ConfigError

GOOD = """\
[node]
name = "pbx1"
state_dir = "state"

[cluster]
transport = "corosync"
group = "pbxmesh"

[[channel]]
name = "device_state"
publish = ["device_state"]
subscribe = ["device_state", "mwi"]

[asterisk]
ami = "127.0.0.1:5038"
username = "pbxmesh"
secret = "s3cret"

[control]
listen = "127.0.0.1:8765"
"""


def write(tmp_path: Path, text: str, name: str = "pbxmesh.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_good_file_gives_typed_frozen_objects(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, GOOD))
    assert cfg.node.name == "pbx1" and cfg.node.state_dir == tmp_path / "state"
    assert cfg.cluster.transport == "corosync" and cfg.cluster.group == "pbxmesh"
    assert [(c.name, sorted(c.publish), sorted(c.subscribe)) for c in cfg.channels] == [
        ("device_state", ["device_state"], ["device_state", "mwi"])
    ]
    assert cfg.asterisk is not None and cfg.asterisk.ami == ("127.0.0.1", 5038)
    assert cfg.control.listen == ("127.0.0.1", 8765)
    with pytest.raises(AttributeError):
        cfg.node.name = "x"  # type: ignore[misc]


def test_defaults_for_a_minimal_file(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, ""))
    assert cfg.cluster.transport == "corosync" and cfg.asterisk is None
    assert [c.name for c in cfg.channels] == ["device_state"]
    assert cfg.control.listen == ("127.0.0.1", 8765)


@pytest.mark.parametrize(
    ("change", "where", "message"),
    [
        (
            ('transport = "corosync"', 'transport = "udp"'),
            ":6: cluster.transport",
            'must be "corosync" or "nats"',
        ),
        (('name = "pbx1"', "name = 7"), ":2: node.name", "must be a string, not int 7"),
        (('group = "pbxmesh"', 'group = "pbx mesh"'), ":7: cluster.group", "letters, digits"),
        (
            ('publish = ["device_state"]', 'publsh = ["device_state"]'),
            ":11: channel.publsh",
            "unknown key; valid keys here are name, publish, subscribe",
        ),
        (
            ('publish = ["device_state"]', 'publish = ["devstate"]'),
            ":9: channel",
            "publish event type 'devstate' is not one of device_state, mwi",
        ),
        (('ami = "127.0.0.1:5038"', 'ami = "127.0.0.1"'), ":15: asterisk.ami", "has no port"),
        (('secret = "s3cret"\n', ""), ":14: asterisk.secret", "is required"),
        (
            ('listen = "127.0.0.1:8765"', 'listen = "0.0.0.0:8765"'),
            ":20: control.listen",
            "not loopback: set [control] token",
        ),
        (("[control]", "[contrl]"), ":19: contrl", "unknown key; valid keys here are"),
        (
            ('state_dir = "state"', 'state_dir = "state"\neid = "00:00:00:00:00:00"'),
            ":4: node.eid",
            "not allowed",
        ),
    ],
)
def test_each_mistake_names_file_line_and_key(tmp_path: Path, change, where, message) -> None:
    old, new = change
    assert old in GOOD
    path = write(tmp_path, GOOD.replace(old, new))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    text = str(info.value)
    assert text.startswith(f"{path}{where}:"), text
    assert message in text


def test_broken_toml_says_where(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace('name = "pbx1"', 'name = "pbx1'))
    with pytest.raises(ConfigError, match=r"not valid TOML: .*line 2"):
        load_config(path)


def test_unreadable_missing_and_binary_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "absent.toml")
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(binary)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_permission_denied(tmp_path: Path) -> None:  # pragma: no cover - CI runs as root
    path = write(tmp_path, GOOD)
    path.chmod(0)
    with pytest.raises(ConfigError, match="permission denied"):
        load_config(path)


def test_the_seeds_ais_conf_works_as_is(tmp_path: Path) -> None:
    ais = write(
        tmp_path,
        "[device_state]\ntype=event_channel\npublish_event=device_state\n"
        "subscribe_event=device_state\n",
        "ais.conf",
    )
    text = f'[cluster]\nasterisk_conf = "{ais}"\n'
    cfg = load_config(write(tmp_path, text))
    assert [(c.name, set(c.publish), set(c.subscribe)) for c in cfg.channels] == [
        ("device_state", {"device_state"}, {"device_state"})
    ]


def test_res_corosync_conf_and_bad_event_names(tmp_path: Path) -> None:
    conf = write(
        tmp_path,
        "[general]\npublish_event = mwi\npublish_event = device_state\n"
        "subscribe_event = device_state ; comment\nsubscribe_event=ping\n",
        "res_corosync.conf",
    )
    (ch,) = read_asterisk_channels(conf)
    assert ch.publish == {"mwi", "device_state"} and ch.subscribe == {"device_state"}
    bad = write(tmp_path, "[general]\npublish_event=presence\n", "bad.conf")
    with pytest.raises(ConfigError, match=r"bad.conf:1: \[general\] publish_event=presence"):
        read_asterisk_channels(bad)
    empty = write(tmp_path, "[general]\n", "empty.conf")
    with pytest.raises(ConfigError, match="no event channel"):
        read_asterisk_channels(empty)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pbxmesh", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_cli_exits_2_with_one_line_for_a_bad_config(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace('transport = "corosync"', "transport = 3"))
    for command in ("run", "members", "check-config"):
        out = run_cli("-c", str(path), command)
        assert out.returncode == 2, out
        assert out.stderr.count("\n") == 1
        assert "cluster.transport: must be a string" in out.stderr
    good = write(tmp_path, GOOD, "good.toml")
    out = run_cli("-c", str(good), "check-config")
    assert out.returncode == 0 and "OK" in out.stdout


def test_the_cli_exits_3_when_the_node_is_unreachable(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("127.0.0.1:8765", "127.0.0.1:9"))
    out = run_cli("-c", str(path), "members")
    assert out.returncode == 3
    assert "node unreachable at http://127.0.0.1:9/api/v1" in out.stderr
    assert out.stderr.count("\n") == 1
