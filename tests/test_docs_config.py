"""The configuration the documents and the package show goes through pbxmesh's own loader.

Every TOML block of the pages (a fragment is a file of its own: pbxmesh has defaults for the
rest), the ais.conf of configuration.md, the error messages configuration.md quotes, and the
shipped ``packaging/pbxmesh.toml.example`` — as shipped and with each of its commented link
blocks uncommented, the way an administrator picks a link.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from pbxmesh.config import ChannelConfig, Config, load_config
from pbxmesh.errors import ConfigError
from pbxmesh.security import keygen
from tests.harness.docs import ROOT, doc_block

EXAMPLE = ROOT / "packaging" / "pbxmesh.toml.example"
BIN = Path(sys.executable).parent


def load_text(tmp_path: Path, text: str, name: str = "pbxmesh.toml") -> Config:
    path = tmp_path / name
    path.write_text(text)
    return load_config(path)


# -- the pages' blocks ----------------------------------------------------------------------------
def test_corosync_page_pbxmesh_side(tmp_path: Path) -> None:
    cfg = load_text(tmp_path, doc_block("docs/corosync.md", "[node]"))
    assert cfg.cluster.transport == "corosync" and cfg.cluster.group == "pbxmesh"
    assert cfg.channels == (
        ChannelConfig("device_state", frozenset({"device_state", "mwi"}),
                      frozenset({"device_state", "mwi"})),
    )  # fmt: skip


def test_asterisk_page_sip_block(tmp_path: Path) -> None:
    cfg = load_text(tmp_path, doc_block("docs/asterisk.md", "[asterisk.sip]"))
    assert cfg.asterisk is not None and cfg.asterisk.sip is not None
    assert cfg.asterisk.ami is None  # "the AMI keys may be left out altogether"
    assert cfg.asterisk.sip.listen == ("127.0.0.1", 5070)


def test_ring_page_block(tmp_path: Path) -> None:
    cfg = load_text(tmp_path, doc_block("docs/ring.md", "[asterisk.ring]"))
    assert cfg.ring is not None and cfg.ring.group == "asterisk"
    assert cfg.asterisk is None  # "[asterisk.ring] alone needs no AMI keys"


def test_security_page_block_with_real_keys(tmp_path: Path) -> None:
    text = doc_block("docs/security.md", "[security]")
    key = tmp_path / "node.key"
    text = text.replace("/var/lib/pbxmesh/node.key", str(key))
    # the page's pbx1 key is a made-up example; "…" stands for pbx2's own
    for name in ("pbx1", "pbx2"):
        public = keygen(tmp_path / f"{name}.key")
        text = re.sub(
            rf'(\[security\.peers\.{name}\]\npublic_key = )"[^"]*"', rf'\1"{public}"', text
        )
    cfg = load_text(tmp_path, text)
    peers = {p.name: p for p in cfg.security.peers}
    assert set(peers) == {"pbx1", "pbx2"}
    assert peers["pbx1"].presentities == ("CustomPresence:1*",)


def test_configuration_page_ais_conf(tmp_path: Path) -> None:
    ais = tmp_path / "ais.conf"
    ais.write_text(doc_block("docs/configuration.md", "[device_state]"))
    cfg = load_text(tmp_path, f'[cluster]\nasterisk_conf = "{ais}"\n')
    assert [(c.name, c.publish, c.subscribe) for c in cfg.channels] == [
        ("device_state", frozenset({"device_state"}), frozenset({"device_state"}))
    ]


def test_configuration_page_error_messages(tmp_path: Path) -> None:
    """The two messages the page quotes, from files with the errors on the lines it names."""
    quoted = doc_block("docs/configuration.md", "pbxmesh: /etc/pbxmesh/pbxmesh.toml:7:")
    lines = quoted.splitlines()
    bad_transport = '[node]\nname = "pbx1"\n\n\n\n[cluster]\ntransport = "udp"\n'
    bad_channel = (
        '[node]\nname = "pbx1"\n\n[cluster]\ntransport = "corosync"\n\n\n\n\n'
        '[[channel]]\nname = "device_state"\npublsh = ["mwi"]\n'
    )
    for text, expected in zip((bad_transport, bad_channel), lines, strict=True):
        path = tmp_path / "pbxmesh.toml"
        path.write_text(text)
        res = subprocess.run(
            [str(BIN / "pbxmesh"), "-c", str(path), "check-config"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert res.returncode == 2
        assert res.stderr.strip() == expected.replace("/etc/pbxmesh/pbxmesh.toml", str(path))


# -- the shipped configuration -------------------------------------------------------------------
_COMMENTED = re.compile(r"^# \[([a-z.]+)\]\n(?:^#.*\n)*", re.M)


def commented_blocks(text: str) -> dict[str, re.Match[str]]:
    return {m[1]: m for m in _COMMENTED.finditer(text)}


def uncomment(text: str, section: str) -> str:
    m = commented_blocks(text)[section]
    block = re.sub(r"^# ?", "", m[0], flags=re.M)
    return text[: m.start()] + block + text[m.end() :]


def without_ami_keys(text: str) -> str:
    out = re.sub(r'^(ami|username|secret) = "[^"]*"\n', "", text, flags=re.M)
    assert out.count("\n") == text.count("\n") - 3
    return out


def without_asterisk_section(text: str) -> str:
    out, n = re.subn(r"^\[asterisk\]\n(?:^[a-z_]+ = .*\n)*", "", text, flags=re.M)
    assert n == 1
    return out


def test_shipped_config_as_shipped(tmp_path: Path) -> None:
    cfg = load_config(EXAMPLE)
    assert cfg.asterisk is not None and cfg.asterisk.ami == ("127.0.0.1", 5038)
    assert cfg.asterisk.sip is None and cfg.ring is None


def test_shipped_config_carries_every_link_block() -> None:
    blocks = commented_blocks(EXAMPLE.read_text())
    assert {s for s in blocks if s.startswith("asterisk")} == {"asterisk.sip", "asterisk.ring"}


@pytest.mark.parametrize(
    "variant",
    ["sip beside ami", "sip alone", "ring alone", "ring beside ami"],
)
def test_shipped_config_with_a_link_uncommented(tmp_path: Path, variant: str) -> None:
    text = EXAMPLE.read_text()
    if variant.startswith("sip"):
        text = uncomment(text, "asterisk.sip")
        if variant == "sip alone":
            text = without_ami_keys(text)
    else:
        text = uncomment(text, "asterisk.ring")
        if variant == "ring alone":
            text = without_asterisk_section(text)
    try:
        cfg = load_text(tmp_path, text)
    except ConfigError as exc:
        pytest.fail(f"{variant}: {exc}\n{text}")
    if variant.startswith("sip"):
        assert cfg.asterisk is not None and cfg.asterisk.sip is not None
        assert cfg.asterisk.sip.uri == "sip:pbxmesh@127.0.0.1:5060"
        assert (cfg.asterisk.ami is None) == (variant == "sip alone")
        assert cfg.asterisk.sip.username is None  # the digest lines stay comments
    else:
        assert cfg.ring is not None and cfg.ring.exclude == ("Local/*",)
        assert (cfg.asterisk is None) == (variant == "ring alone")
