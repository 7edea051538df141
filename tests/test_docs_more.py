"""Smaller doc blocks run as printed: a CLI transcript, a shipped file, the ring's Asterisk
configuration, and what `pbxmesh hints` answers for each kind of link."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pbxmesh.control_http import no_hints_reason as _no_hints
from tests.harness.docs import ROOT, doc_block
from tests.harness.ring import RES_COROSYNC_CONF

BIN = Path(sys.executable).parent


def test_dialplan_hints_transcript() -> None:
    block = doc_block("docs/asterisk.md", "$ pbxmesh dialplan-hints")
    command, _, expected = block.partition("\n")
    argv = command.removeprefix("$ pbxmesh ").split()
    out = subprocess.run(
        [str(BIN / "pbxmesh"), "-c", "/nonexistent.toml", *argv],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout  # fmt: skip
    assert out == expected
    hints = doc_block("docs/asterisk.md", "[phones]")
    assert out == hints  # the hints the page shows are the command's


def test_uidgid_file_is_the_shipped_one() -> None:
    shipped = (ROOT / "packaging/deb/uidgid").read_text()
    assert doc_block("docs/install.md", "uidgid {") in shipped


def test_ring_res_corosync_conf_is_what_the_real_ring_tests_run() -> None:
    block = doc_block("docs/ring.md", "; res_corosync.conf")
    lines = [ln.replace(" ", "") for ln in block.splitlines() if not ln.startswith(";")]
    assert lines == [ln.replace(" ", "") for ln in RES_COROSYNC_CONF.splitlines()]


def test_hints_says_why_not_for_each_link() -> None:
    assert "[asterisk] beside [asterisk.sip]" in _no_hints({"sip"})
    assert "username, secret" in _no_hints({"sip"})
    assert "core show hints" in _no_hints({"ring"})
    assert "no [asterisk] link" in _no_hints(set())
