"""Where a site's events (and its API key) may be sent.

An endpoint is ``https`` (``http`` only with ``CONVERSIONS["ALLOW_INSECURE_ENDPOINTS"]``), and
its host is not an address inside the machine or its network (loopback, link-local, private,
unspecified: ``127.0.0.1``, ``169.254.169.254``, ``10.0.0.5``, ``::1``, ``0.0.0.0``, ...) unless
``CONVERSIONS["ALLOW_PRIVATE_ENDPOINTS"]`` allows it. Whoever may edit a site must not be able to
make the workers post the key to the cloud's metadata service or to a port on the worker itself.

The literal host is checked when a site is saved (``literal_problem``); the addresses its name
resolves to are checked before each request (``resolved_problem``), since a public-looking name
may resolve to a private address, now or later.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from django_conversions.conf import conversions_settings

ALLOWED_SCHEMES = ("https", "http")
_LOCAL_NAMES = ("localhost", "localhost.localdomain")
_PRIVATE_HINT = "set CONVERSIONS['ALLOW_PRIVATE_ENDPOINTS'] = True for local sandboxes only"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class DestinationRefused(OSError):
    """Raised by the connection when the host's address may not be connected to."""


def is_private_address(address: IPAddress) -> bool:
    """Is ``address`` one no provider lives at (loopback, link-local, private, reserved...)?"""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    return not address.is_global or address.is_multicast


def private_allowed() -> bool:
    return bool(conversions_settings.ALLOW_PRIVATE_ENDPOINTS)


def scheme_problem(url: str) -> str | None:
    """Why the URL's scheme may not be used, or None."""
    scheme = urlsplit(url.strip()).scheme.lower()
    if scheme == "https":
        return None
    if scheme == "http":
        if conversions_settings.ALLOW_INSECURE_ENDPOINTS:
            return None
        return (
            "the endpoint URL uses http://; use https:// or set "
            "CONVERSIONS['ALLOW_INSECURE_ENDPOINTS'] = True (local sandboxes only)"
        )
    shown = f"{scheme}://" if scheme else "no scheme"
    return f"the endpoint URL uses {shown}; only https:// is allowed"


def literal_problem(url: str) -> str | None:
    """Why the endpoint URL may not be used as written (scheme, host), or None. No DNS."""
    if not url.strip():
        return None
    problem = scheme_problem(url)
    if problem:
        return problem
    try:
        host = (urlsplit(url.strip()).hostname or "").rstrip(".").lower()
    except ValueError:
        return "the endpoint URL can't be read"
    if not host:
        return "the endpoint URL has no host"
    if private_allowed():
        return None
    if host in _LOCAL_NAMES or host.endswith(".localhost"):
        return f"the endpoint's host {host} is this machine; {_PRIVATE_HINT}"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None  # a name: checked on its addresses when sending
    if is_private_address(address):
        return f"the endpoint's host {host} is {describe(address)}; {_PRIVATE_HINT}"
    return None


def resolved_problem(host: str, port: int | None) -> str | None:
    """Why ``host`` may not be connected to, by the addresses it resolves to now, or None.

    A name that does not resolve is no problem here: the request fails and is retried.
    """
    if private_allowed():
        return None
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return None
    for info in infos:
        problem = address_problem(host, str(info[4][0]))
        if problem:
            return problem
    return None


def address_problem(host: str, address_text: str) -> str | None:
    """Why the address ``host`` led to may not be connected to, or None."""
    if private_allowed():
        return None
    try:
        address = ipaddress.ip_address(address_text.split("%", 1)[0])  # fe80::1%eth0
    except ValueError:
        return None
    if not is_private_address(address):
        return None
    return f"not sent: {host} resolves to {address}, {describe(address)}; {_PRIVATE_HINT}"


def url_problem(url: str) -> str | None:
    """Everything checked before a request to ``url``: scheme, literal host, resolved host."""
    problem = literal_problem(url)
    if problem:
        return problem
    parts = urlsplit(url.strip())
    try:
        port = parts.port
    except ValueError:
        return "the endpoint URL has an invalid port"
    return resolved_problem(parts.hostname or "", port or (443 if parts.scheme == "https" else 80))


def describe(address: IPAddress) -> str:
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_unspecified:
        return "the unspecified address"
    if address.is_private:
        return "a private address"
    return "not a public address"
