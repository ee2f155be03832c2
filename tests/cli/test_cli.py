"""The operator CLI: one-line errors, exit codes, config files, bounded
arguments. Listings and records commands: test_cli_services.py; the
application itself (logging, global options, unknown commands):
test_cli_app.py.

Runs on the embedded default (SQLite records and SQLite liveness): no server.
"""

from __future__ import annotations

import argparse
import json
import threading

from oslo_config import cfg
import pytest

from servicegroup import cli
from servicegroup import conf as sg_conf
from servicegroup.api import ServiceGroup
from servicegroup.cli import common
from tests.cli.tools import one_line_error, run, seed


def test_service_list_json_has_the_documented_fields(capsys, records):
    # This pins the fields, not expiry: a down time far above any scheduling
    # stall of a loaded CI machine (a 3 s one expired the member under load).
    sg = ServiceGroup(records_url=records, report_interval=10, service_down_time=60)
    try:
        sg.join("host-a", "compute", binary="nova-compute")
        code, out, _ = run(
            capsys,
            "service-list",
            "--records-url",
            records,
            "--report-interval",
            "10",
            "--service-down-time",
            "60",
            "--format",
            "json",
        )
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
        assert run(capsys, "force-down", "--host", "host-a", "--topic", "compute", "--records-url", records)[0] == 0
        code, out, _ = run(capsys, "service-list", "--records-url", records, "--format", "json")
    finally:
        sg.stop()
    assert code == 0
    assert json.loads(out)[0]["state"] == "down"


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["--driver", "zookepr"], "unknown servicegroup driver 'zookepr'"),
        (["--report-interval", "10", "--service-down-time", "10"], "at least 25"),
        (["--driver", "zk", "--url", "memcached://127.0.0.1:11211"], "contradicts"),
        (["--driver", "redis", "--url", "redis://127.0.0.1:6379?tiemout=3"], "tiemout"),
    ],
)
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
    path.write_text(
        f"[servicegroup]\ndriver = db\nreport_interval = 2\nservice_down_time = 4\n[database]\nconnection = {records}\n"
    )
    parser = argparse.ArgumentParser()
    common.add_backend_options(parser)
    args = parser.parse_args(["--config-file", str(path), "--service-down-time", "9"])
    settings = common.settings_from(args)
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
    path.write_text(f"[servicegroup]\nreport_interval = 1\nservice_down_time = 3\n[database]\nconnection = {records}\n")
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
    assert {o.name for o in groups["servicegroup"]} >= {
        "driver",
        "url",
        "report_interval",
        "service_down_time",
        "max_staleness",
    }
    assert [o.name for o in groups["database"]] == ["connection"]


def test_repr_never_shows_the_password(tmp_path):
    sg = ServiceGroup(
        driver="redis", url="redis://:hunter2@127.0.0.1:6379", records_url=f"sqlite:///{tmp_path / 'r.sqlite'}"
    )
    try:
        assert "hunter2" not in repr(sg)
    finally:
        sg.stop()


# -- bad input: one line on stderr, exit 2, no secret ------------------------


@pytest.mark.parametrize(
    "argv,secret",
    [
        (["--records-url", "postgresql://u:s3#cret@127.0.0.1:1/x"], "s3#cret"),
        (["--records-url", "postgresql://u:s3?cret@127.0.0.1:1/x"], "s3?cret"),
        (["--records-url", "postgresql://u@x:s3cret@127.0.0.1:1/x"], "s3cret"),
        (["--driver", "redis://:s3/cret@127.0.0.1:1"], "s3/cret"),
        (["--driver", "redis://127.0.0.1:1?sentinel_password=sp-99"], "sp-99"),
    ],
    ids=["hash", "question-mark", "at-in-user", "slash", "sentinel_password"],
)
def test_passwords_with_special_characters_never_reach_the_error(capsys, records, argv, secret):
    if "--records-url" not in argv:
        seed(records, "host-a")  # something to read the liveness of
        argv = argv + ["--records-url", records]
    code, _, err = run(capsys, "service-list", *argv)
    one_line_error(code, err)
    assert secret not in err


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["--driver", "redis://[::1"], "IPv6"),
        (["--driver", "redis://127.0.0.1:0"], "port 0"),
        (["--driver", "redis://127.0.0.1:6379?timeout=abc"], "option timeout="),
        (["--driver", "redis://127.0.0.1:6379?db=abc"], "option db="),
        (["--report-interval", "inf"], "report_interval must be a finite"),
        (["--service-down-time", "nan"], "service_down_time must be a finite"),
        (["--max-staleness", "0.001"], "max_staleness must be from 0.01"),
    ],
)
def test_bad_urls_and_timings_are_one_line_exit_2(capsys, records, argv, needle):
    code, _, err = run(capsys, "service-list", "--records-url", records, *argv)
    one_line_error(code, err)
    assert needle in err


