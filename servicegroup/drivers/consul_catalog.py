"""Catalog mode of the Consul backend: groups are Consul service names.

Operators register services with Consul (agent config, ``consul services
register``, or ``PUT /v1/agent/service/register``) and Consul's own checks
decide liveness. A group is a service name; its members are the instances
whose checks all pass. Nothing is written, so every write raises
:class:`~servicegroup.drivers.consul_api.CatalogReadOnly`, which says why.

The health endpoint is read *without* ``?passing`` and filtered here with
the same rule (every check ``passing``): one request then tells "no such
service" (:class:`tooz.coordination.GroupNotCreated`) from "no live
instance" (an empty set), which ``?passing`` alone cannot.

A member is named by ``catalog_member``: ``id`` (default) is the service
instance ID, unique on one agent; ``node`` is the Consul node name, for
fleets that run one agent per host and register the default ID.
"""

from __future__ import annotations

from typing import Any, NoReturn

from tooz import coordination

from servicegroup.drivers import _base
from servicegroup.drivers.consul_api import CatalogNotJoined, CatalogReadOnly, ConsulAccessDenied, ConsulAPI


class CatalogGroups:
    """The read-only group operations of catalog mode."""

    def __init__(self, api: ConsulAPI, member_key: str, member_id: bytes) -> None:
        if member_key not in ("id", "node"):
            raise _base.InvalidOption(f"option catalog_member={member_key!r}: use id or node")
        self.api = api
        self.member_key = member_key
        self.member_id = member_id

    def probe(self) -> None:
        """Fail at start, not at first use, on a bad address or token.

        With ACLs, Consul does not refuse a catalog read the token may not
        do: it filters it, to ``{}`` at worst. Every Consul server registers
        the ``consul`` service, so a catalog listing no service at all means
        the token may read none, and every group would read as "not
        created" for ever: :class:`ConsulAccessDenied` now instead. (A token
        that may read only some services passes; a read of one it may not
        see raises when made, see ``ConsulAPI.health_service``.)
        """
        _, services, filtered = self.api.catalog_services()
        if not services:
            raise ConsulAccessDenied(
                f"Consul agent {self.api.where} lists no service at all, not even its own 'consul' service"
                f"{' (filtered by ACLs)' if filtered else ''}: the token lacks service:read, so every group "
                "would read as not created; check the token option"
            )

    @staticmethod
    def _why(what: str) -> str:
        return (
            f"{what} is not available in Consul catalog mode: services are registered with "
            "Consul by operators and Consul's health checks decide who is live; use "
            "mode=registered for members written by this library"
        )

    def _read_only(self, what: str) -> NoReturn:
        raise CatalogReadOnly(self._why(what))

    def _not_joined(self, what: str, gid: bytes) -> NoReturn:
        raise CatalogNotJoined(self._why(what), gid, self.member_id)

    def create(self, gid: bytes) -> None:
        self._read_only("create_group")

    def delete(self, gid: bytes) -> None:
        self._read_only("delete_group")

    def join(self, gid: bytes, capabilities: Any) -> None:
        self._read_only("join_group")

    def leave(self, gid: bytes) -> None:
        self._not_joined("leave_group", gid)

    def update(self, gid: bytes, capabilities: Any) -> None:
        self._not_joined("update_capabilities", gid)

    def try_lead(self, gid: bytes) -> bool:
        self._read_only("leader election")

    def stand_down(self, gid: bytes) -> bool:
        return False

    def groups(self) -> list[bytes]:
        _, services, _ = self.api.catalog_services()
        return sorted(name.encode() for name in services)

    def _name(self, gid: bytes) -> str:
        return gid.decode("utf-8")

    def members(self, gid: bytes) -> tuple[str, dict[bytes, dict[str, Any]]]:
        index, entries = self.api.health_service(self._name(gid))
        if not entries:
            raise coordination.GroupNotCreated(gid)
        out: dict[bytes, dict[str, Any]] = {}
        for entry in entries:
            if not all(c.get("Status") == "passing" for c in entry.get("Checks") or []):
                continue
            member, info = self._info(entry)
            if member in out:  # node naming: one host, several instances
                out[member]["capabilities"]["instances"].extend(info["capabilities"]["instances"])
            else:
                out[member] = info
        return index, out

    def member(self, gid: bytes, mid: bytes) -> dict[str, Any]:
        _, members = self.members(gid)
        if mid not in members:
            raise coordination.MemberNotJoined(gid, mid)
        return members[mid]

    def block(self, gid: bytes, index: str | None, wait: float) -> str:
        """The index after a blocking query from *index* (at once if None)."""
        idx, _ = self.api.health_service(self._name(gid), index=index, wait=wait)
        return idx

    def leader(self, gid: bytes) -> bytes | None:
        return None  # no election in catalog mode

    def _info(self, entry: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
        svc = entry.get("Service") or {}
        node = entry.get("Node") or {}
        instance = {
            "id": svc.get("ID"),
            "node": node.get("Node"),
            "address": svc.get("Address") or node.get("Address"),
            "port": svc.get("Port"),
            "tags": list(svc.get("Tags") or []),
            "meta": dict(svc.get("Meta") or {}),
        }
        name = node.get("Node") if self.member_key == "node" else svc.get("ID")
        caps = dict(instance, instances=[instance])
        return str(name).encode("utf-8"), {"capabilities": caps, "created_at": None, "updated_at": None}
