"""The NATS transport: one pbxmesh group over core NATS pub/sub, for multi-site meshes.

Theory of operation
-------------------
*Subjects.* A group lives under ``<prefix>.<group>`` (prefix ``pbxmesh`` by default)::

    <prefix>.<group>.frames.<member_id>   pbxmesh frames, one per message, sent by member_id
    <prefix>.<group>.hb.<member_id>       heartbeats, probes and leaves of member_id

Each member publishes only on its own two subjects, so a nats-server with per-user publish
allow-lists (``pbxmesh nats-accounts``) makes the subject an authenticated sender id. Each
member subscribes to ``<prefix>.<group>.>`` with **one** subscription: nats-py runs one delivery
task per subscription, so one subscription keeps a sender's heartbeats and frames in the order
it published them (a leave is never overtaken by the frames sent before it). The payload of a
``frames`` message is the frame exactly as the node gave it; the transport adds nothing.

*Member ids* are the configured node name escaped into one subject token
(:func:`member_token`: letters, digits, ``_`` and ``-`` stay, every other byte of the UTF-8 is
written ``%XX``), e.g. ``pbx1``, ``pbx1%2Eexample%2Ecom``. They are stable across restarts,
which is what permissions need; an incarnation number in every heartbeat tells restarts apart.

*Heartbeats* (:class:`Heartbeat`, a 15-byte header plus the name) carry a kind (ALIVE, PROBE,
LEAVE), the sender's ``instance`` (random, per transport object) and ``epoch`` (+1 on every
reconnect). Every member publishes ALIVE each ``heartbeat_interval``. A PROBE is an ALIVE that
asks everyone to answer with an ALIVE at once; it is sent on start and after each reconnect.
Frames count as signs of life too. A member silent for ``failure_timeout`` is reported as left
(``clean=False``); LEAVE reports it left at once (``clean=True``). Detection therefore takes
``failure_timeout`` plus at most one scheduling delay (default 0.5 s / 2.5 s: < 3 s).

*Views.* A new sender joins. A known member whose *instance* changed was restarted: it is
reported left (so that the node drops the origins of the old incarnation) and then joined. A
known member whose *epoch* grew has reconnected and may have missed frames: it is reported
joined again (still a member), which makes every node re-announce its snapshot. ``start()``
sends a PROBE and gathers answers for ``join_gather`` seconds, so the first view lists the
members already there (one snapshot round instead of one per member).

*Link loss and the echo watchdog.* nats-py reconnects by itself (to another server of the
pool, ``max_reconnect_attempts=-1``): ``disconnected_cb`` yields ``LinkState(up=False)``;
``reconnected_cb`` yields ``LinkState(up=True)``, bumps the epoch, resets every member's timer,
sends a PROBE and, after ``join_gather``, a fresh :class:`MembershipChange` whose ``joined``
lists every member (so the node resyncs both ways). Members that appeared meanwhile answer the
probe; members that vanished meanwhile stay silent and are reported left after
``failure_timeout``. No member is declared failed while the link is down, nor while our own
heartbeats do not come back (NATS echoes them to us): silence then says more about our server
than about the others. A server that is frozen rather than dead (no TCP reset) is caught by
that echo watchdog: no echo for ``echo_timeout`` forces a reconnect, long before nats-py's own
ping timer would (``ping_interval`` x ``max_outstanding_pings``). Silence is judged only when
it can be ours to judge: while messages wait unread in the subscription, nobody is declared
failed, and time in which our own event loop did not run us (a 100,000-item snapshot merge,
CPU starvation) is added to every timer instead of counting as silence.

*One-way paths.* Every second a member publishes a *lost notice* (a heartbeat of kind LOST)
naming the members it declared failed and has not heard since. A member that reads itself in
another's notices for ``failure_timeout`` is heard by nobody there although it hears them: its
server takes its messages but does not pass them on (nats-server 2.9's leaf-node interest
defect, docs/nats.md). It leaves that server for the next one and holds it off for 30 s, then
longer at each repeat (``servers.py``). A member declared failed is named at once, not at the
next notice: one that was only frozen or starved past ``failure_timeout`` saw no change of its
own, yet the others dropped its states. Reading itself newly named, it reports the sender
joined again, so its node announces its state again (held by the sender until it hears the
member again, then applied).

*Delivery.* ``send`` publishes on our frames subject; NATS echoes it back to us, so every
member including ourselves gets it, in per-sender FIFO (one connection, one subscription). A
lock keeps concurrent senders in call order; while reconnecting nats-py buffers up to
``pending_size`` bytes, beyond that ``send`` waits for the link and retries. Core NATS is
at-most-once: frames published by others while *we* were disconnected are lost to us, which is
why a reconnect always ends in a snapshot exchange.

*Late joiners* get the whole state from that snapshot exchange, not from a JetStream KV
bucket; docs/nats.md gives the measurements and reasons.

*Where things are.* ``config.py`` (settings, subjects); ``heartbeat.py`` (the heartbeat codec,
the :class:`~pbxmesh.transport.nats.heartbeat.PeerTable` that turns heartbeats and silence
into views, and the :class:`~pbxmesh.transport.nats.heartbeat.UnheardWatch`); ``liveness.py``
(:class:`~pbxmesh.transport.nats.liveness.Liveness`: the failure detector, its echo watchdog
and lost notices); ``held.py`` (frames of senders not yet in the view); ``servers.py`` (which
server to be on) -- all of them pure, times passed in; ``failover.py`` (the nats-py client's
connection, its errors, leaving a server and failing back); ``errors.py`` (nats-py's
exceptions); ``transport.py`` (:class:`~pbxmesh.transport.nats.NatsTransport`: start and
close, the timer, the inbound boundary, the views it reports).

*Errors.* nats-py exceptions become :mod:`pbxmesh.errors` in one place,
:func:`~pbxmesh.transport.nats.errors.translate`.
nats-py itself is imported lazily in ``start()``: the package imports without it.
"""

from .config import NatsConfig, group_subjects, member_token
from .heartbeat import Heartbeat, HeartbeatKind, PeerTable, decode_heartbeat, encode_heartbeat
from .transport import NatsTransport

__all__ = [
    "Heartbeat",
    "HeartbeatKind",
    "NatsConfig",
    "NatsTransport",
    "PeerTable",
    "decode_heartbeat",
    "encode_heartbeat",
    "group_subjects",
    "member_token",
]
