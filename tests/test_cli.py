"""The operator CLI: one-line errors, machine-readable listings, config files.

Runs on the embedded default (SQLite records and SQLite liveness): no server.
"""

from __future__ import annotations

import json

from oslo_config import cfg
import pytest

from servicegroup import cli
from servicegroup import conf as sg_conf
from servicegroup.api import ServiceGroup


@pytest.fixture
def records(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'records.sqlite'}"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_service_list_json_has_the_documented_fields(capsys, records):
    sg = ServiceGroup(records_url=records, report_interval=1, service_down_time=3)
    try:
        sg.join("host-a", "compute", binary="nova-compute")
        code, out, _ = run(capsys, "service-list", "--records-url", records, "--report-interval", "1",
                           "--service-down-time", "3", "--format", "json")
    finally:
        sg.stop()
    assert code == 0
    (row,) = json.loads(out)
    assert row["host"] == "host-a" and row["topic"] == "compute" and row["binary"] == "nova-compute"
    assert row["state"] == "up" and row["forced_down"] is False and row["disabled"] is False
    assert row["updated_at"]


def test_force_down_then_list_shows_the_service_down(capsys, records):
    sg = ServiceGroup(records_url=records, report_interval=1, service_down_time=3)
    try:
        sg.join("host-a", "compute")
        assert run(capsys, "force-down", "--host", "host-a", "--topic", "compute",
                   "--records-url", records)[0] == 0
        code, out, _ = run(capsys, "service-list", "--records-url", records, "--format", "json")
    finally:
        sg.stop()
    assert code == 0
    assert json.loads(out)[0]["state"] == "down"


@pytest.mark.parametrize("argv,needle", [
    (["--driver", "zookepr"], "unknown servicegroup driver 'zookepr'"),
    (["--report-interval", "10", "--service-down-time", "10"], "at least 25"),
    (["--driver", "zk", "--url", "memcached://127.0.0.1:11211"], "contradicts"),
    (["--driver", "redis", "--url", "redis://127.0.0.1:6379?tiemout=3"], "tiemout"),
])
def test_configuration_errors_are_one_line_without_traceback(capsys, records, argv, needle):
    code, out, err = run(capsys, "service-list", "--records-url", records, *argv)
    assert code == cli.EXIT_ERROR
    assert needle in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_unreachable_records_database_hides_the_password(capsys):
    code, _, err = run(capsys, "service-list", "--records-url", "postgresql://nova:s3cret@127.0.0.1:1/nova")
    assert code == cli.EXIT_ERROR
    assert "BackendUnavailable" in err and "127.0.0.1:1" in err
    assert "s3cret" not in err


def test_bad_host_is_refused_by_name(capsys, records):
    code, _, err = run(capsys, "disable", "--host", "", "--topic", "compute", "--records-url", records)
    assert code == cli.EXIT_ERROR
    assert "InvalidName" in err and "host" in err


def test_unknown_service_is_a_clear_error(capsys, records):
    code, _, err = run(capsys, "enable", "--host", "nobody", "--topic", "compute", "--records-url", records)
    assert code == cli.EXIT_ERROR
    assert "nobody" in err


def test_db_sync_migrates(capsys, records):
    code, out, _ = run(capsys, "db-sync", "--records-url", records)
    assert code == 0 and "up to date" in out


def test_config_file_is_read_and_flags_override_it(tmp_path, capsys, records):
    path = tmp_path / "sg.conf"
    path.write_text(f"[servicegroup]\ndriver = db\nreport_interval = 2\nservice_down_time = 4\n"
                    f"[database]\nconnection = {records}\n")
    args = cli.build_parser().parse_args(["service-list", "--config-file", str(path),
                                          "--service-down-time", "9"])
    settings = cli.settings_from(args)
    assert settings.records_url == records
    assert (settings.report_interval, settings.service_down_time) == (2, 9)


def test_self_contradicting_config_file_is_refused(tmp_path, capsys, records):
    path = tmp_path / "sg.conf"
    path.write_text("[servicegroup]\nreport_interval = 30\nservice_down_time = 20\n")
    code, _, err = run(capsys, "service-list", "--config-file", str(path), "--records-url", records)
    assert code == cli.EXIT_ERROR and "service_down_time (20s) must be larger" in err


def test_from_config_builds_a_working_service_group(tmp_path, records):
    conf = cfg.ConfigOpts()
    sg_conf.register_opts(conf)
    path = tmp_path / "sg.conf"
    path.write_text(f"[servicegroup]\nreport_interval = 1\nservice_down_time = 3\n"
                    f"[database]\nconnection = {records}\n")
    conf(args=[], default_config_files=[str(path)])
    sg = ServiceGroup.from_config(conf)
    try:
        svc = sg.join("host-a", "compute")
        assert sg.is_up(svc)
        assert sg.url.startswith("sql+sqlite:///")
    finally:
        sg.stop()


def test_list_opts_covers_both_groups():
    groups = dict(sg_conf.list_opts())
    assert {o.name for o in groups["servicegroup"]} >= {"driver", "url", "report_interval",
                                                        "service_down_time", "max_staleness"}
    assert [o.name for o in groups["database"]] == ["connection"]


def test_repr_never_shows_the_password(tmp_path):
    sg = ServiceGroup(driver="redis", url="redis://:hunter2@127.0.0.1:6379",
                      records_url=f"sqlite:///{tmp_path / 'r.sqlite'}")
    try:
        assert "hunter2" not in repr(sg)
    finally:
        sg.stop()
