"""Admin for tracking sites: their keys (inline, see ``keys``), state, latest requests, and the
actions resume (queues the waiting events) and send test event (the one synchronous call)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import BooleanField, Count, OuterRef, Prefetch, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.text import capfirst
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from django_conversions.actions import resume_site
from django_conversions.admin.display import (
    ADMIN_CSS,
    UNMASKED,
    OverviewLinkMixin,
    badge,
    event_changelist_url,
    is_unmasked,
    local_time,
    shown_pause_reason,
    time_field,
)
from django_conversions.admin.frontend import FEED_AND_SCRIPT_FIELDSET, FeedAndScriptMixin
from django_conversions.admin.keys import ApiKeyInline, KeysFollowDestination, PostedKeysHidden
from django_conversions.attempt_masking import visible_text
from django_conversions.masking import can_see_personal_data
from django_conversions.models import (
    ApiKey,
    ConversionEvent,
    DeliveryAttempt,
    EventStatus,
    TrackingSite,
)
from django_conversions.testevent import send_test_event

RECENT_ATTEMPTS = 10


@admin.register(TrackingSite)
class TrackingSiteAdmin(
    FeedAndScriptMixin, KeysFollowDestination, PostedKeysHidden, OverviewLinkMixin, admin.ModelAdmin
):
    # The site (its provider's long name under it), then what needs a look. A hold shows in
    # the state, with its time, so it needs no column of its own.
    list_display = (
        "site",
        "state",
        "pending_count",
        "retrying_count",
        "failed_count",
        "current_key",
    )
    list_filter = ("provider", "is_active")
    search_fields = ("name", "provider_site_id")
    readonly_fields = (
        "paused",
        "pause_reason",
        "held",
        "created",
        "updated",
        "recent_attempts",
        "feed_url",
    )
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "name",
                    "provider",
                    "provider_site_id",
                    "endpoint_url",
                    "event_names",
                    "is_active",
                )
            },
        ),
        (
            _("State"),
            {"fields": ("paused", "pause_reason", "held", "created", "updated")},
        ),
        (_("Recent requests"), {"fields": ("recent_attempts",)}),
        FEED_AND_SCRIPT_FIELDSET,
    )
    inlines = (ApiKeyInline,)
    actions = ("resume_sites", "send_test_events")

    class Media:
        css = ADMIN_CSS

    def formfield_for_dbfield(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "endpoint_url":
            kwargs["assume_scheme"] = "https"  # a typed host without scheme means https
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    def get_queryset(self, request: HttpRequest) -> QuerySet[TrackingSite]:
        # Counted in the same query as the sites, each from the few pending or failed events
        # the status index holds (a join with every event of every site read them all).
        unmasked = Value(can_see_personal_data(request), output_field=BooleanField())
        return (
            super()
            .get_queryset(request)
            .annotate(
                **{UNMASKED: unmasked},
                pending_events=_count_of(status=EventStatus.PENDING, attempts=0),
                retrying_events=_count_of(status=EventStatus.PENDING, attempts__gt=0),
                failed_events=_count_of(status=EventStatus.FAILED),
            )
            .prefetch_related(
                Prefetch(
                    "api_keys",
                    queryset=ApiKey.objects.filter(is_active=True).order_by("-created_at", "-pk"),
                    to_attr="active_keys",
                )
            )
        )

    def get_deleted_objects(
        self, objs: Any, request: HttpRequest
    ) -> tuple[list[Any], dict[str, int], set[str], list[Any]]:
        """Count what goes with the sites instead of listing every event and attempt: a busy
        site's confirmation page would otherwise take minutes to build."""
        sites = list(objs)
        related = [
            (ApiKey, ApiKey.objects.filter(site__in=sites), "site"),
            (ConversionEvent, ConversionEvent.objects.filter(site__in=sites), "site"),
            (DeliveryAttempt, DeliveryAttempt.objects.filter(site__in=sites), "site"),
        ]
        model_count = {str(TrackingSite._meta.verbose_name_plural): len(sites)}
        perms_needed: set[str] = set()
        if not all(self.has_delete_permission(request, site) for site in sites):
            perms_needed.add(str(TrackingSite._meta.verbose_name))
        per_site: dict[int, list[str]] = {site.pk: [] for site in sites}
        for model, queryset, site_field in related:
            counts = dict(queryset.order_by().values_list(site_field).annotate(n=Count("pk")))
            total = sum(counts.values())
            if not total:
                continue
            name = str(model._meta.verbose_name_plural)
            model_count[name] = total
            singular = str(model._meta.verbose_name)
            for site_id, count in counts.items():
                per_site[site_id].append(f"{count} {singular if count == 1 else name}")
            model_admin = self.admin_site._registry.get(model)
            if model_admin is not None and not model_admin.has_delete_permission(request):
                perms_needed.add(singular)
        to_delete: list[Any] = []
        for site in sites:
            to_delete.append(f"{capfirst(TrackingSite._meta.verbose_name)}: {site}")
            if per_site[site.pk]:
                to_delete.append(per_site[site.pk])
        return to_delete, model_count, perms_needed, []

    # --- list columns ---------------------------------------------------------------------

    paused = time_field(TrackingSite, "paused_at")
    held = time_field(TrackingSite, "held_until")
    created = time_field(TrackingSite, "created_at")
    updated = time_field(TrackingSite, "updated_at")

    @admin.display(description=_("site"), ordering="name")
    def site(self, site: TrackingSite) -> str:
        provider = site.get_provider_display()
        return format_html('{} <span class="conversions-provider">{}</span>', site.name, provider)

    @admin.display(description=_("paused because"))
    def pause_reason(self, site: TrackingSite) -> str:
        return shown_pause_reason(site, is_unmasked(site)) or "—"

    @admin.display(description=_("state"))
    def state(self, site: TrackingSite) -> str:
        if not site.is_active:
            return badge("inactive", gettext("inactive"))
        if site.is_paused:
            return format_html(
                '{} <span class="conversions-reason">{}</span>',
                badge("paused", gettext("paused")),
                shown_pause_reason(site, is_unmasked(site)),
            )
        if site.held_until and site.held_until > timezone.now():
            return format_html(
                '{} <span class="conversions-reason">{} {}</span>',
                badge("held", gettext("held back")),
                gettext("until"),
                local_time(site.held_until),
            )
        return badge("active", gettext("active"))

    @admin.display(description=_("API key"))
    def current_key(self, site: TrackingSite) -> str:
        keys = getattr(site, "active_keys", None)
        if keys is None:
            keys = list(site.api_keys.filter(is_active=True).order_by("-created_at", "-pk"))
        return keys[0].masked if keys else gettext("none")

    def _count_link(self, site: TrackingSite, count: int, **filters: Any) -> str:
        if not count:
            return format_html('<span class="conversions-count-zero">{}</span>', 0)
        url = event_changelist_url(self.admin_site.name, site=site.pk, **filters)
        return format_html('<a href="{}">{}</a>', url, count)

    @admin.display(description=_("pending"), ordering="pending_events")
    def pending_count(self, site: TrackingSite) -> str:
        return self._count_link(site, site.pending_events, status="pending")  # type: ignore[attr-defined]

    @admin.display(description=_("retrying"), ordering="retrying_events")
    def retrying_count(self, site: TrackingSite) -> str:
        return self._count_link(site, site.retrying_events, status="retrying")  # type: ignore[attr-defined]

    @admin.display(description=_("failed"), ordering="failed_events")
    def failed_count(self, site: TrackingSite) -> str:
        return self._count_link(site, site.failed_events, status="failed")  # type: ignore[attr-defined]

    # --- actions ------------------------------------------------------------------------------

    @admin.action(
        description=_("Resume selected sites and queue their waiting events"),
        permissions=["change"],
    )
    def resume_sites(self, request: HttpRequest, queryset: QuerySet[TrackingSite]) -> None:
        for site in queryset:
            self._resume(request, site)

    @admin.action(description=_("Send a test event to selected sites"), permissions=["change"])
    def send_test_events(self, request: HttpRequest, queryset: QuerySet[TrackingSite]) -> None:
        for site in queryset:
            self._send_test_event(request, site)

    def _resume(self, request: HttpRequest, site: TrackingSite) -> None:
        was_paused = site.is_paused
        # Queued, never sent here: a worker delivers them after this request has answered.
        queued = resume_site(site)
        self.log_change(request, site, gettext("Resumed."))
        prefix = (
            gettext("Resumed %(site)s") if was_paused else gettext("%(site)s was not paused")
        ) % {"site": site.name}
        waiting = ngettext(
            "%(count)d waiting event queued for delivery",
            "%(count)d waiting events queued for delivery",
            queued,
        ) % {"count": queued}
        self.message_user(request, f"{prefix}; {waiting}.")

    def _send_test_event(self, request: HttpRequest, site: TrackingSite) -> None:
        # Synchronous on purpose: the person asked to see the provider's answer now.
        answer = send_test_event(site)
        self.log_change(request, site, gettext("Sent a test event: %s") % answer.summary())
        level = messages.SUCCESS if answer.accepted else messages.ERROR
        self.message_user(request, str(answer), level)

    # --- recent requests ----------------------------------------------------------------------

    @admin.display(description=_("latest requests to the provider"))
    def recent_attempts(self, site: TrackingSite) -> str:
        if not site.pk:
            return "—"
        attempts = list(site.delivery_attempts.order_by("-created_at", "-pk")[:RECENT_ATTEMPTS])
        if not attempts:
            return gettext("none yet")
        unmasked = bool(getattr(site, UNMASKED, False))
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    local_time(attempt.created_at),
                    attempt.http_status or gettext("no answer"),
                    attempt.get_outcome_display(),
                    attempt.event_count,
                    attempt.duration_ms,
                    # Which customers a request carried is the events' business: no snapshot
                    # here, so anything that looks personal is masked.
                    visible_text(attempt.error, None, unmasked=unmasked, shared=True) or "—",
                )
                for attempt in attempts
            ),
        )
        header = format_html_join(
            "",
            "<th>{}</th>",
            (
                (label,)
                for label in (
                    gettext("time"),
                    gettext("HTTP status"),
                    gettext("outcome"),
                    gettext("events"),
                    gettext("ms"),
                    gettext("error"),
                )
            ),
        )
        return format_html(
            '<table class="conversions-attempts"><thead><tr>{}</tr></thead>'
            "<tbody>{}</tbody></table>",
            header,
            rows,
        )

    # --- buttons on the change form -----------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        opts = self.model._meta
        name = f"{opts.app_label}_{opts.model_name}"
        return [
            path(
                "<path:object_id>/send-test-event/",
                self.admin_site.admin_view(self.send_test_event_view),
                name=f"{name}_send_test_event",
            ),
            path(
                "<path:object_id>/resume/",
                self.admin_site.admin_view(self.resume_view),
                name=f"{name}_resume",
            ),
            *super().get_urls(),
        ]

    def _site_for_post(self, request: HttpRequest, object_id: str) -> TrackingSite:
        site = self.get_object(request, object_id)
        if site is None or not self.has_change_permission(request, site):
            raise PermissionDenied
        return site

    def send_test_event_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        site = self._site_for_post(request, object_id)
        self._send_test_event(request, site)
        return HttpResponseRedirect(self._change_url(site))

    def resume_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        site = self._site_for_post(request, object_id)
        self._resume(request, site)
        # Back to where the button was (the overview's notice), else to the site's page.
        back = request.POST.get("next", "")
        if not url_has_allowed_host_and_scheme(
            back, allowed_hosts={request.get_host()}, require_https=request.is_secure()
        ):
            back = self._change_url(site)
        return HttpResponseRedirect(back)

    def _change_url(self, site: TrackingSite) -> str:
        opts = self.model._meta
        return reverse(
            f"{self.admin_site.name}:{opts.app_label}_{opts.model_name}_change", args=[site.pk]
        )


def _count_of(**filters: Any) -> Coalesce:
    """The number of the listed site's events matching ``filters``, as an annotation."""
    events = ConversionEvent.objects.filter(site=OuterRef("pk"), **filters).order_by()
    counted = events.values("site").annotate(n=Count("pk")).values("n")
    return Coalesce(Subquery(counted), 0)
