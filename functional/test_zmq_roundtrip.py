"""A real ZeroMQ round trip resolved through the MatchMaker, per backend.

Three server processes (``examples/zmq_roundtrip.py server``) bind REP
sockets on loopback and register under one topic; the client resolves
through a MatchMaker and sends direct, round robin, keyed and fanout
messages; one server is SIGKILLed; once ``sg.is_up`` says it is down, the
next sends reach only live servers, fanout reaches every live one, and the
client's send log (written before each send) holds no message to the dead
host after its detection.

Backends: ``db`` (a SQLite file, shared by every process) always; ``zk``
through the private ZooKeeper of the ``zookeeper_server`` session fixture
(functional/conftest.py) or the server ``SG_TEST_ZK_URL`` names, skipped
with the reason shown when neither exists. Timings are short (report_interval 0.5 s, service_down_time
2 s, max_staleness 0.25 s); waits are bounded, never asserted on.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import uuid

import pytest

from servicegroup.testing.selection import backend_params

zmq = pytest.importorskip("zmq")

EXAMPLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "zmq_roundtrip.py")
_spec = importlib.util.spec_from_file_location("zmq_roundtrip", EXAMPLE)
roundtrip = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = roundtrip  # dataclasses look their module up there
_spec.loader.exec_module(roundtrip)

#: Fixture names under which a ZooKeeper test server may be provided.
ZK_FIXTURES = ("zookeeper_server", "zookeeper")


def _zookeeper_url(request) -> str:
    for name in ZK_FIXTURES:
        try:
            server = request.getfixturevalue(name)
        except pytest.FixtureLookupError:
            continue
        return server if isinstance(server, str) else server.url
    if os.environ.get("SG_TEST_ZK_URL"):  # an external ZooKeeper, e.g. zookeeper://127.0.0.1:2181
        return os.environ["SG_TEST_ZK_URL"]
    pytest.skip(f"zk: no ZooKeeper fixture ({' / '.join(ZK_FIXTURES)}) in functional/conftest.py yet")


def _args(request, driver: str, workdir) -> argparse.Namespace:
    return argparse.Namespace(
        driver=driver,
        url=_zookeeper_url(request) if driver == "zk" else None,
        records_url="sqlite:///" + str(workdir / "servicegroup.sqlite"),
        topic=f"zmq-{uuid.uuid4().hex[:8]}",
        **roundtrip.TIMINGS,
    )


@pytest.fixture(scope="module", params=backend_params("db", "zk"))
def report(request, tmp_path_factory):
    """Run the scenario once per backend (its ``finally`` kills the servers)."""
    driver = request.param
    workdir = tmp_path_factory.mktemp(f"zmq-{driver}")
    args = _args(request, driver, workdir)
    result = roundtrip.run_scenario(args, str(workdir), n_servers=3, victim_index=1, keys=30)
    print(
        f"\n{driver}: detection {result['detection_seconds']} s after SIGKILL, "
        f"{result['sends_before']} sends before, {result['sends_after']} after, "
        f"{result['sent_to_dead_after_detection']} to the dead host after detection"
    )
    return result


def test_no_message_reaches_the_dead_host_after_its_detection(report):
    victim = report["victim"]
    late = [s for s in report["sends"] if s["host"] == victim and s["t"] >= report["detected_at"]]
    assert late == [], "the send log shows messages to the dead host after detection"
    assert report["sent_to_dead_after_detection"] == 0
    assert report["direct_to_dead"].startswith("NoLiveHosts"), "a direct lookup of the dead host is refused"


def test_after_the_death_every_send_reaches_a_live_server(report):
    live = report["live_after"]
    assert report["targets_after"] == live
    after = [s for s in report["sends"] if s["t"] >= report["detected_at"]]
    assert after and all(s["ok"] and s["replied_by"] == s["host"] for s in after)
    assert report["failed_sends"] == 0


def test_fanout_reaches_every_live_server_before_and_after(report):
    assert report["fanout_after"] == report["live_after"]
    before = [s for s in report["sends"] if s["t"] < report["detected_at"] and s["kind"] == "fanout"]
    assert sorted(s["replied_by"] for s in before) == report["hosts"]


def test_direct_round_robin_and_keyed_sends_all_arrive(report):
    kinds = {s["kind"] for s in report["sends"]}
    assert kinds == {"direct", "topic", "keyed", "fanout"}
    # What the servers recorded is what the client saw answered.
    assert report["received"] == report["replies"]
    assert all(report["replies"][h] > 0 for h in report["hosts"])


def test_only_the_dead_servers_keys_moved(report):
    assert report["keys_moved"] == report["keys_owned_by_victim_before"]


@pytest.mark.parametrize("driver", backend_params("db", "zk"))
def test_a_timed_out_send_nacks_the_host_out_of_every_answer_at_once(request, tmp_path, driver):
    """Before the backend notices a death, the first failed send removes the
    host: here, and (through the backend) for every other process."""
    args = _args(request, driver, tmp_path)
    servers = roundtrip.Servers(args, str(tmp_path))
    sender_sg, observer_sg = roundtrip.make_sg(args), roundtrip.make_sg(args)
    client = roundtrip.Client(roundtrip.MatchMaker(sender_sg), args.topic, timeout=0.5)
    try:
        for host in ("srv-1", "srv-2"):
            servers.start(host)
        assert roundtrip.wait_for(lambda: observer_sg.get_all(args.topic) == ["srv-1", "srv-2"], 60)
        assert roundtrip.wait_for(lambda: sender_sg.get_all(args.topic) == ["srv-1", "srv-2"], 60)
        servers.kill("srv-1")
        send = client.direct("srv-1")  # still listed: the TTL has not lapsed yet
        assert not send.ok
        assert client.mm.get_hosts(args.topic) == ["srv-2"], "the nacking process drops it at once"
        with pytest.raises(roundtrip.errors.NoLiveHosts):
            client.direct("srv-1")
        assert roundtrip.wait_for(lambda: observer_sg.get_all(args.topic) == ["srv-2"], 30), (
            "other processes drop it at their next refresh"
        )
        assert [s.ok for s in client.fanout()] == [True]
    finally:
        client.close()
        sender_sg.stop()
        observer_sg.stop()
        servers.close()
