"""``servicegroup metrics``: the fleet's series printed once, parseable by
prometheus_client; an unreadable backend prints what is known, then one
line and exit 2; a missing extra is one line naming it."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from servicegroup import metrics
from servicegroup.api import ServiceGroup
from tests.cli.tools import one_line_error, run, seed


def _values(out: str) -> dict[tuple[str, str], float]:
    return {
        (s.name, s.labels.get("topic", "")): s.value
        for family in text_string_to_metric_families(out)
        for s in family.samples
    }


def test_metrics_prints_members_up_and_down_per_topic(capsys, records):
    sg = ServiceGroup(records_url=records, report_interval=1, service_down_time=30, background=False)
    try:
        sg.join("host-a", "compute")
        seed(records, "host-b")  # a record nobody runs: down
        seed(records, "host-c", topic="scheduler")
        code, out, err = run(capsys, "metrics", "--records-url", records)
    finally:
        sg.stop()
    assert code == 0, err
    got = _values(out)
    assert got[("servicegroup_members_up", "compute")] == 1
    assert got[("servicegroup_members_down", "compute")] == 1
    assert got[("servicegroup_members_down", "scheduler")] == 1


def test_metrics_topic_filter_reports_that_topic_only(capsys, records):
    seed(records, "host-b")
    seed(records, "host-c", topic="scheduler")
    code, out, err = run(capsys, "metrics", "--records-url", records, "--topic", "scheduler")
    assert code == 0, err
    assert {topic for name, topic in _values(out) if name.startswith("servicegroup_members_")} == {"scheduler"}


def test_metrics_with_an_unreachable_backend_prints_what_is_known_then_one_line(capsys, records):
    seed(records, "host-b")
    code, out, err = run(
        capsys, "metrics", "--records-url", records, "--driver", "zk", "--url", "zookeeper://127.0.0.1:1"
    )
    one_line_error(code, err)
    assert "127.0.0.1:1" in err
    got = _values(out)
    assert ("servicegroup_members_up", "compute") not in got
    assert got[("servicegroup_view_read_failures_total", "compute")] >= 1


def test_metrics_without_prometheus_client_names_the_extra(capsys, records, monkeypatch):
    monkeypatch.setattr(metrics, "prometheus_client", None)
    code, _, err = run(capsys, "metrics", "--records-url", records)
    one_line_error(code, err)
    assert "servicegroup[metrics]" in err
