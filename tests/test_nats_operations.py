"""What an administrator meets around the NATS transport, without a server: the choice of
server (preference, hold-off, fail-back), ``check-config``'s file checks, this node's own
grant, ``keygen --show`` and ``nats-accounts``' generated credentials."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from pbxmesh.config import PeerConfig, SecurityConfig
from pbxmesh.errors import ConfigError
from pbxmesh.nats_accounts import SecretStore, parse_spec, render
from pbxmesh.security import build_guard, build_peers, keygen
from pbxmesh.transport.nats.servers import ServerChoice, netloc_of
from pbxmesh.wire.frame import DeviceItem, MwiItem

LEAF, HUB1, HUB2 = "leaf1.example.net:4222", "hub1.example.net:4222", "hub2.example.net:4222"


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pbxmesh", *args],
        check=False, capture_output=True, text=True, timeout=60, cwd=cwd,
    )  # fmt: skip


# -- choosing a server ---------------------------------------------------------------------------
def test_netloc_of_drops_scheme_and_credentials() -> None:
    assert netloc_of("tls://u:p@hub1.example.net:7422") == "hub1.example.net:7422"
    assert netloc_of("nats://10.0.0.1") == "10.0.0.1:4222"
    assert netloc_of("hub1:4222") == "hub1:4222"


def test_preference_order_skips_what_failed_and_comes_back_to_it() -> None:
    c = ServerChoice((LEAF, HUB1, HUB2), hold_off=5.0, retry_wait=0.25)
    c.connected(LEAF)
    c.abandoned(LEAF, now=100.0)  # the watchdog gave up on the leaf
    assert c.choose([HUB2, LEAF, HUB1], 100.0) == (HUB1, 0.0)  # not the pool's order
    assert c.choose([HUB2, LEAF, HUB1], 100.1) == (HUB2, 0.0)  # hub1 did not connect
    c.connected(HUB2)
    assert c.better() == (LEAF, HUB1)
    # Fail-back needs two answers in a row from a server that is no longer held off.
    c.probed(LEAF, True)
    assert c.failback_target(106.0) is None
    c.probed(LEAF, True)
    assert c.failback_target(104.0) is None  # still held off since the failure
    assert c.failback_target(106.0) == LEAF
    c.probed(LEAF, False)
    assert c.failback_target(106.0) is None


def test_all_held_off_tries_the_first_to_expire_after_a_wait() -> None:
    c = ServerChoice((LEAF, HUB1), hold_off=5.0, retry_wait=0.25)
    c.abandoned(LEAF, now=0.0)
    c.choose([LEAF, HUB1], 1.0)  # tries hub1 ...
    pick, delay = c.choose([LEAF, HUB1], 1.5)  # ... which failed: both held
    assert (pick, delay) == (LEAF, 0.25)
    assert c.rank("discovered:4222") == 2


# -- check-config -------------------------------------------------------------------------------
def _config(tmp: Path, peers: str = "", extra: str = "") -> Path:
    path = tmp / "pbxmesh.toml"
    path.write_text(
        f'[node]\nname = "pbx1"\nstate_dir = "{tmp / "state"}"\n'
        '[cluster]\ntransport = "nats"\ngroup = "acme"\n'
        f'[cluster.nats]\nservers = ["tls://hub1.example.net:4222"]\n{extra}'
        f'[security]\nkey = "{tmp / "state" / "node.key"}"\n{peers}'
    )
    return path


def test_check_config_names_a_missing_ca_and_a_key_that_is_not_its_own(tmp_path: Path) -> None:
    mine = keygen(tmp_path / "state" / "node.key")
    other = keygen(tmp_path / "other.key")
    grant = '[security.peers.pbx1]\npublic_key = "{}"\ndevices = ["Custom:DND1*"]\n'
    conf = _config(tmp_path, grant.format(other), f'tls_ca = "{tmp_path / "ca.pem"}"\n')
    out = run_cli("-c", str(conf), "check-config")
    assert out.returncode == 2
    assert f"tls_ca {tmp_path / 'ca.pem'}: no such file" in out.stderr
    assert "[security.peers.pbx1] public_key is not this node's key" in out.stderr
    (tmp_path / "ca.pem").write_text("not a certificate\n")
    conf = _config(tmp_path, grant.format(mine), f'tls_ca = "{tmp_path / "ca.pem"}"\n')
    out = run_cli("-c", str(conf), "check-config")
    assert out.returncode == 2 and "not a PEM CA certificate" in out.stderr
    conf = _config(tmp_path, grant.format(mine))
    out = run_cli("-c", str(conf), "check-config")
    assert out.returncode == 0 and "OK" in out.stdout, out.stderr


def test_keygen_show_prints_the_existing_public_key(tmp_path: Path) -> None:
    public = keygen(tmp_path / "state" / "node.key")
    out = run_cli("-c", str(_config(tmp_path)), "keygen", "--show")
    assert out.returncode == 0 and out.stdout.strip() == f"public key: {public}"


# -- this node's own grant -----------------------------------------------------------------------
def test_own_grant_refuses_what_the_others_would_drop(tmp_path: Path) -> None:
    mine = keygen(tmp_path / "node.key")
    other = keygen(tmp_path / "other.key")
    sec = SecurityConfig(
        key=tmp_path / "node.key",
        peers=(
            PeerConfig("pbx1", mine, ("PJSIP/1*", "Custom:DND1*"), ("1*@default",)),
            PeerConfig("pbx2", other, ("PJSIP/2*",)),
        ),
    )
    from pbxmesh.security import eid_for_key, load_private_key

    eid = eid_for_key(load_private_key(tmp_path / "node.key").public_key())
    guard = build_guard(sec, eid, "pbx1", tmp_path / "state")
    assert guard.refuses(DeviceItem("Custom:DND1001", 2, 0)) is None
    reason = guard.refuses(DeviceItem("Custom:DND2001", 2, 0))
    assert reason and "outside this node's grant" in reason and "Custom:DND1*" in reason
    assert guard.refuses(MwiItem("2000@default", 1, 0, 0)) is not None
    assert guard.trusts("pbx2") is True and guard.trusts("intruder") is False
    # SIGHUP: a new list of nodes and grants, applied at once.
    peers, require = build_peers(
        SecurityConfig(key=sec.key, peers=(PeerConfig("pbx1", mine, ("Custom:*",)),)), "pbx1"
    )
    guard.replace_peers(peers, require, "pbx1")
    assert guard.refuses(DeviceItem("Custom:DND2001", 2, 0)) is None
    assert guard.trusts("pbx2") is False
    with pytest.raises(ConfigError, match="not this node's key"):
        build_peers(SecurityConfig(key=sec.key, peers=(PeerConfig("pbx1", other),)), "pbx1")


# -- nats-accounts ------------------------------------------------------------------------------
SPEC = """
[[tenant]]
account = "ACME"
group = "acme"
servers = ["tls://hub1.example.net:4222"]
tls_ca = "/etc/pbxmesh/ca.pem"
nodes = [
  { name = "pbx1", leaf = "tls://leaf1.site1.example.net:4222" },
  { name = "pbx4", nkey = "generate" },
]
leafs = [ { user = "acme-site1" } ]
"""


def test_generated_credentials_are_kept_printed_once_and_rotated(tmp_path: Path) -> None:
    spec = tmp_path / "accounts.toml"
    spec.write_text(SPEC)
    first = run_cli("nats-accounts", str(spec), "-o", "a.conf", "--generate-passwords",
                    "--print-nodes", cwd=tmp_path)  # fmt: skip
    assert first.returncode == 0, first.stderr
    assert "new password for user ACME-pbx1" in first.stderr
    assert "new password for user acme-site1" in first.stderr  # the leaf uplink's too
    assert "new nkey for node pbx4" in first.stderr
    seed = tmp_path / "ACME-pbx4.nk"
    assert seed.read_text().startswith("SU") and seed.stat().st_mode & 0o777 == 0o600
    secrets_file = tmp_path / "accounts.secrets.toml"
    assert secrets_file.stat().st_mode & 0o777 == 0o600
    assert 'servers = ["tls://leaf1.site1.example.net:4222", "tls://hub1.example.net:4222"]' in (
        first.stderr
    )
    assert 'tls_ca = "/etc/pbxmesh/ca.pem"' in first.stderr
    assert 'nkey_seed = "/etc/pbxmesh/ACME-pbx4.nk"' in first.stderr
    again = run_cli("nats-accounts", str(spec), "-o", "b.conf", "--generate-passwords",
                    cwd=tmp_path)  # fmt: skip
    assert again.returncode == 0 and "new " not in again.stderr
    assert (tmp_path / "a.conf").read_text() == (tmp_path / "b.conf").read_text()
    rotated = run_cli("nats-accounts", str(spec), "-o", "c.conf", "--generate-passwords",
                      "--rotate", "pbx1", cwd=tmp_path)  # fmt: skip
    assert rotated.stderr.count("new ") == 1 and "ACME-pbx1" in rotated.stderr
    assert (tmp_path / "c.conf").read_text() != (tmp_path / "a.conf").read_text()
    import nkeys

    public = tomllib.loads(secrets_file.read_text())["ACME/pbx4/nkey"]
    kp = nkeys.from_seed(bytearray(seed.read_text().strip().encode()))
    assert kp.public_key.decode() == public and public in (tmp_path / "c.conf").read_text()


def test_parse_spec_without_a_store_keeps_working() -> None:
    store = SecretStore()
    spec = parse_spec(tomllib.loads(SPEC.replace('nkey = "generate"', 'password = "x"')),
                      "t", generate=True, store=store)  # fmt: skip
    assert "ACME-pbx1" in render(spec) and len(store.made) == 2
