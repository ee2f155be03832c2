"""The services table does not lie (docs/nova.md): ``report_count`` and
``last_seen_up`` follow the heartbeats, written off the heartbeat path; a
deleted record withdraws its membership; every reader shows the same
updated time for a dead service."""

from __future__ import annotations

import logging
import threading

from servicegroup.recordkeeper import RecordKeeper
from tests.fakes import TTL


def test_report_count_and_last_seen_up_follow_the_heartbeats(make_sg, clock):
    sg = make_sg()
    joined = sg.join("host-a", "compute")
    for _ in range(5):
        clock.advance(0.5)
        sg.heartbeat()
    sg._keeper.flush()  # the keeper's thread does this every service_down_time / 2
    record = sg.records.get("host-a", "compute")
    beats = sg._members["host-a"].beats
    assert record.report_count == beats >= 5
    assert record.last_seen_up >= joined.last_seen_up


def test_a_heartbeat_never_writes_to_the_records_database(make_sg, clock):
    sg = make_sg()
    sg.join("host-a", "compute")
    writes = []
    sg.records.mark_seen_many = lambda beats: writes.append(beats) or []
    for _ in range(5):
        clock.advance(0.5)
        sg.heartbeat()
    assert writes == [] and sg.is_up(topic="compute", host="host-a")


def test_a_failed_write_keeps_the_counts_for_the_next(make_sg, clock, caplog):
    sg = make_sg()
    sg.join("host-a", "compute")
    write = sg.records.mark_seen_many

    def down(beats):
        raise ConnectionError("records database down")

    sg._keeper._write = down
    sg.heartbeat()
    with caplog.at_level(logging.WARNING):
        assert not sg._keeper.flush()
    assert "services table not updated" in caplog.text
    sg.heartbeat()
    sg._keeper._write = write
    assert sg._keeper.flush()
    assert sg.records.get("host-a", "compute").report_count == sg._members["host-a"].beats


def test_the_keeper_writes_at_most_once_per_period():
    writes: list[object] = []
    keeper = RecordKeeper(lambda b: writes.append(b) or [], period=3600, on_gone=lambda h, t: None)
    for _ in range(100):
        keeper.beat("host-a", ["compute"])
    keeper.stop()  # the period never ended: nothing was written
    assert writes == []


def test_a_deleted_record_withdraws_the_membership_with_a_log_line(make_sg, clock, caplog):
    sg = make_sg()
    observer = make_sg()
    svc = sg.join("host-a", "compute")
    assert observer.is_up(svc)
    assert observer.records.delete("host-a", "compute")  # nova's service-delete, or Records.delete
    sg.heartbeat()
    with caplog.at_level(logging.WARNING):
        sg._keeper.flush()
    assert "record of host-a in 'compute' is gone" in caplog.text
    assert not sg.is_up(svc) and sg.get_all("compute") == []
    clock.advance(1.0)
    assert observer.get_all("compute") == []
    sg.heartbeat()  # and it stays withdrawn: no heal re-joins it
    clock.advance(1.0)
    assert observer.get_all("compute") == []


def test_a_rejoin_after_service_delete_checks_the_record_at_once(make_sg):
    sg = make_sg()
    sg.join("host-a", "compute")
    woken = threading.Event()
    sg._keeper.wake = woken.set
    sg.expire("compute", "host-a")  # what service-delete does before deleting the record
    sg.heartbeat()  # re-joins, reports membership_restored
    assert woken.is_set()


def test_every_reader_shows_the_same_updated_time_for_a_dead_service(make_sg, clock):
    member = make_sg()
    early = make_sg()  # saw it alive
    member.join("host-a", "compute")
    for _ in range(4):
        clock.advance(0.5)
        member.heartbeat()
        early.get_updated_time(topic="compute", host="host-a")
    member._keeper.flush()
    recorded = member.records.get("host-a", "compute").last_seen_up
    clock.advance(TTL + 1)  # it crashes: no more beats, its TTL lapses
    late = make_sg()  # started after the crash
    assert not early.is_up(topic="compute", host="host-a")
    assert early.get_updated_time(topic="compute", host="host-a") == recorded
    assert late.get_updated_time(topic="compute", host="host-a") == recorded
    assert [s.last_seen_up for s in late.services("compute")] == [recorded]