@pytest.mark.parametrize("command", ["service-list", "db-sync"])
@pytest.mark.parametrize("url", ["oracle://u:s3cret@h/x", "mssql+pyodbc://u:s3cret@h/x"])
def test_unsupported_records_dialect_is_invalid_url_for_every_command(capsys, command, url):
    extra = ["--driver", "mc"] if command == "service-list" else []
    code, _, err = run(capsys, command, "--records-url", url, *extra)
    one_line_error(code, err)
    assert "InvalidURL" in err and "mysql/mariadb" in err and "s3cret" not in err


@pytest.mark.parametrize("command", ["service-list", "db-sync"])
def test_db_sync_and_service_list_agree_on_records_url_options(capsys, tmp_path, command):
    code, _, err = run(capsys, command, "--records-url", f"sqlite:///{tmp_path / 'r.sqlite'}?bogus=1")
    one_line_error(code, err)
    assert "unknown option(s) bogus" in err


@pytest.mark.parametrize(
    "body,needle",
    [
        ("[servicegroup]\nreport_interval = abc\n", "report_interval"),
        ("[servicegroup]\nreport_interval = 0\n", "report_interval"),
        ("[servicegroup]\nreport_interval = nan\n", "report_interval"),
        (b"[servicegroup]\nreport_interval = \xff\n", "not UTF-8"),
    ],
    ids=["abc", "zero", "nan", "latin-1"],
)
def test_bad_config_file_is_one_line_naming_the_file(capsys, tmp_path, body, needle):
    path = tmp_path / "sg.conf"
    (path.write_bytes if isinstance(body, bytes) else path.write_text)(body)
    code, _, err = run(capsys, "service-list", "--config-file", str(path))
    one_line_error(code, err)
    assert "ConfigError" in err and str(path) in err and needle in err


def test_a_directory_as_config_file_is_one_line(capsys, tmp_path):
    code, _, err = run(capsys, "service-list", "--config-file", str(tmp_path))
    one_line_error(code, err)
    assert "is a directory" in err


def test_padded_host_is_refused_not_stored_apart(capsys, records):
    code, _, err = run(capsys, "force-down", "--host", " h ", "--topic", "compute", "--records-url", records)
    one_line_error(code, err)
    assert "InvalidName" in err and "whitespace" in err


# -- liveness that cannot be read is unknown, not down -----------------------


def test_service_list_with_an_unreachable_backend_shows_unknown_and_exits_2(capsys, records):
    seed(records, "host-a", "host-b", fenced=("host-b",))
    code, out, err = run(
        capsys,
        "service-list",
        "--records-url",
        records,
        "--driver",
        "redis",
        "--url",
        "redis://:pw-77@127.0.0.1:1",
        "--format",
        "json",
    )
    one_line_error(code, err)
    states = {r["host"]: r["state"] for r in json.loads(out)}
    assert states == {"host-a": "unknown", "host-b": "down"}  # fenced is down whatever the backend says
    assert "127.0.0.1:1" in err and "BackendUnavailable" in err and "pw-77" not in err


def test_service_list_table_says_unknown(capsys, records):
    seed(records, "host-a")
    code, out, err = run(capsys, "service-list", "--records-url", records, "--driver", "redis://127.0.0.1:1")
    one_line_error(code, err)
    (row,) = [line for line in out.splitlines() if " host-a " in line]
    assert " unknown " in row


