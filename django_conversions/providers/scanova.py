"""Scanova Server Events API: QR-scan conversion attribution.

Wire format from the provider's docs (see docs/providers/scanova.md). The places where the docs
are silent are the ``ASSUMED_*`` constants below and the functions that use them: change them
there.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from datetime import UTC
from typing import Any

from django_conversions import http
from django_conversions.consent import policy_for
from django_conversions.conversion import (
    PROPERTIES_MAX_BYTES,
    Conversion,
    is_uuid,
    properties_size,
)
from django_conversions.masking import contains_email
from django_conversions.providers.base import (
    OutboundEvent,
    Outcome,
    Provider,
    Request,
    Result,
)

logger = logging.getLogger(__name__)

SITE_ID_MAX = 64
# "properties: at most 10 KB serialised" is conversion.PROPERTIES_MAX_BYTES, counted by
# conversion.properties_size(): how "10 KB" is counted is an assumption, explained there.
# Assumption: the batch body is {"events": [...]} (the docs name the endpoint, not its shape).
ASSUMED_BATCH_KEY = "events"
# Assumption: a batch answer may list a result for every event under one of these keys, or
# only the refused events under one of the others; each entry names its event_id.
ASSUMED_BATCH_RESULT_KEYS = ("results", "events")
ASSUMED_BATCH_REJECTED_KEYS = ("errors", "rejected", "failed")
ASSUMED_ACCEPTED_ITEM_STATUSES = ("accepted", "duplicate", "received", "ok", "success")


class ScanovaProvider(Provider):
    id = "scanova"
    name = "Scanova (QR scan attribution)"
    default_base_url = "https://track.scanova.io"
    event_path = "/server-events"
    batch_path = "/server-events/batch"
    batch_key = ASSUMED_BATCH_KEY
    rate_limit_per_minute = 1000  # per API key, both endpoints
    default_retry_after = 60.0  # "wait Retry-After seconds (60 if absent)"
    requires_site_id = True
    requires_scan_session = True
    auth_header = "X-API-Key"
    personal_fields = frozenset({"external_id"})
    hashed_fields = frozenset({"email", "phone"})  # only their SHA-256 is ever sent
    # 413: split the batch (documented). 400/422 on a batch: one bad event must not sink the
    # others, so the batch is halved until the refused event is alone.
    split_statuses = frozenset({400, 413, 422})

    # --- eligibility ----------------------------------------------------------------------

    def site_problem(self) -> str | None:
        problem = super().site_problem()
        if problem is None and len(self.site.provider_site_id) > SITE_ID_MAX:
            problem = (
                f"the site's provider site id has {len(self.site.provider_site_id)} characters; "
                f"Scanova's site_id has at most {SITE_ID_MAX}"
            )
        return problem

    def ineligible_reason(self, conversion: Conversion) -> str | None:
        reason = super().ineligible_reason(conversion)
        if reason:
            return reason
        if not conversion.scan_session_id:
            return "no scan session id: Scanova only tracks conversions that began with a QR scan"
        if not is_uuid(conversion.scan_session_id):
            return f"scan session id {conversion.scan_session_id[:40]!r} is not a UUID"
        if conversion.value is not None and not conversion.currency:
            return "a value without a currency: Scanova's conversion_value needs an ISO 4217 code"
        size = properties_size(self._properties(conversion, log=False))
        if size > PROPERTIES_MAX_BYTES:
            return (
                f"properties are {size} bytes serialised, over Scanova's 10 KB limit; "
                "send fewer or shorter custom properties"
            )
        return None

    def minimize(self, conversion: Conversion) -> Conversion:
        """Also drop custom properties holding an email address: they are never sent."""
        conversion = super().minimize(conversion)
        if conversion.properties:
            cleaned = _without_emails(conversion.properties, log=False)
            if cleaned != conversion.properties:
                conversion = conversion.narrowed(properties=cleaned)
        return conversion

    # --- the body ---------------------------------------------------------------------------

    def build_body(self, event: OutboundEvent) -> dict[str, Any]:
        conversion = event.conversion
        body: dict[str, Any] = {
            "site_id": self.site.provider_site_id,
            "event_name": conversion.event_name,
            "scan_session_id": conversion.scan_session_id,
            "event_id": str(event.event_id),
            "event_time": _iso_utc(event),
        }
        if conversion.value is not None and conversion.currency:
            body["conversion_value"] = {"amount": conversion.value, "currency": conversion.currency}
        identifiers = self.user_identifiers(conversion)
        if identifiers:
            body["user_identifiers"] = identifiers
        properties = self.properties(conversion)
        if properties:
            body["properties"] = properties
        if conversion.consent:
            body["consent"] = conversion.consent
        return body

    def user_identifiers(self, conversion: Conversion) -> dict[str, str]:
        """Hashes and the shop's own customer id; nothing unless the consent policy allows."""
        customer = conversion.customer
        if customer is None or not policy_for(self.id).allows_identifiers(conversion.consent):
            return {}
        identifiers = {
            "email_hash": customer.email_hash,
            # Assumption: phone_hash is the SHA-256 of the E.164 form; other forms are not sent.
            "phone_hash": customer.phone_hash,
            "external_id": customer.external_id,
        }
        if customer.external_id and contains_email(customer.external_id):
            # A raw email must never go out, also not as a customer id.
            logger.warning("Not sending external_id to Scanova: it contains an email address")
            identifiers["external_id"] = None
        return {key: value for key, value in identifiers.items() if value}

    def properties(self, conversion: Conversion) -> dict[str, Any]:
        """The order's facts plus the custom properties (which win on a clash), without any
        email address, and with the product id list shortened if it alone breaks 10 KB."""
        return self._properties(conversion, log=True)

    def _properties(self, conversion: Conversion, *, log: bool) -> dict[str, Any]:
        facts: dict[str, Any] = {}
        if conversion.order_id:
            facts["order_id"] = conversion.order_id
        if conversion.items:
            facts["product_ids"] = [item.id for item in conversion.items]
        if conversion.coupons:
            facts["coupons"] = list(conversion.coupons)
        if conversion.status:
            facts["order_status"] = conversion.status
        custom = dict(conversion.properties or {})
        properties: dict[str, Any] = _without_emails({**facts, **custom}, log=log)
        if (
            "product_ids" in facts
            and "product_ids" not in custom
            and properties_size(properties) > PROPERTIES_MAX_BYTES
        ):
            properties = _shorten_product_ids(properties, log=log)
        return properties

    # --- the answers ------------------------------------------------------------------------

    def classify(self, answer: http.HttpAnswer) -> tuple[Outcome, str, float | None]:
        outcome, reason, retry_after = super().classify(answer)
        if outcome == Outcome.FAILED and _refuses_site_id(self, answer):
            # "site_id not found or inactive": the site's setup is wrong, not the event, so the
            # site is paused (like a refused key) and its events wait for the fix.
            return Outcome.AUTH_FAILED, reason, None
        return outcome, reason, retry_after

    def should_split(self, answer: http.HttpAnswer, request: Request) -> bool:
        if _refuses_site_id(self, answer):
            return False  # the site's id is refused: every half would be refused too
        return super().should_split(answer, request)

    def read_batch_answer(self, answer: http.HttpAnswer, request: Request) -> list[Result] | None:
        data = answer.json()
        if not isinstance(data, Mapping):
            return None  # a plain 200: the whole batch was accepted
        listed = _first_list(data, ASSUMED_BATCH_RESULT_KEYS)
        rejected = _first_list(data, ASSUMED_BATCH_REJECTED_KEYS)
        if listed is None and rejected is None:
            return None
        by_id = {
            str(item.get("event_id")): item
            for item in (listed or []) + (rejected or [])
            if isinstance(item, Mapping) and item.get("event_id")
        }
        if listed is not None and not by_id and len(listed) == len(request.events):
            # Entries without event ids: assume they follow the order of the request.
            by_id = {str(e.event_id): item for e, item in zip(request.events, listed, strict=True)}
        results = []
        for event in request.events:
            item = by_id.get(str(event.event_id))
            if item is None and listed is not None:
                # The answer lists results but not this one: send it again (the event_id makes
                # a resend count once).
                results.append(Result(Outcome.RETRY, "the batch answer did not mention this event"))
            elif item is None:
                results.append(Result(Outcome.DELIVERED, "accepted in batch"))
            else:
                results.append(
                    self._batch_item_result(item, rejected_list=item in (rejected or []))
                )
        return results

    def _batch_item_result(self, item: Mapping[str, Any], *, rejected_list: bool) -> Result:
        status = str(item.get("status", "")).lower()
        if not rejected_list and (
            item.get("success") is True or status in ASSUMED_ACCEPTED_ITEM_STATUSES
        ):
            return Result(Outcome.DELIVERED, "accepted in batch")
        code = item.get("status_code", item.get("code"))
        detail = item.get("detail") or item.get("message") or item.get("error") or "rejected"
        answer = http.HttpAnswer(
            url="",
            status=int(code) if str(code).isdigit() else 422,
            text=json.dumps({"detail": detail}),
        )
        outcome, reason, retry_after = self.classify(answer)
        return Result(outcome, f"{reason} (in batch)", retry_after)


