"""The records contract against real PostgreSQL and MariaDB.

Every test here works in this session's own database on the shared servers
(``servers.sql_url``; other suites running at the same time have theirs),
and still uses host and topic names of its own and deletes its rows, since
the other tests of the session share the database. The first-migration
test runs in a throwaway schema (PostgreSQL) or database (MariaDB) that it
drops afterwards.

The servers can be overridden with ``SERVICEGROUP_TEST_PG_URL`` and
``SERVICEGROUP_TEST_MYSQL_URL`` (see :mod:`servicegroup.testing.servers.sql`).
"""

from __future__ import annotations

from collections.abc import Iterator
import threading
import uuid

import pytest
import sqlalchemy as sa

from servicegroup import errors
from servicegroup.records import Records
from servicegroup.records import schema
from servicegroup.records.models import services
from servicegroup.testing import servers
from servicegroup.testing.selection import backend_params
from tests.test_records import RecordsContract

DIALECTS = ["mysql", "postgresql"]


def url_of(dialect: str) -> str:
    """This session's database on the shared server of *dialect*, named by
    the bare dialect as users write it (the records layer picks the DBAPI)."""
    url = sa.make_url(servers.sql_url(dialect)).set(drivername=dialect)
    return url.render_as_string(hide_password=False)


def _open(url: str) -> Records:
    try:
        return Records(url)
    except errors.BackendUnavailable as exc:
        # Not a skip: these servers are part of the test set-up.
        pytest.fail(f"{exc} - run `make services` to start the shared databases")


@pytest.fixture(scope="module", params=backend_params(*DIALECTS))
def shared(request) -> Iterator[Records]:
    recs = _open(url_of(request.param))
    yield recs
    recs.dispose()


@pytest.fixture
def records(shared: Records, host: str) -> Iterator[Records]:
    yield shared
    # Clean up every row this test made: its host names all start with
    # the test's unique host name (the contract derives them from it).
    with shared._engine.begin() as conn:
        conn.execute(sa.delete(services).where(services.c.host.like(f"{host}%")))


class TestRecordsOnRealDatabases(RecordsContract):
    pass


@pytest.fixture(params=backend_params(*DIALECTS))
def empty_database(request) -> Iterator[str]:
    """A URL of a brand-new, empty schema; dropped afterwards."""
    name = f"sg_records_{uuid.uuid4().hex[:10]}"
    base = sa.make_url(url_of(request.param))
    if request.param == "postgresql":
        admin = sa.create_engine(base.set(drivername="postgresql+psycopg2"))
        with admin.begin() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{name}"')
        url = base.update_query_dict({"options": f"-csearch_path={name}"})
        drop = f'DROP SCHEMA "{name}" CASCADE'
    else:
        admin = sa.create_engine(base.set(drivername="mysql+pymysql"))
        with admin.begin() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        url = base.set(database=name)
        drop = f"DROP DATABASE `{name}`"
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(drop)
        admin.dispose()


def test_concurrent_first_migrations_on_an_empty_database_all_succeed(empty_database: str) -> None:
    barrier = threading.Barrier(4)
    failures: list[BaseException] = []
    instances = [Records(empty_database, migrate=False) for _ in range(4)]

    def start_one(recs: Records) -> None:
        barrier.wait()
        try:
            recs.migrate()
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=start_one, args=(r,)) for r in instances]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    try:
        assert failures == []
        assert schema.current(instances[0]._engine) == schema.head()
        assert instances[0].upsert("h", "t").id == 1
    finally:
        for recs in instances:
            recs.dispose()


def test_missing_database_is_backend_unavailable_naming_it() -> None:
    for url in map(url_of, DIALECTS):
        missing = sa.make_url(url).set(database="sg_no_such_db").render_as_string(hide_password=False)
        with pytest.raises(errors.BackendUnavailable, match="sg_no_such_db"):
            Records(missing, connect_timeout=2)


def test_bad_credentials_are_backend_unavailable_without_the_password() -> None:
    good = sa.make_url(url_of("mysql"))
    url = good.set(username="sg_nobody", password="s3cr3t-pw")
    with pytest.raises(errors.BackendUnavailable) as info:
        Records(url.render_as_string(hide_password=False), connect_timeout=2)
    assert "s3cr3t-pw" not in str(info.value)
    assert f"127.0.0.1:3306/{good.database}" in str(info.value)


