"""Tracking sites for the benchmarks, apart from the test app's models: the example shop's
process (``benchmarks/shop_checkout.py``) uses them too."""

from __future__ import annotations

from django_conversions.models import ApiKey, TrackingSite

__all__ = ["make_site", "set_active"]


def make_site(provider: str, url: str, n: int = 0, *, active: bool = True) -> TrackingSite:
    site = TrackingSite.objects.create(
        name=f"bench {provider} {n}",
        provider=provider,
        provider_site_id=f"site_bench_{n}",
        endpoint_url=url,
        is_active=active,
    )
    ApiKey.objects.create(site=site, key=f"{provider}_bench_key_{n}_0123456789")
    return site


def set_active(sites: list[TrackingSite], active: set[int]) -> None:
    """Make exactly the sites whose pk is in ``active`` active (saving clears the app's cache
    of active sites in this process)."""
    for site in sites:
        wanted = site.pk in active
        if site.is_active != wanted:
            site.is_active = wanted
            site.save(update_fields=["is_active", "updated_at"])
