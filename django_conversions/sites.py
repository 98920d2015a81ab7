"""The active tracking sites, cached briefly per process.

Every tracked save needs the list of active sites; reading it from the database each time
would be most of the cost tracking adds to a checkout. The list is kept for
``CONVERSIONS["SITE_CACHE_SECONDS"]`` and dropped at once when a site is saved or deleted in
this process; other processes see the change when their copy expires. Which of the sites take
an event name (their filters and providers) is kept with the list and dropped with it.
Delivery never relies on this cache: it re-reads each site (active, paused, key) before
sending.
"""

from __future__ import annotations

import time
from typing import Any

from django_conversions.conf import conversions_settings
from django_conversions.models import TrackingSite

# By database: when the list was read, the active sites, and the sites taking each event name
# (worked out on first use: a filter and a provider class per site, on every save otherwise).
_cache: dict[str, tuple[float, list[TrackingSite], dict[str, list[TrackingSite]]]] = {}
# Event names kept per list: names come from callers (the REST API too), so the memo is bounded.
TAKING_NAMES_MAX = 64


def active_sites(using: str) -> list[TrackingSite]:
    return _entry(using)[1]


def sites_taking(using: str, event_name: str) -> list[TrackingSite]:
    """The active sites whose filter and provider take ``event_name``, in site order."""
    from django_conversions.providers import registry

    _, sites, by_name = _entry(using)
    taking = by_name.get(event_name)
    if taking is None:
        taking = [
            site
            for site in sites
            if site.accepts(event_name)
            and registry.get_class(site.provider)().accepts_event(event_name)
        ]
        if len(by_name) < TAKING_NAMES_MAX:
            by_name[event_name] = taking
    return taking


def _entry(using: str) -> tuple[float, list[TrackingSite], dict[str, list[TrackingSite]]]:
    ttl = conversions_settings.SITE_CACHE_SECONDS
    now = time.monotonic()
    cached = _cache.get(using)
    if ttl and cached is not None and now - cached[0] < ttl:
        return cached
    entry = (now, list(TrackingSite.objects.using(using).filter(is_active=True)), {})
    _cache[using] = entry
    return entry


def clear_cache(*args: Any, **kwargs: Any) -> None:
    _cache.clear()
