"""A nova.conf drives a member and ``service-list`` on every driver (docs/nova.md).

The file carries nova's own names (``[DEFAULT] servicegroup_driver``,
``report_interval``, ``service_down_time``, ``[database] connection``);
only the backend URL, which nova has no option for, is ours. An observer
configured directly (not from the file) must see the member in the real
backend: a driver silently ignored would put it somewhere else.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

from servicegroup import ServiceGroup

from functional.members import DOWN_TIME, REPORT_INTERVAL, STALENESS, MemberProcess, Target, explain, wait_for


def nova_conf(target: Target, path) -> str:
    lines = [
        "[DEFAULT]",
        f"servicegroup_driver = {target.driver}",
        f"report_interval = {REPORT_INTERVAL}",
        f"service_down_time = {DOWN_TIME}",
        "[database]",
        f"connection = {target.records_url}",
        "[servicegroup]",
        f"max_staleness = {STALENESS}",
    ]
    if target.url:
        lines.append(f"url = {target.url}")
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def service_list(config_file: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "servicegroup", "service-list", "--config-file", config_file, "-f", "json"],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_nova_conf_drives_a_member_and_service_list(target, tmp_path):
    config = nova_conf(target, tmp_path / "nova.conf")
    # The records database of a server target is shared by the whole test
    # session: other tests' services are listed too, so look at ours only.
    host = f"compute-{uuid.uuid4().hex[:8]}"
    member = MemberProcess(target, host, "compute", config_file=config)
    observer = ServiceGroup(**target.kwargs())
    try:
        assert wait_for(lambda: observer.is_up(topic="compute", host=host)), explain([member])
        listed = service_list(config)
        assert listed.returncode == 0, listed.stderr
        rows = [r for r in json.loads(listed.stdout) if r["host"] == host]
        assert [(r["topic"], r["state"]) for r in rows] == [("compute", "up")]
        assert "servicegroup_driver" in listed.stderr and "deprecated" in listed.stderr
    finally:
        member.terminate()
        observer.stop()
