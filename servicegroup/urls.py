"""URL helpers shared by the facade, the CLI and the drivers.

The one rule here: a URL that may carry a password or token is only ever
shown through :func:`redact`. Drivers build their error messages from
``redact(url)`` or from host and port alone.

Where the password ends is decided once, by :func:`userinfo_end`, for
redaction and validation alike. Operators paste passwords unencoded, and
SQLAlchemy accepts ``postgresql://u:s3#cret@db/x``, so the userinfo is
everything between ``://`` and the *last* ``@`` (``urllib.parse`` stops at
the first ``/``, ``?`` or ``#`` instead, which cuts such a password in two
and shows its head as a "port").
"""

from __future__ import annotations

from collections.abc import Iterable
import dataclasses
import re
import urllib.parse

from servicegroup import errors

#: Words that make a query option's value a secret (``password``,
#: ``sentinel_password``, ``keyfile_password``, ``ssl_key_password``,
#: ``token``, ``acl_token``, ``secret``, kazoo's ``auth_data`` ...).
SECRET_WORDS = ("password", "passwd", "secret", "token", "credential", "auth")

MASK = "***"

#: Secrets shorter than this are not masked wherever they occur in free
#: text: a two-letter password would turn every message into asterisks.
#: (Inside a URL a password is masked whatever its length.)
MIN_LITERAL_SECRET = 3

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_SECRET_QUERY = re.compile(r"(?P<key>[?&;](?P<name>[\w.-]+)=)(?P<value>[^&\s]*)")


def is_secret_option(name: str) -> bool:
    """Whether a URL query option's value is a secret, by its name."""
    lowered = name.lower()
    return any(word in lowered for word in SECRET_WORDS)


def userinfo_end(text: str, start: int, end: int | None = None) -> int:
    """Index of the ``@`` ending the userinfo of the URL whose part after
    ``://`` is ``text[start:end]``, or -1 when it has none.

    The *last* ``@``: a password may contain anything, ``@``, ``/``, ``?``
    and ``#`` included, so no character before that ``@`` can be trusted to
    end it. An ``@`` in a path or query is taken for the end of a userinfo
    too, which masks too much rather than too little. A URL whose authority
    is empty (``sqlite:////var/a@b.db``) has no userinfo.
    """
    end = len(text) if end is None else end
    if text.startswith("/", start):
        return -1
    return text.rfind("@", start, end)


def _redact_url(text: str, start: int, end: int) -> str:
    """Redact one URL, ``text[start:end]`` (``start`` is after ``://``)."""
    at = userinfo_end(text, start, end)
    head = text[start:at] if at != -1 else ""
    user, colon, _ = head.partition(":")
    userinfo = f"{user}:{MASK}@" if colon else (head + "@" if at != -1 else "")
    rest = text[at + 1 : end] if at != -1 else text[start:end]
    return userinfo + _redact_query(rest)


def _redact_query(text: str) -> str:
    def mask(m: re.Match[str]) -> str:
        return m.group("key") + MASK if is_secret_option(m.group("name")) else m.group(0)

    return _SECRET_QUERY.sub(mask, text)


def redact(text: object, url: str | None = None) -> str:
    """Return *text* with passwords and secret query values masked.

    *text* is a URL or a message that may quote URLs. Works on malformed
    URLs too (it is not a parser that can fail), because the URLs that reach
    an error message are often the malformed ones. A string that starts with
    a URL is taken as one URL, spaces included (SQLAlchemy accepts a space
    in a password); elsewhere a quoted URL ends at whitespace.

    With *url*, every occurrence of that URL's secrets (its password and
    secret option values, as written and percent-decoded) is masked too, for
    messages of client libraries that quote a password without its URL.
    """
    if text is None:
        return ""
    text = str(text)
    if not text:
        return ""
    out = []
    pos = 0
    for m in _SCHEME.finditer(text):
        if m.start() < pos:
            continue  # inside a URL already redacted
        if m.start() == 0:
            end = len(text)
        else:
            space = re.search(r"\s", text[m.end() :])
            end = m.end() + space.start() if space else len(text)
        out.append(_redact_query(text[pos : m.start()]))
        out.append(m.group(0) + _redact_url(text, m.end(), end))
        pos = end
    out.append(_redact_query(text[pos:]))
    masked = "".join(out)
    for secret in sorted(secrets(url), key=len, reverse=True) if url else ():
        if len(secret) >= MIN_LITERAL_SECRET:
            masked = masked.replace(secret, MASK)
    return masked


def secrets(url: str | None) -> set[str]:
    """The password and secret option values in *url*, as written and
    percent-decoded (for :func:`redact`'s literal masking)."""
    if not url:
        return set()
    scheme = _SCHEME.match(url)
    found: list[str] = []
    if scheme:
        at = userinfo_end(url, scheme.end())
        if at != -1:
            _, colon, password = url[scheme.end() : at].partition(":")
            if colon:
                found.append(password)
    found += [m.group("value") for m in _SECRET_QUERY.finditer(url) if is_secret_option(m.group("name"))]
    return {s for raw in found if raw for s in (raw, urllib.parse.unquote_plus(raw), urllib.parse.unquote(raw))}


