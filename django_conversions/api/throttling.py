"""Rate limit of the public scan-session endpoint, per client address."""

from __future__ import annotations

from typing import Any

from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle

from django_conversions.conf import conversions_settings


class ScanSessionThrottle(SimpleRateThrottle):
    """``CONVERSIONS["API_SCAN_SESSION_THROTTLE_RATE"]`` requests per client address.

    The address is DRF's ``get_ident()``: behind a proxy set ``REST_FRAMEWORK["NUM_PROXIES"]``
    so that a client cannot pick its own identity through ``X-Forwarded-For``.
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

    def get_cache_key(self, request: Request, view: Any) -> str:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}
