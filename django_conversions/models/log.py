"""The delivery log: ``DeliveryAttempt`` (one HTTP exchange) with an ``EventResult`` per event
it carried."""

from __future__ import annotations

from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from django_conversions.models.events import ConversionEvent
from django_conversions.models.sites import TrackingSite
from django_conversions.outcomes import Outcome


class DeliveryAttempt(models.Model):
    """One HTTP exchange with a provider: the request as sent (key masked) and what came back.

    A batch request carrying 100 events is one attempt; each event's own outcome in it is an
    ``EventResult`` row.
    """

    site = models.ForeignKey(
        TrackingSite,
        on_delete=models.CASCADE,
        related_name="delivery_attempts",
        verbose_name=_("site"),
    )
    created_at = models.DateTimeField(_("time"), default=timezone.now, db_index=True)
    duration_ms = models.PositiveIntegerField(_("duration (ms)"), default=0)
    url = models.CharField(_("URL"), max_length=500, blank=True)
    http_status = models.PositiveSmallIntegerField(_("HTTP status"), null=True, blank=True)
    request_headers = models.JSONField(_("request headers"), default=dict, blank=True)
    request_body = models.TextField(_("request body"), blank=True)
    response_headers = models.JSONField(_("response headers"), default=dict, blank=True)
    response_body = models.TextField(_("response body"), blank=True)
    error = models.TextField(_("error"), blank=True)
    #: What the answer meant for the request as a whole (events may differ: see EventResult).
    outcome = models.CharField(_("outcome"), max_length=16, choices=Outcome.choices)
    event_count = models.PositiveIntegerField(_("events in request"), default=1)

    class Meta:
        verbose_name = _("delivery attempt")
        verbose_name_plural = _("delivery attempts")
        ordering = ("-created_at", "-pk")

    def __str__(self) -> str:
        status = self.http_status or "no answer"
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {status} {self.get_outcome_display()}"


class EventResult(models.Model):
    """One event's part in a DeliveryAttempt: its own outcome and the provider's message."""

    attempt = models.ForeignKey(
        DeliveryAttempt,
        on_delete=models.CASCADE,
        related_name="results",
        verbose_name=_("attempt"),
    )
    event = models.ForeignKey(
        ConversionEvent,
        on_delete=models.CASCADE,
        related_name="results",
        verbose_name=_("event"),
    )
    outcome = models.CharField(_("outcome"), max_length=16, choices=Outcome.choices)
    #: The provider's word on this event; blank when it is the attempt's (a plain acceptance).
    message = models.TextField(_("message"), blank=True)

    class Meta:
        verbose_name = _("event result")
        verbose_name_plural = _("event results")
        ordering = ("-attempt__created_at", "-pk")

    def __str__(self) -> str:
        return f"{self.event_id} in attempt {self.attempt_id}: {self.get_outcome_display()}"
