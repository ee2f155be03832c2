"""A private PgBouncer (Debian package ``pgbouncer``) in front of the shared
PostgreSQL, in transaction pooling: what a fleet larger than PostgreSQL's
``max_connections`` goes through (docs/scale.md).

Transaction pooling hands each transaction whichever server connection is
free, so nothing may depend on session state (advisory locks, prepared
statements, ``SET``); the functional test and tooz's conformance suite run
the ``db`` liveness driver through it to prove that. Clients authenticate
as the shared server's trust users; PgBouncer drops the ``options``
startup parameter (it cannot pass it on per transaction), so the
statement bound the library asks for is set by PgBouncer on each server
connection instead (``connect_query``).
"""

from __future__ import annotations

import os

from servicegroup.testing.servers.process import ServerProcess, port_open

#: The shared PostgreSQL every pooled connection goes to.
POSTGRES = ("127.0.0.1", 5432)


class PgBouncerServer(ServerProcess):
    name = "pgbouncer"
    scheme = "sql+postgresql"
    #: Server connections per database/user pair: the most the fleet costs
    #: PostgreSQL however many clients connect.
    pool_size = 10
    max_clients = 10000

    @property
    def url(self) -> str:
        return f"sql+postgresql://postgres@{self.host}:{self.port}/test"

    def records_url(self, database: str = "test") -> str:
        return f"postgresql+psycopg2://postgres@{self.host}:{self.port}/{database}"

    def configure(self) -> None:
        assert self.workdir
        # PgBouncer refuses to run as root: it drops to the postgres user,
        # which must read its files.
        os.chmod(self.workdir, 0o755)
        users = os.path.join(self.workdir, "userlist.txt")
        with open(users, "w") as f:
            f.write('"postgres" ""\n"root" ""\n')
        host, port = POSTGRES
        ini = os.path.join(self.workdir, "pgbouncer.ini")
        with open(ini, "w") as f:
            f.write(
                "[databases]\n"
                f"* = host={host} port={port} connect_query='SET statement_timeout = 30000'\n"
                "[pgbouncer]\n"
                f"listen_addr = {self.host}\n"
                f"listen_port = {self.port}\n"
                "unix_socket_dir =\n"
                "auth_type = trust\n"
                f"auth_file = {users}\n"
                "pool_mode = transaction\n"
                f"default_pool_size = {self.pool_size}\n"
                f"max_client_conn = {self.max_clients}\n"
                "ignore_startup_parameters = extra_float_digits,options\n"
            )
        os.chmod(ini, 0o644)
        os.chmod(users, 0o644)

    def command(self) -> list[str]:
        assert self.workdir
        return ["pgbouncer", "-u", "postgres", os.path.join(self.workdir, "pgbouncer.ini")]

    def ready(self) -> bool:
        return port_open(self.host, self.port)


def main() -> None:
    """``python -m servicegroup.testing.servers.pgbouncer``: start one,
    print its liveness URL, run until SIGTERM or end of stdin (for
    scripts/conformance)."""
    import signal
    import sys
    import threading

    server = PgBouncerServer().start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def until_eof() -> None:
        sys.stdin.read()
        stop.set()

    threading.Thread(target=until_eof, daemon=True).start()
    try:
        print(server.url, flush=True)
        while not stop.wait(1.0):
            pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
