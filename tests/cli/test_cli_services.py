"""The records commands: service-list's columns and formatters,
service-delete withdrawing membership, and the rule that only the commands
that create services may create the records database (a typo is an error).

Runs on the embedded default (SQLite records and SQLite liveness): no server.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys

import pytest
import yaml

from servicegroup.api import ServiceGroup
from servicegroup.cli import output
from tests.cli.tools import one_line_error, run, seed

TIMINGS = ("--report-interval", "1", "--service-down-time", "30")


@pytest.fixture
def member(records):
    """host-a (nova-compute) joined to compute; host-b disabled, both on the
    records database of *records*. No heartbeat thread: the membership entry
    is only ever removed by what the test does."""
    sg = ServiceGroup(records_url=records, report_interval=1, service_down_time=30, background=False)
    sg.join("host-a", "compute", binary="nova-compute")
    sg.join("host-b", "compute", binary="nova-compute")
    sg.disable("host-b", "compute", reason="maintenance")
    yield sg
    sg.stop()


def listing(capsys, records, *argv: str) -> tuple[int, str, str]:
    return run(capsys, "service-list", "--records-url", records, *TIMINGS, *argv)


def cells(table: str) -> list[list[str]]:
    """The header and rows of a printed table, as lists of cell texts."""
    return [[c.strip() for c in line.strip("|").split("|")] for line in table.splitlines() if line.startswith("|")]


# -- service-list: OpenStack's columns, cliff's formatters ---------------------


def test_table_has_the_columns_of_openstack_compute_service_list(capsys, records, member):
    code, out, err = listing(capsys, records)
    assert code == 0, err
    header, *rows = cells(out)
    assert header == [
        "ID",
        "Binary",
        "Host",
        "Topic",
        "Status",
        "State",
        "Updated At",
        "Forced Down",
        "Disabled Reason",
    ]
    shown = {r[2]: dict(zip(header, r, strict=True)) for r in rows}
    assert shown["host-b"]["Status"] == "disabled" and shown["host-b"]["State"] == "up"
    assert shown["host-b"]["Disabled Reason"] == "maintenance" and shown["host-b"]["Forced Down"] == "False"
    assert shown["host-a"]["Status"] == "enabled" and shown["host-a"]["Binary"] == "nova-compute"


def test_json_keeps_the_old_keys_and_adds_the_new_columns(capsys, records, member):
    code, out, _ = listing(capsys, records, "-f", "json")
    assert code == 0
    rows = {r["host"]: r for r in json.loads(out)}
    b = rows["host-b"]
    # Keys scripts read before the columns took OpenStack's names ...
    assert (b["topic"], b["binary"], b["state"], b["forced_down"], b["disabled"]) == (
        "compute",
        "nova-compute",
        "up",
        False,
        True,
    )
    assert b["disabled_reason"] == "maintenance" and b["updated_at"]
    # ... and the new ones, snake_case.
    assert b["status"] == "disabled" and rows["host-a"]["status"] == "enabled"
    assert isinstance(b["id"], int) and b["id"] != rows["host-a"]["id"]


def test_format_is_an_alias_of_f(capsys, records, member):
    assert listing(capsys, records, "--format", "json")[1] == listing(capsys, records, "-f", "json")[1]


def test_c_selects_columns_by_display_or_snake_case_name(capsys, records, member):
    code, out, _ = listing(capsys, records, "-f", "json", "-c", "Host", "-c", "updated_at")
    assert code == 0
    assert [sorted(r) for r in json.loads(out)] == [["host", "updated_at"]] * 2
    code, out, _ = listing(capsys, records, "-f", "value", "-c", "Host", "-c", "State")
    assert out.split() == ["host-a", "up", "host-b", "up"]


def test_csv_uses_the_display_names(capsys, records, member):
    code, out, _ = listing(capsys, records, "-f", "csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0]) == list(output.COLUMNS)
    assert {r["Host"]: r["Status"] for r in rows} == {"host-a": "enabled", "host-b": "disabled"}


def test_yaml_rows_are_the_json_rows(capsys, records, member):
    as_yaml = yaml.safe_load(listing(capsys, records, "-f", "yaml")[1])
    as_json = json.loads(listing(capsys, records, "-f", "json")[1])
    strip = lambda rows: [{k: v for k, v in r.items() if k != "updated_at"} for r in rows]  # noqa: E731
    assert strip(as_yaml) == strip(as_json)


def test_forced_down_shows_down_and_true(capsys, records, member):
    member.force_down("host-a", "compute")
    rows = {r["host"]: r for r in json.loads(listing(capsys, records, "-f", "json")[1])}
    assert (rows["host-a"]["state"], rows["host-a"]["forced_down"]) == ("down", True)


def test_topic_filters_the_listing(capsys, records, member):
    seed(records, "host-z", topic="conductor")
    hosts = [r["host"] for r in json.loads(listing(capsys, records, "-f", "json", "--topic", "conductor")[1])]
    assert hosts == ["host-z"]


def test_unknown_column_is_a_usage_error_before_any_connection(capsys, missing):
    code, _, err = run(capsys, "service-list", "--records-url", missing, "-c", "Zone")
    one_line_error(code, err)
    assert "'Zone' is not a column" in err and "Disabled Reason" in err


# -- service-delete ----------------------------------------------------------


def test_service_delete_removes_the_record_and_withdraws_membership(capsys, records, member):
    code, out, err = run(
        capsys, "service-delete", "--host", "host-a", "--topic", "compute", "--records-url", records, *TIMINGS
    )
    assert code == 0, err
    assert "host-a compute: deleted; membership withdrawn" in out
    observer = ServiceGroup(records_url=records, report_interval=1, service_down_time=30, background=False)
    try:
        # Before, the member entry outlived its record: get_all listed host-a, is_up was True.
        assert observer.get_all("compute") == ["host-b"]
        assert not observer.is_up(topic="compute", host="host-a")
        assert [s.host for s in observer.services("compute")] == ["host-b"]
    finally:
        observer.stop()


def test_service_delete_of_a_crashed_member_needs_no_membership(capsys, records):
    seed(records, "host-gone")  # a record whose member never joined (or expired long ago)
    code, out, err = run(
        capsys, "service-delete", "--host", "host-gone", "--topic", "compute", "--records-url", records
    )
    assert code == 0, err
    assert json.loads(run(capsys, "service-list", "--records-url", records, "-f", "json")[1]) == []


def test_service_delete_of_no_record_is_service_not_found(capsys, records):
    code, _, err = run(capsys, "service-delete", "--host", "nobody", "--topic", "compute", "--records-url", records)
    one_line_error(code, err)
    assert "ServiceNotFound" in err and "'nobody'" in err


def test_service_delete_with_an_unreachable_backend_deletes_nothing(capsys, records):
    seed(records, "host-a")
    code, _, err = run(
        capsys,
        "service-delete",
        "--host",
        "host-a",
        "--topic",
        "compute",
        "--records-url",
        records,
        "--driver",
        "redis://127.0.0.1:1",
    )
    one_line_error(code, err)
    assert "BackendUnavailable" in err
    code, out, _ = run(capsys, "service-list", "--records-url", records, "-f", "json", "-c", "host")
    assert json.loads(out) == [{"host": "host-a"}]


# -- typos are not silent ----------------------------------------------------

READ_OR_UPDATE = [
    ["service-list"],
    ["service-delete", "--host", "h", "--topic", "compute"],
    ["force-down", "--host", "h", "--topic", "compute"],
    ["enable", "--host", "h", "--topic", "compute"],
    ["disable", "--host", "h", "--topic", "compute"],
    ["watch", "--topic", "compute", "--timeout", "1"],
]


@pytest.mark.parametrize("argv", READ_OR_UPDATE, ids=lambda a: a[0])
def test_a_mistyped_records_path_is_refused_not_created(capsys, missing, argv):
    code, out, err = run(capsys, *argv, "--records-url", missing)
    one_line_error(code, err)
    path = missing.removeprefix("sqlite:///")
    assert f"records database {path} does not exist" in err and "servicegroup db-sync" in err
    assert out == ""
    assert not os.path.exists(path)


@pytest.mark.parametrize("argv", READ_OR_UPDATE, ids=lambda a: a[0])
def test_a_records_database_without_the_schema_is_refused(capsys, tmp_path, argv):
    empty = tmp_path / "empty.sqlite"
    empty.touch()
    code, _, err = run(capsys, *argv, "--records-url", f"sqlite:///{empty}")
    one_line_error(code, err)
    assert f"records database {empty} has no services table" in err and "db-sync" in err


def test_the_global_form_of_records_url_is_checked_too(capsys, missing):
    code, _, err = run(capsys, "--records-url", missing, "service-list")
    one_line_error(code, err)
    assert "does not exist" in err


def test_db_sync_creates_the_database_the_others_then_use(capsys, missing):
    assert run(capsys, "db-sync", "--records-url", missing)[0] == 0
    code, out, err = run(capsys, "service-list", "--records-url", missing, "-f", "json")
    assert (code, json.loads(out), err) == (0, [], "")


def test_join_creates_the_database_and_leaves_on_sigterm(missing):
    """join may create the records database; SIGTERM ends it with exit 0
    after leaving (its record stays, shown down)."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "servicegroup",
            "join",
            "--host",
            "host-j",
            "--topic",
            "compute",
            "--records-url",
            missing,
            *TIMINGS,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = proc.stdout.readline()
        assert first.startswith("joined compute as host-j"), first + proc.stderr.read()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    observer = ServiceGroup(records_url=missing, report_interval=1, service_down_time=30, background=False)
    try:
        (svc,) = observer.services("compute")
        assert svc.host == "host-j" and svc.up is False  # left, not expired: no wait
    finally:
        observer.stop()
