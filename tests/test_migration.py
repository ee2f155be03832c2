"""Switching the driver on a live fleet (``previous_driver``), pinned on two
in-memory backends with a fake clock: members join both, observers count
either, a failure of one backend never hurts the other."""

from __future__ import annotations

import pytest

from servicegroup import conf, errors
from servicegroup.api import ServiceGroup
from tests.fakes import TTL, FakeServer

NEW, OLD = "mc", "redis"  # two aliases the fakes stand in for


@pytest.fixture
def old_server(clock):
    return FakeServer(clock, ttl=TTL)


@pytest.fixture
def make_pair(tmp_path, server, old_server, clock):
    """ServiceGroups over two fake backends: ``memcached://`` URLs go to
    ``server`` (the new backend), ``redis://`` ones to ``old_server``."""
    made = []

    def factory(url, member_id):
        return (old_server if url.startswith("redis") else server).factory(url, member_id)

    def make(driver=NEW, previous_driver=OLD, **kw):
        kw.setdefault("records_url", f"sqlite:///{tmp_path / 'records.sqlite'}")
        sg = ServiceGroup(
            driver=driver,
            previous_driver=previous_driver,
            report_interval=1.0,
            service_down_time=TTL,
            max_staleness=0.5,
            background=False,
            coordinator_factory=factory,
            clock=clock,
            **kw,
        )
        made.append(sg)
        return sg

    yield make
    for sg in made:
        sg.stop()


def _listed(server, topic="compute"):
    return sorted(m.decode() for m in server.live(topic.encode()))


def test_member_with_previous_driver_joins_both_backends(make_pair, server, old_server):
    sg = make_pair()
    sg.join("host-a", "compute")
    assert _listed(server) == ["host-a"]
    assert _listed(old_server) == ["host-a"]


def test_member_heartbeats_keep_it_listed_in_both(make_pair, server, old_server, clock):
    sg = make_pair()
    sg.join("host-a", "compute")
    for _ in range(5):
        clock.advance(1.0)
        sg.heartbeat()
    assert _listed(server) == _listed(old_server) == ["host-a"]


def test_observer_counts_a_service_up_if_either_backend_lists_it(make_pair):
    old_member = make_pair(driver=OLD, previous_driver=None)  # not switched yet
    new_member = make_pair(driver=NEW, previous_driver=None)  # switched and dropped previous
    old_member.join("on-old", "compute")
    new_member.join("on-new", "compute")
    observer = make_pair()
    assert observer.is_up(topic="compute", host="on-old")
    assert observer.is_up(topic="compute", host="on-new")
    assert not observer.is_up(topic="compute", host="nowhere")
    assert observer.get_all("compute") == ["on-new", "on-old"]
    assert observer.liveness_unknown("compute") is None


def test_forced_down_wins_over_both_backends(make_pair):
    sg = make_pair()
    sg.join("host-a", "compute")
    sg.force_down("host-a", "compute")
    assert not sg.is_up(topic="compute", host="host-a")
    assert sg.get_all("compute") == []


def test_the_new_backends_capabilities_win_where_both_list_a_host(make_pair):
    old_member = make_pair(driver=OLD, previous_driver=None)
    new_member = make_pair(driver=NEW, previous_driver=None)
    old_member.join("host-a", "compute", capabilities={"where": "old"})
    new_member.join("host-a", "compute", capabilities={"where": "new"})
    assert make_pair().members("compute")["host-a"]["where"] == "new"


def test_an_unreachable_old_backend_neither_fails_the_join_nor_the_new_heartbeat(make_pair, server, old_server, clock):
    old_server.down = True
    sg = make_pair()
    sg.join("host-a", "compute")  # the old backend's refusal is logged, not raised
    for _ in range(5):
        clock.advance(1.0)
        sg.heartbeat()
    assert _listed(server) == ["host-a"]
    assert sg.is_up(topic="compute", host="host-a")
    old_server.down = False
    sg.heartbeat()  # the old backend's join is retried by the member's beats
    assert _listed(old_server) == ["host-a"]


def test_an_old_backend_failing_mid_run_never_stops_the_new_heartbeat(make_pair, server, old_server, clock):
    sg = make_pair()
    sg.join("host-a", "compute")
    old_server.down = True
    before = server.heartbeats
    for _ in range(5):
        clock.advance(1.0)
        sg.heartbeat()
    assert server.heartbeats >= before + 5
    assert _listed(server) == ["host-a"]


def test_a_new_backend_refusing_the_join_fails_it_as_without_a_switch(make_pair, server, old_server):
    server.down = True
    sg = make_pair()
    with pytest.raises(errors.BackendUnavailable):
        sg.join("host-a", "compute")
    assert sg.records.get("host-a", "compute") is None
    assert old_server.groups.get(b"compute", {}) == {}


def test_an_unreadable_old_backend_keeps_services_of_the_new_one_up_and_says_why(make_pair, server, old_server, clock):
    new_member = make_pair(driver=NEW, previous_driver=None)
    old_member = make_pair(driver=OLD, previous_driver=None)
    new_member.join("on-new", "compute")
    old_member.join("on-old", "compute")
    observer = make_pair()
    assert observer.get_all("compute") == ["on-new", "on-old"]
    old_server.down = True
    clock.advance(TTL + 1)  # past the grace of the old backend's last good read
    new_member.heartbeat()
    assert observer.is_up(topic="compute", host="on-new")  # never down for the old one's outage
    assert not observer.is_up(topic="compute", host="on-old")  # cannot be vouched for...
    why = observer.liveness_unknown("compute")  # ...and said so: "down" is a guess
    assert why is not None and "redis" in why and "memcached" not in why


