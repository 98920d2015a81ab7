"""Where conversions go: ``TrackingSite`` (one account at one provider) and its ``ApiKey``s."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone
from django.utils.module_loading import import_string
from django.utils.translation import gettext_lazy as _

from django_conversions.conversion import normalize_event_name
from django_conversions.endpoints import literal_problem
from django_conversions.fields import EncryptedTextField, mask_secret
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
