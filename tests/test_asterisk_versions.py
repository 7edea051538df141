"""What differs between the Asterisk builds pbxmesh is tested against, pinned per build.

Every test marked ``asterisk`` runs once per build beside the checkout (22 LTS and master: see
tests/harness/fixtures.py); where the builds answer differently, the difference is written in
docs/asterisk.md ("Asterisk versions") and pinned here, so a new build that changes it again
fails here first rather than in an unrelated test. Builds this file does not know (a later LTS)
are held only to what every build shares.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from pbxmesh.links.ami.client import AmiClient, AmiConfig
from pbxmesh.links.ami.link import hints_of
from tests.harness.asterisk import AMI_SECRET, AMI_USER, Asterisk, Build, eid_of

pytestmark = [pytest.mark.asterisk, pytest.mark.integration]

EXTENS = ("2000", "1236", "1001", "1234", "1235")
DIALPLAN = "[versions]\n" + "".join(f"exten => {e},hint,Custom:v{e}\n" for e in EXTENS)


@pytest.fixture(scope="module")
def star(asterisk_build: Build, require_asterisk: None) -> Iterator[Asterisk]:
    ast = Asterisk("versions", eid_of(0x61), dialplan=DIALPLAN)
    try:
        ast.start()
        yield ast
    finally:
        ast.cleanup()


def listed(star: Asterisk) -> list[tuple[str, int]]:
    """``core show hints``: each hint's extension and Watchers column, in the listed order."""
    rows = re.findall(
        r"^(\d+)@versions\s*:.*Watchers\s+(\d+)$", star.cli("core show hints").stdout, re.M
    )
    return [(exten, int(watchers)) for exten, watchers in rows]


def test_hint_listing_order_and_watchers(star: Asterisk, asterisk_build: Build) -> None:
    """master lists hints by name and counts one watcher on a hint nobody watches; 22 lists
    them in the order of its hint hash table and counts none."""
    rows = listed(star)
    assert sorted(exten for exten, _ in rows) == sorted(EXTENS)
    if asterisk_build.name == "master":
        assert [exten for exten, _ in rows] == sorted(EXTENS)
        assert {w for _, w in rows} == {1}
    elif asterisk_build.name.startswith("22."):
        assert [exten for exten, _ in rows] != sorted(EXTENS)
        assert {w for _, w in rows} == {0}


async def test_pbxmesh_hints_are_in_name_order_on_every_build(star: Asterisk) -> None:
    """``pbxmesh hints`` (the AMI link's ExtensionStateList) reads the same on every build."""
    async with AmiClient(AmiConfig("127.0.0.1", star.ami_port, AMI_USER, AMI_SECRET)) as client:
        await client.wait_connected()
        answer = await client.list_action("ExtensionStateList")
    assert sorted(e.get("Exten") for e in answer.items) == sorted(EXTENS)
    assert [h.exten for h in hints_of(answer.items)] == sorted(EXTENS)


def test_core_show_hint_of_exten_at_context(star: Asterisk, asterisk_build: Build) -> None:
    """``core show hint 1234@versions``: master finds the hint, 22 says no hint matches; the
    extension alone works on both."""
    assert "1 hint matching extension 1234" in star.cli("core show hint 1234").stdout
    out = star.cli("core show hint 1234@versions").stdout
    if asterisk_build.name == "master":
        assert "1 hint matching extension 1234@versions" in out
    elif asterisk_build.name.startswith("22."):
        assert out.strip() == "No hints matching extension 1234@versions"


PRESENCE_DIALPLAN = "[pv]\nexten => 1003,hint,Custom:y,CustomPresence:pa&CustomPresence:pb\n"


def test_a_hint_of_several_presentities(asterisk_build: Build, require_asterisk: None) -> None:
    """master shows the highest presence of a hint's presentities (dnd over away over
    available); 22 shows the last one that changed."""
    ast = Asterisk("presence-versions", eid_of(0x63), dialplan=PRESENCE_DIALPLAN)
    try:
        ast.start()
        ast.cli("presencestate change CustomPresence:pa dnd")
        ast.cli("presencestate change CustomPresence:pb away")
        shown = re.search(r"\sPresence:(\S+)\s+Watchers", ast.cli("core show hint 1003").stdout)
        assert shown is not None
        if asterisk_build.name == "master":
            assert shown[1] == "dnd"
        elif asterisk_build.name.startswith("22."):
            assert shown[1] == "away"
    finally:
        ast.cleanup()
