"""Scanova Server Events API: QR-scan conversion attribution.

Wire format from the provider's docs (see docs/providers/scanova.md). The places where the docs
are silent are the ``ASSUMED_*`` constants and ``read_batch_answer``: change them there.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

from django_conversions import http
from django_conversions.consent import policy_for
from django_conversions.conversion import Conversion, is_uuid
from django_conversions.providers.base import OutboundEvent, Outcome, Provider, Request, Result

logger = logging.getLogger(__name__)

PROPERTIES_MAX_BYTES = 10 * 1024
# Assumption: the batch body is {"events": [...]} (the docs name the endpoint, not its shape).
ASSUMED_BATCH_KEY = "events"
# Assumption: a batch answer may list per-event results under one of these keys.
ASSUMED_BATCH_RESULT_KEYS = ("results", "events")

_EMAIL = re.compile(r"[^@\s\"'<>]+@[^@\s\"'<>]+\.[a-zA-Z]{2,}")


class ScanovaProvider(Provider):
    id = "scanova"
    name = "Scanova (QR scan attribution)"
    default_base_url = "https://track.scanova.io"
    event_path = "/server-events"
    batch_path = "/server-events/batch"
    rate_limit_per_minute = 1000
    default_retry_after = 60.0
    requires_site_id = True
    auth_header = "X-API-Key"
    personal_fields = frozenset({"external_id"})
    hashed_fields = frozenset({"email", "phone"})  # only their SHA-256 is ever sent

    def ineligible_reason(self, conversion: Conversion) -> str | None:
        if not conversion.scan_session_id:
            return "no scan session id: Scanova only tracks conversions that began with a QR scan"
        if not is_uuid(conversion.scan_session_id):
            return f"scan session id {conversion.scan_session_id[:40]!r} is not a UUID"
        if conversion.value is not None and not conversion.currency:
            return "a value without a currency: Scanova's conversion_value needs an ISO 4217 code"
        size = len(http.dumps(self._properties(conversion)))
        if size > PROPERTIES_MAX_BYTES:
            return f"properties are {size} bytes, over Scanova's 10 KB limit"
        return None

    def build_body(self, event: OutboundEvent) -> dict[str, Any]:
        conversion = event.conversion
        body: dict[str, Any] = {
            "site_id": self.site.provider_site_id,
            "event_name": conversion.event_name,
            "scan_session_id": conversion.scan_session_id,
            "event_id": str(event.event_id),
            "event_time": event.occurred_at.isoformat(),
        }
        if conversion.value is not None and conversion.currency:
            body["conversion_value"] = {"amount": conversion.value, "currency": conversion.currency}
        identifiers = self._user_identifiers(conversion)
        if identifiers:
            body["user_identifiers"] = identifiers
        properties = self._properties(conversion)
        if properties:
            body["properties"] = properties
        if conversion.consent:
            body["consent"] = conversion.consent
        return body

    def build_batch_body(self, events: Sequence[OutboundEvent]) -> Any:
        return {ASSUMED_BATCH_KEY: [self.build_body(event) for event in events]}

    def read_batch_answer(self, answer: http.HttpAnswer, request: Request) -> list[Result] | None:
        data = answer.json()
        items = None
        if isinstance(data, Mapping):
            items = next(
                (data[k] for k in ASSUMED_BATCH_RESULT_KEYS if isinstance(data.get(k), list)), None
            )
        if not items:
            return None  # a plain 200: the whole batch was accepted
        by_id = {str(item.get("event_id")): item for item in items if isinstance(item, Mapping)}
        results = []
        for event in request.events:
            item = by_id.get(str(event.event_id))
            results.append(_batch_item_result(item, self))
        return results

    def _user_identifiers(self, conversion: Conversion) -> dict[str, str]:
        customer = conversion.customer
        if customer is None or not policy_for(self.id).allows_identifiers(conversion.consent):
            return {}
        identifiers = {}
        identifiers["email_hash"] = customer.email_hash
        # Assumption: phone_hash is the SHA-256 of the E.164 form; other forms are not sent.
        identifiers["phone_hash"] = customer.phone_hash
        if customer.external_id:
            identifiers["external_id"] = customer.external_id
        return {k: v for k, v in identifiers.items() if v}

    def _properties(self, conversion: Conversion) -> dict[str, Any]:
        properties: dict[str, Any] = {}
        if conversion.order_id:
            properties["order_id"] = conversion.order_id
        if conversion.items:
            properties["product_ids"] = [item.id for item in conversion.items]
        if conversion.coupons:
            properties["coupons"] = list(conversion.coupons)
        if conversion.status:
            properties["order_status"] = conversion.status
        if conversion.properties:
            properties.update(conversion.properties)
        return _without_emails(properties)


def _without_emails(value: Any) -> Any:
    """Drop every string that contains an email address: Scanova refuses raw PII (422)."""
    if isinstance(value, Mapping):
        cleaned = {}
        for key, item in value.items():
            if isinstance(item, str) and _EMAIL.search(item):
                logger.warning("Dropped property %r: it contains an email address", key)
                continue
            cleaned[key] = _without_emails(item)
        return cleaned
    if isinstance(value, list | tuple):
        return [_without_emails(v) for v in value if not (isinstance(v, str) and _EMAIL.search(v))]
    return value


def _batch_item_result(item: Mapping[str, Any] | None, provider: ScanovaProvider) -> Result:
    if item is None:
        return Result(Outcome.DELIVERED, "accepted in batch")
    accepted = item.get("success") is True or item.get("status") in ("accepted", "duplicate")
    if accepted:
        return Result(Outcome.DELIVERED, "accepted in batch")
    status = item.get("status_code") or item.get("code")
    detail = item.get("detail") or item.get("message") or item.get("error") or "rejected"
    fake = http.HttpAnswer(
        url="",
        status=int(status) if str(status).isdigit() else 400,
        text=json.dumps({"detail": detail}),
    )
    outcome, reason, retry_after = provider.classify(fake)
    return Result(outcome, reason, retry_after)
