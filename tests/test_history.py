"""The history checker (servicegroup.testing.history) finds each violation
it exists for, on histories written by hand with a fake clock."""

from __future__ import annotations

from servicegroup.testing import history as hist
from servicegroup.testing.clock import FakeClock

HOSTS = ["a", "b", "c"]
BOUND = 5.0


def _history(*steps: tuple[float, str, str, object]) -> hist.History:
    clock = FakeClock(start=0.0)
    h = hist.History(clock=clock)
    for at, kind, subject, value in steps:
        clock.advance(at - clock())
        h.record(kind, subject, frozenset(value) if isinstance(value, (list, set)) else value)  # type: ignore[arg-type]
    return h


def test_a_clean_cut_and_heal_has_no_violation_and_reports_the_detection_time():
    h = _history(
        (1, "view", "observer", HOSTS),
        (2, "cut", "a", None),
        (3, "view", "observer", HOSTS),
        (5, "view", "observer", ["b", "c"]),
        (8, "heal", "a", None),
        (10, "view", "observer", HOSTS),
    )
    report = hist.check(h, HOSTS, BOUND)
    assert report.violations == []
    assert report.detections == {"a": 3.0}


def test_a_member_read_down_without_a_cut_is_a_false_down():
    h = _history((1, "view", "observer", HOSTS), (2, "view", "observer", ["a", "c"]), (3, "view", "observer", HOSTS))
    report = hist.check(h, HOSTS, BOUND)
    assert report.false_downs == 1
    assert report.violations == ["invariant 2: b read as down at 2.0 without a cut"]


def test_a_cut_member_still_read_up_past_the_bound_violates_invariant_1():
    h = _history(
        (1, "view", "observer", HOSTS),
        (2, "cut", "a", None),
        (9, "view", "observer", ["b", "c"]),
        (10, "heal", "a", None),
        (11, "view", "observer", HOSTS),
    )
    assert [v.split(":")[0] for v in hist.check(h, HOSTS, BOUND).violations] == ["invariant 1"]


def test_a_member_not_back_after_the_faults_violates_invariant_4():
    h = _history(
        (1, "view", "observer", HOSTS),
        (2, "cut", "a", None),
        (3, "view", "observer", ["b", "c"]),
        (4, "heal", "a", None),
        (20, "view", "observer", ["b", "c"]),
    )
    violations = hist.check(h, HOSTS, BOUND).violations
    assert any(v.startswith("invariant 4") for v in violations)
    assert any(v.startswith("invariant 2") for v in violations)  # down long after its heal


def test_a_crashed_member_may_stay_down_and_unknown_answers_are_not_downs():
    h = _history(
        (1, "view", "observer", HOSTS),
        (2, "crash", "c", None),
        (3, "view", "observer", "unknown: BackendUnavailable"),
        (4, "view", "observer", ["a", "b"]),
    )
    report = hist.check(h, HOSTS, BOUND)
    assert report.violations == []
    assert report.views == 2


def test_members_still_joining_are_not_false_downs():
    h = _history((1, "view", "observer", ["a"]), (2, "view", "observer", HOSTS))
    assert hist.check(h, HOSTS, BOUND).violations == []
