"""``ScanSessionMiddleware``: keep the ``?scnv=<uuid>`` of a QR-scan landing for the checkout.

Add it after Django's ``SessionMiddleware``::

    MIDDLEWARE = [
        ...
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django_conversions.middleware.ScanSessionMiddleware",
        ...
    ]

On every request whose query string carries ``CONVERSIONS["SCAN_SESSION_PARAM"]`` (``scnv``),
a well-formed UUID is kept in the session (see ``django_conversions.scan_session``); anything
else is ignored and logged at debug level, so a mangled link never breaks the page.

The link is public, so what it can make the shop write is bounded: the session is written only
when the id differs from the one it holds, and a client without a session may start at most
``CONVERSIONS["SCAN_SESSION_NEW_RATE"]`` sessions this way (a bot requesting ``?scnv=<new id>``
without cookies would otherwise add a session row per request); past it the parameter is
ignored.

Consent is deliberately not taken from the URL: a link can be forwarded or crafted by someone
else, so it cannot carry the visitor's own decision. The shop records consent where the visitor
gives it (a checkbox at checkout, a cookie banner) with ``scan_session.remember_consent()``.

While the rest of the request runs, it is the current visit (``attribution.visiting``): an order
created in it is attributed to the scan id and consent the session holds, with no code in the
checkout (see ``django_conversions.attribution``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from django_conversions.attribution import visiting
from django_conversions.conf import conversions_settings
from django_conversions.scan_session import (
    InvalidScanSessionId,
    allow_new_session,
    parse_scan_session_id,
    remember_scan_session,
    stored_scan_session,
)

logger = logging.getLogger("django_conversions.middleware")


class ScanSessionMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        self.capture(request)
        # An order created while the request runs is attributed to this visit.
        with visiting(request):
            return self.get_response(request)

    def capture(self, request: HttpRequest) -> str | None:
        """Keep the scan session id of this request, if it carries a valid one."""
        value = request.GET.get(conversions_settings.SCAN_SESSION_PARAM)
        if value is None:
            return None
        try:
            canonical = parse_scan_session_id(value)
        except InvalidScanSessionId:
            logger.debug(
                "Ignored a malformed %s parameter on %s: %r",
                conversions_settings.SCAN_SESSION_PARAM,
                request.path,
                value[:40],
            )
            return None
        if stored_scan_session(request) == canonical:
            return canonical  # the same scan again: nothing to write
        if request.session.session_key is None and not allow_new_session(request):
            logger.info(
                "Ignored the %s parameter on %s: this client started too many sessions "
                "(SCAN_SESSION_NEW_RATE)",
                conversions_settings.SCAN_SESSION_PARAM,
                request.path,
            )
            return None
        return remember_scan_session(request, canonical)
