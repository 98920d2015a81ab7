"""Django admin for django-conversions: sites and keys, events and attempts, the overview.

Importing this package registers the model admins on the default admin site.
"""

from __future__ import annotations

from django_conversions.admin.events import ConversionEventAdmin, DeliveryAttemptInline
from django_conversions.admin.sites import ApiKeyAdmin, ApiKeyInline, TrackingSiteAdmin

__all__ = [
    "ApiKeyAdmin",
    "ApiKeyInline",
    "ConversionEventAdmin",
    "DeliveryAttemptInline",
    "TrackingSiteAdmin",
]
