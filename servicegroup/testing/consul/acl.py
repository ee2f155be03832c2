"""The model's ACLs: Consul's token system with ``default_policy = "deny"``.

Tokens carry permissions per area (keys, sessions, services), not per key
prefix: enough to pin what the backend does with a token that may read but
not write, with no token, and with an unknown one, which is what operators
get wrong. The HTTP layer asks :meth:`Acl.resolve` once per request.
"""

from __future__ import annotations

from collections.abc import Iterable
import uuid

from servicegroup.testing.consul.wire import ApiError

#: Permissions of the ACL model. Grants are per token, not per key prefix.
PERMISSIONS = frozenset({"key:read", "key:write", "session:read", "session:write", "service:read", "service:write"})
READ_ONLY = frozenset({"key:read", "session:read", "service:read"})
#: The anonymous token's AccessorID in every Consul cluster.
ANONYMOUS = "00000000-0000-0000-0000-000000000002"


class Acl:
    """Consul's ACLs with ``default_policy = "deny"``: *tokens* maps each
    known secret to its permissions (:data:`PERMISSIONS`). A request without
    a token is the anonymous token, which may do nothing; an unknown secret
    is refused everywhere with 403 ``ACL not found``."""

    def __init__(self, tokens: dict[str, Iterable[str]]) -> None:
        self.tokens = {secret: frozenset(perms) for secret, perms in tokens.items()}
        for perms in self.tokens.values():
            if not perms <= PERMISSIONS:
                raise ValueError(f"unknown permission(s) {sorted(perms - PERMISSIONS)}")

    def resolve(self, secret: str | None) -> tuple[str, frozenset[str]]:
        """The token's AccessorID (never the secret) and permissions."""
        if not secret:
            return ANONYMOUS, frozenset()
        if secret not in self.tokens:
            raise ApiError(403, "ACL not found")
        return str(uuid.uuid5(uuid.NAMESPACE_OID, secret)), self.tokens[secret]
