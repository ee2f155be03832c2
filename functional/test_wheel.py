"""The package as users get it: ``python -m build`` makes the sdist and,
from it, the wheel; the wheel goes into a fresh virtualenv *without any
extra*, outside the source tree, and runs ``db-sync`` and the demo there.

This catches what only a real install shows: package data left out (the
alembic migrations), a module that imports an optional client (kazoo,
pymemcache ...) at import time, a console script that does not resolve.
Choosing a backend whose client the base install lacks is one line
naming the extra.

Cost: the build is seconds (``--no-isolation``: the test virtualenv's
setuptools and wheel); the fresh install of the base requirements is
what takes time (pip's cache serves the downloads): ~20 s on a quiet
machine, a minute or two under heavy load.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent

#: Bound on each step (a bound for a loaded machine, not a timing asserted).
STEP_BOUND = 900


def run(cmd: list[str], cwd: pathlib.Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=STEP_BOUND)


def test_the_wheel_without_extras_runs_db_sync_and_the_demo_outside_the_source_tree(tmp_path):
    dist = tmp_path / "dist"
    built = run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(ROOT)], cwd=tmp_path)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    wheels = list(dist.glob("servicegroup-*.whl"))
    assert len(wheels) == 1 and len(list(dist.glob("servicegroup-*.tar.gz"))) == 1

    venv = tmp_path / "venv"
    made = run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    installed = run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", str(wheels[0])], cwd=tmp_path
    )
    assert installed.returncode == 0, installed.stderr[-3000:]

    work = tmp_path / "work"  # no source tree on the path: only the installed package
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    absent = run(
        [
            str(python),
            "-c",
            "import importlib.util as u; print([m for m in ('kazoo', 'pymemcache', 'redis', "
            "'etcd3gw', 'consul', 'psycopg2', 'pymysql', 'prometheus_client') if u.find_spec(m)])",
        ],
        cwd=work,
        env=env,
    )
    assert absent.stdout.strip() == "[]", "the base install pulled an extra's client: " + absent.stdout
    where = run([str(python), "-c", "import servicegroup; print(servicegroup.__file__)"], cwd=work, env=env)
    assert str(venv) in where.stdout and str(ROOT) not in where.stdout, where.stdout + where.stderr

    cli = str(venv / "bin" / "servicegroup")
    records = f"sqlite:///{work / 'records.sqlite'}"
    synced = run([cli, "db-sync", "--records-url", records], cwd=work, env=env)
    assert synced.returncode == 0 and "up to date" in synced.stdout, synced.stdout + synced.stderr
    demo = run([cli, "demo", "--records-url", records], cwd=work, env=env)
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert "get_all(" in demo.stdout

    missing = run([cli, "service-list", "--records-url", records, "--driver", "zk"], cwd=work, env=env)
    assert missing.returncode == 2
    assert missing.stderr.count("\n") == 1 and "pip install 'servicegroup[zookeeper]'" in missing.stderr, missing.stderr
