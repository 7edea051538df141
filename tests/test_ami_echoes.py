"""The AMI link's echo memory (links/ami/echoes.py): echoes are swallowed, and a change made on
Asterisk while our writes were in flight is written back, so Asterisk ends with the cluster's
value whatever the interleaving."""

from __future__ import annotations

from collections import deque

from hypothesis import given
from hypothesis import strategies as st

from pbxmesh.links.ami.echoes import Echoes


def test_an_echo_is_swallowed_and_a_change_is_not() -> None:
    echoes: Echoes[int] = Echoes()
    echoes.wrote("100@default", 5)
    assert echoes.seen("100@default", 5) == (True, None)
    assert echoes.seen("100@default", 5) == (False, None)  # nothing in flight: a change
    assert len(echoes) == 0


def test_a_change_overtaken_by_a_write_in_flight_is_given_back_at_its_echo() -> None:
    echoes: Echoes[int] = Echoes()
    echoes.wrote("m", 5)
    echoes.wrote("m", 6)
    assert echoes.seen("m", 1) == (False, None)  # Asterisk changed it before our writes land
    assert echoes.seen("m", 5) == (True, None)  # one write still in flight
    assert echoes.seen("m", 6) == (True, 1)  # the last one: write the change back


def test_a_newer_write_cancels_the_write_back() -> None:
    echoes: Echoes[int] = Echoes()
    echoes.wrote("m", 5)
    assert echoes.seen("m", 1) == (False, None)
    echoes.wrote("m", 7)  # the cluster moved on after that change
    assert echoes.seen("m", 5) == (True, None)
    assert echoes.seen("m", 7) == (True, None)


def test_a_refused_write_is_not_awaited() -> None:
    echoes: Echoes[int] = Echoes()
    echoes.wrote("m", 5)
    echoes.failed("m", 5)
    assert echoes.seen("m", 5) == (False, None)


OPS = st.lists(st.sampled_from(["remote", "local", "land", "deliver"]), max_size=60)


@given(OPS)
def test_asterisk_ends_with_the_clusters_value_whatever_the_interleaving(ops: list[str]) -> None:
    """One name. The cluster's value is the last one reported to it: remote values as the
    link is told to write them, local ones as the link reports them. Asterisk applies our
    writes and its own changes in one order and reports each, in that order."""
    echoes: Echoes[int] = Echoes()
    counter = iter(range(1, 10_000))
    cluster, asterisk = 0, 0
    in_flight: deque[int] = deque()  # our writes sent, not applied yet
    events: deque[int] = deque()  # what Asterisk reported, not read by the link yet

    def write(value: int) -> None:
        echoes.wrote("m", value)
        in_flight.append(value)

    def deliver() -> None:
        nonlocal cluster
        value = events.popleft()
        echo, restore = echoes.seen("m", value)
        if not echo:
            cluster = value  # reported: the cluster's value now
        if restore is not None:
            write(restore)

    for op in ops:
        if op == "remote":
            cluster = next(counter)
            write(cluster)
        elif op == "local":
            asterisk = next(counter)
            events.append(asterisk)
        elif op == "land" and in_flight:
            asterisk = in_flight.popleft()
            events.append(asterisk)
        elif op == "deliver" and events:
            deliver()
    while in_flight or events:  # quiet: everything lands and is read
        if events:
            deliver()
        else:
            asterisk = in_flight.popleft()
            events.append(asterisk)
    assert asterisk == cluster
