"""The per-scheme profile table (servicegroup.profiles), pinned against tooz.

The option names of tooz's own drivers are kept by hand, since tooz
publishes no list. A tooz release that starts reading an option we do not
list would see it refused at start-up; one that stops reading an option we
list would see it silently ignored. Both fail here, against the installed
tooz, by reading what each driver's source actually reads.
"""

from __future__ import annotations

import importlib
from importlib import metadata
import inspect
import re

import pytest
from tooz import coordination
from tooz import utils as tooz_utils

from servicegroup import driver_urls, errors, profiles

#: ``options.get('x'``, ``options['x']``, ``self._options.get("x"``, ``'x' in options``.
_READS = re.compile(
    r"""options(?:\.get\(|\[)\s*['"](\w+)['"]"""
    r"""|['"](\w+)['"]\s+(?:not\s+)?in\s+(?:self\._)?options\b"""
)


def _names_read(source: str) -> set[str]:
    return {a or b for a, b in _READS.findall(source)}


def tooz_reads(scheme: str) -> set[str]:
    """The URL options the installed tooz's driver for *scheme* reads."""
    (ep,) = [ep for ep in metadata.entry_points(group=coordination.TOOZ_BACKENDS_NAMESPACE) if ep.name == scheme]
    module_name, _, class_name = ep.value.partition(":")
    module = importlib.import_module(module_name)
    driver = getattr(module, class_name)
    names = _names_read(inspect.getsource(module))
    # Redis proxies a declared list of client arguments from the options.
    names |= set(getattr(driver, "CLIENT_ARGS", ()))
    if issubclass(driver, coordination.CoordinationDriverWithExecutor):
        names |= _names_read(inspect.getsource(tooz_utils.ProxyExecutor))
    return names


TOOZ_SCHEMES = sorted(s for s, p in profiles.PROFILES.items() if p.tooz_options is not None)


def test_the_table_covers_every_tooz_driver_we_resolve_aliases_to() -> None:
    assert TOOZ_SCHEMES == ["etcd3+http", "etcd3+https", "kazoo", "memcached", "redis", "zookeeper"]


@pytest.mark.parametrize("scheme", TOOZ_SCHEMES)
def test_our_option_names_are_exactly_those_the_installed_tooz_reads(scheme: str) -> None:
    profile = profiles.for_scheme(scheme)
    read = tooz_reads(scheme)
    assert read, f"no option read found in tooz's {scheme} driver: the pattern no longer matches"
    assert sorted(read - profile.tooz_options) == [], "tooz reads options we would refuse"
    assert sorted(profile.tooz_options - read) == [], "we list options tooz does not read"


@pytest.mark.parametrize("scheme", TOOZ_SCHEMES)
def test_compatibility_names_are_only_names_tooz_ignores(scheme: str) -> None:
    """The allow-list of deliberate extras: names accepted so that URLs
    which resolved before still do (tooz ignores them). A name tooz starts
    reading belongs in ``tooz_options`` instead."""
    profile = profiles.for_scheme(scheme)
    assert profile.compat_options.isdisjoint(tooz_reads(scheme))
    assert profile.compat_options <= {
        "max_workers",
        "leader_timeout",
        "username",
        "password",
        "ssl",
        "ssl_ca_cert",
        "ssl_certfile",
        "ssl_keyfile",
        "ssl_cert_reqs",
    }


@pytest.mark.parametrize("scheme", TOOZ_SCHEMES)
def test_int_options_are_options_tooz_reads(scheme: str) -> None:
    profile = profiles.for_scheme(scheme)
    assert profile.int_options <= profile.tooz_options


def test_every_driver_name_has_a_default_url_of_its_own_schemes() -> None:
    for alias, url in profiles.DEFAULT_URLS.items():
        assert profiles.schemes_of(alias), alias
        if url is not None:
            assert profiles.for_url(url).alias == alias


def test_a_scheme_we_do_not_know_gets_the_common_case() -> None:
    unknown = profiles.for_scheme("kubernetes")
    assert unknown.url_options is None and unknown.push is None and not unknown.local


def test_a_compatibility_name_still_resolves_and_an_unread_one_is_refused() -> None:
    assert "max_workers=4" in driver_urls.resolve("memcached://h:11211?max_workers=4", None, "sqlite:///x")
    with pytest.raises(errors.InvalidURL, match="max_workers"):
        driver_urls.resolve("zookeeper://h:2181?max_workers=4", None, "sqlite:///x")
