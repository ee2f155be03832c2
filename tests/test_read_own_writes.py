"""Read your own writes: once ``join``/``leave`` returns, the same process
answers accordingly, even for a topic it had read before (docs/semantics.md)."""

from __future__ import annotations

import threading


def test_is_up_is_true_as_soon_as_join_returns_on_a_topic_read_before(make_sg):
    sg = make_sg()
    assert sg.get_all("compute") == []  # the topic is read, and cached, first
    svc = sg.join("host-a", "compute")
    assert sg.is_up(svc)
    assert sg.get_all("compute") == ["host-a"]


def test_is_up_is_false_as_soon_as_leave_returns(make_sg):
    sg = make_sg()
    svc = sg.join("host-a", "compute")
    assert sg.is_up(svc)
    sg.leave("host-a", "compute")
    assert not sg.is_up(svc)
    assert sg.get_all("compute") == []


def test_a_read_that_started_before_the_join_cannot_undo_it(make_sg, server):
    """The refresher's read may have begun before the join and commit after:
    it saw the topic without us, and must not make us look down again."""
    sg = make_sg()
    sg.get_all("compute")
    view = sg._view
    started, release = threading.Event(), threading.Event()
    fetch = view._fetch

    def slow_fetch(topic):
        members = fetch(topic)  # read before the join ...
        started.set()
        release.wait(10)  # ... committed after it
        return members

    view._fetch = slow_fetch
    reader = threading.Thread(target=view.refresh, args=("compute",))
    reader.start()
    assert started.wait(10)
    view._fetch = fetch
    svc = sg.join("host-a", "compute")
    release.set()
    reader.join(10)
    assert sg.is_up(svc)


def test_a_watch_hears_its_own_process_join_once(make_sg, clock):
    sg = make_sg()
    joined = []
    done = threading.Event()

    def on_join(topic, host):
        joined.append(host)
        done.set()

    sg.watch("compute", on_join=on_join)
    sg.join("host-a", "compute")
    assert done.wait(10)
    clock.advance(1.0)
    sg.get_all("compute")  # the backend's own read of the same join
    sg._view.dispatcher.drain()
    assert joined == ["host-a"]
