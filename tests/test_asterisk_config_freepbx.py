"""``pbxmesh asterisk-config --freepbx``: the same configuration as the plain command, each
part under the header of the FreePBX custom file it goes into (docs/freepbx.md)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pbxmesh.cli import main as cli_main
from tests.freepbx_helpers import split_freepbx
from tests.harness.docs import doc_block

BOTH_LINKS = """\
[asterisk]
ami = "127.0.0.1:5038"
username = "pbxmesh"
secret = "s3cret"

[asterisk.sip]
listen = "127.0.0.1:5070"
uri = "sip:pbxmesh@127.0.0.1:5060"
"""


def printed(tmp_path: Path, capsys: pytest.CaptureFixture[str], toml: str, *flags: str) -> str:
    conf = tmp_path / "pbxmesh.toml"
    conf.write_text(f'[node]\nstate_dir = "{tmp_path}"\neid = "02:00:00:00:0d:01"\n\n{toml}')
    assert cli_main(["-c", str(conf), "asterisk-config", *flags]) == 0
    return capsys.readouterr().out


def sections(text: str) -> list[str]:
    """Each ``[name]`` section with its lines (comments after the name kept), in order."""
    body = "\n".join(ln for ln in text.splitlines() if ln and not ln.startswith(";"))
    return ["[" + part.strip() for part in re.split(r"^\[", body, flags=re.M) if part.strip()]


def test_each_part_is_under_the_freepbx_file_it_goes_into(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = printed(tmp_path, capsys, BOTH_LINKS, "--freepbx")
    files = split_freepbx(out)
    assert list(files) == [
        "asterisk.conf",
        "modules.conf",
        "pjsip.transports_custom.conf",
        "pjsip.endpoint_custom.conf",
        "pjsip.identify_custom.conf",
        "pjsip_custom.conf",
        "manager_custom.conf",
    ]
    # Nothing FreePBX rewrites is named as a place to write.
    assert not re.search(r"^; --- /etc/asterisk/(pjsip|manager|extensions)\.conf", out, re.M)
    assert "\nentityid = 02:00:00:00:0d:01\n" in files["asterisk.conf"]
    # modules.conf: only comments (FreePBX autoloads), naming every module the links need.
    plain = printed(tmp_path, capsys, BOTH_LINKS)
    needed = re.findall(r"^load => (\S+)", plain, re.M)
    assert all(ln.startswith(";") for ln in files["modules.conf"].splitlines())
    assert re.findall(r"^;   (\S+\.so)$", files["modules.conf"], re.M) == needed
    # Every pjsip section of the plain output, once, in the file for its type.
    by_type = {
        "transport": "pjsip.transports_custom.conf",
        "endpoint": "pjsip.endpoint_custom.conf",
        "identify": "pjsip.identify_custom.conf",
        "outbound-publish": "pjsip_custom.conf",
        "inbound-publication": "pjsip_custom.conf",
        "asterisk-publication": "pjsip_custom.conf",
    }
    plain_pjsip = plain[plain.index("; pjsip.conf") : plain.index("; manager.conf")]
    placed = []
    for fname, text in files.items():
        if fname.startswith("pjsip"):
            for sec in sections(text):
                kind = re.search(r"^type = (\S+)$", sec, re.M)
                assert kind and by_type[kind[1]] == fname, (fname, sec)
                placed.append(sec)
    assert sorted(placed) == sorted(sections(plain_pjsip))
    # manager_custom.conf: the account alone (FreePBX's manager.conf has its [general]).
    account = plain[plain.index("; manager.conf") :]
    assert sections(files["manager_custom.conf"]) == sections(account)
    assert "\n[general]" not in files["manager_custom.conf"]


def test_auth_goes_to_auth_custom_and_no_transport_leaves_its_file_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    toml = (
        '[asterisk.sip]\nlisten = "127.0.0.1:5071"\nuri = "sip:mesh@127.0.0.1:5061"\n'
        'username = "u"\nsecret = "p"\n'
    )
    files = split_freepbx(printed(tmp_path, capsys, toml, "--freepbx", "--no-transport"))
    assert list(files) == [
        "asterisk.conf",
        "modules.conf",
        "pjsip.auth_custom.conf",
        "pjsip.endpoint_custom.conf",
        "pjsip.identify_custom.conf",
        "pjsip_custom.conf",
    ]
    assert sections(files["pjsip.auth_custom.conf"]) == [
        "[mesh-auth]\ntype = auth\nauth_type = userpass\nusername = u\npassword = p"
    ]
    assert "outbound_auth = mesh-auth" in files["pjsip_custom.conf"]
    assert ";   res_pjsip_outbound_authenticator_digest.so" in files["modules.conf"]


def test_the_plain_output_is_unchanged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = printed(tmp_path, capsys, doc_block("docs/asterisk.md", "[asterisk.sip]"))
    assert "; ---" not in out
    assert doc_block("docs/asterisk.md", "; pjsip.conf") in out
    assert doc_block("docs/asterisk.md", "; modules.conf, [modules]") in out


def test_the_pages_freepbx_block_is_what_the_command_prints(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    toml = doc_block("docs/freepbx.md", "[asterisk]")
    out = printed(tmp_path, capsys, toml, "--freepbx", "--no-transport")
    assert out == doc_block("docs/freepbx.md", "; pbxmesh on FreePBX")
