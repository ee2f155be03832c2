"""The ``servicegroup`` application around the commands: global options,
usage errors, unknown commands, help, and logging (configured by the CLI
only, never by importing a servicegroup module).
"""

from __future__ import annotations

from collections.abc import Iterator
import contextlib
import json
import logging
import subprocess
import sys

import pytest

from servicegroup import cli
from tests.cli.tools import one_line_error, run, seed


def test_backend_options_work_before_and_after_the_command(capsys, records):
    seed(records, "host-a")
    after = run(capsys, "service-list", "--records-url", records, "-f", "json", "-c", "host")
    before = run(capsys, "--records-url", records, "service-list", "-f", "json", "-c", "host")
    assert after == before
    assert json.loads(after[1]) == [{"host": "host-a"}]


def test_global_driver_option_reaches_the_command(capsys, records):
    code, _, err = run(capsys, "--driver", "zookepr", "service-list", "--records-url", records)
    one_line_error(code, err)
    assert "unknown servicegroup driver 'zookepr'" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["--report-interval", "abc", "service-list"],
        ["service-list", "--report-interval", "abc"],
    ],
    ids=["before", "after"],
)
def test_a_bad_option_value_is_one_line(capsys, argv):
    code, _, err = run(capsys, *argv)
    one_line_error(code, err)
    assert "--report-interval" in err and "abc" in err


def test_a_missing_required_option_is_one_line(capsys):
    code, _, err = run(capsys, "force-down", "--topic", "compute")
    one_line_error(code, err)
    assert "--host" in err


def test_no_command_is_an_error_not_a_shell(capsys):
    code, out, err = run(capsys)
    one_line_error(code, err)
    assert "a command is required" in err and out == ""


def test_unknown_command_is_one_line_with_a_suggestion(capsys):
    code, out, err = run(capsys, "service-lsit")
    one_line_error(code, err)
    assert "'service-lsit' is not a servicegroup command" in err and "service-list" in err
    assert out == ""


def test_help_lists_every_command(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0
    for name in (
        "demo",
        "join",
        "service-list",
        "service-delete",
        "force-down",
        "enable",
        "disable",
        "watch",
        "bench",
        "db-sync",
    ):
        assert f"  {name} " in out, name


def test_command_help_shows_backend_and_formatter_options(capsys):
    code, out, _ = run(capsys, "service-list", "--help")
    assert code == 0
    for option in ("--driver", "--url", "--records-url", "--config-file", "-f", "-c COLUMN", "--topic"):
        assert option in out, option


def test_importing_servicegroup_configures_no_logging():
    """A library never configures logging on import: only the CLI does,
    when it runs. Every servicegroup module, in a fresh interpreter."""
    code = (
        "import logging, pkgutil, importlib, servicegroup\n"
        "for m in pkgutil.walk_packages(servicegroup.__path__, 'servicegroup.'):\n"
        "    if not m.name.endswith('__main__'):\n"
        "        importlib.import_module(m.name)\n"
        "loggers = [logging.getLogger()] + [logging.getLogger(n) for n in logging.root.manager.loggerDict\n"
        "                                   if n.startswith('servicegroup')]\n"
        "print([(lg.name, h) for lg in loggers for h in lg.handlers], logging.getLogger().level)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"[] {logging.WARNING}"


@contextlib.contextmanager
def bare_root_logger() -> Iterator[logging.Logger]:
    """The root logger as in a fresh process (pytest's handlers set aside;
    pytest adds them for the test's call phase, so not a fixture)."""
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    root.handlers[:] = []
    root.setLevel(logging.WARNING)
    try:
        yield root
    finally:
        root.handlers[:] = saved
        root.setLevel(level)


def test_main_configures_logging_for_its_run_and_removes_it(records, capsys, monkeypatch):
    from servicegroup.cli import db

    during = []
    original = db.DbSync.take_action

    def take_action(self, parsed_args):
        during.append(logging.getLogger().handlers[:])
        logging.getLogger("servicegroup.cli.db").info("not shown by default")
        logging.getLogger("servicegroup.cli.db").warning("inside")
        return original(self, parsed_args)

    monkeypatch.setattr(db.DbSync, "take_action", take_action)
    with bare_root_logger() as root:
        assert cli.main(["db-sync", "--records-url", records]) == 0
        assert root.handlers == [] and root.level == logging.WARNING, "main() undoes its logging set-up"
    assert len(during[0]) == 1, "one console handler during the run"
    err = capsys.readouterr().err
    assert "WARNING servicegroup.cli.db: inside" in err and "not shown" not in err


def test_main_keeps_the_logging_of_a_program_that_configured_it(records):
    """A program that set up logging (a test member at INFO) keeps exactly
    its handlers: no second console handler, no changed level."""
    root = logging.getLogger()
    before, level = root.handlers[:], root.level
    assert before, "pytest has handlers on the root logger"
    assert cli.main(["db-sync", "--records-url", records]) == 0
    assert root.handlers == before and root.level == level


def test_debug_shows_the_traceback_and_keeps_the_exit_code(capsys, records):
    code, _, err = run(capsys, "--debug", "enable", "--host", "nobody", "--topic", "compute", "--records-url", records)
    assert code == cli.EXIT_ERROR
    assert err.startswith("servicegroup enable: ServiceNotFound") and "Traceback" in err
