"""The event list on an outbox of tens of millions of rows: every query it runs reads a bounded
number of rows through an index.

Django's defaults each read the whole table on every page view: the paginator's ``COUNT(*)``,
a ``DISTINCT`` over all event names for the event-name filter, the date drill-down's
``DISTINCT DATE_TRUNC`` and ``icontains`` searches. Here:

- ``pagination.CappedPaginator`` counts at most 10,000 rows, and the page says when
  more match;
- ``EventNameFilter`` offers the names the sites are set up for and those of the newest events;
- ``search_events`` matches exact values on indexed columns (event id, order reference, dedup
  key per site);
- the list filters by creation date with Django's date filter, which runs no query to offer
  its choices.
"""

from __future__ import annotations

import contextlib
import uuid
from typing import Any

from django.contrib import admin
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _

from django_conversions.models import ConversionEvent, TrackingSite

#: The newest events whose names the event-name filter offers (beside the sites' own).
RECENT_NAMES = 1_000


class EventNameFilter(admin.SimpleListFilter):
    """Event names to filter by, without reading every event to find them."""

    title = _("event name")
    parameter_name = "event_name"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        names = {name for site in TrackingSite.objects.all() for name in site.event_name_list()}
        newest = ConversionEvent.objects.order_by("-created_at", "-pk")[:RECENT_NAMES]
        names.update(newest.values_list("event_name", flat=True))
        if self.value():
            names.add(str(self.value()))
        return [(name, name) for name in sorted(names)]

    def queryset(
        self, request: HttpRequest, queryset: QuerySet[ConversionEvent]
    ) -> QuerySet[ConversionEvent]:
        value = self.value()
        return queryset.filter(event_name=value) if value else queryset


def search_events(queryset: QuerySet[ConversionEvent], term: str) -> QuerySet[ConversionEvent]:
    """Events whose event id, order reference or dedup key is exactly ``term``.

    Each test reads an index: the event id's, the order reference's, and the dedup
    constraint's (site, dedup key), named for every site so the site leads as the index needs.
    """
    term = term.strip()
    if not term:
        return queryset
    match = Q(order_reference=term[:128])
    sites = list(TrackingSite.objects.values_list("pk", flat=True))
    if sites:
        match |= Q(site__in=sites, dedup_key=term[:255])
    with contextlib.suppress(ValueError):  # not an event id
        match |= Q(event_id=uuid.UUID(term))
    return queryset.filter(match)
