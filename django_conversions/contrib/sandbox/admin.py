"""The sandbox in the Django admin: accounts and keys (masked), the fault switches, and what
was received. Requests and events are read-only: they are the provider's record."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _

from django_conversions.admin.display import ADMIN_CSS, time_field
from django_conversions.contrib.sandbox.models import (
    SandboxEvent,
    SandboxFault,
    SandboxKey,
    SandboxRequest,
    SandboxSite,
)

# The app's admin styles (times to the second), and the sandbox's lists fitted beside the
# navigation sidebar.
SANDBOX_CSS = {"all": (*ADMIN_CSS["all"], "django_conversions/sandbox.css")}


class ReadOnlyAdmin(admin.ModelAdmin):
    class Media:
        css = SANDBOX_CSS

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class SandboxKeyInline(admin.TabularInline):
    model = SandboxKey
    fields = ("masked", "is_revoked", "created")
    readonly_fields = ("masked", "created")
    created = time_field(SandboxKey, "created_at")
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # keys come from `manage.py conversions_sandbox_setup`

    @admin.display(description=_("key"))
    def masked(self, obj: SandboxKey) -> str:
        return obj.masked


@admin.register(SandboxSite)
class SandboxSiteAdmin(admin.ModelAdmin):
    list_display = ("__str__", "provider", "site_id", "is_active", "created")
    list_filter = ("provider", "is_active")
    inlines = (SandboxKeyInline,)
    created = time_field(SandboxSite, "created_at")

    class Media:
        css = SANDBOX_CSS


@admin.register(SandboxFault)
class SandboxFaultAdmin(admin.ModelAdmin):
    list_display = ("provider", "mode", "status_code", "retry_after", "delay", "remaining")
    list_editable = ("mode", "status_code", "retry_after", "delay", "remaining")
    list_display_links = ("provider",)

    class Media:
        css = SANDBOX_CSS


@admin.register(SandboxRequest)
class SandboxRequestAdmin(ReadOnlyAdmin):
    list_display = ("received", "provider", "method", "path", "status_code", "fault", "events")
    list_filter = ("provider", "status_code", "fault")
    received = time_field(SandboxRequest, "received_at")
    search_fields = ("body", "path")
    date_hierarchy = "received_at"

    @admin.display(description=_("events"))
    def events(self, obj: SandboxRequest) -> int:
        return len(obj.event_ids)


@admin.register(SandboxEvent)
class SandboxEventAdmin(ReadOnlyAdmin):
    list_display = (
        "received",
        "site",  # which names its provider
        "event_name",
        "order_id",
        "event_id",
        "times_received",
    )
    list_filter = ("provider", "site")
    search_fields = ("order_id", "event_id")
    received = time_field(SandboxEvent, "received_at")
