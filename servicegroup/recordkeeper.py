"""Keeps the services table true: ``last_seen_up`` and ``report_count``.

Tools and people read the services table directly, as they do nova's, so
its heartbeat columns must not lie. But liveness never depends on them
(:mod:`servicegroup.membership` answers ``is_up``), and the point of this
library is that a slow records database never delays a heartbeat. So:

- a heartbeat only counts, in memory (:meth:`RecordKeeper.beat`: a dict
  update under a lock, never I/O);
- this keeper's own thread writes the counts every ``service_down_time / 2``
  (at most once per service per that period), all of a process's services
  in one transaction: ``last_seen_up`` = the database server's now,
  ``report_count`` += the beats since the last write;
- a write that fails keeps the counts for the next one (logged once per
  outage), so ``report_count`` loses nothing while the database is down;
- a record that is gone when written (an operator's ``service-delete``,
  ``Records.delete``, or nova's own soft delete) is reported to
  ``on_gone``: the facade withdraws that membership, so a deleted service
  stops being listed instead of being vouched for without a record. A
  member re-joined after a loss (``service-delete`` expires the membership
  first) asks for a write at once (:meth:`wake`), so it does not reappear
  for a whole period.

So ``last_seen_up`` trails the last heartbeat by at most
``service_down_time / 2`` (plus the write itself), and every reader sees
the same value: it is what ``get_updated_time`` answers for a service the
backend no longer lists (see ``ServiceGroup.get_updated_time``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
import logging
import threading

from servicegroup import backend
from servicegroup import forksafe

LOG = logging.getLogger(__name__)

#: ``write({(host, topic): beats})`` -> the keys whose live record is gone.
Write = Callable[[Mapping[tuple[str, str], int]], Collection[tuple[str, str]]]


class RecordKeeper:
    """Heartbeat counts in memory, written to the records every *period*."""

    def __init__(
        self,
        write: Write,
        *,
        period: float,
        on_gone: Callable[[str, str], None],
        background: bool = True,
    ) -> None:
        self.period = period
        self._write = write
        self._on_gone = on_gone
        self._background = background
        self._pending: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False
        forksafe.register(self, RecordKeeper._after_fork)

    def beat(self, host: str, topics: Collection[str]) -> None:
        """Count one heartbeat of *host* in each of *topics* (memory only)."""
        with self._lock:
            for topic in topics:
                key = (host, topic)
                self._pending[key] = self._pending.get(key, 0) + 1
        self._ensure_thread()

    def wake(self) -> None:
        """Write now rather than at the end of the period (a re-join)."""
        self._wake.set()

    def flush(self) -> bool:
        """Write the pending counts now; False (counts kept) if that failed."""
        with self._lock:
            pending, self._pending = self._pending, {}
        if not pending:
            return True
        try:
            gone = self._write(pending)
        except Exception as exc:  # the records database is down or slow: retry later
            with self._lock:
                for key, n in pending.items():
                    self._pending[key] = self._pending.get(key, 0) + n
            if not self._failing:
                LOG.warning("services table not updated (retrying): %s", backend.describe(exc))
                self._failing = True
            return False
        if self._failing:
            LOG.info("services table updated again")
            self._failing = False
        for host, topic in gone:
            self._withdraw(host, topic)
        return True

    def _withdraw(self, host: str, topic: str) -> None:
        LOG.warning(
            "record of %s in %r is gone (service-delete?): withdrawing its membership; join again to come back",
            host,
            topic,
        )
        try:
            self._on_gone(host, topic)
        except Exception as exc:  # the member retries the leave on each beat
            LOG.warning("withdrawing %s from %r failed (retrying): %s", host, topic, backend.describe(exc))

    def stop(self) -> None:
        """Stop the thread (pending counts are dropped: a bounded stop beats
        a last write to a database that may be the reason we stop)."""
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5.0)

    def _ensure_thread(self) -> None:
        if not self._background or self._stop.is_set():
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="servicegroup-records", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.period)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.flush()
            except Exception:  # never let the keeper die silently
                LOG.exception("services table keeper failed")

    def _after_fork(self) -> None:
        """In a forked child: the parent's counts and thread are not ours."""
        self._pending = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread = None
