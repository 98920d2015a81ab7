"""The sandbox's state, in the database so that every server process shares it.

``SandboxSite`` and ``SandboxKey`` are the accounts the emulated providers know;
``SandboxFault`` is the switch board (one row per provider); ``SandboxRequest`` records every
request received and ``SandboxEvent`` every event accepted (once per event_id).
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from django_conversions.fields import mask_secret


class Provider(models.TextChoices):
    SCANOVA = "scanova", "Scanova"
    VTMARKETING = "vtmarketing", "VTmarketing"


class SandboxSite(models.Model):
    """A provider account: a Scanova tracking site (``site_id``) or a VTmarketing account."""

    provider = models.CharField(_("provider"), max_length=20, choices=Provider.choices)
    site_id = models.CharField(
        _("site id"),
        max_length=64,
        blank=True,
        help_text=_("Scanova's site_id; blank for VTmarketing, whose key names the account."),
    )
    name = models.CharField(_("name"), max_length=100, blank=True)
    is_active = models.BooleanField(
        _("active"),
        default=True,
        help_text=_("Scanova answers 400 'site_id not found or inactive' for inactive sites."),
    )
    created_at = models.DateTimeField(_("created"), default=timezone.now)

    class Meta:
        verbose_name = _("sandbox site")
        verbose_name_plural = _("sandbox sites")
        ordering = ("provider", "site_id", "pk")
        constraints = [
            models.UniqueConstraint(
                fields=("provider", "site_id"), name="conversions_sandbox_site_unique"
            )
        ]

    def __str__(self) -> str:
        label = self.name or self.site_id or "account"
        return f"{self.get_provider_display()}: {label}"


class SandboxKey(models.Model):
    """An API key the sandbox accepts for one site. Sandbox keys are test values, kept as is."""

    site = models.ForeignKey(
        SandboxSite, on_delete=models.CASCADE, related_name="keys", verbose_name=_("site")
    )
    key = models.CharField(_("key"), max_length=128, unique=True)
    is_revoked = models.BooleanField(
        _("revoked"), default=False, help_text=_("A revoked key is answered 403.")
    )
    created_at = models.DateTimeField(_("created"), default=timezone.now)

    class Meta:
        verbose_name = _("sandbox API key")
        verbose_name_plural = _("sandbox API keys")
        ordering = ("-created_at", "-pk")

    def __str__(self) -> str:
        return self.masked

    @property
    def masked(self) -> str:
        return mask_secret(self.key)


class FaultMode(models.TextChoices):
    OFF = "off", _("off: answer normally")
    SERVER_ERROR = "server_error", _("server error (5xx)")
    RATE_LIMIT = "rate_limit", _("rate limited (429 with Retry-After)")
    SLOW = "slow", _("slow answers")
    REVOKED_KEY = "revoked_key", _("every key revoked (403)")
    REJECT = "reject", _("reject the event (4xx)")


class SandboxFault(models.Model):
    """What the provider does wrong right now. One row per provider; ``off`` = behave."""

    provider = models.CharField(_("provider"), max_length=20, choices=Provider.choices, unique=True)
    mode = models.CharField(
        _("fault"), max_length=20, choices=FaultMode.choices, default=FaultMode.OFF
    )
    status_code = models.PositiveSmallIntegerField(
        _("status code"),
        default=503,
        help_text=_("Answered by 'server error' (500-599) and 'reject' (400-499)."),
    )
    retry_after = models.PositiveIntegerField(
        _("Retry-After (s)"), default=30, help_text=_("Sent with 'rate limited'.")
    )
    delay = models.FloatField(
        _("delay (s)"), default=2.0, help_text=_("How long 'slow answers' waits before answering.")
    )
    remaining = models.PositiveIntegerField(
        _("requests left"),
        null=True,
        blank=True,
        help_text=_("The fault ends after this many requests; blank: until switched off."),
    )
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("sandbox fault")
        verbose_name_plural = _("sandbox faults")
        ordering = ("provider",)

    def __str__(self) -> str:
        return f"{self.get_provider_display()}: {self.get_mode_display()}"


class SandboxRequest(models.Model):
    """One request as the sandbox received and answered it (API keys masked)."""

    provider = models.CharField(_("provider"), max_length=20, choices=Provider.choices)
    received_at = models.DateTimeField(_("received"), default=timezone.now, db_index=True)
    method = models.CharField(_("method"), max_length=10)
    path = models.CharField(_("path"), max_length=300)
    headers = models.JSONField(_("headers"), default=dict, blank=True)
    body = models.TextField(_("body"), blank=True)
    site = models.ForeignKey(
        SandboxSite, on_delete=models.SET_NULL, null=True, blank=True, related_name="requests"
    )
    api_key = models.ForeignKey(
        SandboxKey, on_delete=models.SET_NULL, null=True, blank=True, related_name="requests"
    )
    event_ids = models.JSONField(
        _("event ids"), default=list, blank=True, help_text=_("The event_id of each event sent.")
    )
    status_code = models.PositiveSmallIntegerField(_("status"))
    response_body = models.TextField(_("response"), blank=True)
    fault = models.CharField(_("fault applied"), max_length=20, blank=True)

    class Meta:
        verbose_name = _("sandbox request")
        verbose_name_plural = _("sandbox requests")
        ordering = ("-received_at", "-pk")
        indexes = [models.Index(fields=("api_key", "received_at"), name="conversions_sandbox_rate")]

    def __str__(self) -> str:
        return f"{self.method} {self.path} → {self.status_code}"


class SandboxEvent(models.Model):
    """An event the provider accepted. A resent Scanova event_id only bumps ``times_received``."""

    provider = models.CharField(_("provider"), max_length=20, choices=Provider.choices)
    site = models.ForeignKey(
        SandboxSite, on_delete=models.CASCADE, related_name="events", verbose_name=_("site")
    )
    event_id = models.UUIDField(_("event id"), null=True, blank=True)
    event_name = models.CharField(_("event name"), max_length=64)
    order_id = models.CharField(_("order id"), max_length=200, blank=True, db_index=True)
    payload = models.JSONField(_("payload"), default=dict)
    received_at = models.DateTimeField(_("received"), default=timezone.now)
    times_received = models.PositiveIntegerField(
        _("times received"), default=1, help_text=_("Counted once; repeats are de-duplicated.")
    )

    class Meta:
        verbose_name = _("sandbox event")
        verbose_name_plural = _("sandbox events")
        ordering = ("-received_at", "-pk")
        constraints = [
            models.UniqueConstraint(
                fields=("site", "event_id"), name="conversions_sandbox_event_once"
            )
        ]

    def __str__(self) -> str:
        return f"{self.event_name} {self.order_id or self.event_id or ''}".strip()
