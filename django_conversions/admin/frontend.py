"""The tracking site's product feed and front-end script, as a small block of its change form
(docs/feed.md, docs/frontend.md)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.utils.html import format_html
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from django_conversions.feed import configured_base_url
from django_conversions.feed_views import feed_path, takes_feed
from django_conversions.models import TrackingSite
from django_conversions.products import listed_product_model

# A fieldset entry of TrackingSiteAdmin.fieldsets.
FEED_AND_SCRIPT_FIELDSET: Any = (
    _("Product feed and front-end script"),
    {
        "fields": ("feed_token", "feed_url", "script_url", "script_account_id", "script_snippet"),
        "description": _(
            "The feed the provider reads your products from, and the script your pages load "
            "when the visitor's consent allows it: {% load conversions %}{% conversions_scripts %}."
        ),
    },
)


class FeedAndScriptMixin:
    """Adds the read-only feed URL; the fieldset above lists it with the editable fields."""

    @admin.display(description=_("product feed URL"))
    def feed_url(self, site: TrackingSite) -> str:
        if site.pk is None:
            return gettext("shown once the site is saved")
        if not takes_feed(site):
            return gettext("this provider reads no product feed")
        if listed_product_model() is None:
            return gettext("set CONVERSIONS['PRODUCT_MODEL'] to your product model")
        xml, csv = feed_path(site, "xml"), feed_path(site, "csv")
        if xml is None or csv is None:
            return gettext('include path("conversions/", include("django_conversions.urls"))')
        base = (configured_base_url() or "/").rstrip("/")
        return format_html('<a href="{}">{}</a> · <a href="{}">CSV</a>', xml, base + xml, csv)

    def formfield_for_dbfield(self, db_field: Any, request: Any, **kwargs: Any) -> Any:
        if db_field.name == "script_url":
            kwargs["assume_scheme"] = "https"
        return super().formfield_for_dbfield(db_field, request, **kwargs)  # type: ignore[misc]
