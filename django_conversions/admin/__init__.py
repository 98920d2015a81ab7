"""Django admin for django-conversions: sites and keys, events and attempts, the overview.

Importing this package registers the model admins on the default admin site.
"""

from __future__ import annotations

from django_conversions.admin.attempts import DeliveryAttemptInline
from django_conversions.admin.events import ConversionEventAdmin
from django_conversions.admin.keys import ApiKeyAdmin, ApiKeyInline
from django_conversions.admin.sites import TrackingSiteAdmin

__all__ = [
    "ApiKeyAdmin",
    "ApiKeyInline",
    "ConversionEventAdmin",
    "DeliveryAttemptInline",
    "TrackingSiteAdmin",
]
