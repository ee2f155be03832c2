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

:meth:`Acl.api` serves the part of Consul's ACL API that tests use to make
tokens (``PUT /v1/acl/policy``, ``PUT /v1/acl/token``, their ``DELETE``), so
the same test code runs against a real agent and the model; a policy's
rules may only grant a whole area (``key_prefix ""``), as tokens here do.
"""

from __future__ import annotations

from collections.abc import Iterable
import re
from typing import Any
import uuid

from servicegroup.testing.consul.wire import ApiError

#: Permissions of the ACL model. Grants are per token, not per key prefix.
PERMISSIONS = frozenset(
    {
        "key:read",
        "key:write",
        "session:read",
        "session:write",
        "service:read",
        "service:write",
        "node:read",
        "acl:write",
    }
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
#: One rule of a policy, as the model reads it: a whole area, by prefix "".
_RULE = re.compile(r'(key|session|service|node)_prefix\s+"([^"]*)"\s*\{\s*policy\s*=\s*"(read|write|deny)"\s*\}')
#: The anonymous token's AccessorID in every Consul cluster.
ANONYMOUS = "00000000-0000-0000-0000-000000000002"


class Acl:
    """Consul's ACLs with ``default_policy = "deny"``: *tokens* maps each
    known secret to its permissions (:data:`PERMISSIONS`). A request without
    a token is the anonymous token, which may do nothing; an unknown secret
    is refused everywhere with 403 ``ACL not found``."""

    def __init__(self, tokens: dict[str, Iterable[str]]) -> None:
        self.tokens: dict[str, frozenset[str]] = {}
        self.policies: dict[str, frozenset[str]] = {}
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

    def api(self, method: str, path: str, body: dict[str, Any]) -> Any:
        """``/v1/acl/<path>``: create a policy or a token, delete either."""
        kind, _, ident = path.partition("/")
        if method == "PUT" and kind == "policy" and not ident:
            pid = str(uuid.uuid4())
            self.policies[pid] = _permissions(str(body.get("Rules") or ""))
            return {"ID": pid, "Name": body.get("Name", ""), "Rules": body.get("Rules", "")}
        if method == "PUT" and kind == "token" and not ident:
            perms: set[str] = set()
            for link in body.get("Policies") or []:
                if link.get("ID") not in self.policies:
                    raise ApiError(400, f"cannot find policy {link.get('ID')!r}")
                perms |= self.policies[link["ID"]]
            secret = str(uuid.uuid4())
            self.add(secret, perms)
            accessor = self.resolve(secret)[0]
            return {"AccessorID": accessor, "SecretID": secret, "Description": body.get("Description", "")}
        if method == "DELETE" and kind == "token" and ident:
            for secret in [s for s in self.tokens if self.resolve(s)[0] == ident]:
                del self.tokens[secret]
            return True
        if method == "DELETE" and kind == "policy" and ident:
            self.policies.pop(ident, None)
            return True
        raise ApiError(404, f"Invalid URL path: '/v1/acl/{path}'")


def _permissions(rules: str) -> frozenset[str]:
    """The model's permissions for a policy's rules (``write`` implies
    ``read``); a rule the model cannot express is a 400."""
    perms: set[str] = set()
    rest = _RULE.sub("", rules).strip()
    if rest:
        raise ApiError(400, f"Failed to parse ACL rules (the model takes whole-area rules only): {rest!r}")
    for resource, prefix, policy in _RULE.findall(rules):
        if policy == "deny":
            continue
        if prefix:
            raise ApiError(400, f"the model grants whole areas only, not the prefix {prefix!r}")
        perms.add(f"{resource}:read")
        if policy == "write" and resource != "node":
            perms.add(f"{resource}:write")
    return frozenset(perms)
