"""From what the operator wrote to the one tooz URL the library connects to.

``driver = zk`` and ``url = ...`` (or a tooz URL as the driver) become one
URL, refused here, before anything connects, when they contradict each
other (``driver=zk, url=memcached://...``), name a backend nobody
registered, carry an option the backend does not read (a typo such as
``?tiemout=5`` would otherwise be ignored silently for weeks) or a value
it could not use. ``driver = db`` derives the URL from the records
database's, so one setting serves both. The membership TTL becomes
``service_down_time`` unless the URL sets one, so that a dead member
leaves its groups when it would be called down.
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib import metadata
import math
import urllib.parse

from servicegroup import endpoints
from servicegroup import errors
from servicegroup import extras
from servicegroup import profiles
from servicegroup import urls
from servicegroup.sqlengine import check_dialect

#: Driver name -> default URL (``db`` defaults to the records database).
DEFAULT_URLS = profiles.DEFAULT_URLS

#: Numeric options that are whole numbers for every backend.
_WHOLE = frozenset({"db", "max_pool_size", "max_workers"})

#: Numeric options whose 0 is meaningful (a database number, "no health
#: checks"); every other numeric option must be > 0: a TTL of 0 is "never
#: expires" to memcached, a dead member listed forever.
_ZERO_ALLOWED = frozenset({"db", "health_check_interval"})

#: The SQL driver's own option names that mean something else in a records
#: URL (pysqlite's ``timeout`` is its busy timeout, not a membership TTL):
#: never carried from the records URL into the ``db`` liveness URL.
_RECORDS_ONLY = frozenset({"timeout", "table_prefix"})


def is_numeric_option(name: str) -> bool:
    """Options that are numbers in every backend we know: timeouts, TTLs,
    intervals, pool sizes, the Redis database number."""
    return name in ("timeout", "ttl", "db", "max_pool_size", "max_workers") or name.endswith(("_timeout", "_interval"))


def check_numeric_options(url: str, scheme: str, names: Iterable[str]) -> None:
    """Refuse a numeric option among *names* the backend could not use,
    naming it.

    Whole numbers where tooz converts with ``int()`` (``timeout=2.5`` fails
    there), finite numbers everywhere, > 0 except where 0 means something.
    """
    whole_numbers = profiles.for_scheme(scheme).int_options | _WHOLE
    names = set(names)
    for name, raw in urls.query_options(url).items():
        if name not in names or not is_numeric_option(name):
            continue
        whole = name in whole_numbers
        zero_ok = name in _ZERO_ALLOWED
        try:
            value = float(int(raw)) if whole else float(raw)
        except (ValueError, OverflowError):
            value = math.nan
        if math.isfinite(value) and (value >= 0 if zero_ok else value > 0):
            continue
        raise errors.InvalidURL(
            f"option {name}={raw!r} in {scheme} URL {urls.redact(url)} must be "
            f"{'a whole number' if whole else 'a number'} {'>= 0' if zero_ok else '> 0'}"
        )


def registered_schemes() -> set[str]:
    """Every scheme some installed package registered under ``tooz.backends``."""
    return {ep.name for ep in metadata.entry_points(group="tooz.backends")}


def records_to_sql_url(records_url: str) -> str:
    """``sqlite:///x.db`` -> ``sql+sqlite:///x.db`` (DBAPI suffix dropped).

    The SQL liveness backend picks its own DBAPI per dialect, so
    ``postgresql+psycopg2://`` and ``mysql+pymysql://`` map to the plain
    dialect schemes it registers. The user name and password are
    re-encoded: SQLAlchemy accepts ``u:s3#cret@db`` in a records URL, but
    tooz parses its URL with ``urlsplit``, which needs them percent-encoded.
    The records URL's options are SQLAlchemy's and the DBAPI's: they are
    kept, except those that name one of the SQL driver's own options
    (:data:`_RECORDS_ONLY`) with another meaning.
    """
    scheme, sep, rest = records_url.partition("://")
    if not sep:
        raise errors.InvalidURL(f"malformed records URL {urls.redact(records_url)}")
    dialect = scheme.split("+", 1)[0].lower()
    check_dialect(dialect, records_url)
    if dialect == "mariadb":
        dialect = "mysql"
    at = urls.userinfo_end(rest, 0)
    if at != -1:
        user, colon, password = rest[:at].partition(":")
        userinfo = _quote(user) + (":" + _quote(password) if colon else "")
        rest = f"{userinfo}@{rest[at + 1 :]}"
    base, mark, query = rest.partition("?")
    if mark:
        kept = [(k, v) for k, v in urllib.parse.parse_qsl(query, keep_blank_values=True) if k not in _RECORDS_ONLY]
        rest = base + ("?" + urllib.parse.urlencode(kept) if kept else "")
    return f"sql+{dialect}://{rest}"


def _quote(part: str) -> str:
    # SQLAlchemy unquotes the user name and password; so does the SQL driver.
    return urllib.parse.quote(urllib.parse.unquote(part), safe="")


def _scheme(url: str) -> str:
    scheme, sep, _ = url.partition("://")
    if not sep or not scheme:
        raise errors.InvalidURL(f"malformed backend URL {urls.redact(url)}: no scheme")
    return scheme.lower()


def allowed_options(scheme: str) -> frozenset[str] | None:
    """The URL options a scheme understands, or ``None`` when unknown to us
    (a third-party tooz backend: its options are its own business)."""
    known = profiles.for_scheme(scheme).url_options
    if known is not None:
        return known
    for ep in metadata.entry_points(group="tooz.backends"):
        if ep.name == scheme and ep.value.startswith("servicegroup."):
            return frozenset(getattr(ep.load(), "URL_OPTIONS", ()))
    return None


def with_option(url: str, name: str, value: str) -> str:
    """Add ``name=value`` to the query of *url* unless it is already set."""
    if name in urls.query_options(url):
        return url
    # String surgery, not urlunsplit: that collapses sqlite:////abs/path to
    # sqlite://abs/path, turning an absolute path into a host name.
    base, hash_, fragment = url.partition("#")
    extra = urllib.parse.urlencode({name: value})
    joined = f"{base}&{extra}" if "?" in base else f"{base}?{extra}"
    return joined + hash_ + fragment


def resolve(
    driver: str,
    url: str | None,
    records_url: str,
    ttl: float | None = None,
    report_interval: float | None = None,
) -> str:
    """Turn ``(driver, url)`` into the tooz URL to connect to.

    *driver* is an alias from :data:`DEFAULT_URLS` or a tooz URL itself.
    *url*, when given, overrides the alias default but must be of a scheme
    that implements the alias (``driver=zk, url=memcached://...`` is a
    contradiction, refused). *ttl* (``service_down_time``) becomes the
    backend's membership TTL option unless the URL sets one
    (:func:`with_ttl`, which refuses a TTL the backend cannot honour).
    """
    if not driver:
        raise errors.UnknownDriver("", list(DEFAULT_URLS))
    dbapi_options: set[str] = set()
    if "://" in driver:
        if url and url != driver:
            raise errors.ConfigError(
                f"driver is a URL ({urls.redact(driver)}) and url is another ({urls.redact(url)}): set only one"
            )
        target = driver
    elif driver in DEFAULT_URLS:
        target = url or DEFAULT_URLS[driver] or records_to_sql_url(records_url)
        if not url and DEFAULT_URLS[driver] is None:
            # The records URL's options are SQLAlchemy's and the DBAPI's,
            # checked by the records engine (servicegroup.records.engine).
            dbapi_options = set(urls.query_options(target))
        scheme = _scheme(target)
        if profiles.for_scheme(scheme).alias != driver:
            raise errors.ConfigError(
                f"driver {driver!r} contradicts url {urls.redact(target)}: a "
                f"{driver!r} URL starts with "
                f"{' or '.join(s + '://' for s in sorted(profiles.schemes_of(driver)))}"
            )
    else:
        raise errors.UnknownDriver(driver, list(DEFAULT_URLS))

    scheme = _scheme(target)
    extras.require_scheme(scheme)  # before anything loads the backend's module
    if scheme not in registered_schemes():
        raise errors.UnknownDriver(scheme + "://", list(DEFAULT_URLS))
    urls.split(target)  # refuses a malformed host, port or userinfo, redacted
    endpoints.check(target)  # a host list or Sentinel options the backend cannot use
    allowed = allowed_options(scheme)
    if allowed is not None:
        urls.check_options(target, allowed | dbapi_options, scheme)
        check_numeric_options(target, scheme, allowed)
    if ttl is not None:
        target = with_ttl(target, profiles.for_scheme(scheme), ttl, report_interval)
    return target


def with_ttl(url: str, profile: profiles.Profile, ttl: float, report_interval: float | None = None) -> str:
    """*url* with the membership TTL *ttl* (``service_down_time``), unless
    the URL sets its own; :class:`~servicegroup.errors.ConfigError` for a
    TTL the backend cannot honour, naming the nearest values it can.

    Rounding up (as before) let a dead member stay listed past
    ``service_down_time``; rounding down would silently shorten it. Where
    the TTL option takes whole seconds and no other option takes the
    fraction, a fractional value is refused. *report_interval*, when given,
    is checked against backends whose expiry clock eats a second.
    """
    option = profile.ttl_option
    if option is None or option in urls.query_options(url):
        return url
    where = profile.alias or profile.scheme
    if profile.min_ttl is not None and ttl < profile.min_ttl:
        raise errors.ConfigError(
            f"service_down_time {ttl:g}s is below what {where} honours: set at least {profile.min_ttl:g}"
            + (" (memcached expires on a whole-second clock: shorter TTLs flap)" if profile.coarse_expiry else "")
        )
    if profile.coarse_expiry and report_interval is not None and report_interval >= ttl - 1:
        raise errors.ConfigError(
            f"service_down_time {ttl:g}s with report_interval {report_interval:g}s flaps on {where}: its "
            f"whole-second expiry clock may end a key 1 s early, so set service_down_time above "
            f"{report_interval + 1:g} or report_interval below {ttl - 1:g}"
        )
    whole = option in profile.int_options
    if whole and ttl != int(ttl):
        if profile.exact_ttl_option is None:
            choices = [v for v in (math.floor(ttl), math.ceil(ttl)) if v >= (profile.min_ttl or 1)]
            raise errors.ConfigError(
                f"service_down_time {ttl:g}s: {where} expires members in whole seconds; "
                f"set {' or '.join(str(v) for v in choices)}"
            )
        url = with_option(url, profile.exact_ttl_option, repr(float(ttl)))
    return with_option(url, option, str(math.ceil(ttl)) if whole else _seconds(ttl))


def _seconds(value: float) -> str:
    return str(int(value)) if value == int(value) else repr(float(value))
