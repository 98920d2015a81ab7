"""The outbox: ``ConversionEvent``, one conversion for one site, and its delivery state."""

from __future__ import annotations

import os
import time
import uuid
from datetime import datetime

from django.contrib.contenttypes.fields import GenericForeignKey
from django.contrib.contenttypes.models import ContentType
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from django_conversions.models.sites import TrackingSite


class EventStatus(models.TextChoices):
    PENDING = "pending", _("pending")
    SENDING = "sending", _("sending")
    DELIVERED = "delivered", _("delivered")
    FAILED = "failed", _("failed")
    SKIPPED = "skipped", _("skipped")


def new_event_id() -> uuid.UUID:
    """A time-ordered UUID (RFC 9562 version 7) for a new event.

    Providers only need a unique id; a time-ordered one lands at the end of the event_id
    index instead of on a random page of it, so a checkout writes fewer pages.
    """
    milliseconds = time.time_ns() // 1_000_000
    value = (milliseconds & (1 << 48) - 1) << 80 | int.from_bytes(os.urandom(10), "big")
    value = value & ~(0xF << 76) | 0x7 << 76  # version 7
    value = value & ~(0x3 << 62) | 0x2 << 62  # RFC variant
    return uuid.UUID(int=value)


class ConversionEventQuerySet(models.QuerySet["ConversionEvent"]):
    def held(self, now: datetime | None = None) -> ConversionEventQuerySet:
        """Events a worker holds right now (its lease has not run out)."""
        return self.filter(held_q(now or timezone.now()))

    def resendable(self, now: datetime | None = None) -> ConversionEventQuerySet:
        """Events that may be sent again on request: never a delivered one (the provider
        counted it), never one a worker is sending right now."""
        return self.exclude(status=EventStatus.DELIVERED).exclude(held_q(now or timezone.now()))


def held_q(now: datetime) -> models.Q:
    """The one rule for "a worker is holding this event": claimed, and its lease still runs."""
    return models.Q(status=EventStatus.SENDING, lease_expires_at__gt=now)


class ConversionEvent(models.Model):
    """One conversion for one site: the outbox row and its delivery state."""

    site = models.ForeignKey(
        TrackingSite,
        on_delete=models.CASCADE,
        related_name="events",
        verbose_name=_("site"),
        db_index=False,  # the dedup constraint and the due index both lead with the site
    )
    event_id = models.UUIDField(_("event id"), default=new_event_id, unique=True, editable=False)
    event_name = models.CharField(_("event name"), max_length=64)
    dedup_key = models.CharField(_("dedup key"), max_length=255)
    # Indexed in Meta: a plain B-tree for the exact lookups (the API's order filter), without
    # the second, pattern-matching index ``db_index`` adds on PostgreSQL that nothing reads.
    order_reference = models.CharField(_("order"), max_length=128, blank=True)
    status = models.CharField(
        _("status"), max_length=16, choices=EventStatus.choices, default=EventStatus.PENDING
    )
    attempts = models.PositiveIntegerField(_("attempts"), default=0)
    next_attempt_at = models.DateTimeField(_("next attempt"), default=timezone.now)
    last_error = models.TextField(_("reason"), blank=True)
    snapshot = models.JSONField(_("conversion"), default=dict, blank=True)
    source_content_type = models.ForeignKey(
        ContentType,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        db_index=False,
    )
    source_object_id = models.CharField(max_length=64, blank=True)
    source = GenericForeignKey("source_content_type", "source_object_id")
    created_at = models.DateTimeField(_("created"), default=timezone.now, db_index=True)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)
    delivered_at = models.DateTimeField(_("delivered"), null=True, blank=True)
    # Claim bookkeeping: which worker took the event and until when it may keep it.
    claim_token = models.UUIDField(null=True, blank=True, editable=False)
    lease_expires_at = models.DateTimeField(null=True, blank=True, editable=False)
    # The order may still change in the transaction that wrote the event (lines saved after
    # the order): the snapshot is rebuilt from the order once that commits, or by the worker
    # before sending if the process died first (django_conversions.refresh).
    rebuild_before_send = models.BooleanField(default=False, editable=False)

    objects = ConversionEventQuerySet.as_manager()

    class Meta:
        verbose_name = _("conversion event")
        verbose_name_plural = _("conversion events")
        ordering = ("-created_at", "-pk")
        constraints = [
            models.UniqueConstraint(fields=("site", "dedup_key"), name="conversions_event_dedup")
        ]
        indexes = [
            # A claim reads one sendable site's due events in order: bounded by the claim's
            # size whatever other sites (paused, held) or equal due times hold. Only pending
            # events are in it: a delivered event, most of the table, costs it nothing.
            models.Index(
                fields=("site", "next_attempt_at", "id"),
                name="conversions_event_due",
                condition=models.Q(status=EventStatus.PENDING),
            ),
            # Failed events per site (the admin's counts, health): few, and only those.
            models.Index(
                fields=("site", "created_at"),
                name="conversions_event_failed",
                condition=models.Q(status=EventStatus.FAILED),
            ),
            # Events still to be rebuilt from their committed order (the sweep's refresh):
            # few, and each only until delivery has rebuilt it.
            models.Index(
                fields=("source_content_type", "source_object_id"),
                name="conversions_event_rebuild",
                condition=models.Q(rebuild_before_send=True),
            ),
            # Expired leases (a crashed worker's events): few rows are ever "sending", and only
            # those are in this index, so the other status changes don't write to it.
            models.Index(
                fields=("status", "lease_expires_at"),
                name="conversions_event_lease",
                condition=models.Q(status=EventStatus.SENDING),
            ),
            models.Index(fields=("order_reference",), name="conversions_event_order"),
            # The order an event came from: reconciliation, the admin, forget.
            models.Index(
                fields=("source_content_type", "source_object_id"), name="conversions_event_source"
            ),
        ]
        permissions = [("view_personal_data", "Can see customers' personal data unmasked")]

    def __str__(self) -> str:
        return f"{self.event_name} {self.order_reference or self.event_id} → {self.site.name}"

    @property
    def is_retrying(self) -> bool:
        return self.status == EventStatus.PENDING and self.attempts > 0

    def is_held(self, now: datetime | None = None) -> bool:
        """See ``held_q``: a worker holds the event until its lease runs out."""
        now = now or timezone.now()
        return (
            self.status == EventStatus.SENDING
            and self.lease_expires_at is not None
            and self.lease_expires_at > now
        )

    def is_resendable(self, now: datetime | None = None) -> bool:
        """See ``ConversionEventQuerySet.resendable``."""
        return self.status != EventStatus.DELIVERED and not self.is_held(now)
