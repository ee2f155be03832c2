"""What the CLI tests share: running ``servicegroup`` in-process, the
one-line error rule, and records databases made for them."""

from __future__ import annotations

from servicegroup import cli
from servicegroup.records import Records


def run(capsys, *argv: str) -> tuple[int, str, str]:
    """``servicegroup *argv`` in this process: (exit code, stdout, stderr)."""
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code: int, err: str) -> None:
    assert code == cli.EXIT_ERROR
    assert err.count("\n") == 1 and "Traceback" not in err, err


def seed(records: str, *hosts: str, fenced: tuple[str, ...] = (), topic: str = "compute") -> None:
    """Service records written straight to the database (nobody joined)."""
    recs = Records(records)
    for host in hosts:
        recs.upsert(host, topic)
    for host in fenced:
        recs.set_forced_down(host, topic, True)
    recs.dispose()
