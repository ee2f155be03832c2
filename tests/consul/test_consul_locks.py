"""Locks and leader election of the Consul backend, against the in-process
Consul test server (fake clock: expiry is exact, nothing asserts on time).

Locks follow Consul's semaphore recipe: contender keys acquired with the
session, the holders in one key changed by check-and-set
(``servicegroup/drivers/consul_lock.py``).
"""

from __future__ import annotations

import base64
import json
import threading
from typing import Any

from servicegroup.testing.clock import FakeClock
from servicegroup.testing.consul import ConsulTestServer


def test_locks_of_one_coordinator_exclude_each_other(srv: Any, coords: Any) -> None:
    c = coords(srv.url)
    l1, l2 = c.get_lock(b"x"), c.get_lock(b"x")
    assert l1.acquire(blocking=False) and not l2.acquire(blocking=False)
    _waiter_gets_it_once_released(l1, l2)


def _waiter_gets_it_once_released(holder: Any, waiter: Any) -> None:
    """*waiter*'s blocking acquire (in a thread) succeeds once *holder* releases."""
    got: list[bool] = []
    t = threading.Thread(target=lambda: got.append(waiter.acquire(blocking=30)))
    t.start()
    assert holder.release()
    t.join()
    assert got == [True] and waiter.release()


def _lock_keys(srv: ConsulTestServer, name: str) -> dict[str, dict[str, Any]]:
    return srv.kv_entries(f"servicegroup/=locks/{name}/")


def _listed(srv: ConsulTestServer, name: str) -> dict[str, Any]:
    entry = _lock_keys(srv, name)[f"servicegroup/=locks/{name}/.lock"]
    return dict(json.loads(base64.b64decode(entry["Value"]))["holders"])


def test_shared_holders_coexist_and_keep_an_exclusive_one_out(srv: Any, coords: Any) -> None:
    a, b = coords(srv.url), coords(srv.url, b"m2")
    ra, rb, w = a.get_lock(b"x"), b.get_lock(b"x"), b.get_lock(b"x")
    assert ra.acquire(shared=True) and rb.acquire(shared=True)
    assert sorted(h["member"] for h in ra.holders()) == ["m1", "m2"]
    assert not w.acquire(blocking=False)
    assert ra.release() and not w.acquire(blocking=False)
    assert rb.release() and w.acquire(blocking=False)
    assert not ra.acquire(shared=True, blocking=False)  # the exclusive one keeps readers out
    assert w.holder() == {"member": "m2", "lock": w._hold.token, "shared": False}
    assert w.release()
    assert _lock_keys(srv, "x") == {}  # nothing piles up once every holder left


def test_one_object_reenters_shared_but_cannot_upgrade(srv: Any, coords: Any) -> None:
    lock = coords(srv.url).get_lock(b"x")
    assert lock.acquire(shared=True) and lock.acquire(shared=True)
    assert not lock.acquire(blocking=False)
    assert len(_listed(srv, "x")) == 1  # re-entering counts locally, one holder entry
    assert lock.release() and lock.is_still_owner()
    assert lock.release() and not lock.release()


def test_exclusive_waiter_wakes_when_the_last_reader_leaves(srv: Any, coords: Any) -> None:
    a, b = coords(srv.url), coords(srv.url, b"m2")
    reader, writer = a.get_lock(b"x"), b.get_lock(b"x")
    assert reader.acquire(shared=True)
    _waiter_gets_it_once_released(reader, writer)


def test_a_dead_readers_entry_is_ignored_and_pruned(srv: Any, coords: Any, clock: FakeClock) -> None:
    a, b = coords(f"{srv.url}?ttl=4"), coords(f"{srv.url}?ttl=4", b"m2")
    reader, writer = a.get_lock(b"x"), b.get_lock(b"x")
    assert reader.acquire(shared=True) and not writer.acquire(blocking=False)
    clock.now += 3
    b.heartbeat()
    clock.now += 1.5  # a's session: 4.5 s without renewal > its 4 s; b's: 1.5 s
    srv.state.expire_now()
    assert writer.acquire(blocking=False)  # a's contender key died with its session
    assert [h["member"] for h in _listed(srv, "x").values()] == ["m2"]  # and a's entry is gone
    a.heartbeat()  # a gets a new session: its old hold is no longer "acquired"
    assert not reader.acquired and not reader.release()


def test_a_holder_whose_key_lost_its_session_is_ignored(srv: Any, coords: Any) -> None:
    # Behavior=release leaves the contender key without a Session: not live either.
    a, b = coords(srv.url), coords(srv.url, b"m2")
    reader, writer = a.get_lock(b"x"), b.get_lock(b"x")
    assert reader.acquire(shared=True)
    srv.state.kv_put(f"servicegroup/=locks/x/{reader._hold.token}", b"", release=a._session)
    assert writer.acquire(blocking=False) and not reader.is_still_owner()


def test_break_frees_readers_and_their_release_says_so(srv: Any, coords: Any) -> None:
    a, b = coords(srv.url), coords(srv.url, b"m2")
    reader, other = a.get_lock(b"x"), b.get_lock(b"x")
    assert reader.acquire(shared=True) and reader.acquire(shared=True)
    assert other.break_() and not other.break_()
    assert other.acquire(blocking=False)
    assert not reader.release() and not reader.release()
    assert other.release()


def test_a_lost_lock_key_race_is_decided_by_cas(srv: Any, coords: Any) -> None:
    a, b = coords(srv.url), coords(srv.url, b"m2")
    reader, writer = a.get_lock(b"x"), b.get_lock(b"x")
    real_put = a._api.kv_put

    def put(key: str, value: Any, **kw: Any) -> bool:
        if key.endswith("/.lock") and not writer.acquired:
            assert writer.acquire(blocking=False)  # lands between the reader's read and write
        return real_put(key, value, **kw)

    a._api.kv_put = put  # type: ignore[method-assign]
    assert not reader.acquire(shared=True, blocking=False)  # its cas write lost, re-read: refused
    assert [h["member"] for h in _listed(srv, "x").values()] == ["m2"]
    assert set(_lock_keys(srv, "x")) == {
        f"servicegroup/=locks/x/{writer._hold.token}",
        "servicegroup/=locks/x/.lock",
    }  # reader withdrew its key


def test_leader_is_the_member_holding_the_leader_key(srv: Any, coords: Any) -> None:
    a, b = coords(srv.url), coords(srv.url, b"m2")
    a.create_group(b"g").get()
    a.watch_elected_as_leader(b"g", lambda e: None)
    b.watch_elected_as_leader(b"g", lambda e: None)
    a.run_watchers()
    b.run_watchers()
    assert b.get_leader(b"g").get() == b"m1"
    a.stand_down_group_leader(b"g")
    b.run_watchers()
    assert a.get_leader(b"g").get() == b"m2"
