"""The event page's delivery attempts: one row per request that carried the event.

Each row is an ``EventResult`` with its ``DeliveryAttempt``: the request as a whole and this
event's own outcome in it. Texts are masked for readers without ``view_personal_data`` by the
rules of ``attempt_masking`` (a shared batch body never shows other customers' data).
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import BooleanField, QuerySet, Value
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.text import Truncator
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from django_conversions.admin.display import UNMASKED, is_unmasked, local_time
from django_conversions.attempt_masking import visible_body, visible_text
from django_conversions.masking import can_see_personal_data
from django_conversions.models import EventResult

BODY_DISPLAY_LIMIT = 500


class DeliveryAttemptInline(admin.TabularInline):
    """The event's part in every request that carried it, newest first: the request (time,
    URL, status, how many events it carried, what was sent and answered) and this event's own
    outcome and provider message. Stored request headers hold only masked keys."""

    model = EventResult
    fk_name = "event"
    extra = 0
    can_delete = False
    ordering = ("-attempt__created_at", "-pk")
    # A row of short columns per attempt, and under it, across the table's width, the
    # exchange itself: bodies and headers too wide for a column of their own.
    template = "admin/django_conversions/edit_inline/attempts.html"
    summary_fields = (
        "time",
        "http_status",
        "outcome",
        "message_display",
        "error_display",
        "event_count",
        "duration",
    )
    exchange_fields = (
        "url",
        "request_body_display",
        "response_body_display",
        "headers_display",
    )
    fields = summary_fields + exchange_fields
    readonly_fields = fields
    verbose_name = _("delivery attempt")
    verbose_name_plural = _("delivery attempts (newest first)")

    def get_queryset(self, request: HttpRequest) -> QuerySet[EventResult]:
        unmasked = Value(can_see_personal_data(request), output_field=BooleanField())
        # The event's snapshot tells which customer values to mask in bodies and errors.
        queryset = super().get_queryset(request).select_related("attempt", "event")
        return queryset.annotate(**{UNMASKED: unmasked})

    # Attempts are part of the event's record: whoever may see the event sees them.
    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        user = request.user
        return user.has_perm("django_conversions.view_conversionevent") or user.has_perm(
            "django_conversions.change_conversionevent"
        )

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description=_("time"))
    def time(self, result: EventResult) -> str:
        return local_time(result.attempt.created_at)

    @admin.display(description=_("duration (ms)"))
    def duration(self, result: EventResult) -> int:
        return result.attempt.duration_ms

    @admin.display(description=_("URL"))
    def url(self, result: EventResult) -> str:
        return result.attempt.url or "—"

    @admin.display(description=_("HTTP status"))
    def http_status(self, result: EventResult) -> Any:
        return result.attempt.http_status or _("no answer")

    @admin.display(description=_("events in request"))
    def event_count(self, result: EventResult) -> int:
        return result.attempt.event_count

    @admin.display(description=_("provider message"))
    def message_display(self, result: EventResult) -> str:
        return _attempt_text(result, result.message) or "—"

    @admin.display(description=_("error"))
    def error_display(self, result: EventResult) -> str:
        return _attempt_text(result, result.attempt.error) or "—"

    @admin.display(description=_("request body"))
    def request_body_display(self, result: EventResult) -> str:
        return _pre(_attempt_body(result, result.attempt.request_body))

    @admin.display(description=_("response body"))
    def response_body_display(self, result: EventResult) -> str:
        return _pre(_attempt_body(result, result.attempt.response_body))

    @admin.display(description=_("headers"))
    def headers_display(self, result: EventResult) -> str:
        attempt = result.attempt
        sections = [
            (gettext("request"), attempt.request_headers),
            (gettext("response"), attempt.response_headers),
        ]
        text = "\n\n".join(
            f"{title}:\n" + "\n".join(f"{name}: {value}" for name, value in headers.items())
            for title, headers in sections
            if headers
        )
        return _pre(text)


def _attempt_text(result: EventResult, text: str) -> str:
    return visible_text(
        text,
        result.event.snapshot,
        unmasked=is_unmasked(result),
        shared=result.attempt.event_count > 1,
    )


def _attempt_body(result: EventResult, text: str) -> str:
    shown = visible_body(
        text,
        result.event.snapshot,
        event_id=result.event.event_id,
        unmasked=is_unmasked(result),
        shared=result.attempt.event_count > 1,
    )
    return Truncator(shown).chars(BODY_DISPLAY_LIMIT)


def _pre(text: str) -> str:
    if not text:
        return "—"
    return format_html('<pre class="conversions-pre conversions-pre-wide">{}</pre>', text)
