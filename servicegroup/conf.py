"""Configuration: oslo.config options and the validated :class:`Settings`.

Operators switch backends with one option, ``[servicegroup] driver``; the
records database is ``[database] connection`` as in every OpenStack service.
``list_opts`` is registered under the ``oslo.config.opts`` entry point so
``oslo-config-generator --namespace servicegroup`` documents them.

Nova silently replaces a ``service_down_time`` that is not larger than
``report_interval`` with ``2.5 * report_interval`` and only warns. Here that
configuration is refused, with the value to set in the message: a liveness
window shorter than the heartbeat period marks every service down between
two beats, and guessing a fix hides the mistake.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from oslo_config import cfg

from servicegroup import errors

DEFAULT_RECORDS_URL = "sqlite:///servicegroup.sqlite"

servicegroup_group = cfg.OptGroup(
    "servicegroup", title="Service group", help="Liveness of services: which backend answers is_up()."
)

SERVICEGROUP_OPTS = [
    cfg.StrOpt(
        "driver",
        default="db",
        help="Liveness backend: db, zk, mc, redis, etcd, consul, or a tooz backend URL.",
    ),
    cfg.StrOpt(
        "url",
        secret=True,
        help="Backend URL for the driver (default: the driver's local default; "
        "for db, the [database] connection). May carry credentials.",
    ),
    cfg.FloatOpt(
        "report_interval", default=10.0, min=0.01, help="Seconds between two heartbeats of a service."
    ),
    cfg.FloatOpt(
        "service_down_time",
        default=60.0,
        min=0.01,
        help="Seconds without a heartbeat after which a service is down. Must be larger "
        "than report_interval (2.5x or more is advised).",
    ),
    cfg.FloatOpt(
        "max_staleness",
        default=1.0,
        min=0.01,
        help="Oldest membership view, in seconds, that is_up() may answer from. Lower "
        "means fresher answers and more backend reads.",
    ),
]

database_group = cfg.OptGroup("database", title="Service records database")

DATABASE_OPTS = [
    cfg.StrOpt(
        "connection",
        default=DEFAULT_RECORDS_URL,
        secret=True,
        help="SQLAlchemy URL of the service records database.",
    ),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    """Register both option groups on *conf* (idempotent)."""
    conf.register_group(servicegroup_group)
    conf.register_opts(SERVICEGROUP_OPTS, group=servicegroup_group)
    conf.register_group(database_group)
    conf.register_opts(DATABASE_OPTS, group=database_group)


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    """For ``oslo-config-generator`` (entry point ``oslo.config.opts``)."""
    return [("servicegroup", list(SERVICEGROUP_OPTS)), ("database", list(DATABASE_OPTS))]


@dataclasses.dataclass(frozen=True)
class Settings:
    """Validated settings of one :class:`~servicegroup.api.ServiceGroup`."""

    driver: str = "db"
    url: str | None = None
    records_url: str = DEFAULT_RECORDS_URL
    report_interval: float = 10.0
    service_down_time: float = 60.0
    max_staleness: float = 1.0

    def __post_init__(self) -> None:
        for name in ("report_interval", "service_down_time", "max_staleness"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise errors.ConfigError(f"{name} must be a positive number of seconds, not {value!r}")
        if self.service_down_time <= self.report_interval:
            raise errors.ConfigError(
                f"service_down_time ({self.service_down_time:g}s) must be larger than "
                f"report_interval ({self.report_interval:g}s), or every service looks down "
                f"between two heartbeats: set service_down_time to at least "
                f"{2.5 * self.report_interval:g} (2.5 x report_interval) or lower report_interval"
            )
        if self.max_staleness >= self.service_down_time:
            raise errors.ConfigError(
                f"max_staleness ({self.max_staleness:g}s) must be smaller than "
                f"service_down_time ({self.service_down_time:g}s): a view older than the "
                f"down time cannot tell a dead service from a live one"
            )
        if not self.records_url:
            raise errors.ConfigError("records_url ([database] connection) must not be empty")

    @classmethod
    def from_config(cls, conf: cfg.ConfigOpts) -> Settings:
        """Read ``[servicegroup]`` and ``[database]`` from *conf*."""
        register_opts(conf)
        sg: Any = conf.servicegroup
        return cls(
            driver=sg.driver,
            url=sg.url,
            records_url=conf.database.connection,
            report_interval=sg.report_interval,
            service_down_time=sg.service_down_time,
            max_staleness=sg.max_staleness,
        )
