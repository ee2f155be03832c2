"""One shared server per name for a test session, and private ones on demand.

A test that pauses, kills or stops a shared server need not clean up:
:meth:`ServerPool.heal` (run after each test by ``functional/conftest.py``)
resumes a paused one and starts a stopped one again on the same port, so
the next test finds it as the session started it.
"""

from __future__ import annotations

import threading
from typing import Any

from servicegroup.testing.servers import ALIASES, server_class


class ServerPool:
    """Starts servers lazily, one shared per name, and stops them all."""

    def __init__(self) -> None:
        self._shared: dict[str, Any] = {}
        self._private: list[Any] = []
        self._lock = threading.Lock()
        #: ``(name, url, startup seconds)`` of every server started, for reports.
        self.started: list[tuple[str, str, float | None]] = []

    def _note(self, name: str, server: Any) -> None:
        self.started.append((name, server.url, getattr(server, "startup_seconds", None)))

    def shared(self, name: str) -> Any:
        """The session's server for ``name``, started (or healed) now."""
        key = ALIASES.get(name, name)
        with self._lock:
            server = self._shared.get(key)
            if server is None:
                server = server_class(key)()
                server.start()
                self._shared[key] = server
                self._note(key, server)
            else:
                server.ensure_running()
            return server

    def fresh(self, name: str) -> Any:
        """A new server for ``name``; the caller stops it (or the pool will)."""
        server = server_class(name)()
        server.start()
        with self._lock:
            self._private.append(server)
        self._note(ALIASES.get(name, name), server)
        return server

    def heal(self) -> None:
        """Resume or restart every shared server a test left paused or down."""
        with self._lock:
            for server in self._shared.values():
                server.ensure_running()

    def stop_all(self) -> None:
        with self._lock:
            everything = list(self._shared.values()) + self._private
            self._shared.clear()
            self._private.clear()
        errors = []
        for server in everything:
            try:
                server.stop()
            except Exception as e:  # stop the others anyway
                errors.append(f"{server!r}: {e}")
        if errors:
            raise RuntimeError("could not stop: " + "; ".join(errors))
