"""Service records in SQL: models, repository and alembic migrations.

The records are the operator's view of the fleet (host, topic, binary,
version, forced_down, disabled). Liveness itself lives in the tooz backend;
the facade joins the two. ``servicegroup db-sync`` is ``Records(url).migrate()``.
"""

from servicegroup.records.repository import Records, Service

__all__ = ["Records", "Service"]
