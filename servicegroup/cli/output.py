"""How services are shown: the columns of ``service-list`` (those of
``openstack compute service list --long``) and the same table for the demo.

Machine formats (``-f json``, ``-f yaml``) key each row by the snake_case
name of its column (``host``, ``state``, ``updated_at`` ...), plus
``disabled`` (true/false): the keys ``service-list --format json`` printed
before the columns took OpenStack's names, which scripts already read.
"""

from __future__ import annotations

import argparse
from collections.abc import Collection, Iterable, Sequence
import io
from typing import TYPE_CHECKING, Any

from cliff.formatters.table import TableFormatter

if TYPE_CHECKING:
    from servicegroup.records import Service

COLUMNS = ("ID", "Binary", "Host", "Topic", "Status", "State", "Updated At", "Forced Down", "Disabled Reason")

#: Formatters whose rows are read by programs: snake_case keys.
MACHINE_FORMATS = frozenset({"json", "yaml"})

Row = tuple[Any, ...]


def state(svc: Service, unknown: Collection[str] = ()) -> str:
    """``up``, ``down``, or ``unknown`` for a service of a topic in *unknown*
    (its liveness could not be read) that is not forced down: a fenced
    service is down whatever the backend says, and a listing must not guess
    "down" for a service it could not ask about."""
    if svc.up:
        return "up"
    if svc.topic in unknown and not svc.forced_down:
        return "unknown"
    return "down"


def row(svc: Service, unknown: Collection[str] = ()) -> Row:
    """One service as the values of :data:`COLUMNS`. ``Updated At`` is the
    last heartbeat seen (``ServiceGroup.get_updated_time``), not the record's
    ``updated_at``, which moves when an operator enables a dead service."""
    return (
        svc.id,
        svc.binary,
        svc.host,
        svc.topic,
        "disabled" if svc.disabled else "enabled",
        state(svc, unknown),
        svc.last_seen_up.isoformat() if svc.last_seen_up else None,
        svc.forced_down,
        svc.disabled_reason,
    )


def rows(services: Iterable[Service], unknown: Collection[str] = ()) -> list[Row]:
    return [row(svc, unknown) for svc in services]


def key(column: str) -> str:
    """A column's machine-readable name: ``Updated At`` -> ``updated_at``
    (cliff's ``-c`` accepts either form)."""
    return column.lower().strip().replace(" ", "_")


def column(name: str) -> str:
    """argparse type of ``-c``: a column, by display or snake_case name."""
    if key(name) not in {key(c) for c in COLUMNS}:
        raise argparse.ArgumentTypeError(f"{name!r} is not a column: use {', '.join(COLUMNS)}")
    return name


def machine_readable(columns: Sequence[str], data: Iterable[Sequence[Any]]) -> tuple[list[str], list[Row]]:
    """Snake_case keys, and ``disabled`` (bool) derived from ``Status``."""
    keys = [key(c) for c in columns]
    if "status" not in keys:
        return keys, [tuple(r) for r in data]
    at = keys.index("status")
    return keys + ["disabled"], [tuple(r) + (r[at] == "disabled",) for r in data]


def table(services: Iterable[Service], unknown: Collection[str] = ()) -> str:
    """The ``service-list`` table of *services*, as text."""
    out = io.StringIO()
    args = argparse.Namespace(print_empty=True, max_width=0, fit_width=False)
    TableFormatter().emit_list(COLUMNS, rows(services, unknown), out, args)
    return out.getvalue().rstrip("\n")
