"""The Prometheus metrics of a ServiceGroup, on the in-memory backend:
values that match the fleet, events and failures counted, no credential
in any label, an own registry, and a typed error without the extra."""

from __future__ import annotations

import socket
import threading
import urllib.request

import prometheus_client
from prometheus_client.parser import text_string_to_metric_families
import pytest

from servicegroup import errors
from servicegroup import metrics
from servicegroup.api import ServiceGroup
from servicegroup.conf import Settings
from servicegroup.heartbeat import MEMBERSHIP_LOST, MEMBERSHIP_RESTORED
from tests.fakes import TTL


def samples(text: str | bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(sample name, sorted labels) -> value of a Prometheus text exposition."""
    if isinstance(text, bytes):
        text = text.decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(text: str | bytes, name: str, **labels: str) -> float | None:
    return samples(text).get((name, tuple(sorted(labels.items()))))


def test_members_up_and_down_per_topic_match_the_records_and_liveness(make_sg):
    sg = make_sg()
    sg.join("host-a", "compute")
    sg.join("host-b", "compute")
    sg.join("host-c", "scheduler")
    sg.force_down("host-b", "compute")
    text = sg.metrics.exposition()
    assert value(text, "servicegroup_members_up", topic="compute") == 1
    assert value(text, "servicegroup_members_down", topic="compute") == 1
    assert value(text, "servicegroup_members_up", topic="scheduler") == 1
    assert value(text, "servicegroup_members_down", topic="scheduler") == 0


def test_a_dead_member_moves_from_up_to_down(make_sg, clock):
    sg = make_sg()
    sg.join("host-a", "compute")
    sg.join("host-b", "compute")
    assert value(sg.metrics.exposition(), "servicegroup_members_up", topic="compute") == 2
    sg._members["host-b"].stop()  # host-b leaves; host-a keeps beating
    clock.advance(1)
    sg.heartbeat("host-a")
    text = sg.metrics.exposition()
    assert value(text, "servicegroup_members_up", topic="compute") == 1
    assert value(text, "servicegroup_members_down", topic="compute") == 1


def test_membership_lost_and_restored_events_are_counted(make_sg, server):
    sg = make_sg()
    sg.join("host-a", "compute")
    server.restart()  # every key gone: the heartbeat re-joins and reports it
    sg.heartbeat()
    text = sg.metrics.exposition()
    for event in (MEMBERSHIP_LOST, MEMBERSHIP_RESTORED):
        assert value(text, "servicegroup_membership_events_total", event=event, topic="compute", host="host-a") == 1


def test_read_failures_are_counted_and_unknown_liveness_has_no_up_series(make_sg, server, clock):
    sg = make_sg()
    sg.join("host-a", "compute")
    assert value(sg.metrics.exposition(), "servicegroup_members_up", topic="compute") == 1
    server.down = True
    clock.advance(TTL + 1)  # past service_down_time: the view no longer vouches
    text = sg.metrics.exposition()
    assert value(text, "servicegroup_view_read_failures_total", topic="compute") >= 1
    # Not "0 up": an absent series, since nobody can tell.
    assert value(text, "servicegroup_members_up", topic="compute") is None
    assert value(text, "servicegroup_view_staleness_seconds", topic="compute") >= TTL


def test_round_trips_per_read_are_observed(make_sg):
    sg = make_sg(driver="redis")  # the fake lists a group in one call
    sg.join("host-a", "compute")
    sg.join("host-b", "compute")
    text = sg.metrics.exposition()
    reads = value(text, "servicegroup_view_read_round_trips_count", topic="compute")
    trips = value(text, "servicegroup_view_read_round_trips_sum", topic="compute")
    assert reads and reads >= 1
    assert trips == reads


def test_heartbeat_thread_reports_each_cycle(make_sg):
    sg = make_sg(background=True, report_interval=0.05, service_down_time=TTL, max_staleness=0.02)
    beat = threading.Event()
    sg.join("host-a", "compute")
    member = sg._members["host-a"]
    recorded = member.on_beat
    assert recorded is not None

    def observe(host: str, seconds: float, ok: bool) -> None:
        recorded(host, seconds, ok)
        beat.set()

    member.on_beat = observe
    assert beat.wait(timeout=100 * sg.settings.report_interval)
    assert value(sg.metrics.exposition(), "servicegroup_heartbeat_seconds_count", host="host-a") >= 1


def test_heartbeat_failures_count_per_host():
    m = metrics.Metrics(lambda topic: [], lambda topic: None, dict, driver="zookeeper")
    m.heartbeat("host-a", 0.01, True)
    m.heartbeat("host-a", 5.0, False)
    text = m.exposition()
    assert value(text, "servicegroup_heartbeat_failures_total", host="host-a") == 1
    assert value(text, "servicegroup_heartbeat_seconds_count", host="host-a") == 1


def test_no_credential_in_any_label(tmp_path):
    sg = ServiceGroup(
        driver="redis",
        url="redis://:s3cretpw@127.0.0.1:1/?password=tok3n",
        records_url=f"sqlite:///{tmp_path / 'r.sqlite'}",
        report_interval=1,
        service_down_time=3,
        background=False,
    )
    try:
        text = sg.metrics.exposition().decode()
        assert value(text, "servicegroup_backend_info", driver="redis") == 1
        assert "s3cretpw" not in text and "tok3n" not in text
    finally:
        sg.stop()


def test_each_group_has_its_own_registry_not_the_global_one(make_sg):
    a, b = make_sg(), make_sg()
    assert a.metrics.registry is not b.metrics.registry
    assert b"servicegroup_" not in prometheus_client.generate_latest(prometheus_client.REGISTRY)


def test_metrics_port_serves_the_exposition_over_http(make_sg):
    sg = make_sg(metrics_port=0)
    sg.join("host-a", "compute")
    port = sg.metrics.serve(0)  # already serving: the port bound
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        body = resp.read()
    assert value(body, "servicegroup_members_up", topic="compute") == 1


def test_a_metrics_port_in_use_is_a_config_error_naming_it(make_sg):
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(errors.ConfigError, match=f"metrics_port {port}"):
            make_sg(metrics_port=port)


@pytest.mark.parametrize("port", [-1, 65536, "9100", True])
def test_a_metrics_port_out_of_range_is_refused(port):
    with pytest.raises(errors.ConfigError, match="metrics_port"):
        Settings(metrics_port=port)


def test_metrics_port_is_read_from_the_config_file(tmp_path):
    path = tmp_path / "sg.conf"
    path.write_text("[servicegroup]\nmetrics_port = 9180\n")
    assert Settings.from_file(str(path)).metrics_port == 9180
    path.write_text("[servicegroup]\n")
    assert Settings.from_file(str(path)).metrics_port is None  # off by default


def test_without_prometheus_client_recording_is_a_noop_and_exposition_names_the_extra(monkeypatch):
    monkeypatch.setattr(metrics, "prometheus_client", None)
    m = metrics.Metrics(lambda topic: [], lambda topic: None, dict, driver="zookeeper")
    m.heartbeat("host-a", 0.1, True)
    m.event(MEMBERSHIP_LOST, "compute", "host-a")
    m.read("compute", 1, True)
    with pytest.raises(errors.MissingExtra, match=r"servicegroup\[metrics\]"):
        m.exposition()
    with pytest.raises(ImportError):  # what code unaware of this library catches
        m.serve(0)
