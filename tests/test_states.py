"""Device states, aggregation and hint states against Asterisk's own tables (reference §1)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pbxmesh.errors import PbxmeshError, StateError
from pbxmesh.states import (
    AGGREGATE_TABLE,
    DeviceState,
    ExtensionState,
    aggregate,
    aggregate_pair,
    device_to_extension_state,
    extension_state_text,
    hint_devices,
    hint_state,
    parse_state,
)

S = DeviceState
# The pairwise table of the reference (§1.4), transcribed row by row; the column order is the
# enum order UNKNOWN, NOT_INUSE, INUSE, BUSY, INVALID, UNAVAILABLE, RINGING, RINGINUSE, ONHOLD.
EXPECTED = """
UNKNOWN   NOT_INUSE INUSE     BUSY      UNKNOWN   UNAVAILABLE RINGING   RINGINUSE ONHOLD
NOT_INUSE NOT_INUSE INUSE     BUSY      NOT_INUSE NOT_INUSE   RINGING   RINGINUSE ONHOLD
INUSE     INUSE     INUSE     BUSY      INUSE     INUSE       RINGINUSE RINGINUSE INUSE
BUSY      BUSY      BUSY      BUSY      BUSY      BUSY        RINGINUSE RINGINUSE BUSY
UNKNOWN   NOT_INUSE INUSE     BUSY      INVALID   UNAVAILABLE RINGING   RINGINUSE ONHOLD
UNAVAILABLE NOT_INUSE INUSE   BUSY      UNAVAILABLE UNAVAILABLE RINGING RINGINUSE ONHOLD
RINGING   RINGING   RINGINUSE RINGINUSE RINGING   RINGING     RINGING   RINGINUSE RINGINUSE
RINGINUSE RINGINUSE RINGINUSE RINGINUSE RINGINUSE RINGINUSE   RINGINUSE RINGINUSE RINGINUSE
ONHOLD    ONHOLD    INUSE     BUSY      ONHOLD    ONHOLD      RINGINUSE RINGINUSE ONHOLD
"""


def test_numbers_and_names_are_asterisks() -> None:
    assert [(s.name, int(s)) for s in S] == [
        ("UNKNOWN", 0),
        ("NOT_INUSE", 1),
        ("INUSE", 2),
        ("BUSY", 3),
        ("INVALID", 4),
        ("UNAVAILABLE", 5),
        ("RINGING", 6),
        ("RINGINUSE", 7),
        ("ONHOLD", 8),
    ]
    assert str(S.NOT_INUSE) == "NOT_INUSE"


@pytest.mark.parametrize("text", ["inuse", "InUse", " NOT_INUSE ", "ringinuse", "unknown"])
def test_parse_is_case_insensitive(text: str) -> None:
    assert parse_state(text).name == text.strip().upper()


@pytest.mark.parametrize("text", ["", "IN_USE", "idle", "9", "BUSY!", "NOT INUSE"])
def test_parse_rejects_everything_else_clearly(text: str) -> None:
    with pytest.raises(StateError) as info:
        parse_state(text)
    assert "valid states are UNKNOWN, NOT_INUSE" in str(info.value)
    assert isinstance(info.value, PbxmeshError)


def test_aggregation_matches_the_81_cell_table() -> None:
    rows = [line.split() for line in EXPECTED.strip().splitlines()]
    assert len(rows) == 9
    cells = 0
    for a, row in zip(S, rows, strict=True):
        for b, want in zip(S, row, strict=True):
            assert aggregate((a, b)).name == want, (a, b)
            assert aggregate_pair(a, b).name == want
            assert AGGREGATE_TABLE[a * 9 + b] == S[want]
            cells += 1
    assert cells == 81


def test_empty_aggregation_is_invalid() -> None:
    assert aggregate(()) is S.INVALID


def test_table_fold_equals_flag_algorithm_for_every_sequence_up_to_four() -> None:
    for n in range(1, 5):
        for seq in itertools.product(S, repeat=n):
            folded = S.INVALID
            for s in seq:
                folded = aggregate_pair(folded, s)
            assert folded is aggregate(seq), seq


@given(st.lists(st.sampled_from(list(S)), max_size=12), st.randoms())
def test_aggregation_is_order_independent(states: list[DeviceState], rnd) -> None:
    shuffled = list(states)
    rnd.shuffle(shuffled)
    assert aggregate(states) is aggregate(shuffled)


@given(st.sampled_from(list(S)), st.sampled_from(list(S)), st.sampled_from(list(S)))
def test_pairwise_aggregation_is_associative_and_commutative(a, b, c) -> None:
    assert aggregate_pair(a, b) is aggregate_pair(b, a)
    assert aggregate_pair(aggregate_pair(a, b), c) is aggregate_pair(a, aggregate_pair(b, c))
    assert aggregate_pair(a, S.INVALID) is a


def test_extension_state_strings_and_codes() -> None:
    cases = {
        S.UNKNOWN: (0, "Idle"),
        S.NOT_INUSE: (0, "Idle"),
        S.INUSE: (1, "InUse"),
        S.BUSY: (2, "Busy"),
        S.INVALID: (4, "Unavailable"),
        S.UNAVAILABLE: (4, "Unavailable"),
        S.RINGING: (8, "Ringing"),
        S.RINGINUSE: (9, "InUse&Ringing"),
        S.ONHOLD: (16, "Hold"),
    }
    for state, (code, text) in cases.items():
        ext = device_to_extension_state(state)
        assert (int(ext), ext.text) == (code, text)
    assert extension_state_text(17) == "InUse&Hold"
    assert extension_state_text(-1) == extension_state_text(-2) == "Unknown"
    assert extension_state_text(3) == "Unknown"
    assert ExtensionState.REMOVED.text == "Unknown"


def test_hint_devices_and_state() -> None:
    assert hint_devices("PJSIP/100&Custom:dnd100,CustomPresence:100") == [
        "PJSIP/100",
        "Custom:dnd100",
    ]
    assert hint_devices("&A&&B&") == ["A", "B"]
    states = {"PJSIP/100": S.INUSE, "Custom:x": S.RINGING}
    assert hint_state("PJSIP/100&Custom:x", states).text == "InUse&Ringing"
    assert hint_state("Custom:mystate", {"Custom:mystate": S.INUSE}).text == "InUse"
    assert hint_state("Custom:never-seen", {}).text == "Idle"  # UNKNOWN → Idle
    assert hint_state("", {}).text == "Unavailable"  # no device
    assert hint_state("A&B", {"A": S.ONHOLD, "B": S.NOT_INUSE}).text == "Hold"
