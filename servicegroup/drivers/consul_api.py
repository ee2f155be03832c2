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


class ConsulUnreachable(coordination.ToozConnectionError, errors.BackendUnavailable):
    """The Consul agent cannot be reached (refused, timed out, TLS failure)."""


class ConsulAccessDenied(tooz.ToozError, errors.ConfigError):
    """The agent refused the ACL token: unknown ("ACL not found") or lacking
    a permission ("Permission denied"). Fix the ``token`` option."""


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

    def kv_get(
        self,
        key: str,
        *,
        recurse: bool = False,
        keys: bool = False,
        separator: str | None = None,
        index: str | None = None,
        wait: str | None = None,
        doing: str | None = None,
    ) -> tuple[str, Any]:
        """GET a key or prefix: ``(index, data)``; data is ``None`` on 404.
        ``consistent`` unless it is a blocking query (module docstring)."""
        with self.errors(doing or f"reading {key!r}"):
            found: tuple[str, Any] = self.client.kv.get(
                key,
                recurse=recurse,
                keys=keys,
                separator=separator,
                index=index,
                wait=wait,
                consistency=None if index else "consistent",
            )
            return found

    def kv_put(
        self,
        key: str,
        value: bytes | str | None,
        *,
        cas: int | None = None,
        acquire: str | None = None,
        release: str | None = None,
    ) -> bool:
        """PUT; raises :class:`SessionGone` when *acquire* names a session
        Consul no longer knows."""
        with self.errors(f"writing {key!r}"):
            try:
                return bool(self.client.kv.put(key, value, cas=cas, acquire=acquire, release=release))
            except consul_exc.ConsulException as exc:
                if acquire and _INVALID_SESSION.match(str(exc)):
                    raise SessionGone(
                        f"Consul agent {self.where} no longer knows the session while acquiring {key!r} (it expired)"
                    ) from exc
                raise

    def kv_delete(self, key: str, *, recurse: bool = False, cas: int | None = None) -> bool:
        with self.errors(f"deleting {key!r}"):
            return bool(self.client.kv.delete(key, recurse=recurse or None, cas=cas))

    # -- catalog ----------------------------------------------------------

    def health_service(
        self, name: str, index: str | None = None, wait: str | None = None
    ) -> tuple[str, list[dict[str, Any]]]:
        """Every instance of service *name* with its checks (passing or not)."""
        # Raw call: py-consul's health.service takes no consistency mode.
        params = [("index", index)] if index else [("consistent", "1")]
        if index and wait:
            params.append(("wait", wait))
        with self.errors(f"reading the health of service {name!r}"):
            idx, entries = self.client.http.get(
                consul_callback.CB.json(index=True),
                f"/v1/health/service/{name}",
                params=params,
                headers=self.client.prepare_headers(),
            )
            return idx, list(entries or [])

    def catalog_services(self, index: str | None = None, wait: str | None = None) -> tuple[str, dict[str, list[str]]]:
        with self.errors("listing catalog services"):
            idx, services = self.client.catalog.services(
                index=index, wait=wait, consistency=None if index else "consistent"
            )
            return idx, dict(services or {})


def _short(exc: BaseException | str, limit: int = 200) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
