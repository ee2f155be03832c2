"""Validation of host and topic names, before anything is written.

A name is checked once, at the edge (facade, CLI), so that the records
layer and the liveness backend never see a name one of them would store and
the other would refuse: that is how half-written records happen.
"""

from __future__ import annotations

from servicegroup import errors

#: Same bound as the tooz ids of our drivers: fits an indexed VARCHAR(255).
MAX_NAME_BYTES = 255

#: Names that identify a service: ``' h '`` and ``'h'`` would be two records
#: and two members for one host, so edge whitespace is refused in these.
IDENTIFIERS = frozenset({"host", "topic"})


def check(value: str | bytes | None, what: str) -> str:
    """Return *value* as ``str`` or raise :class:`~servicegroup.errors.InvalidName`.

    Refused: ``None``/empty, more than :data:`MAX_NAME_BYTES` UTF-8 bytes,
    bytes that are not UTF-8, control characters (they break log lines,
    ZooKeeper paths and the CLI table alike), and leading or trailing
    whitespace in a host or topic (:data:`IDENTIFIERS`).
    """
    if value is None:
        raise errors.InvalidName(f"{what} is required")
    if isinstance(value, (bytes, bytearray)):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise errors.InvalidName(f"{what} is not valid UTF-8 (byte {exc.start})") from None
    if not isinstance(value, str):
        raise errors.InvalidName(f"{what} must be a string, not {type(value).__name__}")
    if not value or not value.strip():
        raise errors.InvalidName(f"{what} must not be empty")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise errors.InvalidName(f"{what} contains unpaired surrogates (not UTF-8)") from None
    if size > MAX_NAME_BYTES:
        raise errors.InvalidName(f"{what} is {size} bytes long; the limit is {MAX_NAME_BYTES}")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise errors.InvalidName(f"{what} {value!r} contains control characters")
    if what in IDENTIFIERS and value != value.strip():
        raise errors.InvalidName(f"{what} {value!r} has leading or trailing whitespace")
    if "/" in value and what == "topic":
        # A topic is a tooz group id: in ZooKeeper and Consul it is one path
        # segment, so a slash would silently create a nested group.
        raise errors.InvalidName(f"topic {value!r} must not contain '/'")
    return value
