"""The typed errors of servicegroup.

Every failure a caller can act on has its own class, so that a CLI can turn
it into a one-line message and a library user can catch exactly what they
mean. Messages never contain credentials: URLs are passed through
:func:`servicegroup.urls.redact` before they reach a message.

Each class also derives from the builtin a caller would naturally catch
(``ValueError`` for bad input, ``ConnectionError`` for unreachable servers,
``LookupError`` for empty answers), so code that does not know this library
still handles them sensibly.
"""

from __future__ import annotations


class ServiceGroupError(Exception):
    """Base class of every error raised by servicegroup."""


class ConfigError(ServiceGroupError, ValueError):
    """The configuration contradicts itself or names something unknown."""


class UnknownDriver(ConfigError):
    """The liveness driver name is neither a known alias nor a tooz URL."""

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        self.known = sorted(known)
        super().__init__(
            f"unknown servicegroup driver {name!r}: use one of {', '.join(self.known)} or a tooz backend URL"
        )


class InvalidURL(ConfigError):
    """A backend or records URL cannot be parsed or has unknown options."""


class InvalidName(ServiceGroupError, ValueError):
    """A host, topic, group or member id is empty, too long or not UTF-8."""


class BackendUnavailable(ServiceGroupError, ConnectionError):
    """The liveness backend or records database cannot be reached."""


class ValueTooLarge(ServiceGroupError, ValueError):
    """A value (capabilities, a lock's holder list) is larger than the
    backend stores; refused before anything is written."""


class NotSupported(ServiceGroupError):
    """The backend cannot do what was asked (for example: writes in Consul
    catalog mode, where operators own registration)."""


class ServiceNotFound(ServiceGroupError, LookupError):
    """No service record exists for the given host and topic."""

    def __init__(self, host: str, topic: str) -> None:
        self.host = host
        self.topic = topic
        super().__init__(f"no service record for host {host!r} topic {topic!r}")


class NoLiveHosts(ServiceGroupError, LookupError):
    """A topic lookup found no live host: an explicit answer, never a
    silent fallback to ``localhost`` as the old matchmakers did."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        super().__init__(f"no live host for topic {topic!r}")


class MissingExtra(ConfigError, ImportError):
    """What was asked for needs a client library that is not installed;
    the message names the ``servicegroup[...]`` extra that installs it."""

    def __init__(self, what: str, module: str, extra: str) -> None:
        self.what = what
        self.module = module
        self.extra = extra
        super().__init__(
            f"{what} needs the Python module {module!r}, which is not installed: pip install 'servicegroup[{extra}]'"
        )
