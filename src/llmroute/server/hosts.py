"""Host names: which ones a server listening on a loopback address answers.

A page of another site can make its own name resolve to 127.0.0.1 (DNS rebinding); the
browser then sends that page's requests to whatever listens on the operator's loopback
interface, and lets the page read the answers as its own. Such requests carry the
page's name in their Host header: a server bound to a loopback address answers only
requests to a loopback name (`loopback_name`), and names its operator allowed.

Free of the web stack at import (`llmroute.server.settings` reads it for the CLI).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

__all__ = [
    "LOOPBACK_NAMES",
    "HostNames",
    "host_name",
    "is_loopback",
    "loopback_name",
    "shown_host",
]

LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
_CACHED = 256  # Host values remembered by a `HostNames` (a client chooses them: bounded)


def host_name(header: str) -> str:
    """The name in a Host header, without its port, lower case (``[::1]:8100``: ``::1``)."""
    value = header.strip().lower()
    if value.startswith("["):
        return value[1:].partition("]")[0]
    return value.rpartition(":")[0] if value.count(":") == 1 else value


def loopback_name(name: str) -> bool:
    """Whether `name` (`host_name`'s) is ``localhost`` or a loopback address
    (127.0.0.0/8, ::1): a name no DNS answer can make another site's."""
    if name in LOOPBACK_NAMES:
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1, on a dual-stack socket
    return (mapped or address).is_loopback


def is_loopback(host: str) -> bool:
    """Whether `host`, the address a server listens on (its --host), is a loopback one."""
    return loopback_name(host.strip().strip("[]").lower())


class HostNames:
    """Which Host headers a server on a loopback address answers: loopback names, and
    `allowed` (names, without port, lower case). Each raw value's verdict is kept (a
    few hundred at most), so the usual request costs one dictionary lookup."""

    def __init__(self, allowed: Iterable[str] = ()) -> None:
        self.allowed = frozenset(allowed)
        self._seen: dict[bytes, bool] = {}

    def answers(self, host: bytes | None) -> bool:
        if host is None:
            return False
        verdict = self._seen.get(host)
        if verdict is None:
            name = host_name(host.decode("latin-1"))
            verdict = name in self.allowed or loopback_name(name)
            if len(self._seen) < _CACHED:
                self._seen[host] = verdict
        return verdict


def shown_host(host: bytes | None) -> str:
    """A Host header as an error may repeat it: bounded, printable."""
    if host is None:
        return "(none)"
    value = host.decode("latin-1")[:100]
    return repr(value) if value.isprintable() else "(a name with unprintable characters)"
