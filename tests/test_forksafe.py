"""The one fork-safety mechanism (servicegroup.forksafe)."""

from __future__ import annotations

import gc
import os
import weakref

import pytest

from servicegroup import forksafe


class Owner:
    def __init__(self) -> None:
        self.reset = 0

    def after_fork(self) -> None:
        self.reset += 1


def test_hooks_run_in_the_child_and_a_failing_one_does_not_stop_the_others() -> None:
    first, second = Owner(), Owner()
    forksafe.register(first, Owner.after_fork)
    forksafe.register(first, lambda owner: 1 / 0)
    forksafe.register(second, Owner.after_fork)
    forksafe.after_fork_in_child()
    assert (first.reset, second.reset) == (1, 1)


def test_registering_does_not_keep_the_owner_alive() -> None:
    owner = Owner()
    forksafe.register(owner, Owner.after_fork)
    ref = weakref.ref(owner)
    del owner
    gc.collect()
    assert ref() is None


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_real_fork_runs_the_hooks_before_the_childs_code() -> None:
    owner = Owner()
    forksafe.register(owner, Owner.after_fork)
    pid = os.fork()
    if pid == 0:  # the child: report through the exit code only
        os._exit(0 if owner.reset == 1 else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert owner.reset == 0, "the parent is untouched"
