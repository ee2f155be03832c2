"""Where a Consul agent answers, the same way for every agent tests use.

Tests take ``agent.host``, ``agent.port``, ``agent.address`` (``host:port``,
what ``CONSUL_HTTP_ADDR`` holds) and ``agent.url`` (``consul://host:port``,
for ``ServiceGroup`` and tooz) from the model, a private ``consul agent
-dev`` or the agent at ``CONSUL_HTTP_ADDR`` alike; each says only its host
and port.
"""

from __future__ import annotations


class Endpoint:
    """``address`` and ``url`` from :attr:`host` and :attr:`port`."""

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def port(self) -> int:
        raise NotImplementedError

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """A ``consul://`` URL for this agent (no options)."""
        return f"consul://{self.address}"
