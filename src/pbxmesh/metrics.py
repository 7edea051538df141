"""Prometheus metrics for one node, served at ``/metrics`` on the control listener.

Counters and gauges are read from the node, transport and links to Asterisk when scraped (a
custom collector: nothing is counted twice, nothing is updated on the hot path); the apply
latency is a histogram fed by the node for every applied frame. Each daemon has its own
registry, so several nodes in one process (tests, the demo) do not mix. Label sets that are
known in advance (configured channels, rejection reasons) are exported at 0 from the first
scrape, so ``rate()`` and alerts work before anything happened. docs/web.md lists every metric.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Final

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from . import __version__
from .links.base import Link
from .node import Node

if TYPE_CHECKING:
    from .control import ControlServer

__all__ = ["REJECT_REASONS", "Metrics"]

#: The reasons a frame is rejected (node.py and security.py); each is exported from the first
#: scrape at 0. A reason not listed here still appears once it is counted.
REJECT_REASONS: Final = (
    "bad-signature",
    "duplicate-eid",
    "malformed",
    "replay",
    "unauthorised",
    "unknown-origin",
    "unsigned",
    "wrong-origin",
)


class Metrics(Collector):
    """The node's metrics registry."""

    def __init__(self, node: Node, links: Callable[[], list[Link]] = lambda: []) -> None:
        self.node = node
        #: the node's links to Asterisk, read at each scrape (a reload replaces them)
        self.links = links
        self.control: ControlServer | None = None
        self.registry = CollectorRegistry(auto_describe=False)
        self.latency = Histogram(
            "pbxmesh_apply_latency_seconds",
            "Time from a change's origin (its version's clock) to its application here",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=self.registry,
        )
        self.registry.register(self)
        node.latency_observer = self.latency.observe

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def collect(self) -> Iterator[Any]:
        node = self.node
        stats = node.reads.stats
        kind = node.transport.kind
        yield InfoMetricFamily(
            "pbxmesh_node",
            "This node: name, entity id, transport and version",
            value={
                "name": node.config.name,
                "eid": str(node.eid),
                "transport": kind,
                "version": __version__,
            },
        )
        # Every configured channel appears from the first scrape (at 0), so rate() and alerts
        # work before the first change; a channel removed by a reload keeps its counts.
        channels = [c.name for c in node.channels()]
        for name, doc, values in (
            ("pbxmesh_changes_in", "Changes received and applied, per channel", stats.changes_in),
            ("pbxmesh_changes_out", "Changes sent, per channel", stats.changes_out),
            ("pbxmesh_frames_in", "Frames accepted, per channel", stats.frames_in),
            ("pbxmesh_frames_out", "Frames sent, per channel", stats.frames_out),
        ):
            c = CounterMetricFamily(name, doc, labels=["channel", "transport"])
            for channel in sorted(set(values) | set(channels)):
                c.add_metric([channel, kind], values.get(channel, 0))
            yield c
        rejected = CounterMetricFamily(
            "pbxmesh_rejected_frames", "Frames rejected, by reason", labels=["reason"]
        )
        for reason in sorted(set(stats.rejected) | set(REJECT_REASONS)):
            rejected.add_metric([reason], stats.rejected.get(reason, 0))
        yield rejected
        yield CounterMetricFamily(
            "pbxmesh_resyncs",
            "Resynchronisations: membership changes with joins (each re-announces our state)",
            value=stats.resyncs,
        )
        yield CounterMetricFamily(
            "pbxmesh_snapshots_merged",
            "Complete snapshots merged from other origins",
            value=stats.snapshots_merged,
        )
        yield GaugeMetricFamily(
            "pbxmesh_last_resync_seconds",
            "Duration of the last resync: from the join to the last snapshot merged",
            value=stats.last_resync_seconds,
        )
        members = node.members()
        yield GaugeMetricFamily(
            "pbxmesh_members",
            "Members in the current view that are up, this node included",
            value=sum(1 for m in members if m.member),
        )
        yield GaugeMetricFamily(
            "pbxmesh_quorate", "1 if the cluster is quorate", value=1 if node.quorate else 0
        )
        yield GaugeMetricFamily("pbxmesh_view", "Membership view number", value=node.view)
        yield GaugeMetricFamily(
            "pbxmesh_transport_up", "1 if the engine link is up", value=1 if stats.link_up else 0
        )
        yield CounterMetricFamily(
            "pbxmesh_transport_reconnects",
            "Times the engine link came back up after going down",
            value=stats.link_changes // 2,  # each reconnect is one down and one up
        )
        yield GaugeMetricFamily(
            "pbxmesh_devices", "Devices with a cluster value", value=node.reads.device_count
        )
        yield GaugeMetricFamily(
            "pbxmesh_mailboxes", "Mailboxes known", value=node.reads.mailbox_count
        )
        yield GaugeMetricFamily(
            "pbxmesh_presentities", "Presentities known", value=node.reads.presentity_count
        )
        yield CounterMetricFamily(
            "pbxmesh_presence_changes",
            "Presence changes applied here (a presentity's state, subtype or message), any origin",
            value=stats.presence_changes,
        )
        links = [link.status() for link in self.links()]
        queues = GaugeMetricFamily(
            "pbxmesh_queue_depth", "Items waiting to be sent, per queue", labels=["queue"]
        )
        queues.add_metric(["cluster_out"], node.queue_depth)
        if links:
            queues.add_metric(["asterisk_out"], sum(st.queue_depth for st in links))
        control = self.control
        if control is not None:
            queues.add_metric(["events_out"], control.events_backlog())
        yield queues
        # One sample per link to Asterisk, labelled with its kind ("ami"); none without one.
        up = GaugeMetricFamily(
            "pbxmesh_asterisk_up",
            "1 if the link to Asterisk is connected (absent without [asterisk])",
            labels=["link"],
        )
        reconnects = CounterMetricFamily(
            "pbxmesh_asterisk_reconnects",
            "Connections to Asterisk made after the first",
            labels=["link"],
        )
        resyncs = CounterMetricFamily(
            "pbxmesh_asterisk_resyncs",
            "Complete resyncs with Asterisk (one per connection)",
            labels=["link"],
        )
        ami_errors = CounterMetricFamily(
            "pbxmesh_asterisk_protocol_errors",
            "Malformed messages from Asterisk dropped",
            labels=["link"],
        )
        ami_dropped = CounterMetricFamily(
            "pbxmesh_asterisk_dropped_events",
            "Asterisk events dropped because the queue was full",
            labels=["link"],
        )
        for st in links:
            up.add_metric([st.kind], 1 if st.connected else 0)
            reconnects.add_metric([st.kind], st.reconnects)
            resyncs.add_metric([st.kind], st.resyncs)
            ami_errors.add_metric([st.kind], st.protocol_errors)
            ami_dropped.add_metric([st.kind], st.dropped_events)
        yield from (up, reconnects, resyncs, ami_errors, ami_dropped)
        if control is not None:
            yield GaugeMetricFamily(
                "pbxmesh_event_rate",
                "Cluster changes per second, averaged over the last 10 s",
                value=control.rate.value(),
            )
            yield GaugeMetricFamily(
                "pbxmesh_event_clients",
                "Open /api/v1/events streams (lamp pages)",
                value=control.event_clients(),
            )
