"""What differs between liveness backends, one row per URL scheme.

The library treats every backend through tooz's one API; the few places
where backends behave differently (a pseudo-member to hide, a stop that
deletes a heartbeat key, a way to be told of changes, the options a URL
may carry) are facts about a scheme. They are written down here, once,
and every module asks :func:`for_scheme` instead of comparing scheme
strings of its own.

The option names of tooz's own drivers are hand-kept (tooz publishes no
list); ``tests/test_profiles.py`` pins them against the installed tooz.
"""

from __future__ import annotations

import dataclasses

#: Options every tooz driver with an executor reads (tooz.utils.ProxyExecutor).
_EXECUTOR = frozenset({"executor"})

#: An executor option this library accepted; tooz 9.1 does not read it.
#: Names in ``compat_options`` stay accepted (and ignored, as before) so
#: that URLs which resolved before still resolve.
_OLD_EXECUTOR = frozenset({"max_workers"})


@dataclasses.dataclass(frozen=True)
class Profile:
    """How one URL scheme's backend differs from the common case."""

    scheme: str
    #: The ``driver`` name that may resolve to this scheme (``zk`` ...);
    #: None for schemes reachable only by giving the URL itself.
    alias: str | None = None
    #: URL option holding the membership TTL, set to ``service_down_time``
    #: unless the URL sets it, so a dead member leaves when it is called down.
    ttl_option: str | None = None
    #: Options tooz's own driver reads from the URL. None: the driver is ours
    #: (its class lists ``URL_OPTIONS``) or unknown to us (a third-party
    #: backend's options are its own business).
    tooz_options: frozenset[str] | None = None
    #: Options accepted though the installed tooz does not read them (kept
    #: for compatibility; see the names below).
    compat_options: frozenset[str] = frozenset()
    #: Of the numeric options, those tooz converts with ``int()``
    #: (``timeout=2.5`` fails there); the others take ``float()``.
    int_options: frozenset[str] = frozenset()
    #: How the backend tells us of membership changes (:mod:`servicegroup.push`):
    #: ``zookeeper`` (child watches), ``etcd`` (prefix watches), ``consul``
    #: (blocking queries); None: polling only.
    push: str | None = None
    #: tooz lists a leader-election pseudo-member ``leader`` in the group.
    leader_pseudo_member: bool = False
    #: tooz's ``stop()`` deletes the member id's heartbeat key: a coordinator
    #: borrowing a live host's id (to remove it from one group) must be
    #: dropped unstopped, or the host would read as dead in every group.
    stop_deletes_beat: bool = False
    #: The URL names a file, not a server: no host:port, no TCP probe.
    local: bool = False
    #: A URL option that takes the TTL with its fraction when ``ttl_option``
    #: takes whole seconds (Redis: ``membership_timeout``, milliseconds).
    exact_ttl_option: str | None = None
    #: Smallest TTL (seconds) the backend honours without flapping live
    #: members; None: no floor of its own.
    min_ttl: float | None = None
    #: Expiry runs on a whole-second clock (memcached): a TTL of N s may
    #: last only N - 1 s, so a beat must come within that.
    coarse_expiry: bool = False
    #: The URL may name several servers, ``h1:p1,h2:p2,h3:p3`` (a ZooKeeper
    #: ensemble, etcd endpoints; :mod:`servicegroup.endpoints`).
    host_list: bool = False
    #: The client library the backend needs, as (module, servicegroup
    #: extra installing it); None: nothing beyond the base install.
    client: tuple[str, str] | None = None

    @property
    def url_options(self) -> frozenset[str] | None:
        """Every option a URL of this scheme may carry (None: not ours to say)."""
        if self.tooz_options is None:
            return None
        return self.tooz_options | self.compat_options