def test_unknown_url_option_is_invalid_url_naming_it() -> None:
    for url in map(url_of, DIALECTS):
        with pytest.raises(errors.InvalidURL, match="tiemout"):
            Records(url + "?tiemout=5")


@pytest.mark.parametrize(
    "dialect,option",
    backend_params(
        ("postgresql", {"options": "-ctimezone=Pacific/Kiritimati"}),
        ("mysql", {"init_command": "SET time_zone='+13:00'"}),
    ),
)
def test_timestamps_are_utc_whatever_the_session_time_zone(dialect: str, option: dict[str, str]) -> None:
    host, topic = f"host-{uuid.uuid4().hex[:12]}", f"topic-{uuid.uuid4().hex[:12]}"
    plain = _open(url_of(dialect))
    url = sa.make_url(url_of(dialect)).update_query_dict(option).render_as_string(hide_password=False)
    skewed = Records(url)
    try:
        svc = skewed.upsert(host, topic)
        reference = plain.server_now()  # server clock, default session zone
        assert abs(skewed.server_now() - reference).total_seconds() < 60
        assert abs(svc.last_seen_up - reference).total_seconds() < 60
        assert plain.get(host, topic).last_seen_up == svc.last_seen_up
    finally:
        with plain._engine.begin() as conn:
            conn.execute(sa.delete(services).where(services.c.host == host))
        skewed.dispose()
        plain.dispose()


@pytest.mark.backend("db-postgresql")
def test_the_records_urls_dbapi_options_apply_to_liveness_connections_too() -> None:
    """driver=db: the liveness backend is the records database, and a
    connection option set there (here application_name; in production
    sslmode) holds on the liveness connections as well."""
    from servicegroup.api import ServiceGroup

    name = f"sg-{uuid.uuid4().hex[:10]}"
    sg = ServiceGroup(
        driver="db",
        records_url=f"{url_of('postgresql')}?application_name={name}",
        report_interval=1,
        service_down_time=3,
    )
    try:
        sg.join("host-a", f"opts-{name}")
        liveness = sg._members["host-a"].coordinator()._db.engine
        with liveness.connect() as conn:
            assert conn.execute(sa.text("SHOW application_name")).scalar() == name
    finally:
        sg.stop()


@pytest.mark.backend("db-postgresql")
def test_a_statement_past_the_bound_fails_typed_instead_of_hanging() -> None:
    """The liveness driver's PostgreSQL statements are bounded (30 s by
    default; here the URL sets 200 ms so the test is quick): a stuck
    statement becomes a tooz error the heartbeat counts, never a hang."""
    from tooz import coordination

    c = coordination.get_coordinator(f"sql+{url_of('postgresql')}?options=-c%20statement_timeout%3D200", b"m1")
    c.start()
    try:
        with pytest.raises(coordination.ToozConnectionError, match="127.0.0.1:5432.*statement timeout"):
            c._db.run(lambda conn: conn.execute(sa.text("SELECT pg_sleep(2)")))
    finally:
        c.stop()


@pytest.mark.backend("db-postgresql")
def test_records_statements_are_bounded_too() -> None:
    """The records engine has the liveness engine's bounds (a silent records
    database no longer holds a records call for as long as the kernel
    allows): 30 s by default, the URL's own value winning; past it a
    records call fails typed, naming the server."""
    from servicegroup.records import engine as engines
    from servicegroup.sqlengine import STATEMENT_TIMEOUT

    url = url_of("postgresql")
    default = _open(url)
    bounded = _open(url + "?options=-c%20statement_timeout%3D200")
    try:
        with engines.read(default._engine, url) as conn:
            assert conn.execute(sa.text("SHOW statement_timeout")).scalar() == f"{STATEMENT_TIMEOUT}s"
        with pytest.raises(errors.BackendUnavailable, match="127.0.0.1:5432.*statement timeout"):
            with engines.read(bounded._engine, url) as conn:
                conn.execute(sa.text("SELECT pg_sleep(2)"))
    finally:
        default.dispose()
        bounded.dispose()
