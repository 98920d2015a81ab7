"""VTmarketing standard events API: order confirmation events.

Wire format from the provider's docs (see docs/providers/vtmarketing.md). Field names are
case-sensitive (``orderId``, ``total_shipping``); types must be exact.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django_conversions import http
from django_conversions.consent import policy_for
from django_conversions.conversion import Conversion
from django_conversions.providers.base import OutboundEvent, Provider


class VTMarketingProvider(Provider):
    id = "vtmarketing"
    name = "VTmarketing (order confirmations)"
    default_base_url = "https://api.vtcdn.net"
    event_path = "/v1/event/"
    auth_header = "Authorization"  # the raw key, no scheme word
    personal_fields = frozenset({"email", "phone", "first_name", "last_name", "city", "country"})
    #: The API only takes confirmation (order) events.
    supported_event_names = frozenset({"purchase"})

    def ineligible_reason(self, conversion: Conversion) -> str | None:
        skip = policy_for(self.id).skip_reason(conversion.consent)
        if skip:
            return skip
        if conversion.customer is None or not conversion.customer.email:
            return "no customer email: VTmarketing identifies the buyer by email"
        if conversion.value is None:
            return "no order total: VTmarketing requires generic.total"
        return None

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
            "total": conversion.value,
            "status": conversion.status,
            "coupons": list(conversion.coupons) or None,
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
        data = answer.json()
        if isinstance(data, Mapping) and isinstance(data.get("errors"), list):
            messages = []
            for error in data["errors"]:
                if isinstance(error, Mapping):
                    text = str(error.get("message", "")).strip()
                    if error.get("description"):
                        text = (
                            f"{text} ({str(error['description']).strip()})"
                            if text
                            else str(error["description"])
                        )
                    messages.append(text)
            if any(messages):
                return "; ".join(m for m in messages if m)[:300]
        return super().error_reason(answer)


def _present(values: dict[str, Any]) -> dict[str, Any]:
    """Only the fields that have a value: absent beats null for optional fields."""
    return {key: value for key, value in values.items() if value not in (None, "", [])}
