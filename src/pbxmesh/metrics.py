"""Prometheus metrics for one node, served at ``/metrics`` on the control listener.

Counters and gauges are read from the node, transport and Asterisk link when scraped (a
custom collector: nothing is counted twice, nothing is updated on the hot path); the apply
latency is a histogram fed by the node for every applied frame. Each daemon has its own
registry, so several nodes in one process (tests, the demo) do not mix.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from .daemon import Daemon

__all__ = ["Metrics"]


class Metrics(Collector):
    """The node's metrics registry."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.control: Any = None
        self.registry = CollectorRegistry(auto_describe=False)
        self.latency = Histogram(
            "pbxmesh_apply_latency_seconds",
            "Time from a change's origin (its version's clock) to its application here",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=self.registry,
        )
        self.registry.register(self)
        daemon.node.latency_observer = self.latency.observe

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def collect(self) -> Iterator[Any]:
        node = self.daemon.node
        stats = node.stats
        kind = node.transport.kind
        for name, doc, values in (
            ("pbxmesh_changes_in", "Changes received, per channel", stats.changes_in),
            ("pbxmesh_changes_out", "Changes sent, per channel", stats.changes_out),
            ("pbxmesh_frames_in", "Frames accepted, per channel", stats.frames_in),
            ("pbxmesh_frames_out", "Frames sent, per channel", stats.frames_out),
        ):
            c = CounterMetricFamily(name, doc, labels=["channel", "transport"])
            for channel, n in sorted(values.items()):
                c.add_metric([channel, kind], n)
            yield c
        rejected = CounterMetricFamily(
            "pbxmesh_rejected_frames", "Frames rejected, by reason", labels=["reason"]
        )
        for reason, n in sorted(stats.rejected.items()):
            rejected.add_metric([reason], n)
        yield rejected
        yield CounterMetricFamily(
            "pbxmesh_resyncs",
            "Resynchronisations (membership changes with joins)",
            value=stats.resyncs,
        )
        yield CounterMetricFamily(
            "pbxmesh_snapshots_merged",
            "Complete snapshots merged from other origins",
            value=stats.snapshots_merged,
        )
        yield GaugeMetricFamily(
            "pbxmesh_last_resync_seconds",
            "Duration of the last resync (to the last snapshot)",
            value=stats.last_resync_seconds,
        )
        members = node.members()
        yield GaugeMetricFamily(
            "pbxmesh_members", "Members in the current view", value=len(members)
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
            "Times the engine link came back up",
            value=stats.link_changes // 2,
        )
        yield GaugeMetricFamily(
            "pbxmesh_devices", "Devices with a cluster value", value=len(node.devices)
        )
        yield GaugeMetricFamily("pbxmesh_mailboxes", "Mailboxes known", value=len(node.mwi))
        queues = GaugeMetricFamily(
            "pbxmesh_queue_depth", "Items waiting, per queue", labels=["queue"]
        )
        queues.add_metric(["cluster_out"], node.queue_depth)
        bridge = self.daemon.bridge
        if bridge is not None:
            queues.add_metric(["asterisk_out"], getattr(bridge, "queue_depth", 0))
        yield queues
        up = GaugeMetricFamily("pbxmesh_asterisk_up", "1 if the AMI link is up")
        reconnects = CounterMetricFamily(
            "pbxmesh_asterisk_reconnects", "AMI (re)connections after the first"
        )
        if bridge is not None:
            up.add_metric([], 1 if bridge.client.connected else 0)
            reconnects.add_metric([], max(0, bridge.resyncs - 1))
        yield up
        yield reconnects
        if self.control is not None:
            yield GaugeMetricFamily(
                "pbxmesh_event_rate",
                "Cluster changes per second (10 s)",
                value=self.control.rate.value(),
            )
