"""Fixtures of the CLI tests: records databases made for them."""

from __future__ import annotations

import pytest

from servicegroup.records import Records


@pytest.fixture
def records(tmp_path) -> str:
    """A records database that `servicegroup db-sync` has created."""
    url = f"sqlite:///{tmp_path / 'records.sqlite'}"
    Records(url).dispose()
    return url


@pytest.fixture
def missing(tmp_path) -> str:
    """The records URL of a file nobody created (a typo)."""
    return f"sqlite:///{tmp_path / 'recrods.sqlite'}"
