"""Which functional tests run against which liveness backend.

A test says what backend it runs against with the ``backend(name)``
marker, and nothing else decides: ``--backend NAME`` (repeatable; tox's
``functional-<name>`` envs use it) keeps the tests marked for NAME and
deselects every other one, including those marked for no backend (a test
of several backends at once, or of none). A parametrised suite marks each
parameter with :func:`backend_params`; a test of one backend carries
``@pytest.mark.backend("zk")``; a module of one backend sets
``pytestmark``. Marker names and ``--backend`` values are checked against
:data:`BACKENDS`, so a typo fails loudly instead of selecting nothing.

A ``conftest.py`` wires it in with three hooks::

    def pytest_addoption(parser): selection.add_option(parser)
    def pytest_configure(config): selection.register_marker(config)
    def pytest_collection_modifyitems(config, items): selection.select(config, items)
"""

from __future__ import annotations

from typing import Any

import pytest

#: The names ``--backend`` and the marker accept: one per liveness backend
#: the suites run on (``db`` on each SQL database the driver supports).
BACKENDS = ("db-sqlite", "db-postgresql", "db-mysql", "zk", "mc", "redis", "etcd", "consul")
#: Other spellings of the same backends: driver aliases, and a bare ``db``
#: or dialect name for the ``db`` driver on that database.
ALIASES = {
    "zookeeper": "zk",
    "memcached": "mc",
    "etcd3": "etcd",
    "db": "db-sqlite",
    "sqlite": "db-sqlite",
    "postgresql": "db-postgresql",
    "mysql": "db-mysql",
}
MARKER = "backend"
_MARKER_HELP = "backend(name): the liveness backend a functional test runs against (--backend NAME selects by it)"


def canonical(name: str) -> str:
    """The :data:`BACKENDS` name for *name* or an alias; ValueError otherwise."""
    key = ALIASES.get(name, name)
    if key not in BACKENDS:
        raise ValueError(f"unknown backend {name!r} (known: {', '.join(BACKENDS)})")
    return key


def mark(name: str) -> pytest.MarkDecorator:
    """``backend(name)`` with *name* checked and made canonical."""
    marker: pytest.MarkDecorator = getattr(pytest.mark, MARKER)(canonical(name))
    return marker


def backend_params(*values: Any) -> list[Any]:
    """Parameters for ``parametrize`` or ``fixture(params=...)``, each marked
    with its backend: a value is a backend name (``"zk"``) or a tuple whose
    first item is one (``("zk", True)``, for ``"name,wipe"``)."""
    params = []
    for value in values:
        args = value if isinstance(value, tuple) else (value,)
        params.append(pytest.param(*args, marks=mark(args[0])))
    return params


def backends_of(item: pytest.Item) -> set[str]:
    """The backends *item* is marked for (empty when none)."""
    return {canonical(m.args[0]) for m in item.iter_markers(MARKER)}


def add_option(parser: pytest.Parser) -> None:
    parser.addoption(
        "--backend",
        action="append",
        default=[],
        metavar="NAME",
        help="run only the tests marked for this liveness backend "
        f"({', '.join(BACKENDS)}); repeatable. tox's functional-<backend> envs use it.",
    )


def register_marker(config: pytest.Config) -> None:
    config.addinivalue_line("markers", _MARKER_HELP)


def wanted(config: pytest.Config) -> set[str]:
    """The canonical names given with ``--backend``; UsageError for an unknown one."""
    try:
        return {canonical(name) for name in config.getoption("--backend")}
    except ValueError as exc:
        raise pytest.UsageError(f"--backend: {exc}") from None


def select(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep the items marked for a ``--backend`` given (all when none is)."""
    names = wanted(config)
    if not names:
        return
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        (keep if backends_of(item) & names else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
