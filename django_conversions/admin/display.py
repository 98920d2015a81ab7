"""Small display helpers shared by the admin pages: badges, links, delivery states."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html
from django.utils.http import urlencode
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _

from django_conversions.attempt_masking import visible_text
from django_conversions.models import ConversionEvent, EventStatus, TrackingSite

ADMIN_CSS = {"all": ("django_conversions/admin.css",)}

# Each queryset row carries whether this request may see personal data unmasked.
UNMASKED = "conversions_unmasked"


def is_unmasked(obj: Any) -> bool:
    """Whether ``obj``, read for the current request, may be shown unmasked."""
    return bool(getattr(obj, UNMASKED, False))


def shown_pause_reason(site: TrackingSite, unmasked: bool) -> str:
    """A site's pause reason may quote a provider's answer, which may quote a buyer: with no
    event to tell whose values they are, emails and hashes are masked for who may not see them."""
    return visible_text(site.paused_reason, None, unmasked=unmasked, shared=True)


# Delivery states as the admin shows them: "retrying" is a pending event that failed before.
STATES: dict[str, Any] = {
    "delivered": _("delivered"),
    "pending": _("pending"),
    "retrying": _("retrying"),
    "sending": _("sending"),
    "failed": _("failed"),
    "skipped": _("skipped"),
}
# Chart colours (the same as the badges in admin.css), readable on light and dark themes.
STATE_COLOURS = {
    "delivered": "#2e7d32",
    "pending": "#546e7a",
    "retrying": "#b26a00",
    "sending": "#1565c0",
    "failed": "#c62828",
    "skipped": "#9e9e9e",
}


def event_state(event: ConversionEvent) -> str:
    if event.status == EventStatus.PENDING and event.attempts > 0:
        return "retrying"
    return str(event.status)


def badge(state: str, label: Any) -> SafeString:
    return format_html('<span class="conversions-badge conversions-{}">{}</span>', state, label)


def event_changelist_url(namespace: str = "admin", **filters: Any) -> str:
    url = reverse(f"{namespace}:django_conversions_conversionevent_changelist")
    params = {("site__id__exact" if k == "site" else k): v for k, v in filters.items()}
    return f"{url}?{urlencode(params)}" if params else url


def overview_url(namespace: str = "admin") -> str:
    try:
        return reverse(f"{namespace}:django_conversions_overview")
    except NoReverseMatch:  # the event admin is not registered on this admin site
        return ""


class OverviewLinkMixin:
    """Puts the delivery overview's URL in the change list's context (its object tools)."""

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        extra_context = {
            **(extra_context or {}),
            "overview_url": overview_url(self.admin_site.name),  # type: ignore[attr-defined]
        }
        return super().changelist_view(request, extra_context)  # type: ignore[misc]
