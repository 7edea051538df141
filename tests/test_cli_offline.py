"""CLI commands that need no running node: version, keygen, dialplan hint lines."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pbxmesh import __version__
from pbxmesh.security import eid_for_key, load_private_key


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pbxmesh", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_version() -> None:
    out = run_cli("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"pbxmesh {__version__}"


def test_no_command_prints_usage_and_exits_2() -> None:
    out = run_cli()
    assert out.returncode == 2 and "usage: pbxmesh" in out.stderr


def test_keygen_writes_a_private_key_and_prints_the_public_one(tmp_path: Path) -> None:
    key = tmp_path / "node.key"
    out = run_cli("-c", str(tmp_path / "none.toml"), "keygen", "--out", str(key))
    assert out.returncode == 0, out.stderr
    public = out.stdout.split("public key: ")[1].strip()
    assert len(public) == 44 and key.stat().st_mode & 0o777 == 0o600
    assert eid_for_key(load_private_key(key).public_key())
    again = run_cli("-c", str(tmp_path / "none.toml"), "keygen", "--out", str(key))
    assert again.returncode == 2 and "exists" in again.stderr


def test_dialplan_hints_join_each_device_with_its_counterpart(tmp_path: Path) -> None:
    out = run_cli(
        "-c",
        str(tmp_path / "none.toml"),
        "dialplan-hints",
        "--context",
        "devstate_test",
        "1234=Custom:mystate",
        "1001=PJSIP/1001",
    )
    assert out.returncode == 0
    assert out.stdout.splitlines() == [
        "[devstate_test]",
        "exten => 1234,hint,Custom:mystate&Custom:remote-Custom-mystate",
        "exten => 1001,hint,PJSIP/1001&Custom:remote-PJSIP-1001",
    ]
    bad = run_cli("-c", str(tmp_path / "none.toml"), "dialplan-hints", "1234")
    assert bad.returncode == 2 and "EXTEN=DEVICE" in bad.stderr


def test_sim_rejects_bad_arguments_with_exit_2() -> None:
    out = run_cli("sim", "--listen", "nowhere", "--username", "u", "--secret", "s")
    assert out.returncode == 2 and "HOST:PORT" in out.stderr


def test_config_and_json_are_taken_before_and_after_the_command(tmp_path: Path) -> None:
    from pbxmesh.cli import _parser

    for argv in (
        ["-c", "a.toml", "--json", "devices"],
        ["devices", "-c", "a.toml", "--json"],
        ["--json", "devices", "--config", "a.toml"],
        ["-c", "b.toml", "devices", "--json", "-c", "a.toml"],  # the later one wins
    ):
        ns = _parser().parse_args(argv)
        assert (ns.command, ns.config, ns.json) == ("devices", "a.toml", True), argv
    ns = _parser().parse_args(["publish", "device_state", "Custom:x", "BUSY", "--json"])
    assert ns.json and ns.kind == "device_state"
    assert not _parser().parse_args(["members"]).json
    # Through the real command: the file named after `run` is the one read.
    missing = tmp_path / "missing.toml"
    for argv in (["run", "-c", str(missing)], ["devices", "--json", "-c", str(missing)]):
        out = run_cli(*argv)
        assert out.returncode == 2, out.stderr
        assert str(missing) in out.stderr and "unrecognized" not in out.stderr
