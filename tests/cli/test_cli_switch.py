"""``servicegroup driver-status``: per topic, who is in the new backend yet,
with the exit code the runbook waits on (0 all there, 1 some missing, 2
errors). Two SQLite liveness backends stand in for old and new: no server.
"""

from __future__ import annotations

import json

import pytest

from servicegroup.api import ServiceGroup
from tests.cli.tools import one_line_error, run

TIMINGS = ("--report-interval", "1", "--service-down-time", "30")


@pytest.fixture
def old(tmp_path) -> str:
    """The old backend: SQL liveness in a SQLite file of its own."""
    return f"sql+sqlite:///{tmp_path / 'old.sqlite'}"


@pytest.fixture
def fleet(records, old):
    """Make members: ``fleet(host, driver=..., previous=...)``; the new
    backend is ``db`` (liveness in the records database)."""
    made = []

    def join(host, driver="db", previous=None, topic="compute"):
        sg = ServiceGroup(
            driver=driver,
            previous_driver=previous,
            records_url=records,
            report_interval=1,
            service_down_time=30,
            background=False,
        )
        sg.join(host, topic)
        made.append(sg)

    yield join
    for sg in made:
        sg.stop()


def status(capsys, records, old, *argv: str) -> tuple[int, str, str]:
    return run(capsys, "driver-status", "--records-url", records, "--previous-driver", old, *TIMINGS, *argv)


def test_exit_1_and_the_missing_hosts_while_some_live_service_is_only_in_the_old_backend(capsys, records, old, fleet):
    fleet("not-yet", driver=old)  # still on the old driver only
    fleet("switching", previous=old)  # new driver, previous set: in both
    fleet("done")  # new driver only
    code, out, err = status(capsys, records, old, "-f", "json")
    assert code == 1, err
    assert json.loads(out) == [{"topic": "compute", "new": 2, "old": 2, "both": 1, "missing_from_new": ["not-yet"]}]
    assert "1 live service(s) not in the new backend" in err


def test_exit_0_once_every_live_service_is_in_the_new_backend(capsys, records, old, fleet):
    fleet("switching", previous=old)
    fleet("done")
    fleet("other", previous=old, topic="scheduler")
    code, out, err = status(capsys, records, old, "-f", "value")
    assert code == 0, err
    assert out.splitlines() == ["compute 2 1 1 ", "scheduler 1 1 1 "]


def test_topic_option_reports_one_topic(capsys, records, old, fleet):
    fleet("a", driver=old)
    fleet("b", topic="scheduler")
    code, out, _ = status(capsys, records, old, "--topic", "scheduler", "-f", "csv")
    assert code == 0
    assert out.splitlines()[1:] == ['"scheduler",1,0,0,""']


def test_table_lists_missing_hosts_in_one_cell(capsys, records, old, fleet):
    fleet("h1", driver=old)
    fleet("h2", driver=old)
    code, out, _ = status(capsys, records, old)
    assert code == 1
    assert "Missing From New" in out and "h1, h2" in out


def test_without_previous_driver_it_is_a_one_line_error(capsys, records, fleet):
    fleet("a")
    code, _, err = run(capsys, "driver-status", "--records-url", records, *TIMINGS)
    one_line_error(code, err)
    assert "previous_driver is not set" in err


def test_an_unreadable_old_backend_is_an_error_not_a_guess(capsys, records, tmp_path, fleet):
    fleet("a")
    unreadable = f"sql+sqlite:///{tmp_path / 'no-such-dir' / 'old.sqlite'}"
    code, _, err = status(capsys, records, unreadable)
    one_line_error(code, err)
    assert "cannot tell where 'compute' is listed" in err