_ENCODE_HINT = (
    ": a '/', '?', '#' or '@' in a user name or password, and an '@' in "
    "an option value, must be percent-encoded (%2F, %3F, %23, %40)"
)


def split(url: str) -> urllib.parse.SplitResult:
    """``urllib.parse.urlsplit`` of a backend URL, validated the way the
    client libraries will read it, or :class:`~servicegroup.errors.InvalidURL`
    (URL redacted): a malformed IPv6 literal, a port that is not a number
    in 1-65535, or a userinfo that ``urlsplit`` (and so tooz) would cut short
    at an unencoded ``/``, ``?``, ``#`` (the client would then connect to a
    "host" made of the user name, and show part of the password as a port).
    """
    cut = _cut_userinfo(url)
    if "," in authority(url) and not cut:
        # A host list (a ZooKeeper ensemble, etcd endpoints) has no one
        # port: each host is checked on its own.
        hosts(url)
        return urllib.parse.urlsplit(url)
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        # Not the exception's text: "Port could not be cast to integer
        # value as 's3'" quotes a password cut at an unencoded '#'.
        what = "malformed IPv6 address" if "IPv6" in str(exc) else "malformed port"
        raise errors.InvalidURL(f"{what} in URL {redact(url)}" + (_ENCODE_HINT if cut else "")) from None
    if cut:
        raise errors.InvalidURL(f"ambiguous URL {redact(url)}{_ENCODE_HINT}")
    if port == 0:
        raise errors.InvalidURL(f"port 0 in URL {redact(url)}: give the server's port (1-65535) or none")
    return parts


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """One server of a URL's host list (``port`` None: the default)."""

    host: str
    port: int | None

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port is None else f"{host}:{self.port}"


def authority(url: str) -> str:
    """The host list of *url*: after the userinfo, before the path."""
    scheme, sep, _ = url.partition("://")
    if not sep:
        return ""
    start = len(scheme) + 3
    start = max(start, userinfo_end(url, start) + 1)
    end = len(url)
    for ch in "/?#":
        found = url.find(ch, start)
        if found != -1:
            end = min(end, found)
    return url[start:end]


def parse_host(text: str, url: str) -> Endpoint:
    """``host[:port]`` (IPv6 in brackets) or :class:`InvalidURL` naming it."""
    try:
        parts = urllib.parse.urlsplit("x://" + text)
        port = parts.port
    except ValueError:
        port = -1
        parts = urllib.parse.urlsplit("x://")
    if not text or not parts.hostname or port == -1 or port == 0 or parts.path:
        raise errors.InvalidURL(
            f"malformed host {text!r} in URL {redact(url)}: give host:port (port 1-65535), hosts separated by commas"
        )
    return Endpoint(parts.hostname, port)


def hosts(url: str) -> list[Endpoint]:
    """Every server *url* names, in order; empty when it names none
    (``sql+sqlite:///x.db``, ``redis:///run/redis.sock``)."""
    netloc = authority(url)
    if not netloc:
        return []
    return [parse_host(part, url) for part in netloc.split(",")]


def _cut_userinfo(url: str) -> bool:
    """True when ``urlsplit`` ends the userinfo elsewhere than we do."""
    scheme = _SCHEME.match(url)
    if not scheme:
        return False
    ours = userinfo_end(url, scheme.end())
    authority_end = len(url)
    for ch in "/?#":
        found = url.find(ch, scheme.end())
        if found != -1:
            authority_end = min(authority_end, found)
    theirs = url.rfind("@", scheme.end(), authority_end)
    return ours != theirs


def query_options(url: str) -> dict[str, str]:
    """The query string of *url* as a flat dict (last value wins; an empty
    value counts: ``?timeout=`` is an option set to nothing, not unset).

    The query starts at the first ``?`` after the userinfo, so a records URL
    with a ``?`` in its password (SQLAlchemy accepts one) is read right.
    """
    return {k: v[-1] for k, v in query_values(url).items()}


def query_values(url: str) -> dict[str, list[str]]:
    """Every value of every query option of *url*, in order (tooz reads
    some options, such as ``sentinel_fallback``, as lists)."""
    scheme = _SCHEME.match(url)
    start = scheme.end() if scheme else 0
    start = max(start, userinfo_end(url, start) + 1)
    _, mark, query = url[start:].partition("?")
    query = query.partition("#")[0] if mark else ""
    return urllib.parse.parse_qs(query, keep_blank_values=True)


def check_options(url: str, allowed: Iterable[str], what: str) -> None:
    """Refuse query options that *what* does not understand, naming them.

    A typo such as ``?tiemout=5`` silently ignored is a misconfiguration
    that shows up weeks later; naming it at start-up is cheaper.
    """
    allowed = set(allowed)
    unknown = sorted(set(query_options(url)) - allowed)
    if unknown:
        raise errors.InvalidURL(
            f"unknown option(s) {', '.join(unknown)} in {what} URL {redact(url)}; known: {', '.join(sorted(allowed))}"
        )
