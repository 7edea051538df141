"""Entity ids and versions: stable across restarts, never going back."""

from __future__ import annotations

from pathlib import Path

import pytest

from pbxmesh.clock import HybridClock, VersionFile, version_millis
from pbxmesh.eid import EID, load_or_create_eid
from pbxmesh.errors import StateError


def test_eid_prints_lowercase_and_parses_either_case() -> None:
    eid = EID.parse("0A:1B:2C:3D:4E:5F")
    assert str(eid) == "0a:1b:2c:3d:4e:5f"
    assert EID.parse(str(eid)) == eid


@pytest.mark.parametrize(
    "bad", ["", "00:00:00:00:00:00", "0a:1b:2c:3d:4e", "0a-1b-2c-3d-4e-5f", "zz:1b:2c:3d:4e:5f"]
)
def test_bad_eids_are_refused(bad: str) -> None:
    with pytest.raises(StateError):
        EID.parse(bad)


def test_generated_eids_are_unicast_local_and_nonzero() -> None:
    for _ in range(200):
        raw = EID.generate().raw
        assert raw[0] & 0x02 and not raw[0] & 0x01 and raw != bytes(6)


def test_node_eid_is_stable_across_restarts(tmp_path: Path) -> None:
    first = load_or_create_eid(tmp_path)
    assert load_or_create_eid(tmp_path) == first
    assert (tmp_path / "eid").read_text().strip() == str(first)
    assert load_or_create_eid(tmp_path, override="02:00:00:00:00:09") == EID.parse(
        "02:00:00:00:00:09"
    )


def test_corrupt_eid_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "eid").write_text("garbage\n")
    with pytest.raises(StateError, match="delete the file"):
        load_or_create_eid(tmp_path)


def test_clock_is_monotonic_even_when_wall_time_stands_still_or_goes_back() -> None:
    now = [1000]
    clock = HybridClock(lambda: now[0])
    a, b = clock.tick(), clock.tick()
    assert b == a + 1 and version_millis(a) == 1000
    now[0] = 500  # the wall clock is set back
    assert clock.tick() > b
    now[0] = 2000
    assert version_millis(clock.tick()) == 2000


def test_clock_observes_peers_but_not_absurd_ones() -> None:
    now = [1000]
    clock = HybridClock(lambda: now[0])
    clock.observe(5000 << 16)
    assert clock.tick() > 5000 << 16
    clock.observe((1000 + 10 * 86_400_000) << 16)  # ten days ahead: a broken peer
    assert version_millis(clock.tick()) < 1000 + 86_400_000


def test_versions_survive_a_restart_with_the_clock_set_back(tmp_path: Path) -> None:
    store = VersionFile(tmp_path / "version")
    now = [1_000_000]
    clock = HybridClock(lambda: now[0], start_after=store.load(), persist=store.save)
    issued = [clock.tick() for _ in range(1000)]
    now[0] = 1  # restart with the wall clock far in the past
    again = HybridClock(lambda: now[0], start_after=store.load(), persist=store.save)
    assert again.tick() > max(issued)


def test_version_file_tolerates_absence_and_garbage(tmp_path: Path) -> None:
    store = VersionFile(tmp_path / "v")
    assert store.load() == 0
    store.path.write_text("not a number")
    assert store.load() == 0
    store.save(42)
    assert store.load() == 42
