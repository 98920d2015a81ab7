"""The outbox and its configuration: TrackingSite, ApiKey, ConversionEvent, and the delivery
log: DeliveryAttempt (one HTTP exchange) with an EventResult per event it carried."""

from __future__ import annotations

import os
import time
import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.contrib.contenttypes.fields import GenericForeignKey
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone
from django.utils.module_loading import import_string
from django.utils.translation import gettext_lazy as _

from django_conversions.conversion import normalize_event_name
from django_conversions.endpoints import literal_problem
from django_conversions.fields import EncryptedTextField, mask_secret
from django_conversions.outcomes import Outcome
from django_conversions.scripts import script_url_problem

if TYPE_CHECKING:
    from django_conversions.providers.base import Provider

# The models import no provider code: the providers (their registry, HTTP layer and wire
# formats) sit above the models and are reached by dotted path, the way Django itself names
# pluggable parts, only when a site's provider or the list of providers is asked for.
PROVIDER_FOR_SITE = "django_conversions.providers.for_site"
PROVIDER_CHOICES = "django_conversions.providers.provider_choices"


# The feed token is a path segment of the feed's URL: URL-safe characters only.
FEED_TOKEN_VALIDATOR = RegexValidator(
    r"^[A-Za-z0-9_-]+$",
    _("Letters, digits, '-' and '_' only, e.g. from secrets.token_urlsafe()."),
)


def provider_choices() -> list[tuple[str, str]]:
    """``TrackingSite.provider``'s choices, read when a form or a check asks (Django calls a
    callable ``choices``): the registry knows the providers configured in the settings."""
    choices: list[tuple[str, str]] = import_string(PROVIDER_CHOICES)()
    return choices


class TrackingSiteQuerySet(models.QuerySet["TrackingSite"]):
    def sendable(self, now: datetime | None = None) -> TrackingSiteQuerySet:
        """The one rule for "may be sent to now": active, not paused, not held back."""
        now = now or timezone.now()
        return self.filter(is_active=True, paused_at__isnull=True).filter(
            models.Q(held_until__isnull=True) | models.Q(held_until__lte=now)
        )


class TrackingSite(models.Model):
    """A destination: one site (account) at one provider, with its API keys."""

    name = models.CharField(_("name"), max_length=100)
    provider = models.CharField(_("provider"), max_length=50, choices=provider_choices)
    provider_site_id = models.CharField(
        _("provider site id"),
        max_length=64,
        blank=True,
        help_text=_("The site's id at the provider (Scanova: site_id). Blank if it has none."),
    )
    endpoint_url = models.URLField(
        _("endpoint base URL"),
        blank=True,
        help_text=_(
            "Blank for the provider's documented URL. Otherwise a base URL (scheme, host, "
            "optional port and path prefix) to which the provider's paths are appended."
        ),
    )
    event_names = models.CharField(
        _("event names"),
        max_length=500,
        blank=True,
        help_text=_("Comma-separated event names this site receives; blank for every event."),
    )
    is_active = models.BooleanField(_("active"), default=True)
    paused_at = models.DateTimeField(_("paused at"), null=True, blank=True)
    paused_reason = models.CharField(_("paused because"), max_length=500, blank=True)
    # A provider asked us to slow down (429): nothing is sent to this site before this time.
    held_until = models.DateTimeField(_("held until"), null=True, blank=True, editable=False)
    # Fixed one-minute window counter shared by all workers, for the provider's rate limit.
    rate_window_start = models.DateTimeField(null=True, blank=True, editable=False)
    rate_window_count = models.PositiveIntegerField(default=0, editable=False)
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)
    # The provider's other integration steps (docs/feed.md, docs/frontend.md): the product
    # feed's URL token, and the front-end script rendered by {% conversions_scripts %}.
    feed_token = models.CharField(
        _("product feed token"),
        max_length=100,
        blank=True,
        validators=[FEED_TOKEN_VALIDATOR],
        help_text=_(
            "A secret part of the product feed's URL; blank: the feed URL has none. "
            "Give the provider the feed URL shown below."
        ),
    )
    script_url = models.URLField(
        _("front-end script URL"),
        max_length=500,
        blank=True,
        help_text=_("The provider's tracking script, loaded on the shop's pages (https)."),
    )
    script_account_id = models.CharField(
        _("front-end account id"),
        max_length=100,
        blank=True,
        help_text=_("Your account id at the provider, as its script expects it."),
    )
    script_snippet = models.TextField(
        _("front-end snippet"),
        blank=True,
        help_text=_(
            "JavaScript run on the shop's pages after the script, as the provider's "
            "instructions give it. $account_id and $order_id are replaced (as JSON values)."
        ),
    )

    objects = TrackingSiteQuerySet.as_manager()

    class Meta:
        verbose_name = _("tracking site")
        verbose_name_plural = _("tracking sites")
        ordering = ("name", "pk")

    def __str__(self) -> str:
        return f"{self.name} ({self.provider})"

    @property
    def is_paused(self) -> bool:
        return self.paused_at is not None

    def accepts(self, event_name: str) -> bool:
        names = self.event_name_list()
        return not names or event_name in names

    def event_name_list(self) -> list[str]:
        return [normalize_event_name(n) for n in self.event_names.split(",") if n.strip()]

    def provider_instance(self) -> Provider:
        """A provider set up for this site (``django_conversions.providers.for_site``)."""
        provider: Provider = import_string(PROVIDER_FOR_SITE)(self)
        return provider

    def endpoint_problem(self) -> str | None:
        """Why the endpoint URL may not be used as written (scheme, literal host), or None."""
        return literal_problem(self.endpoint_url)

    def clean(self) -> None:
        problem = self.endpoint_problem()
        if problem:
            raise ValidationError({"endpoint_url": problem})
        problem = script_url_problem(self.script_url)
        if problem:
            raise ValidationError({"script_url": problem})

    def current_key(self) -> ApiKey | None:
        """The newest active key: adding a key is how a key is rotated."""
        return self.api_keys.filter(is_active=True).order_by("-created_at", "-pk").first()

    def pause(self, reason: str) -> None:
        self.paused_at = timezone.now()
        self.paused_reason = reason[:500]
        TrackingSite.objects.filter(pk=self.pk).update(
            paused_at=self.paused_at, paused_reason=self.paused_reason
        )

    def resume(self) -> None:
        self.paused_at = None
        self.paused_reason = ""
        self.held_until = None
        TrackingSite.objects.filter(pk=self.pk).update(
            paused_at=None, paused_reason="", held_until=None
        )