def test_watch_that_cannot_read_its_topic_is_one_line_exit_2(capsys, records):
    code, out, err = run(
        capsys,
        "watch",
        "--topic",
        "compute",
        "--records-url",
        records,
        "--driver",
        "redis://127.0.0.1:1",
        "--timeout",
        "30",
    )
    one_line_error(code, err)
    assert "cannot watch topic 'compute'" in err and "127.0.0.1:1" in err
    assert out == ""


@pytest.mark.parametrize("value", ["inf", "nan", "-1", "abc", "1e300"])
def test_watch_timeout_must_be_finite_and_not_negative(capsys, records, value):
    code, _, err = run(capsys, "watch", "--topic", "compute", "--records-url", records, "--timeout", value)
    one_line_error(code, err)
    assert "--timeout" in err


def test_watch_timeout_ends_the_watch(capsys, records):
    code, out, _ = run(
        capsys,
        "watch",
        "--topic",
        "compute",
        "--records-url",
        records,
        "--timeout",
        "0.2",
        "--report-interval",
        "1",
        "--service-down-time",
        "3",
    )
    assert code == 0 and out.startswith("watching compute")


# -- bench -------------------------------------------------------------------


@pytest.mark.parametrize("argv", [["--hosts", "0"], ["--hosts", "-1"], ["--calls", "0"], ["--calls", "-5"]])
def test_bench_refuses_counts_below_one(capsys, records, argv):
    code, _, err = run(capsys, "bench", "--records-url", records, *argv)
    one_line_error(code, err)
    assert argv[0] in err and "at least 1" in err


def test_bench_removes_the_records_it_created(capsys, records):
    from servicegroup.records import Records

    recs = Records(records)
    recs.upsert("bench-0001", "bench", binary="mine")  # already there: left alone
    code, out, _ = run(
        capsys,
        "bench",
        "--records-url",
        records,
        "--hosts",
        "3",
        "--calls",
        "5",
        "--report-interval",
        "1",
        "--service-down-time",
        "3",
    )
    assert code == 0 and "speed-up" in out
    assert [s.host for s in recs.list("bench")] == ["bench-0001"]
    recs.dispose()


def test_a_reader_that_goes_away_is_not_an_error(tmp_path):
    """`servicegroup service-list | head -1`: no 'unexpected BrokenPipeError'."""
    import subprocess
    import sys

    records = f"sqlite:///{tmp_path / 'r.sqlite'}"
    seed(records, *[f"host-{i}" for i in range(3000)])
    proc = subprocess.run(
        f"{sys.executable} -m servicegroup service-list --records-url {records} --driver mc "
        f"--url memcached://127.0.0.1:1 | head -1",
        shell=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.stdout.startswith("+--"), proc.stdout  # the table's first line
    assert "BrokenPipe" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_watch_with_count_does_not_wait_out_its_timeout(monkeypatch, capsys):
    """`watch --count 1 --timeout 600` printed its event, then the process
    lingered until the timeout: the timer was a non-daemon thread."""
    from servicegroup.cli import members

    class OneEventGroup:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return None

        def watch(self, topic, on_join=None, on_leave=None):
            on_join(topic, "host-a")

        def get_all(self, topic):
            return ["host-a"]

        def liveness_unknown(self, topic):
            return None

    monkeypatch.setattr(common, "open_group", lambda settings, **kw: OneEventGroup())
    monkeypatch.setattr(members.signal, "signal", lambda *a: None)  # keep pytest's handlers
    before = set(threading.enumerate())
    assert cli.main(["watch", "--topic", "compute", "--count", "1", "--timeout", "600"]) == 0
    lingering = [t for t in set(threading.enumerate()) - before if t.is_alive() and not t.daemon]
    for t in lingering:
        if isinstance(t, threading.Timer):
            t.cancel()
    assert lingering == [], "a non-daemon thread keeps the process alive after the command"
    assert "join compute host-a" in capsys.readouterr().out
