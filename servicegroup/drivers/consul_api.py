"""The Consul HTTP calls the Consul backend makes, and their typed errors.

A thin layer over ``py-consul`` (module ``consul``): it owns the transport
(requests, TLS, timeouts) and turns every failure into an error that names
the agent (``host:port``) and the problem, never the ACL token. The backend
(:mod:`servicegroup.drivers.consul`) never sees a ``requests`` or ``consul``
exception.

Every read that is not a blocking query asks for Consul's ``consistent``
mode: the default mode lets a leader that has just been deposed answer
from its own, possibly stale, state for a short while, which would break
the driver's ``LINEARIZABLE`` claim exactly around a failover. Blocking
queries (``?index=``) keep the default mode: they only signal that
something changed, and the read that follows is consistent.

Sessions are created through the raw HTTP call rather than
``Session.create`` because py-consul asserts Consul's default bounds
(10 s - 24 h, whole seconds) client-side, which would hide the agent's own
answer (an agent with ``session_ttl_min`` lowered accepts shorter TTLs).

Where Consul answers without saying no, this layer says it:

- with ACLs, Consul *filters* list reads (KV ``recurse``/``keys``, health,
  catalog) to what the token may read, and marks the answer with
  ``X-Consul-Results-Filtered-By-ACLs`` (except for a request without a
  token). Reads are therefore made here, not through py-consul's helpers,
  so that header is seen: a filtered KV or health read raises
  :class:`ConsulAccessDenied` instead of passing for an empty group;
- a KV value over ``kv_max_value_size`` (512 KiB unless the agent says
  otherwise) is refused before it is sent (:class:`ConsulValueTooLarge`);
  an agent configured lower answers 413, which becomes the same error;
- a blocking query's ``wait`` is always a positive Go duration
  (:func:`go_wait`): Consul takes ``wait=0s`` for its default 5 minutes.
"""

from __future__ import annotations

from collections.abc import Iterator
import contextlib
import json
import re
from typing import Any, NoReturn

import consul
from consul import callback as consul_callback
from consul import exceptions as consul_exc
import requests
import tooz
from tooz import coordination

from servicegroup import errors
from servicegroup.drivers import _base

#: Consul's default ``kv_max_value_size`` (bytes): larger values are refused.
KV_MAX_VALUE_SIZE = 512 * 1024
#: Bounds of a blocking query's wait (seconds): Consul takes 0 for its
#: default (5 minutes) and cuts anything above ``max_query_time`` (10).
MIN_WAIT, MAX_WAIT = 0.001, 600.0
_FILTERED = "X-Consul-Results-Filtered-By-ACLs"


class ConsulUnreachable(coordination.ToozConnectionError, errors.BackendUnavailable):
    """The Consul agent cannot be reached (refused, timed out, TLS failure)."""


class ConsulAccessDenied(tooz.ToozError, errors.ConfigError):
    """The agent refused the ACL token: unknown ("ACL not found") or lacking
    a permission ("Permission denied"). Fix the ``token`` option."""


class ConsulValueTooLarge(tooz.ToozError, errors.ValueTooLarge):
    """A KV value (a member's capabilities, a lock's holder list) is larger
    than Consul stores (``kv_max_value_size``, 512 KiB by default). Raised
    before anything is written."""


class ConsulServerError(tooz.ToozError, errors.BackendUnavailable):
    """The agent answered with an error this backend does not expect."""


class SessionGone(ConsulServerError):
    """``PUT ?acquire=<session>`` was refused because Consul no longer knows
    the session (500 ``invalid session "<id>"``): it expired or was
    destroyed before a heartbeat noticed. The driver replaces the session
    and tries again (:meth:`~servicegroup.drivers.consul.ConsulDriver.acquire_key`)."""


class SessionTTLOutOfRange(_base.InvalidOption):
    """The agent refused the session TTL derived from ``ttl``: below its
    ``session_ttl_min`` (10 s by default) or above 24 h."""


class CatalogReadOnly(errors.NotSupported, tooz.NotImplemented):
    """A write in catalog mode, where operators register services with
    Consul and Consul's own checks decide liveness.

    It is also a :class:`tooz.NotImplemented`: tooz's convention for "this
    backend does not offer this operation" (its conformance suite skips
    such tests instead of failing them).
    """


class CatalogNotJoined(CatalogReadOnly, coordination.MemberNotJoined):
    """``leave_group``/``update_capabilities`` in catalog mode.

    Read-only like every catalog write, and also a
    :class:`tooz.coordination.MemberNotJoined`, because that is true: in
    catalog mode no coordinator ever joins anything, so callers that treat
    "leave what I never joined" as done keep working.
    """

    def __init__(self, message: str, group_id: bytes, member_id: bytes) -> None:
        tooz.ToozError.__init__(self, message)
        self.group_id = group_id.decode("utf-8", "replace")
        self.member_id = member_id.decode("utf-8", "replace")


