"""ACL tokens with chosen permissions, on the model or on a real agent.

A test that pins what the backend does with a token lacking a permission
needs such a token on whichever agent runs it. The model takes one directly
(:meth:`~servicegroup.testing.consul.ConsulTestServer.add_acl_token`); a
real agent gets a policy whose rules grant the same permissions and a token
for it, through its ACL API and the management token, both deleted again
by the returned cleanup.

Permissions are the model's names (:data:`.acl.PERMISSIONS`, such as
``key:read`` or ``service:write``); on a real agent each becomes a rule on
every name (``key_prefix ""``, ``service_prefix ""`` ...).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
import json
from typing import Any
import uuid

import requests

from servicegroup.testing.consul.server import ConsulTestServer

#: The rule a permission's resource becomes on a real agent.
_RULE = {"key": "key_prefix", "session": "session_prefix", "service": "service_prefix", "node": "node_prefix"}
#: A rule granting nothing, for a token without permissions (a policy needs one).
_NOTHING = 'key_prefix "servicegroup-test-nothing/" { policy = "deny" }'


def rules(permissions: Iterable[str]) -> str:
    """Consul ACL rules granting *permissions* on every name."""
    level: dict[str, str] = {}
    for perm in permissions:
        resource, _, access = perm.partition(":")
        if level.get(resource) != "write":
            level[resource] = access
    lines = [f'{_RULE[r]} "" {{ policy = "{a}" }}' for r, a in sorted(level.items())]
    return "\n".join(lines) or _NOTHING


def make_token(agent: Any, management: str, permissions: Iterable[str]) -> tuple[str, Callable[[], None]]:
    """A new token's secret with *permissions* on *agent*, and a function
    that deletes it again."""
    perms = frozenset(permissions)
    if isinstance(agent, ConsulTestServer):
        secret = str(uuid.uuid4())
        agent.add_acl_token(secret, perms)
        return secret, lambda: None
    base, headers = f"http://{agent.address}/v1/acl", {"X-Consul-Token": management}
    name = f"servicegroup-test-{uuid.uuid4().hex[:12]}"

    def put(path: str, body: dict[str, Any]) -> dict[str, Any]:
        resp = requests.put(f"{base}/{path}", data=json.dumps(body), headers=headers, timeout=10)
        resp.raise_for_status()
        answer: dict[str, Any] = resp.json()
        return answer

    policy = put("policy", {"Name": name, "Rules": rules(perms)})
    token = put("token", {"Description": name, "Policies": [{"ID": policy["ID"]}]})

    def cleanup() -> None:
        requests.delete(f"{base}/token/{token['AccessorID']}", headers=headers, timeout=10)
        requests.delete(f"{base}/policy/{policy['ID']}", headers=headers, timeout=10)

    return str(token["SecretID"]), cleanup
