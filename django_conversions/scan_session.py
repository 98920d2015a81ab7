"""The visitor's scan session id, kept in the Django session with its own expiry.

A QR scan lands the visitor on the shop with ``?scnv=<uuid>`` (Scanova's scan session id). The
shop must carry that id to the order placed later, so it is kept in the session under
``CONVERSIONS["SCAN_SESSION_KEY"]`` together with the time it stops counting
(``SCAN_SESSION_MAX_AGE`` seconds after the scan). The expiry belongs to the scan id alone: the
session itself, and whatever else it holds, keeps its own lifetime.

``ScanSessionMiddleware`` calls ``remember_scan_session()`` on landing; a checkout view (or an
API endpoint that hands the id over) calls ``get_scan_session()`` and copies the id onto the order.

A link is public: anyone may request ``?scnv=<new uuid>`` as often as they like. So the session
is written only when the id changes, and a client may start at most
``CONVERSIONS["SCAN_SESSION_NEW_RATE"]`` new sessions that way (``allow_new_session()``); past
it the parameter is ignored. Clients are told apart by ``client_address()``.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest

from django_conversions.conf import conversions_settings
from django_conversions.conversion import CONSENT_VALUES
from django_conversions.exceptions import ConversionsError

__all__ = [
    "InvalidScanSessionId",
    "allow_new_session",
    "client_address",
    "forget_scan_session",
    "get_consent",
    "get_scan_session",
    "parse_scan_session_id",
    "remember_consent",
    "remember_scan_session",
]


class InvalidScanSessionId(ConversionsError, ValueError):
    """A scan session id that is not a UUID. The message never repeats more than 40 chars."""

    def __init__(self, value: object) -> None:
        self.value = value
        shown = str(value)[:40]
        super().__init__(f"scan session id {shown!r} is not a UUID")


def parse_scan_session_id(value: object) -> str:
    """The canonical (lower-case, hyphenated) text of a UUID, or ``InvalidScanSessionId``.

    Accepts what ``uuid.UUID`` accepts (any case, with or without hyphens or braces), so a
    link that was re-typed or upper-cased still works.
    """
    if isinstance(value, uuid.UUID):
        return str(value)
    if not isinstance(value, str):
        raise InvalidScanSessionId(value)
    text = value.strip()
    # uuid.UUID() strips "urn:uuid:" and braces; anything that long is not a scan id.
    if not text or len(text) > 45:
        raise InvalidScanSessionId(value)
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise InvalidScanSessionId(value) from None


def _clock() -> float:
    # One place to read the time, so tests can move it forward.
    return time.time()


def _session(request: HttpRequest) -> Any:
    session = getattr(request, "session", None)
    if session is None:
        raise ImproperlyConfigured(
            "The scan session id is kept in the Django session: add "
            "'django.contrib.sessions.middleware.SessionMiddleware' to MIDDLEWARE, before "
            "'django_conversions.middleware.ScanSessionMiddleware'."
        )
    return session


def remember_scan_session(
    request: HttpRequest, value: object, *, max_age: float | None = None
) -> str:
    """Keep ``value`` as the visitor's scan session id; return its canonical form.

    Raises ``InvalidScanSessionId`` (a ``ValueError``) when ``value`` is not a UUID; the
    session is then left as it was. A new scan replaces the previous id and restarts its
    expiry (``max_age`` seconds, default ``CONVERSIONS["SCAN_SESSION_MAX_AGE"]``).
    """
    canonical = parse_scan_session_id(value)
    if max_age is None:
        max_age = conversions_settings.SCAN_SESSION_MAX_AGE
    _session(request)[conversions_settings.SCAN_SESSION_KEY] = {
        "id": canonical,
        "expires_at": int(_clock() + float(max_age)),
    }
    return canonical


def client_address(request: HttpRequest) -> str:
    """The client's address, as far as it can be trusted.

    ``REMOTE_ADDR``, or with ``REST_FRAMEWORK["NUM_PROXIES"]`` set the address that many
    proxies back in ``X-Forwarded-For`` (DRF's rule). Unset, ``X-Forwarded-For`` is never read:
    the client writes it, so any limit keyed by it is no limit (system check W004 says so).
    """
    remote = str(request.META.get("REMOTE_ADDR") or "")
    proxies = num_proxies()
    forwarded = request.headers.get("x-forwarded-for")
    if not proxies or not forwarded:
        return remote
    addresses = forwarded.split(",")
    return addresses[-min(proxies, len(addresses))].strip()


def num_proxies() -> int | None:
    """``REST_FRAMEWORK["NUM_PROXIES"]``: how many proxies stand in front of Django."""
    value = (getattr(settings, "REST_FRAMEWORK", None) or {}).get("NUM_PROXIES")
    return None if value is None else int(value)


_PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_rate(rate: str, setting: str = "SCAN_SESSION_NEW_RATE") -> tuple[int, int]:
    """``"20/minute"`` -> (20, 60): DRF's rate syntax."""
    count, _, period = str(rate).partition("/")
    try:
        return int(count), _PERIODS[period.strip()[:1].lower()]
    except (ValueError, KeyError):
        raise ImproperlyConfigured(
            f"CONVERSIONS[{setting!r}] = {rate!r} is not a rate such as '30/minute' "
            "(a count, a slash, then second, minute, hour or day)."
        ) from None


def allow_new_session(request: HttpRequest) -> bool:
    """May this client start one more session with a scan id now?

    At most ``CONVERSIONS["SCAN_SESSION_NEW_RATE"]`` per client address in a fixed window,
    counted in the default cache (``None``: no limit).
    """
    rate = conversions_settings.SCAN_SESSION_NEW_RATE
    if rate is None:
        return True
    limit, seconds = parse_rate(rate)
    window = int(_clock() // seconds)
    key = f"django_conversions:scan-session-new:{window}:{client_address(request)}"
    cache.add(key, 0, timeout=seconds)
    try:
        count = cache.incr(key)
    except ValueError:  # the window's entry expired between the two calls
        cache.add(key, 1, timeout=seconds)
        count = 1
    return count <= limit


def stored_scan_session(request: HttpRequest) -> str | None:
    """The id the session holds now, expired or not, without writing anything."""
    stored = _session(request).get(conversions_settings.SCAN_SESSION_KEY)
    return stored.get("id") if isinstance(stored, dict) else None


def get_scan_session(request: HttpRequest) -> str | None:
    """The visitor's scan session id, or None when there is none or it has expired.

    An expired (or unreadable) entry is removed from the session.
    """
    session = _session(request)
    key = conversions_settings.SCAN_SESSION_KEY
    stored = session.get(key)
    if stored is None:
        return None
    try:
        canonical = parse_scan_session_id(stored["id"])
        expired = float(stored["expires_at"]) <= _clock()
    except (InvalidScanSessionId, KeyError, TypeError, ValueError):
        expired = True
    if expired:
        del session[key]
        return None
    return canonical


def forget_scan_session(request: HttpRequest) -> None:
    """Drop the scan session id (e.g. once it has been used for an order)."""
    _session(request).pop(conversions_settings.SCAN_SESSION_KEY, None)


# --- the visitor's tracking consent --------------------------------------------------------
#
# Carried like the scan id, from the storefront's consent banner (through the REST API's
# scan-session endpoint, or a view calling remember_consent()) to the checkout, which copies
# it onto the order. It is never read from a URL: a link can be forwarded or made up.


def _consent_key() -> str:
    return f"{conversions_settings.SCAN_SESSION_KEY}_consent"


def remember_consent(request: HttpRequest, value: object) -> str:
    """Keep the visitor's consent (``granted``, ``denied`` or ``pending``); return it."""
    text = str(value).strip().lower() if isinstance(value, str) else ""
    if text not in CONSENT_VALUES:
        raise ValueError(f"consent must be one of {', '.join(CONSENT_VALUES)}")
    _session(request)[_consent_key()] = text
    return text


def get_consent(request: HttpRequest) -> str | None:
    """The consent the visitor gave in this session, or None when unknown."""
    return _session(request).get(_consent_key())
