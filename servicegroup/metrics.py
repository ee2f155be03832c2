"""Prometheus metrics of one :class:`~servicegroup.api.ServiceGroup`.

Operators watch fleets through Prometheus; what they need from this
library is what it alone knows: how many services of each topic are up and
down, whether heartbeats are slow or failing, whether membership was lost
and restored (tooz's silent failure mode, healed by
:mod:`servicegroup.heartbeat`), how stale the membership view is and how
many backend round trips a refresh costs.

Each ServiceGroup has its own registry, never prometheus-client's global
one: a process may hold two groups (a driver switch, tests), and a library
must not add series to whatever the embedding service already exports.
Labels are topic, host, event and driver *names* only; a URL (which may
carry a password) never becomes a label.

prometheus-client is the optional extra ``servicegroup[metrics]``. Without
it every recording call does nothing, so the liveness path never depends
on it; asking for the exposition or the HTTP port raises
:class:`~servicegroup.errors.MissingExtra` naming the extra.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
import logging
import threading
from typing import TYPE_CHECKING, Any

from servicegroup import backend
from servicegroup import errors


def _import() -> Any:
    try:
        import prometheus_client
        import prometheus_client.core
    except ImportError:  # the [metrics] extra is not installed
        return None
    return prometheus_client


#: prometheus_client, or None without the [metrics] extra.
prometheus_client: Any = _import()

if TYPE_CHECKING:
    from servicegroup.api import ServiceGroup
    from servicegroup.membership import MembershipView
    from servicegroup.reader import Reader
    from servicegroup.records import Service

LOG = logging.getLogger(__name__)

#: Heartbeat latency buckets (seconds): a beat is one cheap write, a slow
#: one approaches the backend call bound (5 s, :data:`backend.CALL_TIMEOUT`).
HEARTBEAT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

#: Round trips of one membership read: 1 where the driver lists a group in
#: one call, about N+1 where it reads each member (memcached).
ROUND_TRIP_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)

#: What the collector asks of the ServiceGroup at scrape time: the
#: records with liveness, why a topic's liveness is unknown (None: known),
#: and the age of the view of each topic.
ServicesSource = Callable[["str | None"], "list[Service]"]
UnknownSource = Callable[[str], "str | None"]
AgesSource = Callable[[], Mapping[str, "float | None"]]


def available() -> bool:
    """Whether prometheus-client is installed."""
    return prometheus_client is not None


def require() -> None:
    """Raise :class:`~servicegroup.errors.MissingExtra` without prometheus-client."""
    if prometheus_client is None:
        raise errors.MissingExtra("metrics", "prometheus_client", "metrics")


class Metrics:
    """The registry of one ServiceGroup and the calls that feed it.

    ``services()`` and ``ages()`` are read at scrape time, so the fleet
    gauges cost nothing between scrapes and are never out of date.
    """

    def __init__(self, services: ServicesSource, unknown: UnknownSource, ages: AgesSource, driver: str) -> None:
        self._server: Any = None
        self._lock = threading.Lock()
        if prometheus_client is None:
            self.registry: Any = None
            return
        self.registry = registry = prometheus_client.CollectorRegistry(auto_describe=True)
        # Collected first: its reads (a topic's first) count in the same scrape.
        self._fleet = _FleetCollector(services, unknown, ages)
        registry.register(self._fleet)
        self._heartbeat = prometheus_client.Histogram(
            "servicegroup_heartbeat_seconds",
            "Duration of one heartbeat cycle (beat plus membership self-check) of a member.",
            ["host"],
            buckets=HEARTBEAT_BUCKETS,
            registry=registry,
        )
        self._heartbeat_failures = prometheus_client.Counter(
            "servicegroup_heartbeat_failures",
            "Heartbeat cycles of a member that failed (retried every report_interval).",
            ["host"],
            registry=registry,
        )
        self._events = prometheus_client.Counter(
            "servicegroup_membership_events",
            "membership_lost / membership_restored events of members of this process.",
            ["event", "topic", "host"],
            registry=registry,
        )
        self._read_failures = prometheus_client.Counter(
            "servicegroup_view_read_failures",
            "Membership reads of a topic that failed (the view keeps its last good read).",
            ["topic"],
            registry=registry,
        )
        self._round_trips = prometheus_client.Histogram(
            "servicegroup_view_read_round_trips",
            "Backend round trips of one successful membership read of a topic "
            "(_sum / _count: round trips per refresh).",
            ["topic"],
            buckets=ROUND_TRIP_BUCKETS,
            registry=registry,
        )
        prometheus_client.Info(
            "servicegroup_backend", "The liveness backend this process reads (scheme only).", registry=registry
        ).info({"driver": driver})

    @classmethod
    def of(cls, sg: ServiceGroup, reader: Reader, view: MembershipView) -> Metrics:
        """The metrics of *sg*, fed by its *reader* and *view* (members
        and events are fed by the facade itself)."""
        made = cls(sg.services, sg.liveness_unknown, view.ages, driver=sg.url.partition("://")[0])
        reader.on_read = made.read
        return made

    # -- recording (no-ops without prometheus-client) ---------------------

    def heartbeat(self, host: str, seconds: float, ok: bool) -> None:
        """One heartbeat cycle of *host* took *seconds*; *ok* if it succeeded."""
        if self.registry is None:
            return
        if ok:
            self._heartbeat.labels(host).observe(seconds)
        else:
            self._heartbeat_failures.labels(host).inc()

    def event(self, event: str, topic: str, host: str) -> None:
        """A ``membership_lost`` / ``membership_restored`` event."""
        if self.registry is not None:
            self._events.labels(event, topic, host).inc()

    def read(self, topic: str, round_trips: int, ok: bool) -> None:
        """A membership read of *topic*: its round trips, or a failure."""
        if self.registry is None:
            return
        if ok:
            self._round_trips.labels(topic).observe(round_trips)
        else:
            self._read_failures.labels(topic).inc()

    def only_topic(self, topic: str) -> None:
        """Report the fleet series (up, down, staleness) of *topic* only."""
        if self.registry is not None:
            self._fleet.topic = topic

    # -- exposition ---------------------------------------------------------

    def exposition(self) -> bytes:
        """The Prometheus text format of everything above, read now."""
        require()
        data: bytes = prometheus_client.generate_latest(self.registry)
        return data

    def serve(self, port: int, addr: str = "0.0.0.0") -> int:
        """Serve the exposition over HTTP on *port* (0: any free port) until
        :meth:`close`; returns the port bound. Refused with a
        :class:`~servicegroup.errors.ConfigError` naming the port when it
        cannot be bound."""
        require()
        with self._lock:
            if self._server is not None:
                return int(self._server.server_port)
            try:
                server, _ = prometheus_client.start_http_server(port, addr=addr, registry=self.registry)
            except OSError as exc:
                raise errors.ConfigError(f"metrics_port {port}: cannot listen: {exc.strerror or exc}") from None
            self._server = server
            return int(server.server_port)

    def close(self) -> None:
        """Stop serving (if serving); recording stays possible."""
        with self._lock:
            server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()


class _FleetCollector:
    """Members up and down per topic, and view staleness, read at scrape time.

    A topic whose liveness this process cannot vouch for (its backend
    unreadable past ``service_down_time``) gets no up/down series rather
    than "all down": an absent series alerts as such, a false zero pages
    for a fleet that may be fine. Its read failures count on.
    """

    def __init__(self, services: ServicesSource, unknown: UnknownSource, ages: AgesSource) -> None:
        self._services = services
        self._unknown = unknown
        self._ages = ages
        self.topic: str | None = None

    def describe(self) -> Iterable[Any]:
        return []  # read at scrape time: nothing to describe ahead of it

    def collect(self) -> Iterator[Any]:
        up = prometheus_client.core.GaugeMetricFamily(
            "servicegroup_members_up", "Services of a topic that are up (forced-down ones are down).", labels=["topic"]
        )
        down = prometheus_client.core.GaugeMetricFamily(
            "servicegroup_members_down", "Services of a topic with a record that are not up.", labels=["topic"]
        )
        try:
            counts = _count_states(self._services(self.topic))
        except Exception as exc:  # a scrape must not fail because records cannot be read
            LOG.warning("metrics: service records unreadable, up/down omitted: %s", backend.describe(exc))
            counts = {}
        for topic, (n_up, n_down) in sorted(counts.items()):
            if self._unknown(topic) is not None:
                continue
            up.add_metric([topic], n_up)
            down.add_metric([topic], n_down)
        yield up
        yield down
        staleness = prometheus_client.core.GaugeMetricFamily(
            "servicegroup_view_staleness_seconds",
            "Seconds since the last good membership read of a topic.",
            labels=["topic"],
        )
        for topic, age in sorted(self._ages().items()):
            if age is not None and self.topic in (None, topic):
                staleness.add_metric([topic], age)
        yield staleness


def _count_states(services: Iterable[Service]) -> dict[str, tuple[int, int]]:
    up: Counter[str] = Counter()
    down: Counter[str] = Counter()
    for svc in services:
        (up if svc.up else down)[svc.topic] += 1
    return {topic: (up[topic], down[topic]) for topic in set(up) | set(down)}
