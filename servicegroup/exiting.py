"""A process that ends without calling ``stop()``: quick and quiet.

Scripts and crashed ``main``s end with ServiceGroups still running. Every
thread of ours is a daemon, so nothing of ours keeps the interpreter up by
itself, but the client libraries do: futurist (tooz's etcd and others run
every call on its worker threads) joins its workers at exit, forever, while
our heartbeat and refresher keep handing them calls. The process then
took about 15 s to end on etcd and logged two false errors on the way out.

So at exit, before futurist's own handler (``atexit`` runs handlers last
registered first, and this module registers after importing tooz), every
ServiceGroup still running is stopped: its threads end, its members leave
(others see them gone at once rather than after ``service_down_time``),
its connections close. That takes at most :data:`EXIT_BOUND`: a backend
that does not answer must not hang the exit, so a stop that overruns is
abandoned (its thread is a daemon) and the TTL finishes the job.
A stopping ServiceGroup logs nothing at warning level or above: stopping
is not a failure.
"""

from __future__ import annotations

from collections.abc import Callable
import atexit
import logging
import threading
from typing import Protocol
import weakref

from tooz import coordination  # noqa: F401 (imported first: see module docstring)

# futurist's exit handler is private: a release without it must not break
# importing this library, only lose the guard against its unbounded join.
_futurist_clean_up: Callable[[], None] | None
try:
    from futurist._thread import _clean_up as _futurist_clean_up
except ImportError:  # pragma: no cover - depends on the installed futurist
    _futurist_clean_up = None

LOG = logging.getLogger(__name__)

#: Seconds the exit waits for running ServiceGroups to stop.
EXIT_BOUND = 1.0


class Stoppable(Protocol):
    def stop(self) -> None: ...


_RUNNING: weakref.WeakSet[Stoppable] = weakref.WeakSet()


def running(group: Stoppable) -> None:
    """*group* runs until its ``stop()``: stop it at exit if nobody does."""
    _RUNNING.add(group)


def stopped(group: Stoppable) -> None:
    _RUNNING.discard(group)


def stop_running(bound: float = EXIT_BOUND) -> bool:
    """Stop every running ServiceGroup, waiting *bound* seconds at most;
    True if they all stopped in time."""
    groups = list(_RUNNING)
    if not groups:
        return True

    def stop_all() -> None:
        for group in groups:
            try:
                group.stop()
            except Exception as exc:  # at exit: nobody to raise to
                LOG.debug("stopping %r at exit failed: %s", group, exc)

    worker = threading.Thread(target=stop_all, name="servicegroup-exit", daemon=True)
    worker.start()
    worker.join(bound)
    if worker.is_alive():
        LOG.debug("ServiceGroups still stopping after %gs at exit: abandoned", bound)
        return False
    return True


def _at_exit() -> None:
    if not stop_running():
        # A call stuck on an unreachable backend holds a futurist worker,
        # and futurist's handler would join it without a bound. Its workers
        # are daemon threads: the interpreter may end without that join.
        if _futurist_clean_up is not None:
            atexit.unregister(_futurist_clean_up)


atexit.register(_at_exit)
