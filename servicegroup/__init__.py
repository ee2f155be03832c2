"""servicegroup: who in the fleet is alive.

Service records live in SQL; liveness (join, heartbeat, is_up, get_all) is
delegated to a tooz backend. Start at :class:`servicegroup.api.ServiceGroup`;
``is_up`` is decided in :meth:`servicegroup.api.ServiceGroup.is_up`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from servicegroup import errors

if TYPE_CHECKING:
    from servicegroup.api import ServiceGroup
    from servicegroup.records import Service

__all__ = ["ServiceGroup", "Service", "errors"]


def __getattr__(name: str) -> Any:
    # Lazy, so that `import servicegroup.drivers.sql` (what tooz's entry point
    # loads) does not import the whole facade and its dependencies.
    if name == "ServiceGroup":
        from servicegroup.api import ServiceGroup

        return ServiceGroup
    if name == "Service":
        from servicegroup.records import Service

        return Service
    raise AttributeError(name)
