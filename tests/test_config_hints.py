"""``[asterisk.hints]``: its two keys are validated with file:line, and reach the AMI link."""

from __future__ import annotations

from pathlib import Path

import pytest

from pbxmesh.config import HintsSection, load_config
from pbxmesh.errors import ConfigError
from pbxmesh.linkconfig import ami_link_config, asterisk_links
from pbxmesh.links.ami import AmiLink
from pbxmesh.links.ami.hints import HintsConfig
from pbxmesh.links.sip.asterisk_conf import manager_conf
from tests.harness.docs import doc_block

AMI = """\
[node]
name = "pbx1"

[asterisk]
username = "pbxmesh"
secret = "s3cret"

[asterisk.hints]
context = "ext-local-custom"
device = "PJSIP/{exten}"
"""

SIP_ONLY = """\
[node]
name = "pbx1"

[asterisk.sip]
uri = "sip:pbxmesh@127.0.0.1:5060"

[asterisk.hints]
context = "ext-local-custom"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pbxmesh.toml"
    path.write_text(text)
    return path


def test_the_hints_section_reaches_the_ami_link(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, AMI))
    assert cfg.asterisk is not None and cfg.asterisk.hints is not None
    _, link = ami_link_config(cfg.asterisk)
    assert link.hints == HintsConfig(context="ext-local-custom", device="PJSIP/{exten}")
    assert link.hints.exten_of("PJSIP/2001") == "2001"
    assert link.hints.exten_of("SIP/2001") is None
    (ami,) = asterisk_links(cfg.asterisk, tmp_path)
    assert isinstance(ami, AmiLink) and ami.hint_keeper is not None


def test_the_device_key_defaults_to_pjsip(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, AMI.replace('device = "PJSIP/{exten}"\n', "")))
    assert cfg.asterisk is not None and cfg.asterisk.hints is not None
    assert cfg.asterisk.hints.device == "PJSIP/{exten}"


@pytest.mark.parametrize(
    ("old", "new", "line", "key", "message"),
    [
        ('"ext-local-custom"', '"ext local"', 9, "context", "is not a dialplan context name"),
        ('"ext-local-custom"', "5", 9, "context", ""),
        ('"PJSIP/{exten}"', '"PJSIP/2001"', 10, "device", "hold {exten} exactly once"),
        ('"PJSIP/{exten}"', '"{exten}"', 10, "device", "must start with the device"),
    ],
)
def test_a_bad_hints_key_names_its_line(
    tmp_path: Path, old: str, new: str, line: int, key: str, message: str
) -> None:
    path = write(tmp_path, AMI.replace(old, new))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    error = str(info.value)
    assert error.startswith(f"{path}:{line}: asterisk.hints.{key}: "), error
    assert message in error


def test_an_unknown_hints_key_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, AMI + 'prefix = "x"\n')
    with pytest.raises(ConfigError, match="prefix"):
        load_config(path)


def test_hints_need_the_ami_session(tmp_path: Path) -> None:
    path = write(tmp_path, SIP_ONLY)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "kept hints are added over AMI: give ami, username and secret" in str(info.value)


def test_the_documented_section_loads(tmp_path: Path) -> None:
    block = doc_block("docs/asterisk.md", "[asterisk.hints]")
    cfg = load_config(write(tmp_path, AMI.split("[asterisk.hints]", maxsplit=1)[0] + block))
    assert cfg.asterisk is not None
    assert cfg.asterisk.hints == HintsSection(context="ext-local-custom", device="PJSIP/{exten}")


def test_the_ami_account_may_add_hints_only_when_hints_are_kept() -> None:
    assert "write = call,reporting,command,system\n" in manager_conf("u", "s", hints=True)
    assert "write = call,reporting,command\n" in manager_conf("u", "s")
