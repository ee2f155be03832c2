"""URL helpers shared by the facade, the CLI and the drivers.

The one rule here: a URL that may carry a password or token is only ever
shown through :func:`redact`. Drivers build their error messages from
``redact(url)`` or from host and port alone.
"""

from __future__ import annotations

import re
import urllib.parse

from servicegroup import errors

#: Query options whose values are secrets wherever they appear.
SECRET_OPTIONS = frozenset({"password", "token", "acl_token", "secret"})

_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@?#]*):[^@/?#]*@")
_SECRET_QS = re.compile(
    r"(?P<key>[?&](?:" + "|".join(sorted(SECRET_OPTIONS)) + r")=)[^&#]*",
    re.IGNORECASE,
)


def redact(url: str | None) -> str:
    """Return *url* with any password and secret query values masked.

    Works on malformed URLs too (it is regex based, not a parser), because
    the URLs that reach an error message are often the malformed ones.
    """
    if not url:
        return ""
    masked = _USERINFO.sub(r"\g<scheme>\g<user>:***@", str(url))
    return _SECRET_QS.sub(r"\g<key>***", masked)


def host_port(url: str, default_port: int | None = None) -> tuple[str, int | None]:
    """Split the network location of *url* into host and port.

    Raises :class:`~servicegroup.errors.InvalidURL` (with the URL redacted)
    when the port is not a number.
    """
    parts = urllib.parse.urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        raise errors.InvalidURL(f"malformed port in URL {redact(url)}") from None
    return parts.hostname or "localhost", port if port is not None else default_port


def query_options(url: str) -> dict[str, str]:
    """The query string of *url* as a flat dict (last value wins)."""
    parts = urllib.parse.urlsplit(url)
    return {k: v[-1] for k, v in urllib.parse.parse_qs(parts.query).items()}


def check_options(url: str, allowed: set[str] | frozenset[str], what: str) -> None:
    """Refuse query options that *what* does not understand, naming them.

    A typo such as ``?tiemout=5`` silently ignored is a misconfiguration
    that shows up weeks later; naming it at start-up is cheaper.
    """
    unknown = sorted(set(query_options(url)) - set(allowed))
    if unknown:
        raise errors.InvalidURL(
            f"unknown option(s) {', '.join(unknown)} in {what} URL "
            f"{redact(url)}; known: {', '.join(sorted(allowed))}"
        )
