"""Admin for API keys, on their own page and inline under their site.

A key is pasted once into a password input and never shown again: pages show only its mask
(last four characters), the form never renders the stored value, and leaving the field empty
on an existing key keeps it. Revoking a key deactivates it; the newest active key is used.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils.decorators import method_decorator
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables

from django_conversions.admin.display import time_field
from django_conversions.fields import looks_like_ciphertext
from django_conversions.models import ApiKey

KEY_PERMISSION = "django_conversions.change_apikey"
# What decides where a site's key is sent.
DESTINATION_FIELDS = ("provider", "endpoint_url")


class ApiKeyForm(forms.ModelForm):
    """Write-only key input: the stored plaintext never reaches the browser."""

    key = forms.CharField(
        label=_("API key"),
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
    )

    class Meta:
        model = ApiKey
        fields = ("label", "key", "is_active")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The decrypted value must not even sit in the form's initial data.
        self.initial.pop("key", None)
        if self.instance.pk:
            self.fields["key"].help_text = gettext(
                "Stored: %(mask)s. Leave empty to keep it, or paste a new key to replace it."
            ) % {"mask": self.instance.masked}
        else:
            self.fields["key"].help_text = gettext(
                "Paste the key once; afterwards only its last 4 characters are shown."
            )

    @sensitive_variables("value")
    def clean_key(self) -> Any:
        value = self.cleaned_data.get("key") or ""
        if value and looks_like_ciphertext(value):
            # A token from a dump would be stored as the key it encrypts: pasting one would
            # send a key its paster never saw to wherever the site points.
            raise ValidationError(
                gettext("This is an encrypted value, not an API key: paste the provider's key."),
                code="ciphertext",
            )
        if value:
            return value
        if self.instance.pk:
            return self.instance.key  # unchanged (may be an UnreadableSecret: kept as is)
        raise ValidationError(gettext("Paste the API key."), code="required")

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if cleaned.get("is_active"):
            self.instance.revoked_at = None  # re-activated
        return cleaned


class PostedKeysHidden:
    """What a key form posts (a pasted key) never appears in an error report: the mail to
    ADMINS, the DEBUG page."""

    @method_decorator(sensitive_post_parameters())
    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        return super().changeform_view(  # type: ignore[misc]
            request, object_id, form_url, extra_context
        )


def destination(provider: str, endpoint_url: str) -> tuple[str, str]:
    """Where a site's key goes: the provider and the endpoint's host and port (a path under
    the same host does not move the key anywhere new)."""
    return provider, urlsplit(endpoint_url).netloc.lower() if endpoint_url else ""


class KeysFollowDestination:
    """A site's keys go to its destination; moving the destination sends them elsewhere. So
    only staff who may change API keys may move it, and moving it revokes the keys stored for
    the old destination (a key pasted in the same save is the new destination's and stays)."""

    message_user: Any
    log_change: Any

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        fields = tuple(super().get_readonly_fields(request, obj))  # type: ignore[misc]
        if obj is not None and not request.user.has_perm(KEY_PERMISSION):
            fields += DESTINATION_FIELDS
        return fields

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)  # type: ignore[misc]
        if not change or not _moved(form):
            return
        pasted = {
            key_form.instance.pk
            for formset in formsets
            if formset.model is ApiKey
            for key_form in formset.forms
            if "key" in key_form.changed_data and key_form.instance.pk
        }
        stale = form.instance.api_keys.filter(is_active=True).exclude(pk__in=pasted)
        revoked = 0
        for api_key in stale:
            api_key.revoke()
            self.log_change(request, api_key, gettext("Revoked: the site's destination moved."))
            revoked += 1
        if revoked:
            self.message_user(
                request,
                gettext(
                    "The provider or the endpoint's host changed, so %(count)d stored API "
                    "key(s) were revoked: they were meant for the old destination. Paste the "
                    "key for the new one."
                )
                % {"count": revoked},
                messages.WARNING,
            )


def _moved(form: Any) -> bool:
    before = destination(form.initial.get("provider", ""), form.initial.get("endpoint_url", ""))
    after = destination(
        form.cleaned_data.get("provider", before[0]),
        form.cleaned_data.get("endpoint_url", form.initial.get("endpoint_url", "")),
    )
    return before != after


class KeyDisplayMixin:
    created = time_field(ApiKey, "created_at")
    last_used = time_field(ApiKey, "last_used_at")
    revoked = time_field(ApiKey, "revoked_at")

    @admin.display(description=_("stored key"))
    def masked_key(self, obj: ApiKey) -> str:
        return obj.masked if obj.pk else "—"

    @admin.display(description=_("in use"), boolean=True)
    def in_use(self, obj: ApiKey) -> bool | None:
        if not obj.pk:
            return None
        current = obj.site.current_key()
        return current is not None and current.pk == obj.pk


class ApiKeyInline(KeyDisplayMixin, admin.TabularInline):
    model = ApiKey
    form = ApiKeyForm
    extra = 1
    fields = (
        "label",
        "masked_key",
        "key",
        "is_active",
        "in_use",
        "created",
        "last_used",
        "revoked",
    )
    readonly_fields = ("masked_key", "in_use", "created", "last_used", "revoked")
    ordering = ("-created_at", "-pk")


@admin.register(ApiKey)
class ApiKeyAdmin(PostedKeysHidden, KeyDisplayMixin, admin.ModelAdmin):
    form = ApiKeyForm
    # No "active" column: an inactive key is a revoked one, and its revocation time says so.
    list_display = (
        "__str__",
        "site_name",
        "in_use",
        "created",
        "last_used",
        "revoked",
    )
    list_filter = ("is_active", "site")
    list_select_related = ("site",)
    search_fields = ("label", "site__name")
    fields = (
        "site",
        "label",
        "masked_key",
        "key",
        "is_active",
        "created",
        "last_used",
        "revoked",
    )
    readonly_fields = ("masked_key", "created", "last_used", "revoked")
    actions = ("revoke_keys",)

    @admin.display(description=_("site"), ordering="site__name")
    def site_name(self, obj: ApiKey) -> str:
        """The site's name, which may wrap (Django keeps a foreign key's column on one line)."""
        return obj.site.name

    @admin.action(description=_("Revoke selected API keys (deactivate)"), permissions=["change"])
    def revoke_keys(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        revoked = 0
        for api_key in queryset.filter(is_active=True):
            api_key.revoke()
            self.log_change(request, api_key, gettext("Revoked."))
            revoked += 1
        self.message_user(
            request,
            gettext("Revoked %(count)d API key(s); they will never be used again.")
            % {"count": revoked},
            messages.SUCCESS,
        )
