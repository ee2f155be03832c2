"""What our own tooz backends (SQL, Consul) share.

tooz's drivers each re-implement result wrapping, id handling and error
translation; here it is written once. Both backends answer synchronously:
every call does its round trip before returning a :class:`SyncResult`, which
makes ``join_group(...)`` followed by ``get_members(...)`` ordered even when
the caller forgets ``.get()`` (tooz's own suite does that), and keeps a
traceback pointing at the caller rather than at an executor thread.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
import contextlib
import math
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

import tooz
from tooz import coordination

from servicegroup import errors

T = TypeVar("T")

#: What tooz calls capabilities (``tooz.coordination.Capabilities`` from
#: tooz 9 on; spelled out here so tooz 8 on Python 3.10 works too).
Capabilities = dict[str, Any]

#: Longest group or member id accepted, in UTF-8 bytes. Long enough for any
#: FQDN (253) and fits an indexed VARCHAR on every database we support.
MAX_ID_BYTES = 255


class InvalidId(tooz.ToozError, errors.InvalidName):
    """A group, member or lock id is empty, too long or not UTF-8.

    It is both a :class:`tooz.ToozError` (what tooz callers catch) and a
    :class:`servicegroup.errors.InvalidName` (what our callers catch).
    """


if TYPE_CHECKING:  # mypy checks against tooz >= 9, whose result class is generic
    _AsyncResult = coordination.CoordAsyncResult
else:

    class _AsyncResult(coordination.CoordAsyncResult, Generic[T]):
        """tooz < 9 (on Python 3.10) has a result class that cannot be subscripted."""


class SyncResult(_AsyncResult[T]):
    """A result computed before it was returned (see module docstring)."""

    def __init__(self, value: T | None = None, error: BaseException | None = None) -> None:
        # value is None only for a result that is None or that failed (error set).
        self._value = value
        self._error = error

    @classmethod
    def of(cls, fn: Callable[..., T], *args: Any, **kwargs: Any) -> SyncResult[T]:
        """Run *fn* now; keep its value or the tooz error it raised.

        Only :class:`tooz.ToozError` is deferred to :meth:`get`, the way an
        asynchronous driver would surface it; programming errors raise here.
        """
        try:
            return cls(fn(*args, **kwargs))
        except tooz.ToozError as exc:
            return cls(error=exc)

    def get(self, timeout: float | None = None) -> T:
        if self._error is not None:
            raise self._error
        return cast(T, self._value)  # no error: the value is the T that fn returned

    def done(self) -> bool:
        return True


def to_id(value: str | bytes, what: str = "member id") -> bytes:
    """Normalise a tooz id to UTF-8 bytes, refusing what cannot be stored.

    tooz passes ids as bytes but its suite also passes ``str``; both become
    bytes. Non-UTF-8 bytes, empty ids and ids over :data:`MAX_ID_BYTES` are
    refused with :class:`InvalidId` *before* anything is written, so a bad id
    can never leave a half-written record behind.
    """
    if isinstance(value, str):
        raw = value.encode("utf-8", "surrogatepass")
    elif isinstance(value, (bytes, bytearray)):
        raw = bytes(value)
    else:
        raise InvalidId(f"{what} must be str or bytes, not {type(value).__name__}")
    if not raw:
        raise InvalidId(f"{what} must not be empty")
    if len(raw) > MAX_ID_BYTES:
        raise InvalidId(f"{what} is {len(raw)} bytes long; the limit is {MAX_ID_BYTES}")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidId(f"{what} is not valid UTF-8 (byte {exc.start})") from None
    return raw


@contextlib.contextmanager
def translate(
    catch: tuple[type[BaseException], ...],
    describe: Callable[[BaseException], str],
    into: type[tooz.ToozError] = coordination.ToozConnectionError,
) -> Iterator[None]:
    """Re-raise client-library errors in *catch* as tooz errors.

    *describe* builds the message from the exception; it must not include
    credentials (give it host and port, or a redacted URL).
    """
    try:
        yield
    except tooz.ToozError:
        raise
    except catch as exc:
        raise into(describe(exc)) from exc


def parse_float_option(options: dict[str, Any], name: str, default: float, minimum: float = 0.0) -> float:
    """Read a numeric URL option, refusing garbage with a tooz error naming it."""
    raw = options.get(name, default)
    if isinstance(raw, list):
        raw = raw[-1]
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise InvalidOption(f"option {name}={raw!r} is not a number") from None
    if not math.isfinite(value):  # nan < minimum is False: checked first
        raise InvalidOption(f"option {name}={raw!r} is not a finite number")
    if value < minimum:
        raise InvalidOption(f"option {name}={value:g} is below the minimum {minimum:g}")
    return value


class InvalidOption(tooz.ToozError, errors.InvalidURL):
    """A backend URL option has a value the backend cannot use."""
