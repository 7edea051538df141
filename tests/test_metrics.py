"""``/metrics`` of running nodes, parsed with prometheus_client's own text parser.

Two ``pbxmesh run`` daemons share one corosync on 127.0.0.1 in a network namespace of the
test's own (tests/harness/nodes.py), so changes go out of one node and into the other over the
real transport: the counters, the apply-latency histogram and the membership gauges are read
as Prometheus would read them.
"""

from __future__ import annotations

import http.client
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pbxmesh.metrics import REJECT_REASONS
from tests.harness.fixtures import require_corosync
from tests.harness.nodes import NodeProcess, _connect, node_group, private_loopback, wait_until

pytestmark = [pytest.mark.integration]

PORT = 18775  # inside our own netns: nothing else listens there

# family name (as the parser reports it) -> type
FAMILIES = {
    "pbxmesh_node_info": "gauge",  # an info metric: text format 0.0.4 has it as a gauge
    "pbxmesh_changes_in": "counter",
    "pbxmesh_changes_out": "counter",
    "pbxmesh_frames_in": "counter",
    "pbxmesh_frames_out": "counter",
    "pbxmesh_rejected_frames": "counter",
    "pbxmesh_resyncs": "counter",
    "pbxmesh_snapshots_merged": "counter",
    "pbxmesh_last_resync_seconds": "gauge",
    "pbxmesh_members": "gauge",
    "pbxmesh_quorate": "gauge",
    "pbxmesh_view": "gauge",
    "pbxmesh_transport_up": "gauge",
    "pbxmesh_transport_reconnects": "counter",
    "pbxmesh_devices": "gauge",
    "pbxmesh_mailboxes": "gauge",
    "pbxmesh_presentities": "gauge",
    "pbxmesh_presence_changes": "counter",
    "pbxmesh_queue_depth": "gauge",
    "pbxmesh_asterisk_up": "gauge",
    "pbxmesh_asterisk_reconnects": "counter",
    "pbxmesh_asterisk_resyncs": "counter",
    "pbxmesh_asterisk_protocol_errors": "counter",
    "pbxmesh_asterisk_dropped_events": "counter",
    "pbxmesh_event_rate": "gauge",
    "pbxmesh_event_clients": "gauge",
    "pbxmesh_apply_latency_seconds": "histogram",
}


class Scrape:
    """One parsed scrape: ``value(sample_name, **labels)``."""

    def __init__(self, text: str) -> None:
        self.families = {f.name: f for f in text_string_to_metric_families(text)}

    def value(self, sample: str, **labels: str) -> float:
        for family in self.families.values():
            for s in family.samples:
                if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
                    return float(s.value)
        raise KeyError(f"no sample {sample} {labels} in the scrape")


def scrape(node: NodeProcess) -> Scrape:
    conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=10)
    conn.sock = _connect(node.netns, "127.0.0.1", node.port, 10)
    try:
        conn.request("GET", "/metrics")
        resp = conn.getresponse()
        body = resp.read().decode()
        assert resp.status == 200, body
        assert resp.getheader("Content-Type", "").startswith("text/plain")
        return Scrape(body)
    finally:
        conn.close()


@pytest.fixture(scope="module")
def nodes() -> Iterator[list[NodeProcess]]:
    require_corosync()
    with (
        private_loopback() as coro,
        node_group([("m-a", coro.netns), ("m-b", coro.netns)], base_port=PORT) as group,
    ):
        for n in group:
            n.start()
        wait_until(lambda: all(len(n.members()) == 2 for n in group), 30, "both nodes in view")
        yield group


def test_every_family_is_exported_with_its_type(nodes: list[NodeProcess]) -> None:
    m = scrape(nodes[0])
    types = {name: f.type for name, f in m.families.items()}
    missing = {k: v for k, v in FAMILIES.items() if types.get(k) != v}
    assert not missing, f"missing or of the wrong type: {missing}; got {sorted(types)}"
    for name in m.families:
        assert name.startswith("pbxmesh_"), name


