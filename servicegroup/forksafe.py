"""What a forked child must drop before it runs any code of ours.

Services fork workers (nova's API and conductor do). ``os.fork`` copies
memory but not threads, so the child inherits:

- locks that a parent thread held at fork time, held forever (the child's
  first ``is_up`` or ``join`` would block on them);
- backend sessions and pooled sockets that belong to the parent (two
  processes writing on one socket corrupt each other's results, and two
  processes heartbeating one session hide the death of either);
- thread objects whose threads do not exist.

Every object that owns any of these registers a hook here, and the hook
runs in the child right after the fork, before the child's own code: no
comparing process ids on every call, and no lock taken before the check.
One ``os.register_at_fork`` for the process; owners are held weakly, so
registering never keeps an object alive.
"""

from __future__ import annotations

from collections.abc import Callable
import logging
import os
import threading
from typing import Any, TypeVar
import weakref

LOG = logging.getLogger(__name__)

T = TypeVar("T")

#: owner -> hooks to call as ``hook(owner)`` in a forked child.
_HOOKS: weakref.WeakKeyDictionary[Any, list[Callable[[Any], None]]] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def register(owner: T, hook: Callable[[T], None]) -> None:
    """Call ``hook(owner)`` in every child forked while *owner* lives.

    *hook* must not hold *owner* itself (pass an unbound method or a plain
    function): the registry holds owners weakly, and a hook closing over
    its owner would keep it alive forever.
    """
    with _LOCK:
        _HOOKS.setdefault(owner, []).append(hook)


def after_fork_in_child() -> None:
    """Run every registered hook (what the child does right after ``fork``;
    tests call it to act out a fork without forking)."""
    global _LOCK
    _LOCK = threading.Lock()  # a parent thread may have held it at fork time
    for owner, hooks in list(_HOOKS.items()):
        for hook in list(hooks):
            try:
                hook(owner)
            except Exception:  # one broken owner must not leave the others stale
                LOG.exception("after-fork hook %r failed for %r", hook, owner)


if hasattr(os, "register_at_fork"):  # not on Windows, which cannot fork
    os.register_at_fork(after_in_child=after_fork_in_child)
