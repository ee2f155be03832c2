"""The facade is what MatchMaker and Partitioner say they need of it.

Checked twice: by mypy, which runs ``--strict`` over this file too (see
``[tool.mypy]`` in pyproject.toml), so a change to a ServiceGroup signature
that breaks a protocol fails ``make lint``; and at run time, where
``isinstance`` sees the methods are there.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from servicegroup.api import ServiceGroup
from servicegroup.matchmaker import MatchMaker
from servicegroup.protocols import GroupView, Membership
from servicegroup.ring import Partitioner


@pytest.fixture
def sg(tmp_path: Path) -> Iterator[ServiceGroup]:
    group = ServiceGroup(records_url=f"sqlite:///{tmp_path / 'records.sqlite'}", background=False)
    yield group
    group.stop()


def as_membership(sg: ServiceGroup) -> Membership:
    return sg  # mypy: ServiceGroup matches Membership's signatures


def as_group_view(sg: ServiceGroup) -> GroupView:
    return sg  # mypy: ServiceGroup matches GroupView's signatures


def test_service_group_is_a_membership_and_a_group_view(sg: ServiceGroup) -> None:
    assert isinstance(as_membership(sg), Membership)
    assert isinstance(as_group_view(sg), GroupView)


def test_helpers_accept_the_facade_through_their_protocols(sg: ServiceGroup) -> None:
    MatchMaker(as_membership(sg))
    Partitioner(as_group_view(sg), "g").stop()


def test_an_object_missing_a_method_is_not_a_membership() -> None:
    class ReadOnly:
        """Lookups only: a MatchMaker could not register or nack through it."""

        def members(self, topic: str, /) -> dict[str, dict[str, object]]:
            return {}

    assert not isinstance(ReadOnly(), Membership)