def test_both_backends_unreadable_names_both(make_pair, server, old_server, clock):
    sg = make_pair()
    sg.join("host-a", "compute")
    assert sg.is_up(topic="compute", host="host-a")
    server.down = old_server.down = True
    clock.advance(TTL + 1)
    assert not sg.is_up(topic="compute", host="host-a")
    why = sg.liveness_unknown("compute")
    assert "redis" in why and "memcached" in why


def test_leave_leaves_both_backends(make_pair, server, old_server):
    sg = make_pair()
    sg.join("host-a", "compute")
    sg.leave("host-a", "compute")
    assert _listed(server) == _listed(old_server) == []


def test_stop_leaves_both_backends(make_pair, server, old_server):
    sg = make_pair()
    sg.join("host-a", "compute")
    sg.stop()
    assert _listed(server) == _listed(old_server) == []


def _settle(observer):
    """Read both backends now and run the watch callbacks that queued."""
    for view in observer._sources.views:
        view.refresh("compute")
        view.dispatcher.drain()


def test_watch_reports_joins_and_leaves_of_the_union(make_pair):
    observer = make_pair()
    events = []
    watch = observer.watch(
        "compute", on_join=lambda t, h: events.append(("join", h)), on_leave=lambda t, h: events.append(("leave", h))
    )
    old_member = make_pair(driver=OLD, previous_driver=None)
    old_member.join("on-old", "compute")
    switching = make_pair()
    switching.join("both", "compute")
    _settle(observer)
    assert sorted(events) == [("join", "both"), ("join", "on-old")]
    events.clear()
    old_member.leave("on-old", "compute")
    switching.leave("both", "compute")
    _settle(observer)
    assert sorted(events) == [("leave", "both"), ("leave", "on-old")]
    watch.cancel()


def test_expire_hides_the_host_in_both_backends(make_pair):
    member = make_pair()
    member.join("host-a", "compute")
    observer = make_pair()
    assert observer.expire("compute", "host-a")
    assert not observer.is_up(topic="compute", host="host-a")


def test_switch_status_counts_new_old_both_and_missing(make_pair):
    make_pair(driver=OLD, previous_driver=None).join("old-only", "compute")
    make_pair(driver=NEW, previous_driver=None).join("new-only", "compute")
    make_pair().join("both", "compute")
    status = make_pair().switch_status("compute")
    assert status.new == {"new-only", "both"}
    assert status.old == {"old-only", "both"}
    assert status.both == {"both"}
    assert status.missing == ["old-only"]


def test_switch_status_refuses_to_guess_when_a_backend_is_unreadable(make_pair, old_server):
    old_server.down = True
    with pytest.raises(errors.BackendUnavailable, match="redis"):
        make_pair().switch_status("compute")


def test_switch_status_without_previous_driver_is_a_config_error(make_pair):
    with pytest.raises(errors.ConfigError, match="previous_driver is not set"):
        make_pair(previous_driver=None).switch_status("compute")


def test_previous_url_without_previous_driver_is_refused(make_pair):
    with pytest.raises(errors.ConfigError, match="previous_driver"):
        make_pair(previous_driver=None, previous_url="redis://127.0.0.1:6379")


@pytest.mark.parametrize("previous", [NEW, "memcached://localhost:11211/"])
def test_previous_driver_that_is_the_driver_itself_is_refused(make_pair, previous):
    with pytest.raises(errors.ConfigError, match="nothing to switch from"):
        make_pair(driver="memcached://LOCALHOST:11211", previous_driver=previous)


def test_unknown_previous_driver_is_a_typed_error_naming_the_option(make_pair):
    with pytest.raises(errors.UnknownDriver, match="previous_driver"):
        make_pair(previous_driver="nosuch")


def test_previous_driver_and_url_are_read_from_the_config_file(tmp_path):
    path = tmp_path / "sg.conf"
    path.write_text("[servicegroup]\ndriver = zk\nprevious_driver = db\nprevious_url = sql+sqlite:///x.db\n")
    s = conf.Settings.from_file(str(path))
    assert (s.previous_driver, s.previous_url) == ("db", "sql+sqlite:///x.db")


def test_an_empty_previous_driver_in_the_file_means_no_switch(tmp_path):
    path = tmp_path / "sg.conf"
    path.write_text("[servicegroup]\ndriver = zk\nprevious_driver =\n")
    assert conf.Settings.from_file(str(path)).previous_driver is None


def test_settings_repr_hides_a_password_in_previous_url():
    s = conf.Settings(previous_driver="redis", previous_url="redis://:s3cret@h:6379")
    assert "s3cret" not in repr(s)


def test_matchmaker_and_hash_ring_answer_from_both_backends(make_pair):
    from servicegroup.matchmaker import MatchMaker

    make_pair(driver=OLD, previous_driver=None).join("on-old", "compute")
    make_pair(driver=NEW, previous_driver=None).join("on-new", "compute")
    observer = make_pair()
    assert MatchMaker(observer).get_hosts("compute") == ["on-new", "on-old"]
    assert observer.partitioner("compute").members() == ["on-new", "on-old"]


def test_a_join_and_a_leave_show_in_both_views_of_this_process_at_once(make_pair):
    sg = make_pair()
    assert sg.get_all("compute") == []  # both views read before the join
    sg.join("host-a", "compute")
    assert [v.members("compute").keys() == {"host-a"} for v in sg._sources.views] == [True, True]
    sg.leave("host-a", "compute")
    assert not sg.is_up(topic="compute", host="host-a")
