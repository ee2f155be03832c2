"""The CLI against a records database on a real server (PostgreSQL, MariaDB)
that has no schema yet: read and update commands refuse it, naming the
database without its password and pointing at db-sync; db-sync creates
the schema, after which they work.
"""

from __future__ import annotations

import json
import subprocess
import sys

import sqlalchemy as sa

from functional.test_records_sql import empty_database  # noqa: F401 (fixture)


def servicegroup(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "servicegroup", *argv], capture_output=True, text=True, timeout=120)


def with_password(url: str) -> str:
    """*url* with a password PostgreSQL's trust authentication ignores (MariaDB's
    root has none and would refuse one)."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() != "postgresql":
        return url
    return parsed.set(password="s3cret-77").render_as_string(hide_password=False)


def test_a_server_database_without_the_schema_is_refused_until_db_sync(empty_database):  # noqa: F811
    url = with_password(empty_database)
    for argv in (["service-list"], ["disable", "--host", "h", "--topic", "compute"]):
        proc = servicegroup(*argv, "--records-url", url)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert "has no services table" in proc.stderr and "servicegroup db-sync" in proc.stderr
        assert "s3cret-77" not in proc.stderr
        assert proc.stdout == ""

    assert servicegroup("db-sync", "--records-url", url).returncode == 0
    proc = servicegroup("service-list", "--records-url", url, "--driver", "db", "-f", "json")
    assert (proc.returncode, json.loads(proc.stdout)) == (0, []), proc.stderr