def test_node_info_and_membership(nodes: list[NodeProcess]) -> None:
    a = nodes[0]
    m = scrape(a)
    assert m.value("pbxmesh_node_info", name="m-a", eid=a.eid(), transport="corosync") == 1
    assert m.value("pbxmesh_members") == 2
    assert m.value("pbxmesh_quorate") == 1
    assert m.value("pbxmesh_view") > 0
    assert m.value("pbxmesh_transport_up") == 1
    assert m.value("pbxmesh_transport_reconnects_total") == 0
    assert m.value("pbxmesh_resyncs_total") >= 1
    assert m.value("pbxmesh_snapshots_merged_total") >= 1
    assert m.value("pbxmesh_last_resync_seconds") >= 0
    assert m.value("pbxmesh_queue_depth", queue="cluster_out") >= 0
    assert m.value("pbxmesh_queue_depth", queue="events_out") == 0
    assert m.value("pbxmesh_event_clients") == 0
    # No [asterisk] section: the AMI families are declared, with no sample.
    assert not m.families["pbxmesh_asterisk_up"].samples


def test_channels_and_reject_reasons_start_at_zero(nodes: list[NodeProcess]) -> None:
    m = scrape(nodes[0])
    labels = {"channel": "device_state", "transport": "corosync"}
    for name in ("pbxmesh_changes_in", "pbxmesh_changes_out", "pbxmesh_frames_in"):
        assert m.value(f"{name}_total", **labels) >= 0
    for reason in REJECT_REASONS:
        assert m.value("pbxmesh_rejected_frames_total", reason=reason) == 0


def test_changes_are_counted_out_and_in_with_latency(nodes: list[NodeProcess]) -> None:
    a, b = nodes
    labels = {"channel": "device_state", "transport": "corosync"}
    out0 = scrape(a).value("pbxmesh_changes_out_total", **labels)
    before = scrape(b)
    in0 = before.value("pbxmesh_changes_in_total", **labels)
    lat0 = before.value("pbxmesh_apply_latency_seconds_count")
    for i in range(5):
        a.publish_device(f"Custom:metric{i}", "INUSE")
    a.publish_mwi("2000@default", 2, 0)

    def counted() -> tuple[Scrape, Scrape] | None:
        ma, mb = scrape(a), scrape(b)
        done = (
            ma.value("pbxmesh_changes_out_total", **labels) >= out0 + 6
            and mb.value("pbxmesh_changes_in_total", **labels) >= in0 + 6
        )
        return (ma, mb) if done else None

    (ma, mb), _ = wait_until(counted, 10, "changes counted on both nodes", 0.05)
    assert ma.value("pbxmesh_frames_out_total", **labels) >= 1
    assert mb.value("pbxmesh_frames_in_total", **labels) >= 1
    assert mb.value("pbxmesh_apply_latency_seconds_count") > lat0
    # On loopback a change is applied well within a second of its origin.
    assert mb.value("pbxmesh_apply_latency_seconds_bucket", le="1.0") > 0
    assert mb.value("pbxmesh_devices") >= 5
    assert mb.value("pbxmesh_mailboxes") >= 1
    assert ma.value("pbxmesh_event_rate") >= 0


def test_event_clients_count_open_pages(nodes: list[NodeProcess]) -> None:
    a = nodes[0]
    conn = http.client.HTTPConnection("127.0.0.1", a.port, timeout=10)
    conn.sock = _connect(a.netns, "127.0.0.1", a.port, 10)
    try:
        conn.request("GET", "/api/v1/events")
        resp = conn.getresponse()
        assert resp.getheader("Content-Type") == "text/event-stream"
        assert resp.readline().startswith(b"retry:")  # the stream stays open: one line
        wait_until(lambda: scrape(a).value("pbxmesh_event_clients") == 1, 5, "one events client")
    finally:
        conn.close()
    wait_until(lambda: scrape(a).value("pbxmesh_event_clients") == 0, 5, "no events client")
