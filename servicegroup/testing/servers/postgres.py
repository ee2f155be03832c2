"""A private PostgreSQL for tests that restart their database.

The shared PostgreSQL (``make services``) serves every test session at
once, so no test may restart it. A test about a records database that
restarts starts one of its own: a fresh cluster (``initdb``) in the temp
dir, listening on a free loopback port, trust authentication, no fsync.
``restart()`` is ``pg_ctl restart``'s default ("fast": every connection
is ended, new ones refused until the server is back); ``url`` is a
SQLAlchemy URL of its ``postgres`` database.

PostgreSQL refuses to run as root; as root, ``initdb`` and ``postgres``
run as the ``postgres`` user (Debian's package creates it), which then owns
the temp dir.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess

from servicegroup.testing.servers.process import ServerProcess, ServerStartError


def _bindir() -> str:
    """The newest PostgreSQL server's bin dir (Debian keeps them out of PATH)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(p.split("/")[4]))
    if found:
        return os.path.dirname(found[-1])
    on_path = shutil.which("postgres")
    if on_path:
        return os.path.dirname(on_path)
    raise ServerStartError("postgresql: no postgres binary (Debian: apt-get install postgresql)")


class PostgresServer(ServerProcess):
    name = "postgresql"
    scheme = "postgresql"
    #: SIGINT is PostgreSQL's fast shutdown; SIGTERM (smart) waits for
    #: every client to leave, which a test's pooled connections never do.
    stop_signal = signal.SIGINT

    @property
    def url(self) -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/postgres"

    def _as_postgres(self, cmd: list[str]) -> list[str]:
        if os.getuid() != 0:
            return cmd
        return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", *cmd]

    def configure(self) -> None:
        assert self.workdir
        if os.getuid() == 0:
            user = pwd.getpwnam("postgres")
            for path in (self.workdir, self.data_dir):
                os.chown(path, user.pw_uid, user.pw_gid)
        if os.path.exists(os.path.join(self.data_dir, "PG_VERSION")):
            return  # a restart keeps its cluster
        initdb = [os.path.join(_bindir(), "initdb"), "-D", self.data_dir, "-A", "trust", "-U", "postgres", "-N"]
        done = subprocess.run(self._as_postgres(initdb), capture_output=True, text=True, timeout=self.start_timeout)
        if done.returncode != 0:
            raise ServerStartError(f"postgresql: initdb failed ({done.returncode}): {done.stderr.strip()[-2000:]}")

    def command(self) -> list[str]:
        assert self.workdir
        postgres = os.path.join(_bindir(), "postgres")
        return self._as_postgres(
            [postgres, "-D", self.data_dir, "-p", str(self.port), "-h", self.host, "-k", self.workdir]
            + ["-c", "fsync=off", "-c", "full_page_writes=off", "-c", "max_connections=200"]
        )

    def ready(self) -> bool:
        import psycopg2

        try:
            psycopg2.connect(
                host=self.host, port=self.port, user="postgres", dbname="postgres", connect_timeout=2
            ).close()
        except psycopg2.OperationalError:
            return False
        return True
