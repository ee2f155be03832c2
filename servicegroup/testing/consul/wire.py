"""How the Consul model reads requests and reports errors as Consul does.

Consul is written in Go: request bodies are decoded by Go's JSON decoder
(field names matched case-insensitively), durations are Go durations
("15s", "1m30s"), and errors are an HTTP status with a plain-text message.
Every part of the model speaks these, so they live here once.
"""

from __future__ import annotations

import re
from typing import Any

#: The one node of the model (Consul answers with a node name everywhere).
NODE = "consul-test-server"
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"^(?:(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h))+$")
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


class ApiError(Exception):
    """A Consul API error: HTTP status and Consul's plain-text message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def fold(body: Any) -> Any:
    """Fold JSON object keys the way Consul decodes them: Go's decoder
    matches field names case-insensitively and Consul accepts snake_case
    aliases, so ``TTL``, ``ttl`` and ``Ttl`` are one field."""
    if isinstance(body, dict):
        return {str(k).lower().replace("_", ""): fold(v) if k not in ("Meta", "meta") else v for k, v in body.items()}
    if isinstance(body, list):
        return [fold(v) for v in body]
    return body


def parse_duration(text: str | int | float) -> float:
    """Parse a Go duration ("15s", "1m30s", "-1s", "0") or a number, in seconds.

    As Go's ``time.ParseDuration``: a sign is allowed, "0" is the only
    number without a unit ("5" is an error). Like Consul's ``LockDelay``, a
    bare JSON number is seconds when small and nanoseconds otherwise.
    """
    if isinstance(text, (int, float)):
        return float(text) if text < 1_000_000 else text / 1e9
    text = text.strip()
    if not text:
        return 0.0
    sign = -1.0 if text[0] == "-" else 1.0
    unsigned = text[1:] if text[0] in "+-" else text
    if unsigned == "0":
        return 0.0
    if not _DURATION.match(unsigned):
        raise ValueError(f"time: invalid duration {text!r}")
    return sign * sum(float(n) * _UNITS[u] for n, u in _PART.findall(unsigned))


def format_duration(seconds: float) -> str:
    """Seconds as a Go duration string, the way Consul prints bounds."""
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{int(seconds // 3600)}h0m0s"
    if seconds == int(seconds):
        return f"{int(seconds)}s"
    return f"{seconds:g}s"
