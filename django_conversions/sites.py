"""The active tracking sites, cached briefly per process.

Every tracked save needs the list of active sites; reading it from the database each time
would be most of the cost tracking adds to a checkout. The list is kept for
``CONVERSIONS["SITE_CACHE_SECONDS"]`` and dropped at once when a site is saved or deleted in
this process; other processes see the change when their copy expires. Delivery never relies
on this cache: it re-reads each site (active, paused, key) before sending.
"""

from __future__ import annotations

import time
from typing import Any

from django_conversions.conf import conversions_settings
from django_conversions.models import TrackingSite

_cache: dict[str, tuple[float, list[TrackingSite]]] = {}


def active_sites(using: str) -> list[TrackingSite]:
    ttl = conversions_settings.SITE_CACHE_SECONDS
    now = time.monotonic()
    cached = _cache.get(using)
    if ttl and cached is not None and now - cached[0] < ttl:
        return cached[1]
    sites = list(TrackingSite.objects.using(using).filter(is_active=True))
    _cache[using] = (now, sites)
    return sites


def clear_cache(*args: Any, **kwargs: Any) -> None:
    _cache.clear()
