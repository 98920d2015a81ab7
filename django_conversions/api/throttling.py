"""Rate limit of the public scan-session endpoint, per client address; and the system check
for the proxy setting that address relies on."""

from __future__ import annotations

from typing import Any

from django.core.checks import CheckMessage, Warning
from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle

from django_conversions.conf import conversions_settings
from django_conversions.scan_session import client_address, num_proxies


class ScanSessionThrottle(SimpleRateThrottle):
    """``CONVERSIONS["API_SCAN_SESSION_THROTTLE_RATE"]`` requests per client address.

    The address is ``scan_session.client_address()``: ``REMOTE_ADDR``, or behind proxies
    (``REST_FRAMEWORK["NUM_PROXIES"]`` set) the one they forwarded. Unlike DRF's own
    ``get_ident()``, an ``X-Forwarded-For`` the client wrote itself is never its identity.
    """

    scope = "conversions_scan_session"

    def __init__(self) -> None:
        # The rate is read per request (not at import) so override_settings applies.
        pass

    def allow_request(self, request: Request, view: Any) -> bool:
        self.rate = conversions_settings.API_SCAN_SESSION_THROTTLE_RATE
        if self.rate is None:
            return True
        self.num_requests, self.duration = self.parse_rate(self.rate)
        return super().allow_request(request, view)

    def get_ident(self, request: Request) -> str:
        return client_address(request)

    def get_cache_key(self, request: Request, view: Any) -> str:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


def check_proxy_setting(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """W004: the public endpoints' limits key on the client address, which behind a proxy is
    only right once ``REST_FRAMEWORK["NUM_PROXIES"]`` says how many proxies there are."""
    limited = (
        conversions_settings.API_SCAN_SESSION_THROTTLE_RATE is not None
        or conversions_settings.SCAN_SESSION_NEW_RATE is not None
    )
    if not limited or num_proxies() is not None:
        return []
    return [
        Warning(
            "REST_FRAMEWORK['NUM_PROXIES'] is not set, so the scan-session endpoint's throttle "
            "and the ?scnv= session limit know each client by REMOTE_ADDR alone. "
            "X-Forwarded-For, which any client can write, is not read.",
            hint="Set REST_FRAMEWORK['NUM_PROXIES'] to the number of proxies in front of "
            "Django (0 when there are none). Behind a proxy, until it is set, every visitor "
            "shares the proxy's address and so one limit.",
            id="conversions.W004",
        )
    ]
