"""The links' keys are validated once, when the file is read: file:line and key, and whatever
the file accepts every link's own config accepts too."""

from __future__ import annotations

from pathlib import Path

import pytest

from pbxmesh.config import load_config
from pbxmesh.errors import ConfigError
from pbxmesh.linkconfig import ami_link_config, asterisk_links, ring_link_config, sip_link_config

AMI = """\
[node]
name = "pbx1"

[asterisk]
username = "pbxmesh"
secret = "s3cret"
remote_template = "Custom:remote-{device}"
down_grace = 5
"""

SIP = """\
[node]
name = "pbx1"

[asterisk]
down_grace = 5

[asterisk.sip]
uri = "sip:pbxmesh@127.0.0.1:5060"
"""

RING = """\
[node]
name = "pbx1"

[asterisk.ring]
group = "asterisk"
down_grace = 5
"""


def load(tmp_path: Path, text: str) -> tuple[Path, str]:
    path = tmp_path / "pbxmesh.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return path, str(info.value)


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("custom:remote-{device}", 'must start with "Custom:"'),
        ("Custom:remote", "contain {device} exactly once"),
        ("Custom:{device}-{device}", "contain {device} exactly once"),
        ("Custom:remote/{device}", "holds '/'; use letters, digits"),
        ("Custom:" + "r" * 60 + "{device}", "is too long"),
    ],
)
def test_a_bad_remote_template_names_its_line(tmp_path: Path, template: str, message) -> None:
    text = AMI.replace('"Custom:remote-{device}"', f'"{template}"')
    path, error = load(tmp_path, text)
    assert error.startswith(f"{path}:7: asterisk.remote_template: "), error
    assert message in error
    assert "e.g. 'Custom:remote-{device}'" in error or "too long" in error or "holds" in error


@pytest.mark.parametrize(
    ("text", "line", "key"),
    [
        (AMI, 8, "asterisk.down_grace"),
        (SIP, 5, "asterisk.down_grace"),
        (RING, 6, "asterisk.ring.down_grace"),
    ],
)
@pytest.mark.parametrize("value", ["-1", "3601", "true", '"5"'])
def test_a_bad_down_grace_names_its_line_for_every_link(
    tmp_path: Path, text: str, line: int, key: str, value: str
) -> None:
    path, error = load(tmp_path, text.replace("down_grace = 5", f"down_grace = {value}"))
    assert error.startswith(f"{path}:{line}: {key}: "), error


@pytest.mark.parametrize(
    "template",
    ["Custom:remote-{device}", "Custom:{device}", "Custom:x.{device}~far", "Custom:r{device}"],
)
def test_what_the_file_accepts_every_link_config_accepts(tmp_path: Path, template: str) -> None:
    text = AMI.replace('"Custom:remote-{device}"', f'"{template}"').replace(
        "down_grace = 5", "down_grace = 0"
    )
    both = text + SIP.split("\n\n", 2)[2] + RING.split("\n\n", 1)[1].replace("5", "3600")
    path = tmp_path / "pbxmesh.toml"
    path.write_text(both)
    cfg = load_config(path)
    assert cfg.asterisk is not None and cfg.ring is not None
    ami, link = ami_link_config(cfg.asterisk)
    assert (ami.host, ami.port) == ("127.0.0.1", 5038)
    assert link.template == template and link.down_grace == 0 and link.include == ()
    sip = sip_link_config(cfg.asterisk, state_file=tmp_path / "held.json")
    assert sip.resource == "pbxmesh" and sip.down_grace == 0
    assert ring_link_config(cfg.ring).down_grace == 3600


def test_the_daemon_builds_its_links_through_linkconfig(tmp_path: Path) -> None:
    path = tmp_path / "pbxmesh.toml"
    path.write_text(AMI + SIP.split("\n\n", 2)[2])
    cfg = load_config(path)
    links = asterisk_links(cfg.asterisk, tmp_path)
    assert [link.kind for link in links] == ["sip", "ami"]
