"""One SQL engine per URL per process (servicegroup/drivers/sql_engine.py).

A fleet's connections to the liveness database must not grow with the
members a process runs: every coordinator on one URL shares one engine and
its bounded pool; the last one to close disposes of it.
"""

from __future__ import annotations

from oslo_utils import netutils
import sqlalchemy as sa

from servicegroup.drivers import sql_engine
from servicegroup.drivers.sql_engine import Database


def _db(url: str) -> Database:
    return Database(netutils.urlsplit(url), connect_timeout=5.0)


def test_databases_on_one_url_share_one_engine_until_the_last_closes(tmp_path) -> None:
    url = f"sql+sqlite:///{tmp_path}/live.sqlite"
    first, second = _db(url), _db(url)
    other = _db(f"sql+sqlite:///{tmp_path}/other.sqlite")
    try:
        engine = first.open()
        assert second.open() is engine
        assert other.open() is not engine
        first.close()
        assert first.engine is None and second.engine is engine
        with engine.connect() as conn:  # still usable by the other user
            conn.execute(sa.text("SELECT 1"))
        second.close()
        assert all(entry[0] is not engine for entry in sql_engine._SHARED.values())
        third = _db(url)
        assert third.open() is not engine  # a new engine after the last close
        third.close()
    finally:
        for db in (first, second, other):
            db.close()


def test_the_pool_of_a_server_engine_is_bounded_whatever_the_members() -> None:
    db = _db("sql+postgresql://sg@127.0.0.1:1/sg")
    engine = db.open()
    try:
        assert engine.pool.size() + engine.pool._max_overflow == sql_engine.POOL_SIZE + sql_engine.MAX_OVERFLOW  # type: ignore[attr-defined]
    finally:
        db.close()


def test_a_server_out_of_connection_slots_is_named_with_the_way_out() -> None:
    db = _db("sql+postgresql://sg:s3cret@127.0.0.1:5432/sg")
    text = db.describe(Exception("FATAL:  sorry, too many clients already"))
    assert "max_connections" in text and "PgBouncer" in text and "docs/scale.md" in text
    assert "s3cret" not in text
    mysql = _db("sql+mysql://root@127.0.0.1:3306/sg").describe(Exception("(1040, 'Too many connections')"))
    assert "max_connections" in mysql
    assert "max_connections" not in db.describe(Exception("password authentication failed"))
