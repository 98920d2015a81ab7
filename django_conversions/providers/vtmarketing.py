"""VTmarketing standard events API: order confirmation events.

Wire format from the provider's docs (see docs/providers/vtmarketing.md). Field names are
case-sensitive (``orderId``, ``total_shipping``); types must be exact. The places where the docs
are silent are marked "Assumption" below.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django_conversions import http
from django_conversions.conf import conversions_settings
from django_conversions.consent import policy_for
from django_conversions.conversion import Conversion, normalize_event_name
from django_conversions.providers.base import OutboundEvent, Provider


class VTMarketingProvider(Provider):
    id = "vtmarketing"
    name = "VTmarketing (order confirmations)"
    default_base_url = "https://api.vtcdn.net"
    event_path = "/v1/event/"
    auth_header = "Authorization"  # the raw key, no scheme word
    personal_fields = frozenset({"email", "phone", "first_name", "last_name", "city", "country"})
    # "Any status code other than 200 indicates an error occurred."
    accepted_statuses = frozenset({200})
    # Assumption: no rate limit is documented; 429 is read like any provider's (base class).
    # "For a server-side integration ... the following steps are required: ... providing a
    # product feed" (its format is not documented: see django_conversions/feed.py).
    takes_product_feed = True

    def accepts_event(self, event_name: str) -> bool:
        """The API only takes confirmation (order) events: ``purchase`` and whatever name
        ``CONVERSIONS["ORDER_EVENT_NAME"]`` gives tracked orders."""
        return event_name in {
            "purchase",
            normalize_event_name(conversions_settings.ORDER_EVENT_NAME),
        }

    def ineligible_reason(self, conversion: Conversion) -> str | None:
        reason = super().ineligible_reason(conversion)  # consent policy: 'granted' by default
        if reason:
            return reason
        if not policy_for(self.id).allows_identifiers(conversion.consent):
            # The buyer's email is the event here; without it there is nothing to send.
            return (
                f"consent {conversion.consent or 'unknown'}: the consent policy allows no "
                "customer identifiers, and VTmarketing needs the email"
            )
        if conversion.customer is None or not conversion.customer.email:
            return "no customer email: VTmarketing identifies the buyer by email"
        # Assumption: the docs say a missing orderId is "not an error", but without it orders
        # can't be told apart and a resend would count twice, so it is required here.
        if not conversion.order_id:
            return "no order id: VTmarketing needs generic.orderId to tell orders apart"
        if conversion.value is None:
            return "no order total: VTmarketing requires generic.total"
        return None

    def minimize(self, conversion: Conversion) -> Conversion:
        """Custom properties are never sent to VTmarketing, so they are not stored for it."""
        conversion = super().minimize(conversion)
        return conversion.narrowed(properties=None) if conversion.properties else conversion

    def build_body(self, event: OutboundEvent) -> dict[str, Any]:
        conversion = event.conversion
        customer = conversion.customer
        assert customer is not None and customer.email  # ensured by ineligible_reason()
        user = {
            "email": customer.email,
            "tel": customer.phone,
            "firstname": customer.first_name,
            "lastname": customer.last_name,
            "country": customer.country,
            "city": customer.city,
        }
        generic: dict[str, Any] = {
            "orderId": conversion.order_id,
            "total": conversion.value,  # includes shipping, as Conversion.value does
            "status": conversion.status,
            "coupons": list(conversion.coupons),
            "currency": conversion.currency,
            "total_shipping": conversion.shipping,
            "phone": customer.phone,
        }
        confirmation: dict[str, Any] = {"generic": _present(generic)}
        if conversion.items:
            confirmation["items"] = [
                {"id": str(item.id), "quantity": int(item.quantity)} for item in conversion.items
            ]
        return {"user": _present(user), "event": {"confirmation": confirmation}}

    def error_reason(self, answer: http.HttpAnswer) -> str:
        """The ``errors[].message`` texts (with their descriptions), joined."""
        data = answer.json()
        if isinstance(data, Mapping) and isinstance(data.get("errors"), list):
            messages = []
            for error in data["errors"]:
                if not isinstance(error, Mapping):
                    continue
                message = " ".join(str(error.get("message") or "").split())
                description = " ".join(str(error.get("description") or "").split())
                if message and description:
                    messages.append(f"{message} ({description})")
                elif message or description:
                    messages.append(message or description)
            if messages:
                return "; ".join(messages)[:300]
        return super().error_reason(answer)


def _present(values: dict[str, Any]) -> dict[str, Any]:
    """Only the fields that have a value: absent beats null for optional fields."""
    return {key: value for key, value in values.items() if value not in (None, "", [])}
