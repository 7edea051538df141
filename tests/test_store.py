"""The per-origin store: Asterisk's semantics, and merges that do not depend on delivery order."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pbxmesh.eid import EID
from pbxmesh.errors import StateError
from pbxmesh.states import DeviceState, aggregate
from pbxmesh.store import DeviceStore, MwiStore, check_device_name, normalize_mailbox

S = DeviceState
A = EID.parse("02:00:00:00:00:0a")
B = EID.parse("02:00:00:00:00:0b")
C = EID.parse("02:00:00:00:00:0c")
ORIGINS = (A, B, C)
DEVICES = ("Custom:a", "Custom:b", "PJSIP/100", "SIP/x")


def test_cluster_value_is_the_aggregation_of_every_origin() -> None:
    s = DeviceStore()
    assert s.apply(A, "PJSIP/100", S.BUSY, 1).state is S.BUSY
    change = s.apply(B, "PJSIP/100", S.RINGING, 1)
    assert change is not None and change.state is S.RINGINUSE and change.previous is S.BUSY
    assert s.cluster_state("PJSIP/100") is S.RINGINUSE
    assert s.slots_of("PJSIP/100") == {A: (S.BUSY, 1), B: (S.RINGING, 1)}
    assert s.state_excluding("PJSIP/100", A) is S.RINGING
    assert s.state_excluding("PJSIP/100", C) is S.RINGINUSE
    assert s.state_excluding("nothing", A) is S.INVALID


def test_older_and_duplicate_versions_are_ignored() -> None:
    s = DeviceStore()
    s.apply(A, "d", S.INUSE, 10)
    assert s.apply(A, "d", S.NOT_INUSE, 9) is None
    assert s.apply(A, "d", S.INUSE, 10) is None
    assert s.cluster_state("d") is S.INUSE


def test_unchanged_cluster_value_gives_no_event() -> None:
    s = DeviceStore()
    s.apply(A, "d", S.BUSY, 1)
    assert s.apply(A, "d", S.BUSY, 2) is None  # same state, newer version
    assert s.apply(B, "d", S.INUSE, 1) is None  # BUSY beats INUSE: aggregate unchanged
    assert s.slots_of("d")[A] == (S.BUSY, 2)


def test_dropping_an_origin_emits_every_changed_value() -> None:
    s = DeviceStore()
    s.apply(A, "x", S.INUSE, 1)
    s.apply(B, "x", S.NOT_INUSE, 1)
    s.apply(A, "only-a", S.RINGING, 2)
    s.apply(B, "only-b", S.BUSY, 2)
    changes = {c.device: c for c in s.drop_origin(A)}
    assert set(changes) == {"x", "only-a"}
    assert changes["x"].state is S.NOT_INUSE and not changes["x"].removed
    # The last slot gone is a visible change, not a stale value (Asterisk keeps it stale).
    assert changes["only-a"].removed and changes["only-a"].state is S.INVALID
    assert changes["only-a"].previous is S.RINGING
    assert "only-a" not in s and s.cluster_state("only-a") is None
    assert s.drop_origin(A) == []
    assert dict(s.devices()) == {"x": S.NOT_INUSE, "only-b": S.BUSY}


def test_snapshot_of_one_origin_merges_elsewhere() -> None:
    here, there = DeviceStore(), DeviceStore()
    here.apply(A, "a", S.INUSE, 5)
    here.apply(A, "b", S.ONHOLD, 6)
    here.apply(B, "a", S.RINGING, 1)
    snap = here.snapshot(A)
    changes = there.merge_snapshot(A, [(d, int(st_), v) for d, st_, v in snap], 6)
    assert {c.device for c in changes} == {"a", "b"}
    assert there.canonical()[0] == {A: here.canonical()[0][A]}


def test_complete_snapshot_retracts_what_the_origin_no_longer_has() -> None:
    s = DeviceStore()
    s.apply(A, "gone", S.INUSE, 5)
    s.apply(A, "kept", S.INUSE, 6)
    s.apply(A, "newer", S.BUSY, 30)
    changes = s.merge_snapshot(A, [("kept", S.INUSE, 6)], complete_as_of=20)
    assert [(c.device, c.removed) for c in changes] == [("gone", True)]
    assert set(dict(s.devices())) == {"kept", "newer"}
    # A late delivery of the retracted device's old change cannot resurrect it.
    assert s.apply(A, "gone", S.INUSE, 5) is None
    # An older complete snapshot arriving late changes nothing.
    assert s.merge_snapshot(A, [("gone", S.INUSE, 5)], complete_as_of=10) == []
    assert "gone" not in s


def test_an_origin_that_comes_back_is_taken_whole() -> None:
    s = DeviceStore()
    s.apply(A, "d", S.INUSE, 5)
    s.merge_snapshot(A, [("d", S.INUSE, 5)], complete_as_of=8)
    s.drop_origin(A)  # partition: A left
    changes = s.merge_snapshot(A, [("d", S.INUSE, 5)], complete_as_of=50)  # heal, unchanged slot
    assert [c.state for c in changes] == [S.INUSE]


def test_mwi_is_last_writer_wins_with_deterministic_tie_break() -> None:
    m = MwiStore()
    first = m.apply(A, "1000@default", 3, 1, 10)
    assert first is not None and first.previous is None
    assert m.apply(B, "1000@default", 5, 0, 9) is None  # older
    change = m.apply(B, "1000@default", 0, 2, 11)
    assert change is not None and change.record.origin == B and change.previous == first.record
    # Same version from two writers: the larger origin wins, wherever it is applied.
    m2 = MwiStore()
    m2.apply(C, "x@y", 1, 1, 20)
    m2.apply(A, "x@y", 9, 9, 20)
    m3 = MwiStore()
    m3.apply(A, "x@y", 9, 9, 20)
    m3.apply(C, "x@y", 1, 1, 20)
    assert m2.canonical() == m3.canonical()
    rec = m2.get("x@y")
    assert rec is not None and rec.origin == C
    # Equal counts from a newer write: the record is updated, but nothing visible changes.
    assert m.apply(C, "1000@default", 0, 2, 12) is None
    rec = m.get("1000@default")
    assert rec is not None and rec.origin == C
    assert m.written_by(C) == [rec]


@pytest.mark.parametrize(
    ("given_id", "expected"),
    [
        ("1000", "1000@default"),
        ("1000@", "1000@default"),
        ("1000@sales", "1000@sales"),
        ("a@b@c", "a@b@c"),
        (" 42@x ", "42@x"),
    ],
)
def test_mailbox_ids_are_normalised_like_asterisk(given_id: str, expected: str) -> None:
    assert normalize_mailbox(given_id) == expected


@pytest.mark.parametrize("bad", ["", "@emptybox", "@"])
def test_mailbox_without_a_mailbox_part_is_refused(bad: str) -> None:
    with pytest.raises(StateError, match="empty mailbox part"):
        normalize_mailbox(bad)


@pytest.mark.parametrize("bad", ["", "x" * 80, "a&b", "a,b", "tab\there"])
def test_device_names_are_checked(bad: str) -> None:
    with pytest.raises(StateError):
        check_device_name(bad)
    assert check_device_name("x" * 79) == "x" * 79


# -- order independence ---------------------------------------------------------------------
@st.composite
def histories(draw):
    """Per-origin sequences of changes with strictly increasing versions."""
    changes = []
    for origin in ORIGINS:
        version = draw(st.integers(0, 3))
        for _ in range(draw(st.integers(0, 12))):
            version += draw(st.integers(1, 3))
            changes.append(
                (origin, draw(st.sampled_from(DEVICES)), draw(st.sampled_from(list(S))), version)
            )
    return changes


def _replay(changes) -> DeviceStore:
    s = DeviceStore()
    for origin, device, state, version in changes:
        s.apply(origin, device, state, version)
    return s


@settings(max_examples=300)
@given(histories(), st.randoms())
def test_apply_is_commutative_associative_idempotent(changes, rnd) -> None:
    reference = _replay(changes)
    shuffled = list(changes)
    rnd.shuffle(shuffled)
    duplicated = shuffled + rnd.sample(shuffled, k=len(shuffled) // 2)
    rnd.shuffle(duplicated)
    assert _replay(shuffled).canonical() == reference.canonical()
    assert _replay(duplicated).canonical() == reference.canonical()
    # Associative: merging two halves' snapshots gives the same store as applying everything.
    half = len(shuffled) // 2
    left, right = _replay(shuffled[:half]), _replay(shuffled[half:])
    merged = DeviceStore()
    for part in (right, left):
        for origin in part.origins():
            merged.merge_snapshot(origin, part.snapshot(origin))
    assert merged.canonical() == reference.canonical()
    # And the cluster value is Asterisk's aggregation of the latest slot of each origin.
    for device, state in reference.devices():
        assert state is aggregate(s for s, _ in reference.slots_of(device).values())


@settings(max_examples=200)
@given(histories(), st.randoms(), st.integers(0, 60))
def test_complete_snapshot_and_deltas_commute(changes, rnd, cut) -> None:
    """A complete snapshot at version V plus every change gives one result in any order."""
    full = _replay(changes)
    for origin in ORIGINS:
        upto = [c for c in changes if c[0] == origin and c[3] <= cut]
        snap_store = _replay(upto)
        snapshot = [(d, int(s), v) for d, s, v in snap_store.snapshot(origin)]
        later = [c for c in changes if c[0] == origin and c[3] > cut]
        earlier = [c for c in changes if c[0] != origin or c[3] <= cut]
        ops = [("snap", snapshot)] + [("delta", c) for c in later + earlier]
        for _ in range(3):
            rnd.shuffle(ops)
            s = DeviceStore()
            for kind, op in ops:
                if kind == "snap":
                    s.merge_snapshot(origin, op, complete_as_of=cut)
                else:
                    s.apply(*op)
            assert s.canonical() == full.canonical()


@given(histories(), st.randoms())
def test_emitted_changes_track_the_cluster_value(changes, rnd) -> None:
    """Replaying the emitted events alone reproduces the cluster view (nothing is silent)."""
    s = DeviceStore()
    seen: dict[str, DeviceState] = {}
    shuffled = list(changes)
    rnd.shuffle(shuffled)
    for origin, device, state, version in shuffled:
        change = s.apply(origin, device, state, version)
        if change is not None:
            assert change.previous == seen.get(device)
            seen[device] = change.state
    assert seen == dict(s.devices())
    for origin in rnd.sample(ORIGINS, k=len(ORIGINS)):
        for change in s.drop_origin(origin):
            if change.removed:
                del seen[change.device]
            else:
                seen[change.device] = change.state
    assert seen == dict(s.devices()) == {}
