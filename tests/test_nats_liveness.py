"""The NATS transport's pure bookkeeping: the failure detector (:class:`Liveness`) and the
frames held for senders not yet in the view (:class:`HeldFrames`). No nats-server: times are
passed in."""

from __future__ import annotations

from pbxmesh.transport.base import Member, MembershipChange, Message
from pbxmesh.transport.nats.heartbeat import Heartbeat, HeartbeatKind, LostNotice
from pbxmesh.transport.nats.held import HeldFrames
from pbxmesh.transport.nats.liveness import EchoLost, Liveness, Unheard

ME = Member(member_id="a", name="a")


def liveness(now: float = 0.0) -> Liveness:
    live = Liveness(ME, 11, failure_timeout=2.5, echo_timeout=4.0, heartbeat_interval=0.5)
    live.echoed(now)
    return live


def alive(name: str, instance: int = 7) -> Heartbeat:
    return Heartbeat(HeartbeatKind.ALIVE, instance, 0, name)


def test_a_silent_member_leaves_after_the_failure_timeout_and_not_before() -> None:
    live = liveness()
    live.peers.heartbeat("b", alive("b"), 0.0, gathering=False)
    assert live.next_deadline(100.0) == 2.5
    live.echoed(2.5)
    assert live.judge(2.5) is None
    change = live.judge(2.6)
    assert isinstance(change, MembershipChange)
    assert [m.member_id for m in change.left] == ["b"] and change.clean == (False,)
    assert live.lost(2.6) == (("b", 7),)


def test_no_echo_of_our_own_heartbeats_blames_our_server_not_the_others() -> None:
    live = liveness()
    live.peers.heartbeat("b", alive("b"), 0.0, gathering=False)
    live.peers.seen("b", 2.0)
    verdict = live.judge(4.1)
    assert isinstance(verdict, EchoLost) and verdict.age == 4.1
    assert "b" in live.peers.peers  # b was silent too, but our path is in doubt
    assert live.judge(4.2) is None  # one forced reconnect per echo_timeout


def test_time_our_loop_did_not_run_us_is_forgiven_and_a_reconnect_restarts_every_timer() -> None:
    live = liveness()
    live.peers.heartbeat("b", alive("b"), 0.0, gathering=False)
    live.forgive(3.0)
    assert live.next_deadline(100.0) == 5.5
    live.echoed(5.0)
    assert live.judge(5.0) is None
    live.reconnected(10.0)
    assert live.last_echo == 10.0 and live.next_deadline(100.0) == 12.5
    assert live.judge(12.0) is None


def test_notices_naming_us_for_the_failure_timeout_say_we_are_unheard_once() -> None:
    live = liveness()
    live.peers.heartbeat("b", alive("b"), 0.0, gathering=False)
    names_us = LostNotice(7, 0, "b", (("a", 11),))
    again = live.notice("b", names_us, 0.0)  # b has just declared us failed and dropped us:
    assert again is not None and [m.member_id for m in again.joined] == ["b"]  # announce again
    for t in (1.0, 2.0, 3.0):
        live.peers.seen("b", t)
        live.echoed(t)
        assert live.notice("b", names_us, t) is None
    verdict = live.judge(3.0)
    assert verdict == Unheard(("b",))
    assert live.judge(3.0) is None  # the episode is over once said
    # a notice naming an older incarnation of us is not about us
    assert live.notice("b", LostNotice(7, 0, "b", (("a", 12),)), 3.5) is None


def test_a_notice_from_a_member_we_lost_too_is_no_view() -> None:
    live = liveness()
    assert live.notice("c", LostNotice(7, 0, "c", (("a", 11),)), 1.0) is None
    assert live.peers.view == 0


def test_held_frames_come_after_the_view_that_has_their_sender() -> None:
    held = HeldFrames()
    assert held.hold("b", b"one", 0.0) is True  # said once ...
    assert held.hold("b", b"two", 1.0) is False
    held.heard("b")
    assert held.hold("b", b"three", 2.0) is True  # ... and again after b was heard
    assert bool(held)
    view = MembershipChange(members=(ME,), joined=(), left=(), view=1, clean=())
    assert held.release(view, 3.0) == []  # b is not in it: still held
    b = Member(member_id="b", name="b")
    view = MembershipChange(members=(ME, b), joined=(b,), left=(), view=2, clean=())
    assert held.release(view, 5.5) == [Message("b", b"two"), Message("b", b"three")]
    assert held.dropped == 1 and not held  # "one" was older than five seconds


def test_held_frames_are_bounded_per_sender_in_senders_and_in_time() -> None:
    held = HeldFrames(seconds=5.0, frames=2, senders=2)
    for i in range(4):
        held.hold("b", bytes([i]), 0.0)
    assert held.dropped == 2  # the oldest made room
    held.hold("c", b"c", 0.0)
    assert held.hold("d", b"d", 0.0) is False and held.dropped == 3  # too many senders
    held.hold("c", b"c2", 4.0)
    nobody = MembershipChange(members=(ME,), joined=(), left=(), view=1, clean=())
    assert held.release(nobody, 6.0) == []
    assert held.dropped == 5 and bool(held)  # b's silent past five seconds: dropped
    assert held.release(nobody, 9.5) == [] and held.dropped == 7 and not held
