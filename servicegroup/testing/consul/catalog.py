"""The model's agent services, TTL checks, health and catalog reads.

Services are registered with the (one) agent; each check is a TTL check
that goes critical when not passed in time, and a service whose check has
been critical for ``DeregisterCriticalServiceAfter`` is deregistered, as in
Consul. A status that does not change writes nothing and wakes nobody.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from servicegroup.testing.consul.index import RaftIndex
from servicegroup.testing.consul.wire import NODE, ApiError, fold, parse_duration


@dataclasses.dataclass
class Check:
    id: str
    name: str
    service_id: str
    ttl: float
    status: str
    output: str = ""
    deadline: float | None = None
    deregister_after: float | None = None
    critical_since: float | None = None


@dataclasses.dataclass
class Service:
    id: str
    name: str
    tags: list[str]
    address: str
    port: int
    meta: dict[str, str]
    create_index: int
    modify_index: int
    checks: list[Check] = dataclasses.field(default_factory=list)


class Catalog(RaftIndex):
    """``/v1/agent/service/``, ``/v1/agent/check/``, ``/v1/health/service/``,
    ``/v1/catalog/services``."""

    def __init__(self) -> None:
        super().__init__()
        self.services: dict[str, Service] = {}
        self.service_index: dict[str, int] = {}
        self.catalog_index = 1

    def service_register(self, body: dict[str, Any]) -> None:
        body = fold(body)
        name = body.get("name")
        if not name:
            raise ApiError(400, "Missing service name")
        sid = body.get("id") or name
        raw_checks = list(body.get("checks") or [])
        if body.get("check"):
            raw_checks.insert(0, body["check"])
        checks = []
        for n, raw in enumerate(raw_checks, start=1):
            if not raw.get("ttl"):
                raise ApiError(400, "Invalid check: the Consul test server supports TTL checks only")
            try:
                ttl = parse_duration(raw["ttl"])
                dereg = raw.get("deregistercriticalserviceafter")
                dereg_s = parse_duration(dereg) if dereg else None
            except ValueError as exc:
                raise ApiError(400, f"Request decode failed: {exc}") from None
            cid = (
                raw.get("checkid")
                or raw.get("id")
                or (f"service:{sid}" if len(raw_checks) == 1 else f"service:{sid}:{n}")
            )
            status = raw.get("status") or "critical"
            now = self.clock()
            checks.append(
                Check(
                    cid,
                    raw.get("name") or f"Service '{name}' check",
                    sid,
                    ttl,
                    status,
                    deadline=now + ttl if status != "critical" else None,
                    deregister_after=dereg_s,
                    critical_since=now if status == "critical" else None,
                )
            )
        with self.cond:
            old = self.services.get(sid)
            idx = self._bump()
            self.services[sid] = Service(
                sid,
                name,
                list(body.get("tags") or []),
                body.get("address") or "",
                int(body.get("port") or 0),
                dict(body.get("meta") or {}),
                old.create_index if old else idx,
                idx,
                checks,
            )
            self.service_index[name] = idx
            if old and old.name != name:
                self.service_index[old.name] = idx
            self.catalog_index = idx

    def service_deregister(self, service_id: str) -> None:
        with self.cond:
            if service_id not in self.services:
                raise ApiError(
                    404,
                    f'Unknown service ID "{service_id}". Ensure that the service ID is passed, not the service name.',
                )
            self._deregister(service_id)

    def _deregister(self, service_id: str) -> None:
        svc = self.services.pop(service_id)
        idx = self._bump()
        self.service_index[svc.name] = idx
        self.catalog_index = idx

    def _set_check(self, svc: Service, chk: Check, status: str, output: str) -> None:
        if chk.status == status and chk.output == output:
            return  # Consul writes nothing (and wakes nobody) when nothing changed
        if status == "critical" and chk.status != "critical":
            chk.critical_since = self.clock()
        elif status != "critical":
            chk.critical_since = None
        chk.status, chk.output = status, output
        idx = self._bump()
        svc.modify_index = idx
        self.service_index[svc.name] = idx

    def check_update(self, check_id: str, status: str, note: str) -> None:
        with self.cond:
            for svc in self.services.values():
                for chk in svc.checks:
                    if chk.id == check_id:
                        chk.deadline = self.clock() + chk.ttl
                        self._set_check(svc, chk, status, note)
                        return
            raise ApiError(
                404, f'Unknown check ID "{check_id}". Ensure that the check ID is passed, not the check name.'
            )

    def _expire_checks(self, now: float) -> None:
        """Turn overdue TTL checks critical; deregister services critical too long."""
        for svc in list(self.services.values()):
            for chk in svc.checks:
                if chk.deadline is not None and chk.deadline <= now and chk.status != "critical":
                    self._set_check(svc, chk, "critical", "TTL expired")
                if (
                    chk.status == "critical"
                    and chk.deregister_after is not None
                    and chk.critical_since is not None
                    and now - chk.critical_since >= chk.deregister_after
                ):
                    self._deregister(svc.id)
                    break

    def health_service(self, name: str, passing: bool) -> tuple[int, list[dict[str, Any]]]:
        with self.cond:
            idx = self.service_index.get(name) or self.catalog_index
            out = []
            for svc in sorted(self.services.values(), key=lambda s: s.id):
                if svc.name != name:
                    continue
                if passing and any(c.status != "passing" for c in svc.checks):
                    continue
                out.append(_health_entry(svc))
            return idx, out

    def catalog_services(self) -> tuple[int, dict[str, list[str]]]:
        with self.cond:
            out: dict[str, list[str]] = {"consul": []}
            for svc in self.services.values():
                tags = out.setdefault(svc.name, [])
                tags.extend(t for t in svc.tags if t not in tags)
            return self.catalog_index, out


def _health_entry(svc: Service) -> dict[str, Any]:
    """One ``/v1/health/service`` entry: node, service and checks."""
    node = {
        "ID": "00000000-0000-0000-0000-000000000001",
        "Node": NODE,
        "Address": "127.0.0.1",
        "Datacenter": "dc1",
        "TaggedAddresses": {},
        "Meta": {},
    }
    checks = [
        {
            "Node": NODE,
            "CheckID": "serfHealth",
            "Name": "Serf Health Status",
            "Status": "passing",
            "Notes": "",
            "Output": "Agent alive and reachable",
            "ServiceID": "",
            "ServiceName": "",
            "ServiceTags": [],
        }
    ]
    for chk in svc.checks:
        checks.append(
            {
                "Node": NODE,
                "CheckID": chk.id,
                "Name": chk.name,
                "Status": chk.status,
                "Notes": "",
                "Output": chk.output,
                "ServiceID": svc.id,
                "ServiceName": svc.name,
                "ServiceTags": svc.tags,
                "Type": "ttl",
            }
        )
    service = {
        "ID": svc.id,
        "Service": svc.name,
        "Tags": svc.tags,
        "Address": svc.address,
        "Port": svc.port,
        "Meta": svc.meta,
        "CreateIndex": svc.create_index,
        "ModifyIndex": svc.modify_index,
    }
    return {"Node": node, "Service": service, "Checks": checks}
