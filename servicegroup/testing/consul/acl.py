"""The model's ACLs: Consul's token system with ``default_policy = "deny"``.

Tokens carry permissions per area (keys, sessions, services, nodes), not per
key prefix or name: enough to pin what the backend does with a token that
may read but not write, with no token, and with an unknown one, which is
what operators get wrong. The HTTP layer asks :meth:`Acl.resolve` once per
request.

What a token may not read is refused or filtered as Consul does it: a
single-key KV read and every write is 403, but list reads are *filtered*
(``filterACL`` in ``agent/consul/acl.go``, called by ``KVS.List``,
``Health.ServiceNodes``, ``Catalog.ListServices``, ``Session.Get``/``List``):
200 with what the token may see, ``X-Consul-Results-Filtered-By-ACLs: true``
when something was left out - except for a request without a token, where
Consul masks that header (``maskResultsFilteredByACLs`` in
``agent/consul/rpc.go``). :data:`READS` says what each filtered read needs.
"""

from __future__ import annotations

from collections.abc import Iterable
import uuid

from servicegroup.testing.consul.wire import ApiError

#: Permissions of the ACL model. Grants are per token, not per key prefix.
PERMISSIONS = frozenset(
    {"key:read", "key:write", "session:read", "session:write", "service:read", "service:write", "node:read"}
)
READ_ONLY = frozenset({"key:read", "session:read", "service:read", "node:read"})
#: What a filtered read needs to see anything (a health entry is a service
#: instance on a node: Consul needs both).
READS = {
    "kv": frozenset({"key:read"}),
    "health": frozenset({"service:read", "node:read"}),
    "catalog": frozenset({"service:read"}),
    "session": frozenset({"session:read"}),
}
#: The anonymous token's AccessorID in every Consul cluster.
ANONYMOUS = "00000000-0000-0000-0000-000000000002"


class Acl:
    """Consul's ACLs with ``default_policy = "deny"``: *tokens* maps each
    known secret to its permissions (:data:`PERMISSIONS`). A request without
    a token is the anonymous token, which may do nothing; an unknown secret
    is refused everywhere with 403 ``ACL not found``."""

    def __init__(self, tokens: dict[str, Iterable[str]]) -> None:
        self.tokens: dict[str, frozenset[str]] = {}
        for secret, perms in tokens.items():
            self.add(secret, perms)

    def add(self, secret: str, permissions: Iterable[str]) -> None:
        perms = frozenset(permissions)
        if not perms <= PERMISSIONS:
            raise ValueError(f"unknown permission(s) {sorted(perms - PERMISSIONS)}")
        self.tokens[secret] = perms

    def resolve(self, secret: str | None) -> tuple[str, frozenset[str]]:
        """The token's AccessorID (never the secret) and permissions."""
        if not secret:
            return ANONYMOUS, frozenset()
        if secret not in self.tokens:
            raise ApiError(403, "ACL not found")
        return str(uuid.uuid5(uuid.NAMESPACE_OID, secret)), self.tokens[secret]