_ZOOKEEPER = Profile(
    "zookeeper",
    alias="zk",
    client=("kazoo", "zookeeper"),
    ttl_option="timeout",
    tooz_options=frozenset(
        {
            "timeout",
            "namespace",
            "hosts",
            "ca",
            "certfile",
            "keyfile",
            "keyfile_password",
            "connection_retry",
            "command_retry",
            "randomize_hosts",
            "use_ssl",
            "verify_certs",
            "handler",
        }
    ),
    int_options=frozenset({"timeout"}),
    push="zookeeper",
    leader_pseudo_member=True,
    host_list=True,
)
_MEMCACHED = Profile(
    "memcached",
    alias="mc",
    client=("pymemcache", "memcached"),
    ttl_option="timeout",
    tooz_options=_EXECUTOR
    | {
        "timeout",
        "membership_timeout",
        "lock_timeout",
        "leader_timeout",
        "max_pool_size",
        "use_ssl",
        "ca_cert",
        "ssl_cert",
        "ssl_key",
        "ssl_key_password",
        "ssl_ciphers",
        "ssl_check_hostname",
    },
    # TLS names this library accepted before it listed the ones tooz reads.
    compat_options=_OLD_EXECUTOR | {"ssl", "ssl_ca_cert", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs"},
    int_options=frozenset({"timeout", "membership_timeout", "lock_timeout", "leader_timeout", "max_pool_size"}),
    stop_deletes_beat=True,
    min_ttl=2.0,
    coarse_expiry=True,
)
_REDIS = Profile(
    "redis",
    alias="redis",
    client=("redis", "redis"),
    ttl_option="timeout",
    tooz_options=_EXECUTOR
    | {
        "timeout",
        "membership_timeout",
        "lock_timeout",
        "namespace",
        "db",
        "encoding",
        "retry_on_timeout",
        "socket_keepalive",
        "socket_timeout",
        "socket_connect_timeout",
        "health_check_interval",
        "ssl",
        "ssl_certfile",
        "ssl_keyfile",
        "ssl_ca_certs",
        "sentinel",
        "sentinel_fallback",
        "sentinel_username",
        "sentinel_password",
        "sentinel_ssl",
    },
    # tooz 9.1 takes the credentials from the URL's user info, not from these.
    compat_options=_OLD_EXECUTOR | {"leader_timeout", "username", "password"},
    int_options=frozenset({"timeout", "lock_timeout", "db"}),
    stop_deletes_beat=True,
    exact_ttl_option="membership_timeout",
)
_ETCD = Profile(
    "etcd3+http",
    alias="etcd",
    client=("etcd3gw", "etcd"),
    ttl_option="timeout",
    tooz_options=_EXECUTOR
    | {"timeout", "membership_timeout", "lock_timeout", "ca_cert", "cert_key", "cert_cert", "api_version"},
    compat_options=_OLD_EXECUTOR | {"leader_timeout"},
    int_options=frozenset({"timeout", "lock_timeout", "membership_timeout"}),
    push="etcd",
    host_list=True,
)
_SQL = Profile("sql+postgresql", alias="db", ttl_option="timeout", min_ttl=1.0, client=("psycopg2", "postgresql"))
_CONSUL = Profile("consul", alias="consul", ttl_option="ttl", push="consul", client=("consul", "consul"))

PROFILES: dict[str, Profile] = {
    p.scheme: p
    for p in (
        _ZOOKEEPER,
        dataclasses.replace(_ZOOKEEPER, scheme="kazoo"),
        _MEMCACHED,
        _REDIS,
        _ETCD,
        dataclasses.replace(_ETCD, scheme="etcd3+https"),
        _SQL,
        dataclasses.replace(_SQL, scheme="sql+mysql", client=("pymysql", "mysql")),
        dataclasses.replace(_SQL, scheme="sql+sqlite", local=True, client=None),
        _CONSUL,
        dataclasses.replace(_CONSUL, scheme="consul+https"),
        Profile("file", local=True),
        Profile("ipc", local=True),
    )
}

#: Driver name -> its default URL (``db``: derived from the records URL).
DEFAULT_URLS: dict[str, str | None] = {
    "db": None,
    "zk": "zookeeper://127.0.0.1:2181",
    "mc": "memcached://127.0.0.1:11211",
    "redis": "redis://127.0.0.1:6379",
    "etcd": "etcd3+http://127.0.0.1:2379",
    "consul": "consul://127.0.0.1:8500",
}


def for_scheme(scheme: str) -> Profile:
    """The profile of *scheme*; a scheme we know nothing of gets the common
    case (a third-party tooz backend)."""
    scheme = scheme.lower()
    return PROFILES.get(scheme) or Profile(scheme)


def for_url(url: str) -> Profile:
    return for_scheme(url.partition("://")[0])


def schemes_of(alias: str) -> frozenset[str]:
    """The URL schemes that may implement the driver name *alias*."""
    return frozenset(p.scheme for p in PROFILES.values() if p.alias == alias)
