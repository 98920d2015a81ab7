"""Admin for conversion events (the outbox and delivery log) and their delivery attempts.

Events are written by the app, never by hand: no add form, every field read-only. Staff act on
them through two actions, "retry now" and "mark as skipped". Personal data in the snapshot,
reasons and response bodies is masked unless the user may see it (``view_personal_data``).
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.admin.utils import flatten_fieldsets
from django.core.exceptions import PermissionDenied
from django.db.models import BooleanField, QuerySet, Value
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, URLPattern, path, reverse
from django.utils.html import format_html
from django.utils.text import Truncator
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from django_conversions import pagination
from django_conversions.actions import in_chunks, retry_events, skip_events
from django_conversions.admin.attempts import DeliveryAttemptInline
from django_conversions.admin.display import (
    ADMIN_CSS,
    STATES,
    UNMASKED,
    OverviewLinkMixin,
    badge,
    is_unmasked,
    local_time,
    shown_pause_reason,
    site_links,
    time_field,
)
from django_conversions.admin.large_lists import EventNameFilter, search_events
from django_conversions.admin.overview import build_overview
from django_conversions.masking import (
    can_see_personal_data,
    mask_known,
    mask_snapshot,
)
from django_conversions.models import ConversionEvent, EventStatus
from django_conversions.pagination import CappedPaginator, over_count_limit
from django_conversions.providers import registry
from django_conversions.states import STATE_LABELS, event_state, in_state

LIST_REASON_LENGTH = 120


def _visible(obj: Any, text: str, snapshot: Any = None) -> str:
    return text if is_unmasked(obj) else mask_known(text, snapshot)


class StatusFilter(admin.SimpleListFilter):
    """The stored status, with "retrying" (pending after a failed attempt) told apart."""

    title = _("status")
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return [
            ("pending", _("pending (not tried yet)")),
            ("retrying", _("retrying")),
            ("sending", _("sending")),
            ("delivered", _("delivered")),
            ("failed", _("failed")),
            ("skipped", _("skipped")),
        ]

    def queryset(
        self, request: HttpRequest, queryset: QuerySet[ConversionEvent]
    ) -> QuerySet[ConversionEvent]:
        value = self.value()
        return queryset.filter(in_state(value)) if value in STATE_LABELS else queryset


class ProviderFilter(admin.SimpleListFilter):
    title = _("provider")
    parameter_name = "provider"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return registry.as_choices()

    def queryset(
        self, request: HttpRequest, queryset: QuerySet[ConversionEvent]
    ) -> QuerySet[ConversionEvent]:
        value = self.value()
        return queryset.filter(site__provider=value) if value else queryset


@admin.register(ConversionEvent)
class ConversionEventAdmin(OverviewLinkMixin, admin.ModelAdmin):
    # Narrow enough for Django's navigation sidebar beside it: the event (its order, under it
    # the event's name and site) links to its page, its attempts sit under its state, and the
    # reason, the one long text, comes last and takes the width the others leave.
    list_display = (
        "event",
        "state",
        "created",
        "next_or_delivered",
        "reason",
    )
    # The outbox grows to tens of millions of rows: no filter, count or search here reads the
    # whole table (see ``large_lists``).
    list_filter = (
        StatusFilter,
        "site",
        ProviderFilter,
        EventNameFilter,
        ("created_at", admin.DateFieldListFilter),
    )
    list_select_related = ("site",)
    paginator = CappedPaginator
    show_full_result_count = False
    search_fields = ("event_id", "order_reference", "dedup_key")  # see get_search_results
    search_help_text = _("An event id, an order reference or a dedup key, exactly as stored.")
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "event_name",
                    "site",
                    "status_badge",
                    "reason_full",
                    "attempts",
                    "next_attempt",
                    "created",
                    "delivered",
                    "updated",
                )
            },
        ),
        (
            _("Identity"),
            {"fields": ("event_id", "dedup_key", "order_reference", "source_link")},
        ),
        (_("Conversion"), {"fields": ("snapshot_display",)}),
    )
    readonly_fields = tuple(flatten_fieldsets(fieldsets))
    inlines = (DeliveryAttemptInline,)
    actions = ("retry_selected", "skip_selected")

    class Media:
        css = ADMIN_CSS

    def get_queryset(self, request: HttpRequest) -> QuerySet[ConversionEvent]:
        unmasked = Value(can_see_personal_data(request), output_field=BooleanField())
        return super().get_queryset(request).annotate(**{UNMASKED: unmasked})

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[ConversionEvent], search_term: str
    ) -> tuple[QuerySet[ConversionEvent], bool]:
        return search_events(queryset, search_term), False

    # --- permissions: written by the app, read here -------------------------------------------

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # The model-level permission allows the actions; a single event is never edited.
        if obj is not None:
            return False
        return super().has_change_permission(request)

    # --- columns and fields -------------------------------------------------------------------

    delivered = time_field(ConversionEvent, "delivered_at")
    updated = time_field(ConversionEvent, "updated_at")

    @admin.display(description=_("event"), ordering="order_reference")
    def event(self, event: ConversionEvent) -> str:
        return format_html(
            '<span class="conversions-reference">{}</span>'
            ' <span class="conversions-event-site">{} → {}</span>',
            event.order_reference or "—",
            event.event_name,
            event.site.name,
        )

    @admin.display(description=_("status"), ordering="status")
    def status_badge(self, event: ConversionEvent) -> str:
        state = event_state(event)
        return badge(state, STATES[state])

    @admin.display(description=_("status"), ordering="status")
    def state(self, event: ConversionEvent) -> str:
        """The list's status column: the badge, and under it the attempts made so far (a
        column of their own would take the width the reason needs)."""
        count = ngettext("%(count)d attempt", "%(count)d attempts", event.attempts) % {
            "count": event.attempts
        }
        return format_html(
            '{} <span class="conversions-attempt-count">{}</span>', self.status_badge(event), count
        )

    @admin.display(description=_("reason"))
    def reason(self, event: ConversionEvent) -> str:
        text = _visible(event, event.last_error, event.snapshot)
        if not text:
            return ""
        return format_html(
            '<span class="conversions-reason" title="{}">{}</span>',
            text,
            Truncator(text).chars(LIST_REASON_LENGTH),
        )

    @admin.display(description=_("reason"))
    def reason_full(self, event: ConversionEvent) -> str:
        return _visible(event, event.last_error, event.snapshot) or "—"

    created = time_field(ConversionEvent, "created_at")

    @admin.display(description=_("next try / delivered"))
    def next_or_delivered(self, event: ConversionEvent) -> str:
        if event.status == EventStatus.DELIVERED:
            return local_time(event.delivered_at)
        return self.next_attempt(event)

    @admin.display(description=_("next attempt"))
    def next_attempt(self, event: ConversionEvent) -> str:
        """Only a waiting event has one; a finished event's old schedule would mislead."""
        return local_time(event.next_attempt_at if event.status == EventStatus.PENDING else None)

    @admin.display(description=_("source"))
    def source_link(self, event: ConversionEvent) -> str:
        content_type = event.source_content_type
        if content_type is None or not event.source_object_id:
            return "—"
        label = f"{content_type.app_label}.{content_type.model} #{event.source_object_id}"
        try:
            url = reverse(
                f"{self.admin_site.name}:{content_type.app_label}_{content_type.model}_change",
                args=[event.source_object_id],
            )
        except NoReverseMatch:
            return label
        return format_html('<a href="{}">{}</a>', url, label)

    @admin.display(description=_("conversion (as stored)"))
    def snapshot_display(self, event: ConversionEvent) -> str:
        snapshot = event.snapshot if is_unmasked(event) else mask_snapshot(event.snapshot)
        text = json.dumps(snapshot, indent=2, ensure_ascii=False, sort_keys=True)
        note = "" if is_unmasked(event) else gettext("Personal data is masked.")
        return format_html(
            '<pre class="conversions-pre">{}</pre><div class="help">{}</div>', text, note
        )

    # --- actions ------------------------------------------------------------------------------

    @admin.action(description=_("Retry selected events now"), permissions=["change"])
    def retry_selected(self, request: HttpRequest, queryset: QuerySet[ConversionEvent]) -> None:
        if self._too_many(request, queryset):
            return
        # Queued, never sent here: a worker delivers them after this request has answered.
        outcome = retry_events(queryset)
        self._log(request, outcome.queued, gettext("Retry requested: queued for delivery."))
        refused = outcome.delivered or outcome.in_flight or outcome.rebuild_failed
        level = messages.WARNING if refused else messages.SUCCESS
        self.message_user(request, outcome.summary() + ".", level)

    @admin.action(description=_("Mark selected events as skipped"), permissions=["change"])
    def skip_selected(self, request: HttpRequest, queryset: QuerySet[ConversionEvent]) -> None:
        if self._too_many(request, queryset):
            return
        user = request.user.get_username()  # type: ignore[union-attr]
        reason = gettext("skipped by %(user)s in the admin") % {"user": user}
        skipped = skip_events(queryset, reason)
        self._log(request, skipped, gettext("Marked as skipped."))
        text = gettext("Marked %(count)d event(s) as skipped.") % {"count": len(skipped)}
        untouched = queryset.count() - len(skipped)
        if untouched:
            text += " " + gettext(
                "%(count)d were left alone (delivered, already skipped, or being sent)."
            ) % {"count": untouched}
        self.message_user(request, text, messages.SUCCESS)

    def _too_many(self, request: HttpRequest, queryset: QuerySet[ConversionEvent]) -> bool:
        """Refuse an action on "all" of a list longer than it counts: it runs in the request,
        and on millions of events would hold it (and their rows) for minutes."""
        if not over_count_limit(queryset):
            return False
        text = gettext(
            "More than %(limit)s events are selected: nothing was changed. Narrow the list "
            "with a filter or a search; manage.py conversions_retry takes any number."
        ) % {"limit": f"{pagination.COUNT_LIMIT:,}"}
        self.message_user(request, text, messages.ERROR)
        return True

    def _log(self, request: HttpRequest, event_ids: list[int], message: str) -> None:
        """An entry in each event's history, written a bounded number at a time."""
        for chunk in in_chunks(event_ids):
            LogEntry.objects.log_actions(
                user_id=request.user.pk,  # type: ignore[arg-type]  # staff: a saved user
                queryset=ConversionEvent.objects.filter(pk__in=chunk).select_related("site"),
                action_flag=CHANGE,
                change_message=message,
            )

    # --- the delivery overview ----------------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        return [
            path(
                "overview/",
                self.admin_site.admin_view(self.overview_view),
                name="django_conversions_overview",
            ),
            *super().get_urls(),
        ]

    def overview_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        overview = build_overview(days=7)
        unmasked = can_see_personal_data(request)
        failed = [(event, _visible_reason(event, unmasked)) for event in overview.failed_events]
        for item in overview.sites:
            item.site.shown_pause_reason = shown_pause_reason(item.site, unmasked)  # type: ignore[attr-defined]
            item.site.links = site_links(self.admin_site, request, item.site)  # type: ignore[attr-defined]
        context = {
            **self.admin_site.each_context(request),
            "title": gettext("Delivery overview"),
            "subtitle": None,
            "opts": self.model._meta,
            "overview": overview,
            "failed": failed,
            "states": STATES,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "django_conversions/admin/overview.html", context)


def _visible_reason(event: ConversionEvent, unmasked: bool) -> str:
    return event.last_error if unmasked else mask_known(event.last_error, event.snapshot)
