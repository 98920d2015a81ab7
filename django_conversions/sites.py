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
from dataclasses import dataclass, field
from typing import Any

from django.core.signals import setting_changed
from django.db import transaction
from django.db.models.signals import post_delete, post_save

from django_conversions.conf import SETTING_NAME, conversions_settings
from django_conversions.models import TrackingSite
from django_conversions.providers import registry
from django_conversions.providers.base import Provider

# Event names kept per list: names come from callers (the REST API too), so the memo is bounded.
TAKING_NAMES_MAX = 64


@dataclass
class _Entry:
    """One database's active sites, and what is worked out from them on first use."""

    read_at: float
    sites: list[TrackingSite]
    # The sites taking each event name (a filter and a provider class per site, every save).
    taking: dict[str, list[TrackingSite]] = field(default_factory=dict)
    # Each site's provider, by site id (built from the site's settings, every save).
    providers: dict[int, Provider] = field(default_factory=dict)


_cache: dict[str, _Entry] = {}


def active_sites(using: str) -> list[TrackingSite]:
    return _entry(using).sites


def sites_taking(using: str, event_name: str) -> list[TrackingSite]:
    """The active sites whose filter and provider take ``event_name``, in site order."""
    entry = _entry(using)
    taking = entry.taking.get(event_name)
    if taking is None:
        taking = [
            site
            for site in entry.sites
            if site.accepts(event_name)
            and registry.get_class(site.provider)().accepts_event(event_name)
        ]
        if len(entry.taking) < TAKING_NAMES_MAX:
            entry.taking[event_name] = taking
    return taking


def checking_provider(using: str, site: TrackingSite) -> Provider:
    """The site's provider, for checking and minimising conversions on the checkout: kept with
    the list of sites and dropped with it. Shared by the process's threads, so it is not
    for sending (delivery builds its own per site)."""
    providers = _entry(using).providers
    provider = providers.get(site.pk)
    if provider is None:
        provider = providers[site.pk] = site.provider_instance()
    return provider


def _entry(using: str) -> _Entry:
    ttl = conversions_settings.SITE_CACHE_SECONDS
    now = time.monotonic()
    cached = _cache.get(using)
    if ttl and cached is not None and now - cached.read_at < ttl:
        return cached
    # Read on an order's save, before anything else: a failure (the table not migrated yet)
    # must not break the host's transaction.
    with transaction.atomic(using=using):
        entry = _Entry(now, list(TrackingSite.objects.using(using).filter(is_active=True)))
    _cache[using] = entry
    return entry


def clear_cache(*args: Any, **kwargs: Any) -> None:
    _cache.clear()


def _settings_changed(*, setting: str, **kwargs: Any) -> None:
    # The cache holds providers built from the settings (batch size, consent policy).
    if setting == SETTING_NAME:
        clear_cache()


setting_changed.connect(_settings_changed, dispatch_uid="conversions_sites_settings")
post_save.connect(clear_cache, sender=TrackingSite, dispatch_uid="conversions_site_saved")
post_delete.connect(clear_cache, sender=TrackingSite, dispatch_uid="conversions_site_deleted")