_BOUNDS = re.compile(r"must be between \[([^=\]]+)=([^\]]+)\]")
#: Consul's 500 answer to ``?acquire=`` with an unknown session (state/kvs.go);
#: a client agent prefixes the server's message with "rpc error making call: ".
_INVALID_SESSION = re.compile(r"^500 (?:rpc error making call: )*invalid session ")


class ConsulAPI:
    """The backend's view of one Consul agent.

    *token* is sent as the ``X-Consul-Token`` header on every call; when
    ``None``, py-consul's ``CONSUL_HTTP_TOKEN`` environment variable applies.
    It is never part of a message or a log line.
    """

    def __init__(
        self,
        host: str,
        port: int,
        scheme: str = "http",
        token: str | None = None,
        verify: bool | str = True,
        cert: str | tuple[str, str] | None = None,
        connect_timeout: float = 5.0,
    ) -> None:
        self.where = f"{host}:{port}"
        self.client = consul.Consul(
            host=host,
            port=port,
            scheme=scheme,
            verify=verify,
            cert=cert,
            connections_timeout=connect_timeout,
        )
        if token:
            self.client.token = token  # the URL's token wins over CONSUL_HTTP_TOKEN
        self.connect_timeout = connect_timeout

    # -- error translation ------------------------------------------------

    @contextlib.contextmanager
    def errors(self, doing: str) -> Iterator[None]:
        """Turn transport and API failures into the typed errors above."""
        try:
            yield
        except tooz.ToozError:
            raise
        except requests.exceptions.SSLError as exc:
            raise ConsulUnreachable(
                f"TLS handshake with Consul agent {self.where} failed while {doing}: "
                f"{type(exc).__name__} (check ca_file, cert_file, key_file, verify)"
            ) from exc
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            why = "timed out" if isinstance(exc, requests.exceptions.Timeout) else "connection failed"
            raise ConsulUnreachable(
                f"cannot reach Consul agent at {self.where} while {doing}: {why} "
                f"(connect timeout {self.connect_timeout:g}s)"
            ) from exc
        except consul_exc.ACLPermissionDenied as exc:
            self._denied(doing, str(exc), exc)
        except consul_exc.ConsulException as exc:
            raise ConsulServerError(f"Consul agent {self.where} failed while {doing}: {_short(exc)}") from exc

    def _denied(self, doing: str, body: str, exc: BaseException) -> NoReturn:
        if "ACL not found" in body:
            why = "the ACL token is not known to Consul (ACL not found)"
        else:
            why = f"the ACL token lacks a permission ({_short(body)})"
        raise ConsulAccessDenied(f"Consul agent {self.where} refused {doing}: {why}; check the token option") from exc

    # -- sessions ---------------------------------------------------------

    def session_create(self, ttl: float, name: str, what_ttl: str) -> str:
        """Create a TTL session with ``Behavior=delete`` and no lock delay.

        *what_ttl* describes where *ttl* came from, for the error raised
        when the agent refuses it.
        """
        body = json.dumps({"Name": name, "TTL": f"{ttl:g}s", "Behavior": "delete", "LockDelay": "0s"})

        def answer(resp: Any) -> str:
            if resp.code in (400, 500) and "TTL" in resp.body:
                bounds = _BOUNDS.search(resp.body)
                allowed = f"the agent allows {bounds.group(1)} to {bounds.group(2)}" if bounds else _short(resp.body)
                raise SessionTTLOutOfRange(
                    f"Consul agent {self.where} refused {what_ttl}: {allowed} "
                    f"(its session_ttl_min; Consul's default floor is 10s)"
                )
            return str(consul_callback.CB.json(is_id=True)(resp))

        with self.errors("creating a session"):
            # py-consul's http.put returns what the callback (answer) returns.
            session_id: str = self.client.http.put(
                answer, "/v1/session/create", data=body, headers=self.client.prepare_headers()
            )
            return session_id

    def session_renew(self, session_id: str) -> bool:
        """Renew; ``False`` when Consul no longer knows the session (404)."""
        with self.errors("renewing the session"):
            try:
                self.client.session.renew(session_id)
            except consul_exc.NotFound:
                return False
            return True

    def session_destroy(self, session_id: str) -> None:
        with self.errors("destroying the session"):
            self.client.session.destroy(session_id)

    # -- KV ---------------------------------------------------------------

    def _read(self, path: str, params: list[tuple[str, Any]], doing: str, **decode: Any) -> tuple[str, Any, bool]:
        """One GET: ``(index, data, filtered)``; data is ``None`` on 404 and
        *filtered* says Consul left out what the token may not read."""

        def answer(resp: Any) -> tuple[str, Any, bool]:
            index, data = consul_callback.CB.json(index=True, **decode)(resp)
            return index, data, str(resp.headers.get(_FILTERED, "")).lower() == "true"

        with self.errors(doing):
            result: tuple[str, Any, bool] = self.client.http.get(
                answer, path, params=params, headers=self.client.prepare_headers()
            )
            return result

    def _filtered(self, what: str, needs: str) -> NoReturn:
        raise ConsulAccessDenied(
            f"Consul agent {self.where} filtered {what} by ACLs: the token lacks {needs}; check the token option"
        )

    def kv_get(
        self,
        key: str,
        *,
        recurse: bool = False,
        keys: bool = False,
        separator: str | None = None,
        index: str | None = None,
        wait: float | None = None,
        doing: str | None = None,
    ) -> tuple[str, Any]:
        """GET a key or prefix: ``(index, data)``; data is ``None`` on 404.
        ``consistent`` unless it is a blocking query (module docstring);
        :class:`ConsulAccessDenied` when Consul filtered the answer."""
        params = _blocking(index, wait)
        params += [("recurse", "1")] if recurse else []
        params += [("keys", "1")] if keys else []
        params += [("separator", separator)] if separator else []
        decode: dict[str, Any] = {} if keys else {"decode": "Value", "one": not recurse}
        idx, data, filtered = self._read(f"/v1/kv/{key}", params, doing or f"reading {key!r}", **decode)
        if filtered:
            self._filtered(f"the keys under {key!r}", "key:read on some of them")
        return idx, data

    def kv_put(
        self,
        key: str,
        value: bytes | str | None,
        *,
        cas: int | None = None,
        acquire: str | None = None,
        release: str | None = None,
        what: str | None = None,
    ) -> bool:
        """PUT; raises :class:`SessionGone` when *acquire* names a session
        Consul no longer knows, and :class:`ConsulValueTooLarge` (naming
        *what* the value holds) before sending a value Consul would refuse."""
        raw = value.encode("utf-8") if isinstance(value, str) else value or b""
        if len(raw) > KV_MAX_VALUE_SIZE:
            self._too_large(key, what, f"{len(raw)} bytes; Consul stores at most {KV_MAX_VALUE_SIZE}")
        with self.errors(f"writing {key!r}"):
            try:
                return bool(self.client.kv.put(key, value, cas=cas, acquire=acquire, release=release))
            except consul_exc.ConsulException as exc:
                if acquire and _INVALID_SESSION.match(str(exc)):
                    raise SessionGone(
                        f"Consul agent {self.where} no longer knows the session while acquiring {key!r} (it expired)"
                    ) from exc
                if str(exc).startswith("413 "):
                    self._too_large(key, what, f"{len(raw)} bytes; the agent refused it: {_short(exc)}")
                raise

    def _too_large(self, key: str, what: str | None, why: str) -> NoReturn:
        raise ConsulValueTooLarge(
            f"{what or 'the value'} is too large for Consul ({key!r}: {why}; "
            "kv_max_value_size, 512 KiB by default); nothing was written"
        )

    def kv_delete(self, key: str, *, recurse: bool = False, cas: int | None = None) -> bool:
        with self.errors(f"deleting {key!r}"):
            return bool(self.client.kv.delete(key, recurse=recurse or None, cas=cas))

    # -- catalog ----------------------------------------------------------

    def health_service(
        self, name: str, index: str | None = None, wait: float | None = None
    ) -> tuple[str, list[dict[str, Any]]]:
        """Every instance of service *name* with its checks (passing or not);
        :class:`ConsulAccessDenied` when Consul filtered some out."""
        idx, entries, filtered = self._read(
            f"/v1/health/service/{name}", _blocking(index, wait), f"reading the health of service {name!r}"
        )
        if filtered:
            self._filtered(f"the instances of service {name!r}", "service:read on it or node:read on its nodes")
        return idx, list(entries or [])

    def catalog_services(
        self, index: str | None = None, wait: float | None = None
    ) -> tuple[str, dict[str, list[str]], bool]:
        """``(index, services, filtered)``: every service the token may see,
        and whether Consul left some out (a token may rightly see only some)."""
        idx, services, filtered = self._read("/v1/catalog/services", _blocking(index, wait), "listing catalog services")
        return idx, dict(services or {}), filtered


def go_wait(seconds: float) -> str:
    """A blocking query's ``wait`` as a Go duration Consul honours: at
    least 1 ms (``0s`` would be Consul's default of 5 minutes) and at most
    Consul's ``max_query_time``, in whole milliseconds (a float such as
    ``1e-05s`` is not a Go duration)."""
    return f"{round(min(max(seconds, MIN_WAIT), MAX_WAIT) * 1000)}ms"


def _blocking(index: str | None, wait: float | None) -> list[tuple[str, Any]]:
    """Query parameters of a read: a blocking query from *index* (default
    consistency, see the module docstring), else a ``consistent`` read."""
    if not index:
        return [("consistent", "1")]
    return [("index", index)] + ([("wait", go_wait(wait))] if wait is not None else [])


def _short(exc: BaseException | str, limit: int = 200) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
