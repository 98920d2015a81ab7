"""The app's models, one module per part of the flow:

- ``sites``: where conversions go, ``TrackingSite`` and its ``ApiKey``s;
- ``events``: the outbox, ``ConversionEvent``;
- ``log``: the delivery log, ``DeliveryAttempt`` (one HTTP exchange) with an ``EventResult``
  per event it carried;
- ``attribution``: ``OrderAttribution``, the visit an order came from.
"""

from django_conversions.models.attribution import OrderAttribution, OrderAttributionQuerySet
from django_conversions.models.events import (
    ConversionEvent,
    ConversionEventQuerySet,
    EventStatus,
    held_q,
    new_event_id,
)
from django_conversions.models.log import DeliveryAttempt, EventResult
from django_conversions.models.sites import (
    FEED_TOKEN_VALIDATOR,
    PROVIDER_CHOICES,
    PROVIDER_FOR_SITE,
    ApiKey,
    TrackingSite,
    TrackingSiteQuerySet,
    provider_choices,
)

__all__ = [
    "FEED_TOKEN_VALIDATOR",
    "PROVIDER_CHOICES",
    "PROVIDER_FOR_SITE",
    "ApiKey",
    "ConversionEvent",
    "ConversionEventQuerySet",
    "DeliveryAttempt",
    "EventResult",
    "EventStatus",
    "OrderAttribution",
    "OrderAttributionQuerySet",
    "TrackingSite",
    "TrackingSiteQuerySet",
    "held_q",
    "new_event_id",
    "provider_choices",
]
