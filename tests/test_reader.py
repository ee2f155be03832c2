"""Backend reads for the view (servicegroup.reader) and poking one topic.

The interleavings are forced with events inside a fake subscription, so no
test depends on thread scheduling or on wall-clock time.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from servicegroup import push
from servicegroup.membership import MembershipView
from servicegroup.reader import Reader
from tests.fakes import FakeServer


class SlowSubscribe:
    """A push.subscribe whose first call blocks until released."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.cancelled: list[str] = []
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, coord: Any, kind: str | None, topic: str, poke: Any) -> push.Cancel:
        self.calls.append(topic)
        if len(self.calls) == 1:
            self.entered.set()
            self.release.wait(30)  # a guard against a hang, not a timing
        return lambda: self.cancelled.append(topic)


@pytest.fixture
def reader(server: FakeServer, monkeypatch: pytest.MonkeyPatch):
    member = server.factory("fake://", b"host-a")
    member.start()
    member.create_group(b"compute").get()
    member.join_group(b"compute", {}).get()
    subscribe = SlowSubscribe()
    monkeypatch.setattr(push, "subscribe", subscribe)
    r = Reader("zookeeper://127.0.0.1:2181", server.factory, background=True)
    pokes: list[str] = []
    r.attach(poke=pokes.append, watched=lambda topic: True)
    r.subscribe_calls, r.pokes = subscribe, pokes  # type: ignore[attr-defined]
    yield r
    subscribe.release.set()
    r.close()


def _first_read_in_a_thread(reader: Reader) -> threading.Thread:
    t = threading.Thread(target=reader.fetch, args=("compute",), daemon=True)
    t.start()
    assert reader.subscribe_calls.entered.wait(30)  # type: ignore[attr-defined]
    return t


def test_two_first_reads_subscribe_once(reader: Reader):
    """The refresher's first read and a caller's both found no subscription
    and both subscribed: the second handle overwrote the first, whose watch
    thread (etcd, Consul) then ran forever."""
    subscribe = reader.subscribe_calls  # type: ignore[attr-defined]
    first = _first_read_in_a_thread(reader)
    assert sorted(reader.fetch("compute")) == ["host-a"]  # the second first read
    subscribe.release.set()
    first.join(30)
    assert subscribe.calls == ["compute"]
    assert reader.subscribed("compute")
    assert reader.pokes == ["compute"]  # type: ignore[attr-defined]
    reader.close()
    assert subscribe.cancelled == ["compute"]


def test_a_subscription_made_after_its_topic_was_forgotten_is_cancelled(reader: Reader):
    subscribe = reader.subscribe_calls  # type: ignore[attr-defined]
    first = _first_read_in_a_thread(reader)
    reader.forget("compute")  # the view dropped the topic meanwhile
    subscribe.release.set()
    first.join(30)
    assert subscribe.cancelled == ["compute"], "the late subscription leaked"
    assert not reader.subscribed("compute")


def test_poke_refreshes_only_the_topic_it_names(clock):
    """poke(topic) ignored its topic and re-read every topic: one busy
    topic's pushes cost a read of every other topic the process follows."""
    fetched: list[str] = []
    view = MembershipView(
        lambda topic: fetched.append(topic) or {}, max_staleness=0.5, grace=3.0, clock=clock, start_thread=False
    )
    for topic in ("a", "b", "c"):
        view.members(topic)
    fetched.clear()
    view.poke("b")
    view.refresh_poked()  # what the refresher does when a poke wakes it
    assert fetched == ["b"]
    view.poke()
    view.refresh_poked()
    assert fetched == ["b", "a", "b", "c"], "a poke naming no topic reads them all"


def test_the_refresher_thread_reads_just_the_poked_topic():
    """End to end, on the refresher thread: a poke between two polls reads
    the poked topic alone (polls are an hour apart here)."""
    fetched: list[str] = []
    read = threading.Condition()

    def fetch(topic: str) -> dict:
        with read:
            fetched.append(topic)
            read.notify_all()
        return {}

    view = MembershipView(fetch, max_staleness=3600, grace=7200)
    full_passes: list[int] = []
    first_pass = threading.Event()
    every_topic = view.refresh_all

    def counted_refresh_all() -> None:
        every_topic()
        full_passes.append(1)
        first_pass.set()

    view.refresh_all = counted_refresh_all  # type: ignore[method-assign]
    try:
        for topic in ("a", "b"):
            view.members(topic)  # the first reads (the caller's) start the refresher
        assert first_pass.wait(30)  # its first pass done, it sleeps until poked
        with read:
            fetched.clear()
        view.poke("a")
        with read:
            assert read.wait_for(lambda: "a" in fetched, 30)
        view.poke("b")
        with read:
            assert read.wait_for(lambda: "b" in fetched, 30)
        assert fetched == ["a", "b"] and len(full_passes) == 1
    finally:
        view.stop()
