"""The service records repository, on SQLite.

:class:`RecordsContract` is the behaviour every database must show; it runs
here on SQLite and in ``functional/test_records_sql.py`` on PostgreSQL and
MariaDB. Tests use their own host and topic names (fixtures ``host`` and
``topic``), because the real databases are shared with other tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
import logging
import os
import threading
import uuid

import pytest
from sqlalchemy import event

from servicegroup import errors
from servicegroup.records import Records, Service
from servicegroup.records import engine as engines
from servicegroup.records import schema


class StatementLog:
    """Every statement (and its parameters) sent to the database."""

    def __init__(self, records: Records) -> None:
        self.statements: list[tuple[str, object]] = []
        self._engine = records._engine
        event.listen(self._engine, "before_cursor_execute", self._record)

    def _record(self, conn, cursor, statement, parameters, context, executemany) -> None:
        self.statements.append((statement.strip(), parameters))

    def close(self) -> None:
        event.remove(self._engine, "before_cursor_execute", self._record)

    def verbs(self) -> list[str]:
        return [s.split(None, 1)[0].upper() for s, _ in self.statements]

    def bound_values(self) -> list[object]:
        values: list[object] = []
        for _, params in self.statements:
            if isinstance(params, dict):
                values.extend(params.values())
            elif isinstance(params, (list, tuple)):
                values.extend(params)
        return values


class RecordsContract:
    """What a records database must do; needs a ``records`` fixture.

    Its own fixtures come with it (a subclass elsewhere gets them without
    importing fixtures by name): ``host`` and ``topic``, unique per test,
    and ``statements``, the log of what it sent to the database.
    """

    @pytest.fixture
    def host(self) -> str:
        return f"host-{uuid.uuid4().hex[:12]}"

    @pytest.fixture
    def topic(self) -> str:
        return f"topic-{uuid.uuid4().hex[:12]}"

    @pytest.fixture
    def statements(self, records: Records) -> Iterator[StatementLog]:
        log = StatementLog(records)
        yield log
        log.close()

    def test_upsert_is_idempotent(self, records: Records, host: str, topic: str) -> None:
        first = records.upsert(host, topic, binary="sg-compute", version=1)
        again = records.upsert(host, topic, binary="sg-compute", version=2)
        assert (again.id, again.uuid, again.created_at) == (first.id, first.uuid, first.created_at)
        assert again.version == 2
        assert [s.host for s in records.list(topic)] == [host]

    def test_upsert_returns_a_snapshot_without_liveness(self, records: Records, host: str, topic: str) -> None:
        svc = records.upsert(host, topic, binary="sg-compute")
        assert isinstance(svc, Service)
        assert svc.up is None and not svc.forced_down and not svc.disabled
        assert (svc.report_count, svc.version, svc.updated_at) == (0, 0, None)
        with pytest.raises(AttributeError):
            svc.host = "other"  # type: ignore[misc]

    def test_timestamps_are_aware_utc(self, records: Records, host: str, topic: str) -> None:
        svc = records.upsert(host, topic)
        svc = records.set_disabled(host, topic, True)
        for value in (svc.created_at, svc.updated_at, svc.last_seen_up, records.server_now()):
            assert value is not None and value.utcoffset() == timedelta(0)

    def test_mark_seen_many_writes_every_service_in_one_transaction_and_names_the_gone(
        self, records: Records, statements: StatementLog, host: str, topic: str
    ) -> None:
        records.upsert(host, topic)
        records.upsert(host + "-b", topic)
        records.delete(host + "-b", topic)
        del statements.statements[:]
        gone = records.mark_seen_many({(host, topic): 3, (host + "-b", topic): 2})
        assert gone == [(host + "-b", topic)]
        assert [v for v in statements.verbs() if v != "BEGIN"] == ["UPDATE", "UPDATE"]
        assert records.get(host, topic).report_count == 3

    def test_last_seen_up_comes_from_the_server_clock_not_the_clients(
        self, records: Records, statements: StatementLog, host: str, topic: str
    ) -> None:
        before = records.server_now()
        records.upsert(host, topic)
        records.mark_seen(host, topic)
        records.set_forced_down(host, topic, True)
        after = records.server_now()
        # No client-side timestamp is ever sent: the server computes them.
        assert not [v for v in statements.bound_values() if isinstance(v, datetime)]
        seen = records.get(host, topic).last_seen_up
        assert before <= seen <= after

    def test_mark_seen_is_one_update_that_counts_reports(
        self, records: Records, statements: StatementLog, host: str, topic: str
    ) -> None:
        created = records.upsert(host, topic)
        del statements.statements[:]
        records.mark_seen(host, topic)
        assert [v for v in statements.verbs() if v != "BEGIN"] == ["UPDATE"]  # SQLite: BEGIN IMMEDIATE
        svc = records.get(host, topic)
        assert svc.report_count == created.report_count + 1
        assert svc.last_seen_up >= created.last_seen_up
        assert svc.updated_at == created.updated_at  # a heartbeat is not a record change

    def test_mark_seen_of_a_missing_record_raises_service_not_found(
        self, records: Records, host: str, topic: str
    ) -> None:
        with pytest.raises(errors.ServiceNotFound):
            records.mark_seen(host, topic)

    def test_forced_down_roundtrip(self, records: Records, host: str, topic: str) -> None:
        records.upsert(host, topic)
        assert records.set_forced_down(host, topic, True).forced_down is True
        assert records.get(host, topic).forced_down is True
        assert records.set_forced_down(host, topic, False).forced_down is False
        assert records.get(host, topic).forced_down is False

    def test_disabled_roundtrip_keeps_the_reason_until_enabled(self, records: Records, host: str, topic: str) -> None:
        records.upsert(host, topic)
        svc = records.set_disabled(host, topic, True, reason="disk replacement")
        assert (svc.disabled, svc.disabled_reason) == (True, "disk replacement")
        assert records.get(host, topic).disabled_reason == "disk replacement"
        svc = records.set_disabled(host, topic, False)
        assert (svc.disabled, svc.disabled_reason) == (False, None)

    def test_updated_at_bumps_on_enable_but_last_seen_up_does_not(
        self, records: Records, host: str, topic: str
    ) -> None:
        records.upsert(host, topic)
        disabled = records.set_disabled(host, topic, True)
        enabled = records.set_disabled(host, topic, False)
        assert enabled.updated_at is not None and enabled.updated_at >= disabled.updated_at
        assert enabled.last_seen_up == disabled.last_seen_up

    def test_flag_changes_on_a_missing_record_raise_service_not_found(
        self, records: Records, host: str, topic: str
    ) -> None:
        with pytest.raises(errors.ServiceNotFound):
            records.set_forced_down(host, topic, True)
        with pytest.raises(errors.ServiceNotFound):
            records.set_disabled(host, topic, True)
        assert records.get(host, topic) is None

    @pytest.mark.parametrize("bad_host", ["", "   ", "x" * 256, b"\xff\xfe", "a\nb", None], ids=repr)
    def test_bad_names_write_nothing(
        self, records: Records, statements: StatementLog, topic: str, bad_host: object
    ) -> None:
        with pytest.raises(errors.InvalidName):
            records.upsert(bad_host, topic)  # type: ignore[arg-type]
        with pytest.raises(errors.InvalidName):
            records.upsert("fine-host", topic + "/nested")
        assert statements.statements == []
        assert records.list(topic) == []

    def test_a_failure_inside_a_write_leaves_nothing_half_written(
        self, records: Records, host: str, topic: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        records.upsert(host, topic)

        def boom(*args: object) -> None:
            raise RuntimeError("failure after the UPDATE, before the commit")

        monkeypatch.setattr(Records, "_one", staticmethod(boom))
        with pytest.raises(RuntimeError):
            records.set_forced_down(host, topic, True)
        with pytest.raises(RuntimeError):
            records.upsert(host + "-new", topic)
        monkeypatch.undo()
        assert records.get(host, topic).forced_down is False
        assert records.get(host + "-new", topic) is None

    def test_delete_is_soft_and_upsert_creates_a_new_record(self, records: Records, host: str, topic: str) -> None:
        old = records.set_forced_down(host, topic, True) if records.upsert(host, topic) else None
        assert records.delete(host, topic) is True
        assert records.delete(host, topic) is False
        assert records.get(host, topic) is None and records.list(topic) == []
        new = records.upsert(host, topic)
        assert new.id != old.id and new.uuid != old.uuid and new.forced_down is False

    def test_list_is_sorted_by_topic_then_host_and_filters(self, records: Records, host: str, topic: str) -> None:
        other = topic + "-b"
        for h, t in [(host + "-2", topic), (host + "-1", other), (host + "-1", topic), (host + "-3", topic)]:
            records.upsert(h, t)
        records.delete(host + "-3", topic)
        mine = [(s.topic, s.host) for s in records.list() if s.host.startswith(host)]
        assert mine == [(topic, host + "-1"), (topic, host + "-2"), (other, host + "-1")]
        assert [s.host for s in records.list(other)] == [host + "-1"]

    def test_flags_is_one_select_of_live_records(
        self, records: Records, statements: StatementLog, host: str, topic: str
    ) -> None:
        records.upsert(host, topic)
        records.upsert(host + "-x", topic)
        records.set_forced_down(host, topic, True)
        records.upsert(host + "-gone", topic)
        records.delete(host + "-gone", topic)
        del statements.statements[:]
        flags = records.flags(topic)
        assert statements.verbs() == ["SELECT"]
        assert flags == {(host, topic): (True, False), (host + "-x", topic): (False, False)}

    def test_flags_only_set_reads_just_the_flagged_records(self, records: Records, host: str, topic: str) -> None:
        records.upsert(host, topic)
        records.upsert(host + "-x", topic)
        records.upsert(host + "-d", topic)
        records.set_forced_down(host, topic, True)
        records.set_disabled(host + "-d", topic, True)
        assert records.flags(topic, only_set=True) == {
            (host, topic): (True, False),
            (host + "-d", topic): (False, True),
        }

    def test_host_names_are_exact_case_and_unicode(self, records: Records, host: str, topic: str) -> None:
        names = [host + "-Node", host + "-node", host + "-nœud-é"]
        for name in names:
            records.upsert(name, topic)
        assert sorted(s.host for s in records.list(topic)) == sorted(names)

    def test_concurrent_upserts_of_a_new_service_make_one_record(self, records: Records, host: str, topic: str) -> None:
        barrier = threading.Barrier(6)
        results: list[object] = []

        def racer() -> None:
            barrier.wait()
            try:
                results.append(records.upsert(host, topic).id)
            except Exception as exc:
                results.append(exc)

        threads = [threading.Thread(target=racer) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert len(set(results)) == 1 and isinstance(results[0], int), results
        assert len(records.list(topic)) == 1

    def test_migrate_twice_is_a_noop(self, records: Records, statements: StatementLog) -> None:
        records.migrate()
        ddl = [s for s, _ in statements.statements if s.split(None, 1)[0].upper() in ("CREATE", "ALTER", "DROP")]
        assert ddl == []
        assert schema.current(records._engine) == schema.head() == "0001"


# -- SQLite -------------------------------------------------------------------


@pytest.fixture
def records(tmp_path) -> Iterator[Records]:
    recs = Records(f"sqlite:///{tmp_path}/records.sqlite")
    yield recs
    recs.dispose()


class TestRecordsOnSQLite(RecordsContract):
    pass


def test_migrations_match_the_models(tmp_path) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from servicegroup.records.models import Base

    recs = Records(f"sqlite:///{tmp_path}/r.sqlite")
    with recs._engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"version_table": schema.VERSION_TABLE})
        assert compare_metadata(ctx, Base.metadata) == []


def test_concurrent_first_migrations_all_succeed(tmp_path) -> None:
    url = f"sqlite:///{tmp_path}/fleet.sqlite"
    barrier = threading.Barrier(4)
    failures: list[BaseException] = []

    def start_one() -> None:
        recs = Records(url, migrate=False)
        barrier.wait()
        try:
            recs.migrate()
        except BaseException as exc:
            failures.append(exc)
        finally:
            recs.dispose()

    threads = [threading.Thread(target=start_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert failures == []
    assert Records(url).upsert("h", "t").id == 1


def test_password_is_redacted_in_errors_for_an_unreachable_postgres_url(caplog) -> None:
    caplog.set_level(logging.DEBUG)
    url = "postgresql://admin:s3cr3t-pw@127.0.0.1:1/servicedb"
    with pytest.raises(errors.BackendUnavailable) as info:
        Records(url, connect_timeout=1)
    message = str(info.value)
    assert "127.0.0.1:1/servicedb" in message
    assert "s3cr3t-pw" not in message and "s3cr3t-pw" not in repr(info.value)
    assert "s3cr3t-pw" not in str(info.value.__cause__)
    assert "s3cr3t-pw" not in caplog.text
    recs = Records(url, migrate=False)
    assert "s3cr3t-pw" not in repr(recs) and "s3cr3t-pw" not in recs.url_redacted


def test_unreachable_mysql_is_backend_unavailable_naming_host_and_database() -> None:
    with pytest.raises(errors.BackendUnavailable, match=r"127\.0\.0\.1:1/servicedb"):
        Records("mysql://root:pw@127.0.0.1:1/servicedb", connect_timeout=1)


@pytest.mark.parametrize("url", ["not a url", "", "nosuchdb://host/db", "postgresql://h:notaport/db"], ids=repr)
def test_malformed_url_is_invalid_url(url: str) -> None:
    with pytest.raises(errors.InvalidURL):
        Records(url, migrate=False)


def test_missing_sqlite_directory_is_backend_unavailable(tmp_path) -> None:
    with pytest.raises(errors.BackendUnavailable, match="sqlite"):
        Records(f"sqlite:///{tmp_path}/no/such/dir/records.sqlite")


def test_bare_dialects_map_to_the_installed_dbapis() -> None:
    assert engines.parse("postgresql://u@h/d").drivername == "postgresql+psycopg2"
    assert engines.parse("mysql://u@h/d").drivername == "mysql+pymysql"
    assert engines.parse("mysql+pymysql://u@h/d").drivername == "mysql+pymysql"


def test_in_memory_database_is_shared_by_threads() -> None:
    recs = Records("sqlite://")
    recs.upsert("h", "t")
    seen: list[object] = []
    t = threading.Thread(target=lambda: seen.append(recs.get("h", "t")))
    t.start()
    t.join(10)
    assert seen and seen[0] is not None


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_does_not_reuse_parent_connections(tmp_path) -> None:
    recs = Records(f"sqlite:///{tmp_path}/fork.sqlite")
    recs.upsert("parent", "t")
    assert recs._engine.pool.checkedin() >= 1  # a pooled connection exists
    pid = os.fork()
    if pid == 0:  # child: new pool, its own connection
        code = 1
        try:
            if recs._engine.pool.checkedin() == 0:
                recs.upsert("child", "t")
                code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert {s.host for s in recs.list("t")} == {"parent", "child"}


def test_with_liveness_returns_a_copy() -> None:
    now = datetime.now(timezone.utc)
    svc = Service(1, "u", "h", "t", None, 0, 0, False, None, False, None, None, None)
    live = svc.with_liveness(True, now)
    assert (live.up, live.last_seen_up, svc.up) == (True, now, None)


@pytest.mark.parametrize("url,dialect", [("oracle://u:s3cret@h/x", "oracle"), ("mssql+pyodbc://u:s3cret@h/x", "mssql")])
def test_unsupported_dialect_is_invalid_url_naming_it_and_the_supported_ones(url: str, dialect: str) -> None:
    with pytest.raises(errors.InvalidURL) as info:
        Records(url, migrate=False)
    message = str(info.value)
    assert repr(dialect) in message and "sqlite, postgresql or mysql/mariadb" in message
    assert "s3cret" not in message


def test_a_supported_dialect_with_a_dbapi_not_installed_is_invalid_url() -> None:
    import importlib.util

    if importlib.util.find_spec("asyncpg") is not None:
        pytest.skip("asyncpg is installed here")
    with pytest.raises(errors.InvalidURL, match="not installed") as info:
        Records("postgresql+asyncpg://u:s3cret@h/x", migrate=False)
    assert "s3cret" not in str(info.value)


def test_port_zero_in_a_records_url_is_invalid_url() -> None:
    with pytest.raises(errors.InvalidURL, match="port 0"):
        Records("postgresql://u:pw@127.0.0.1:0/x", migrate=False)


def test_sqlite_option_pysqlite_would_ignore_is_refused_by_name(tmp_path) -> None:
    with pytest.raises(errors.InvalidURL, match="bogus"):
        Records(f"sqlite:///{tmp_path / 'r.sqlite'}?bogus=1", migrate=False)
    assert not (tmp_path / "r.sqlite").exists()
    Records(f"sqlite:///{tmp_path / 'r.sqlite'}?timeout=5").dispose()
    Records(f"sqlite:///{tmp_path / 'r.sqlite'}?uri=true&cache=shared", migrate=False).dispose()


class _Refused(Exception):
    """Raised instead of connecting: the test only wants the arguments."""


def _connect_arguments(url: str) -> dict[str, object]:
    """The DBAPI arguments a records connection to *url* would be opened with."""
    recs = Records(url, migrate=False)
    seen: dict[str, object] = {}

    def capture(dialect, conn_rec, cargs, cparams):
        seen.update(cparams)
        raise _Refused()

    event.listen(recs._engine, "do_connect", capture)
    with pytest.raises(_Refused):
        recs.get("h", "t")
    recs.dispose()
    return seen


def test_every_records_call_is_bounded_like_the_liveness_engine() -> None:
    """A silent records database (a frozen host, a half-open connection)
    held a records call for as long as the kernel kept the socket; the
    records engine now has the liveness engine's bounds."""
    from servicegroup.sqlengine import STATEMENT_TIMEOUT

    pg = _connect_arguments("postgresql://u@127.0.0.1:1/db")
    assert f"statement_timeout={STATEMENT_TIMEOUT * 1000}" in str(pg["options"])
    assert pg["tcp_user_timeout"] == STATEMENT_TIMEOUT * 1000 and pg["keepalives"] == 1
    my = _connect_arguments("mysql://u@127.0.0.1:1/db")
    assert my["read_timeout"] == my["write_timeout"] == STATEMENT_TIMEOUT


def test_the_records_urls_own_bounds_win() -> None:
    assert _connect_arguments("mysql://u@127.0.0.1:1/db?read_timeout=5")["read_timeout"] == 5
    own = _connect_arguments("postgresql://u@127.0.0.1:1/db?options=-c%20statement_timeout%3D200")
    assert own["options"] == "-c statement_timeout=200"
