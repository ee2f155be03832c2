"""``--backend NAME`` selects tests by their ``backend(name)`` marker, and by
nothing else (servicegroup.testing.selection; tox's functional-<backend>
envs rely on it). Collection only: no server starts here."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from servicegroup.testing import selection

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CONFTEST = """
from servicegroup.testing import selection

def pytest_addoption(parser): selection.add_option(parser)
def pytest_configure(config): selection.register_marker(config)
def pytest_collection_modifyitems(config, items): selection.select(config, items)
"""

SUITE = """
import pytest
from servicegroup.testing.selection import backend_params

@pytest.fixture(params=backend_params("zk", "db-postgresql"))
def target(request):
    return request.param

def test_scenario(target):
    pass

@pytest.mark.parametrize("name,wipe", backend_params(("mc", False), ("zk", True)))
def test_fault(name, wipe):
    pass

@pytest.mark.parametrize("driver", backend_params("db", "zookeeper"))
def test_alias(driver):
    pass

@pytest.mark.backend("etcd")
def test_one_backend():
    pass

def test_no_backend():
    pass

@pytest.mark.parametrize("zk", ["not-a-marker"])
def test_parameter_named_like_a_backend(zk):
    pass
"""


def _selected(pytester: pytest.Pytester, *args: str) -> list[str]:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_suite=SUITE)
    result = pytester.runpytest("--collect-only", "-q", "-p", "no:cacheprovider", *args)
    assert result.ret in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED), result.stdout.str()
    return sorted(line.split("::", 1)[1] for line in result.outlines if "::" in line)


def test_backend_option_keeps_exactly_the_tests_marked_for_it(pytester: pytest.Pytester) -> None:
    assert _selected(pytester, "--backend", "zk") == [
        "test_alias[zookeeper]",
        "test_fault[zk-True]",
        "test_scenario[zk]",
    ]


def test_parameter_names_and_values_select_nothing_without_the_marker(pytester: pytest.Pytester) -> None:
    # a parameter *named* zk and an unmarked test are not "for zk"
    assert "test_parameter_named_like_a_backend[not-a-marker]" not in _selected(pytester, "--backend", "zk")
    assert _selected(pytester, "--backend", "redis") == []


def test_aliases_name_the_same_backend_on_both_sides(pytester: pytest.Pytester) -> None:
    assert _selected(pytester, "--backend", "zookeeper") == _selected(pytester, "--backend", "zk")
    assert _selected(pytester, "--backend", "db-sqlite") == ["test_alias[db]"]


def test_repeated_backend_options_add_up(pytester: pytest.Pytester) -> None:
    assert _selected(pytester, "--backend", "etcd", "--backend", "db-postgresql") == [
        "test_one_backend",
        "test_scenario[db-postgresql]",
    ]


def test_without_the_option_every_test_is_kept(pytester: pytest.Pytester) -> None:
    assert len(_selected(pytester)) == 9


def test_an_unknown_backend_option_is_a_usage_error_naming_the_known_ones(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_suite=SUITE)
    result = pytester.runpytest("--collect-only", "-p", "no:cacheprovider", "--backend", "zookeper")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--backend: unknown backend 'zookeper' (known: db-sqlite, *consul)*"])


def test_an_unknown_backend_in_a_marker_fails_at_collection() -> None:
    with pytest.raises(ValueError, match="unknown backend 'zz'"):
        selection.backend_params("zz")


REPORTER = """
def pytest_deselected(items):
    for item in items:
        print("DESELECTED", item.nodeid, sorted(m.args[0] for m in item.iter_markers("backend")))

def pytest_collection_finish(session):
    for item in session.items:
        print("SELECTED", item.nodeid, sorted(m.args[0] for m in item.iter_markers("backend")))
"""


def test_the_functional_suite_selects_by_marker_alone(pytester: pytest.Pytester) -> None:
    """The real suite, collected with ``--backend zk`` as ``tox -e
    functional-zk`` does: every test kept is marked zk (the scenario
    suites' ``target`` among them), every test dropped is not."""
    pytester.makepyfile(report_backends=REPORTER)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(pytester.path), REPO]))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--collect-only",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "report_backends",
            "--backend",
            "zk",
            os.path.join(REPO, "functional"),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    kept = [line for line in proc.stdout.splitlines() if line.startswith("SELECTED ")]
    dropped = [line for line in proc.stdout.splitlines() if line.startswith("DESELECTED ")]
    assert kept and dropped
    assert all(line.endswith("['zk']") for line in kept), kept
    assert not any("'zk'" in line for line in dropped), dropped
    assert any("test_scenarios.py::" in line and "[zk]" in line for line in kept)
