"""What Consul's HTTP layer does to a request before an endpoint runs it.

Each rule follows one place in Consul's source (hashicorp/consul), named
where it is modelled:

- Go's ``net/http.ServeMux`` (Consul's router, ``agent/http.go``) cleans the
  decoded path and answers ``301 Moved Permanently`` to the clean one when
  it differs (``//``, ``.`` and ``..`` segments): :func:`redirect`;
- ``agent/http.go`` ``parseWait``: ``wait`` is a Go duration (``wait=5``
  without a unit is ``400 Invalid wait time``), ``index`` an unsigned
  integer (else ``400 Invalid index``); ``agent/consul/rpc.go``
  ``blockingQuery``: a wait of 0 or less means the default (5 minutes),
  longer than ``max_query_time`` (10 minutes) is cut to it:
  :func:`blocking_params`;
- ``agent/kvs_endpoint.go`` ``conflictingFlags``: ``PUT`` with two of
  ``cas``/``acquire``/``release``, ``DELETE`` with ``recurse`` and ``cas``
  is ``400 Conflicting flags``: :func:`refuse_conflicting_flags`;
- ``agent/kvs_endpoint.go`` ``KVSPut``: a body longer than
  ``kv_max_value_size`` (512 KiB unless configured) is ``413``, checked
  before the token is: :func:`refuse_oversized`.
"""

from __future__ import annotations

import posixpath
import urllib.parse

from servicegroup.testing.consul.wire import ApiError, parse_duration

#: Consul's ``default_query_time`` and ``max_query_time`` (seconds).
DEFAULT_WAIT = 300.0
MAX_WAIT = 600.0
#: Consul's default ``kv_max_value_size`` (bytes).
KV_MAX_VALUE_SIZE = 512 * 1024
_SIZE_DOCS = "https://developer.hashicorp.com/docs/agent/config/config-files#kv_max_value_size"


def clean_path(path: str) -> str:
    """Go's ``net/http`` ``cleanPath``: ``path.Clean`` that keeps a trailing
    slash (so ``/v1/kv/a//b`` is ``/v1/kv/a/b`` and ``/v1/kv/g/`` stays)."""
    if not path:
        return "/"
    if not path.startswith("/"):
        path = "/" + path
    clean = posixpath.normpath(path)
    if clean.startswith("//"):  # normpath keeps a leading "//" (POSIX), Go does not
        clean = "/" + clean.lstrip("/")
    if path.endswith("/") and clean != "/":
        clean += "/"
    return clean


def redirect(path: str, raw_query: str) -> str | None:
    """The ``Location`` Go's ServeMux answers with (301) when *path* (the
    decoded path) is not clean, else ``None``. The query string is kept."""
    clean = clean_path(path)
    if clean == path:
        return None
    location = urllib.parse.quote(clean, safe="/,;=&+$!*'()@:-._~")
    return f"{location}?{raw_query}" if raw_query else location


def blocking_params(params: dict[str, list[str]]) -> tuple[int, float]:
    """``(min_index, wait seconds)`` of a request, as Consul reads them; a
    ``min_index`` of 0 means not a blocking query."""
    raw_wait = _last(params, "wait")
    wait = 0.0
    if raw_wait:
        try:
            wait = parse_duration(raw_wait)
        except ValueError:
            raise ApiError(400, "Invalid wait time") from None
    raw_index = _last(params, "index")
    index = 0
    if raw_index:
        if not raw_index.isdigit():
            raise ApiError(400, "Invalid index")
        index = int(raw_index)
    if wait <= 0:
        wait = DEFAULT_WAIT
    return index, min(wait, MAX_WAIT)


def refuse_conflicting_flags(params: dict[str, list[str]], *flags: str) -> None:
    """400 when more than one of *flags* is in the query string."""
    if sum(1 for flag in flags if flag in params) > 1:
        encoded = urllib.parse.urlencode(sorted(params.items()), doseq=True)
        raise ApiError(400, f"Conflicting flags: {encoded}")


def refuse_oversized(length: int, limit: int) -> None:
    """413 when a KV body is longer than *limit* bytes."""
    if length > limit:
        raise ApiError(413, f"Request body({length} bytes) too large, max size: {limit} bytes. See {_SIZE_DOCS}.")


def _last(params: dict[str, list[str]], name: str) -> str | None:
    """Go's ``url.Values.Get`` takes the first value; a query names each
    parameter once in practice, so the first is taken here too."""
    values = params.get(name)
    return values[0] if values else None