def _iso_utc(event: OutboundEvent) -> str:
    """ISO 8601 in UTC with a ``Z``; a naive time (USE_TZ = False) is taken to be UTC."""
    when = event.occurred_at
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _first_list(data: Mapping[str, Any], keys: Sequence[str]) -> list[Any] | None:
    for key in keys:
        if isinstance(data.get(key), list):
            return list(data[key])
    return None


def _without_emails(value: Any, *, log: bool, path: str = "properties") -> Any:
    """``value`` without any string (or key) that contains an email address."""
    if isinstance(value, Mapping):
        cleaned = {}
        for key, item in value.items():
            if contains_email(str(key)) or (isinstance(item, str) and contains_email(item)):
                if log:
                    shown = "a key with an email address" if contains_email(str(key)) else key
                    logger.warning("Not sending %s[%r] to Scanova: it holds an email", path, shown)
                continue
            cleaned[key] = _without_emails(item, log=log, path=f"{path}[{key!r}]")
        return cleaned
    if isinstance(value, list | tuple):
        kept = [v for v in value if not (isinstance(v, str) and contains_email(v))]
        if log and len(kept) != len(value):
            logger.warning(
                "Not sending %d email address(es) in %s to Scanova", len(value) - len(kept), path
            )
        return [_without_emails(v, log=log, path=f"{path}[]") for v in kept]
    return value


def _shorten_product_ids(properties: dict[str, Any], *, log: bool) -> dict[str, Any]:
    """Keep as many product ids as fit under the limit (the rest are not sent)."""
    ids = properties["product_ids"]
    low, high = 0, len(ids)
    while low < high:  # the largest count that fits
        middle = (low + high + 1) // 2
        trial = {**properties, "product_ids": ids[:middle], "product_ids_truncated": True}
        if properties_size(trial) <= PROPERTIES_MAX_BYTES:
            low = middle
        else:
            high = middle - 1
    if log:
        logger.info("Sending %d of %d product ids to Scanova (10 KB limit)", low, len(ids))
    return {**properties, "product_ids": ids[:low], "product_ids_truncated": True}


def _refuses_site_id(provider: ScanovaProvider, answer: http.HttpAnswer) -> bool:
    return answer.status in (400, 422) and "site_id" in provider.error_reason(answer)
