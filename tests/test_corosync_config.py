"""``pbxmesh corosync-config``: the corosync.conf and authkey that put a bridge on a ring."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pbxmesh.corosync_conf import parse_conf, read_spec


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pbxmesh", "corosync-config", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_a_new_ring_then_the_bridge_added_to_it(tmp_path: Path) -> None:
    first = tmp_path / "first"
    out = run(
        "--cluster-name", "site1", "--node", "pbx1=10.0.0.1", "--node", "pbx2=10.0.0.2",
        "--keyfile", str(first / "authkey"), "--out", str(first),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    conf = parse_conf((first / "corosync.conf").read_text())
    assert conf["totem"] == {
        "version": "2",
        "cluster_name": "site1",
        "transport": "knet",
        "token": "3000",
        "crypto_cipher": "aes256",
        "crypto_hash": "sha256",
        "keyfile": str(first / "authkey"),
    }
    assert conf["system"] == {"sched_rr": "no"}
    assert conf["quorum"] == {"provider": "corosync_votequorum", "two_node": "1"}
    key = (first / "authkey").read_bytes()
    assert len(key) == 256 and (first / "authkey").stat().st_mode & 0o777 == 0o400
    second = tmp_path / "second"
    out = run(
        "--from", str(first / "corosync.conf"), "--node", "bridge=10.0.0.9",
        "--authkey", str(first / "authkey"), "--out", str(second),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    spec = read_spec((second / "corosync.conf").read_text())
    assert [(n.nodeid, n.name, n.address) for n in spec.nodes] == [
        (1, "pbx1", "10.0.0.1"),
        (2, "pbx2", "10.0.0.2"),
        (3, "bridge", "10.0.0.9"),
    ]
    assert spec.cluster_name == "site1" and (second / "authkey").read_bytes() == key
    assert "two_node" not in (second / "corosync.conf").read_text()


def test_corosync_itself_accepts_the_file(tmp_path: Path) -> None:
    if shutil.which("corosync") is None:
        pytest.skip("corosync is not installed")
    out = run(
        "--cluster-name", "t", "--node", "n1=127.0.0.1", "--node", "n2=127.0.0.2",
        "--keyfile", str(tmp_path / "authkey"), "--out", str(tmp_path),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    check = subprocess.run(
        ["corosync", "-t", "-c", str(tmp_path / "corosync.conf")],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr


def test_mistakes_are_one_clear_line(tmp_path: Path) -> None:
    out = run("--cluster-name", "x", "--node", "pbx1=not-an-ip", "--out", str(tmp_path))
    assert out.returncode == 2 and "not an IP address" in out.stderr
    out = run("--out", str(tmp_path))
    assert out.returncode == 2 and "--cluster-name" in out.stderr
