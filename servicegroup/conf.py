"""Configuration: oslo.config options and the validated :class:`Settings`.

Operators switch backends with one option, ``[servicegroup] driver``; the
records database is ``[database] connection`` as in every OpenStack service.
``list_opts`` is registered under the ``oslo.config.opts`` entry point so
``oslo-config-generator --namespace servicegroup`` documents them.

A nova.conf works as is: nova's ``[DEFAULT] servicegroup_driver``,
``report_interval`` and ``service_down_time`` are deprecated names of ours
(oslo.config logs its deprecation warning; when both are set, ours wins),
and ``[database] connection`` is already nova's name. Nova's driver values
``db``, ``mc`` and ``zk`` are driver names here too, for the same backends.

Nova silently replaces a ``service_down_time`` that is not larger than
``report_interval`` with ``2.5 * report_interval`` and only warns. Here that
configuration is refused, with the value to set in the message: a liveness
window shorter than the heartbeat period marks every service down between
two beats, and guessing a fix hides the mistake.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

from oslo_config import cfg

from servicegroup import errors
from servicegroup import urls

DEFAULT_RECORDS_URL = "sqlite:///servicegroup.sqlite"

#: Smallest timing accepted anywhere (the oslo options' ``min``): library
#: arguments and CLI flags get the same floor as the config file.
MIN_SECONDS = 0.01

#: Largest timing accepted: 30 days. Past it memcached reads a TTL as an
#: absolute Unix time (so every key would expire at once), and long before
#: ``threading`` waits overflow.
MAX_SECONDS = 30 * 24 * 3600.0

TIMINGS = ("report_interval", "service_down_time", "max_staleness")

servicegroup_group = cfg.OptGroup(
    "servicegroup", title="Service group", help="Liveness of services: which backend answers is_up()."
)

SERVICEGROUP_OPTS = [
    cfg.StrOpt(
        "driver",
        default="db",
        deprecated_opts=[cfg.DeprecatedOpt("servicegroup_driver", group="DEFAULT")],
        help="Liveness backend: db, zk, mc, redis, etcd, consul, or a tooz backend URL. "
        "Nova's [DEFAULT] servicegroup_driver is read when this is not set; its values "
        "db, mc and zk mean the same backends here.",
    ),
    cfg.StrOpt(
        "url",
        secret=True,
        help="Backend URL for the driver (default: the driver's local default; "
        "for db, the [database] connection). May carry credentials.",
    ),
    cfg.StrOpt(
        "previous_driver",
        help="While switching driver on a live fleet: the driver used before. Members "
        "heartbeat to both backends and observers count a service up if either lists it. "
        "Unset it (rolling) once `servicegroup driver-status` exits 0; see docs/operations.md.",
    ),
    cfg.StrOpt(
        "previous_url",
        secret=True,
        help="Backend URL of previous_driver (default: that driver's default). May carry credentials.",
    ),
    cfg.FloatOpt(
        "report_interval",
        default=10.0,
        min=MIN_SECONDS,
        deprecated_opts=[cfg.DeprecatedOpt("report_interval", group="DEFAULT")],
        help="Seconds between two heartbeats of a service (at most 30 days). Nova's "
        "[DEFAULT] report_interval is read when this is not set.",
    ),
    cfg.FloatOpt(
        "service_down_time",
        default=60.0,
        min=MIN_SECONDS,
        deprecated_opts=[cfg.DeprecatedOpt("service_down_time", group="DEFAULT")],
        help="Seconds without a heartbeat after which a service is down. Must be larger "
        "than report_interval (2.5x or more is advised), at most 30 days. Nova's "
        "[DEFAULT] service_down_time is read when this is not set.",
    ),
    cfg.FloatOpt(
        "max_staleness",
        default=1.0,
        min=MIN_SECONDS,
        help="Oldest membership view, in seconds, that is_up() may answer from. Lower "
        "means fresher answers and more backend reads.",
    ),
    cfg.PortOpt(
        "metrics_port",
        help="Serve Prometheus metrics over HTTP on this port (all addresses), from "
        "every process of the service that builds a ServiceGroup. Unset: no HTTP "
        "server (`servicegroup metrics` still prints them). Needs servicegroup[metrics].",
    ),
]

database_group = cfg.OptGroup("database", title="Service records database")

DATABASE_OPTS = [
    cfg.StrOpt(
        "connection",
        default=DEFAULT_RECORDS_URL,
        secret=True,
        help="SQLAlchemy URL of the service records database (the same option name "
        "as nova's; give servicegroup a database of its own, see docs/nova.md).",
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
    previous_driver: str | None = None
    previous_url: str | None = None
    metrics_port: int | None = None

    def __post_init__(self) -> None:
        for name in TIMINGS:
            check_seconds(name, getattr(self, name))
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
        for name in ("previous_driver", "previous_url"):
            if not getattr(self, name):
                # `previous_driver =` in a file (the runbook's last step) means unset.
                object.__setattr__(self, name, None)
        if self.previous_url and not self.previous_driver:
            raise errors.ConfigError(
                "previous_url is set but previous_driver is not: set previous_driver too "
                "(the driver the fleet is switching away from)"
            )
        port = self.metrics_port
        if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535):
            raise errors.ConfigError(f"metrics_port must be a TCP port from 0 to 65535 (0: any free one), not {port!r}")

    def __repr__(self) -> str:
        # The URLs may carry passwords and tokens: never shown raw.
        shown = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for name in ("driver", "url", "records_url", "previous_driver", "previous_url"):
            if shown[name] is not None:
                shown[name] = urls.redact(shown[name])
        return f"Settings({', '.join(f'{k}={v!r}' for k, v in shown.items())})"

    @classmethod
    def from_config(cls, conf: cfg.ConfigOpts) -> Settings:
        """Read ``[servicegroup]`` and ``[database]`` from *conf*.

        A value oslo.config cannot convert or that is out of range is a
        :class:`~servicegroup.errors.ConfigError` naming the option.
        """
        register_opts(conf)
        values = {
            field: _read(conf, group, option)
            for field, group, option in (
                ("driver", "servicegroup", "driver"),
                ("url", "servicegroup", "url"),
                ("records_url", "database", "connection"),
                ("report_interval", "servicegroup", "report_interval"),
                ("service_down_time", "servicegroup", "service_down_time"),
                ("max_staleness", "servicegroup", "max_staleness"),
                ("previous_driver", "servicegroup", "previous_driver"),
                ("previous_url", "servicegroup", "previous_url"),
                ("metrics_port", "servicegroup", "metrics_port"),
            )
        }
        return cls(**values)

    @classmethod
    def from_file(cls, path: str) -> Settings:
        """Read an oslo.config file. Every failure (missing, a directory,
        unreadable, not UTF-8, not INI, a bad value) is a
        :class:`~servicegroup.errors.ConfigError` naming the file."""
        if os.path.isdir(path):
            raise errors.ConfigError(f"config file {path}: is a directory, not a file")
        conf = cfg.ConfigOpts()
        register_opts(conf)
        try:
            conf(args=[], default_config_files=[path])
            return cls.from_config(conf)
        except errors.ConfigError as exc:
            raise errors.ConfigError(f"config file {path}: {exc}") from None
        except UnicodeDecodeError as exc:
            raise errors.ConfigError(
                f"config file {path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})"
            ) from None
        except OSError as exc:
            raise errors.ConfigError(f"config file {path}: {exc.strerror or exc}") from None
        except cfg.Error as exc:
            raise errors.ConfigError(f"config file {path}: {_first_line(exc)}") from None


def check_seconds(name: str, value: Any) -> float:
    """*value* as seconds, or :class:`~servicegroup.errors.ConfigError`:
    a finite number from :data:`MIN_SECONDS` to :data:`MAX_SECONDS`.

    ``nan`` compares false with everything, so a plain ``<= 0`` test let it
    through (a ``nan`` report interval spun a CPU); ``inf`` overflowed.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise errors.ConfigError(f"{name} must be a number of seconds, not {value!r}")
    if not math.isfinite(value):
        raise errors.ConfigError(f"{name} must be a finite number of seconds, not {value!r}")
    if not MIN_SECONDS <= value <= MAX_SECONDS:
        raise errors.ConfigError(
            f"{name} must be from {MIN_SECONDS:g} to {MAX_SECONDS:.0f} seconds (30 days), not {value:g}"
        )
    return float(value)


def _read(conf: cfg.ConfigOpts, group: str, option: str) -> Any:
    try:
        return getattr(getattr(conf, group), option)
    except cfg.ConfigFileValueError as exc:
        # oslo's text: "Value for option X from LocationInfo(...) is not
        # valid: <reason>"; the reason is what the operator needs.
        reason = str(exc).rpartition("is not valid: ")[2] or _first_line(exc)
        raise errors.ConfigError(f"[{group}] {option}: {reason}") from None
    except cfg.Error as exc:
        raise errors.ConfigError(f"[{group}] {option}: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
