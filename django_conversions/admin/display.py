"""Small display helpers shared by the admin pages: badges, links, delivery states."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.contrib import admin
from django.contrib.admin import AdminSite
from django.contrib.admin.exceptions import NotRegistered
from django.db.models import Field, Model
from django.http import HttpRequest, HttpResponse
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.html import format_html
from django.utils.http import urlencode
from django.utils.safestring import SafeString

from django_conversions.attempt_masking import visible_text
from django_conversions.models import TrackingSite
from django_conversions.states import STATE_LABELS

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


# Delivery states and their words come from one place (``states``), shared with the shop.
STATES = STATE_LABELS
# Chart colours (the same as the badges in admin.css), readable on light and dark themes.
STATE_COLOURS = {
    "delivered": "#2e7d32",
    "pending": "#546e7a",
    "retrying": "#b26a00",
    "sending": "#1565c0",
    "failed": "#c62828",
    "skipped": "#9e9e9e",
}


# Times on our pages carry seconds, the date first (a retry one second later must show).
DATE_FORMAT = "Y-m-d"
TIME_FORMAT = "H:i:s"


def local_time(value: datetime | None) -> SafeString:
    """``value`` in the current time zone, to the second; "—" for no time. In a narrow column
    the date and the time wrap apart, never inside either."""
    if value is None:
        return SafeString("—")
    local = timezone.localtime(value)
    return format_html(
        '<span class="conversions-time"><span>{}</span> <span>{}</span></span>',
        date_format(local, DATE_FORMAT),
        date_format(local, TIME_FORMAT),
    )


def time_field(model: type[Model], name: str) -> Callable[[Any, Any], SafeString]:
    """A model admin's column or read-only field showing the time in ``model``'s field
    ``name`` with ``local_time``, under the field's own label. A row not saved yet (the blank
    row of an inline) shows none: its default would read as a real time."""

    def show(model_admin: Any, obj: Any) -> SafeString:
        return local_time(getattr(obj, name) if obj.pk else None)

    field = model._meta.get_field(name)
    assert isinstance(field, Field), f"{model.__name__}.{name} is not a concrete field"
    return admin.display(description=field.verbose_name, ordering=name)(show)


def badge(state: str, label: Any) -> SafeString:
    return format_html('<span class="conversions-badge conversions-{}">{}</span>', state, label)


@dataclass(frozen=True)
class SiteLinks:
    """Where a notice about a site leads: its page, and its resume button's target ("" where
    this user may not go, or the site admin is not registered)."""

    change: str = ""
    resume: str = ""


def site_links(admin_site: AdminSite, request: HttpRequest, site: TrackingSite) -> SiteLinks:
    try:
        site_admin = admin_site.get_model_admin(TrackingSite)
    except NotRegistered:
        return SiteLinks()
    prefix = f"{admin_site.name}:django_conversions_trackingsite"
    may_view = site_admin.has_view_or_change_permission(request, site)
    may_resume = site_admin.has_change_permission(request, site)
    return SiteLinks(
        change=reverse(f"{prefix}_change", args=[site.pk]) if may_view else "",
        resume=reverse(f"{prefix}_resume", args=[site.pk]) if may_resume else "",
    )


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