class ApiKey(models.Model):
    """A provider API key. Only ciphertext is stored; the admin shows the last 4 characters."""

    site = models.ForeignKey(
        TrackingSite, on_delete=models.CASCADE, related_name="api_keys", verbose_name=_("site")
    )
    label = models.CharField(_("label"), max_length=100, blank=True)
    key = EncryptedTextField(_("API key"))
    is_active = models.BooleanField(_("active"), default=True)
    created_at = models.DateTimeField(_("created"), default=timezone.now)
    revoked_at = models.DateTimeField(_("revoked at"), null=True, blank=True)
    last_used_at = models.DateTimeField(_("last used"), null=True, blank=True)

    class Meta:
        verbose_name = _("API key")
        verbose_name_plural = _("API keys")
        ordering = ("-created_at", "-pk")

    def __str__(self) -> str:
        return f"{self.label or 'API key'} {self.masked}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self.is_active and self.revoked_at is None:
            self.revoked_at = timezone.now()
        super().save(*args, **kwargs)
        # A new working key is the fix for a paused site: resume it.
        if self.is_active and self.is_readable and self.site.is_paused:
            self.site.resume()

    @property
    def masked(self) -> str:
        return mask_secret(self.key)

    @property
    def is_readable(self) -> bool:
        return isinstance(self.key, str) and bool(self.key)

    def revoke(self) -> None:
        self.is_active = False
        self.revoked_at = timezone.now()
        self.save(update_fields=["is_active", "revoked_at"])


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


class OrderAttributionQuerySet(models.QuerySet["OrderAttribution"]):
    def for_order(self, order: models.Model) -> OrderAttributionQuerySet:
        """The attribution of this order (at most one row)."""
        if order.pk is None:
            return self.none()
        types = ContentType.objects.db_manager(self.db)
        return self.filter(
            order_content_type=types.get_for_model(order, for_concrete_model=False),
            order_object_id=str(order.pk),
        )


class OrderAttribution(models.Model):
    """The visit an order came from: the scan session id and the tracking consent the
    visitor's session held when the order was created (``django_conversions.attribution``).

    Linked to the order generically, like ``ConversionEvent.source``, so any order model works
    without a field of ours on it. The default adapter reads it when the order itself carries
    neither value.
    """

    order_content_type = models.ForeignKey(
        ContentType, on_delete=models.CASCADE, related_name="+", verbose_name=_("order type")
    )
    order_object_id = models.CharField(_("order id"), max_length=64)
    order = GenericForeignKey("order_content_type", "order_object_id")
    scan_session_id = models.CharField(_("scan session id"), max_length=36, blank=True)
    consent = models.CharField(_("consent"), max_length=16, blank=True)
    created_at = models.DateTimeField(_("created"), default=timezone.now, db_index=True)

    objects = OrderAttributionQuerySet.as_manager()

    class Meta:
        verbose_name = _("order attribution")
        verbose_name_plural = _("order attributions")
        constraints = [
            models.UniqueConstraint(
                fields=("order_content_type", "order_object_id"),
                name="conversions_attribution_order",
            )
        ]

    def __str__(self) -> str:
        return f"order {self.order_object_id}: scan {self.scan_session_id or '-'}"
