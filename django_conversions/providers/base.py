"""The provider contract: turn conversions into requests and answers into results.

A provider module describes one provider's wire format and how to read its answers. It never
touches the database and never decides when to retry: ``send()`` returns one ``Result`` per
event, and ``django_conversions.delivery`` turns results into statuses, schedules and pauses.

To add a provider, subclass ``Provider``, fill the class attributes, and implement
``build_body()`` (plus ``ineligible_reason()``/``error_reason()`` when the defaults don't fit);
see docs/providers/adding.md.
"""

from __future__ import annotations

import email.utils
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar
from uuid import UUID

import requests
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from django_conversions import http
from django_conversions.conversion import Conversion, Customer
from django_conversions.fields import mask_secret, redact


class Outcome(models.TextChoices):
    """What one delivery attempt means for one event."""

    DELIVERED = "delivered", _("delivered")
    RETRY = "retry", _("will retry")
    FAILED = "failed", _("failed permanently")
    AUTH_FAILED = "auth_failed", _("API key refused")
    INELIGIBLE = "ineligible", _("not eligible")


@dataclass(frozen=True)
class SiteConfig:
    """What a provider needs to know about the tracking site it sends to."""

    provider_site_id: str = ""
    endpoint_url: str = ""
    batch_size: int = 100


@dataclass(frozen=True)
class OutboundEvent:
    """One event to send: its fixed id, the conversion, and when it was recorded."""

    event_id: UUID
    conversion: Conversion
    created_at: datetime = field(default_factory=timezone.now)

    @property
    def occurred_at(self) -> datetime:
        return self.conversion.occurred_at or self.created_at


@dataclass(frozen=True)
class Exchange:
    """One HTTP request as it may be stored: secrets masked, body cut to size by delivery."""

    url: str
    request_headers: Mapping[str, str]
    status: int | None
    response_headers: Mapping[str, str]
    response_body: str
    error: str
    duration_ms: int
    batch_size: int


@dataclass(frozen=True)
class Result:
    """The provider's verdict on one event."""

    outcome: Outcome
    reason: str
    retry_after: float | None = None  # seconds the provider asked us to wait
    exchange: Exchange | None = None  # None when nothing was sent

    @property
    def http_status(self) -> int | None:
        return self.exchange.status if self.exchange else None


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header given as delta-seconds or as an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.now().astimezone().tzinfo)
    return max(0.0, (when - (now or timezone.now())).total_seconds())


@dataclass(frozen=True)
class Request:
    """A request about to be sent, and the events it carries (in body order)."""

    url: str
    body: Any
    events: Sequence[OutboundEvent]


class Provider:
    """Base class of every provider. Class attributes describe it; methods build and read."""

    #: Stable id stored in ``TrackingSite.provider``. Never change it once released.
    id: ClassVar[str]
    #: Display name for the admin.
    name: ClassVar[str]
    #: The provider's documented base URL; ``TrackingSite.endpoint_url`` may replace it.
    default_base_url: ClassVar[str]
    #: Path of the single-event endpoint, appended to the base URL.
    event_path: ClassVar[str]
    #: Path of the batch endpoint, or None when the provider has none.
    batch_path: ClassVar[str | None] = None
    #: Requests per minute per API key the provider allows (None: not documented).
    rate_limit_per_minute: ClassVar[int | None] = None
    #: Seconds to wait after a 429 without Retry-After.
    default_retry_after: ClassVar[float] = 60.0
    #: Does the provider need ``TrackingSite.provider_site_id``?
    requires_site_id: ClassVar[bool] = False
    #: Event names the provider accepts (None: any event).
    supported_event_names: ClassVar[frozenset[str] | None] = None
    #: Header carrying the API key (masked wherever the request is stored).
    auth_header: ClassVar[str]
    #: Customer fields this provider sends as they are (privacy: what the outbox keeps).
    personal_fields: ClassVar[frozenset[str]] = frozenset()
    #: Customer fields (``email``, ``phone``) this provider only sends as SHA-256 hashes.
    hashed_fields: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, site: SiteConfig | None = None) -> None:
        self.site = site or SiteConfig()

    # --- hooks a provider implements ---------------------------------------------------------

    def site_problem(self) -> str | None:
        """Why no event can be sent to this site as configured (the site is paused), or None."""
        if self.requires_site_id and not self.site.provider_site_id:
            return f"the site has no provider site id, which {self.name} requires"
        return None

    def minimize(self, conversion: Conversion) -> Conversion:
        """The conversion with only the personal data this provider needs, hashed where it can.

        This is what the outbox stores for the provider's sites: data the provider does not
        need (or may not get, by the consent policy) is never written to the database.
        """
        from django_conversions.consent import policy_for

        customer = conversion.customer
        if customer is None:
            return conversion
        if not policy_for(self.id).allows_identifiers(conversion.consent):
            return conversion.replace(customer=None)
        kept = {name: getattr(customer, name) for name in self.personal_fields}
        for name in self.hashed_fields:
            if name not in self.personal_fields:
                kept[f"{name}_sha256"] = getattr(customer, f"{name}_hash")
        reduced = Customer(**{k: v for k, v in kept.items() if v})
        return conversion.replace(customer=None if reduced.is_empty() else reduced)

    def accepts_event(self, event_name: str) -> bool:
        return self.supported_event_names is None or event_name in self.supported_event_names

    def ineligible_reason(self, conversion: Conversion) -> str | None:
        """Why this conversion can never go to this provider, or None when it can."""
        return None

    def build_body(self, event: OutboundEvent) -> dict[str, Any]:
        raise NotImplementedError(f"{type(self).__name__} must implement build_body()")

    def build_batch_body(self, events: Sequence[OutboundEvent]) -> Any:
        raise NotImplementedError(f"{type(self).__name__} has no batch endpoint")

    def read_batch_answer(self, answer: http.HttpAnswer, request: Request) -> list[Result] | None:
        """Per-event results from a successful batch answer (None: every event delivered)."""
        return None

    def error_reason(self, answer: http.HttpAnswer) -> str:
        """A short human-readable reason from an error answer's body."""
        data = answer.json()
        if isinstance(data, Mapping):
            for key in ("detail", "message", "error", "errors"):
                if data.get(key):
                    return _short(data[key])
        return _short(answer.text) if answer.text else ""

    def auth_headers(self, api_key: str) -> dict[str, str]:
        return {self.auth_header: api_key}

    # --- the fixed pipeline ---------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return (self.site.endpoint_url or self.default_base_url).rstrip("/")

    def url(self, path: str) -> str:
        return self.base_url + path

    @property
    def supports_batch(self) -> bool:
        return self.batch_path is not None

    def requests_for(self, events: Sequence[OutboundEvent]) -> list[Request]:
        """Split events into requests: batches of ``site.batch_size`` or one per event."""
        if self.supports_batch and len(events) > 1:
            size = max(1, self.site.batch_size)
            return [self._batch_request(events[i : i + size]) for i in range(0, len(events), size)]
        return [Request(self.url(self.event_path), self.build_body(e), [e]) for e in events]

    def _batch_request(self, events: Sequence[OutboundEvent]) -> Request:
        if len(events) == 1:
            return Request(self.url(self.event_path), self.build_body(events[0]), events)
        assert self.batch_path is not None
        return Request(self.url(self.batch_path), self.build_batch_body(events), events)

    def send(
        self,
        session: requests.Session,
        api_key: str,
        events: Sequence[OutboundEvent],
        *,
        timeout: tuple[float, float] = (5.0, 10.0),
    ) -> list[Result]:
        """Send ``events`` (all for this site) and return one Result per event, in order."""
        results: dict[UUID, Result] = {}
        sendable = []
        for event in events:
            reason = self.ineligible_reason(event.conversion)
            if reason:
                results[event.event_id] = Result(Outcome.INELIGIBLE, reason)
            else:
                sendable.append(event)
        pending = self.requests_for(sendable)
        while pending:
            request = pending.pop(0)
            answer = self._post(session, api_key, request, timeout)
            if answer.status == 413 and len(request.events) > 1:
                # Too large: halve the batch and send both halves (recorded as new requests).
                half = len(request.events) // 2
                pending[:0] = [
                    self._batch_request(request.events[:half]),
                    self._batch_request(request.events[half:]),
                ]
                continue
            for event, result in zip(
                request.events, self.read_answer(answer, request, api_key), strict=True
            ):
                results[event.event_id] = result
        return [results[event.event_id] for event in events]

    def _post(
        self,
        session: requests.Session,
        api_key: str,
        request: Request,
        timeout: tuple[float, float],
    ) -> http.HttpAnswer:
        headers = {"Content-Type": "application/json", **self.auth_headers(api_key)}
        return http.post(
            session, request.url, body=http.dumps(request.body), headers=headers, timeout=timeout
        )

    def read_answer(self, answer: http.HttpAnswer, request: Request, api_key: str) -> list[Result]:
        """One Result per event of ``request``, from the answer to it."""
        exchange = self._exchange(answer, request, api_key)
        count = len(request.events)
        if answer.status is not None and 200 <= answer.status < 300:
            if count > 1:
                per_event = self.read_batch_answer(answer, request)
                if per_event is not None:
                    return [_with_exchange(r, exchange) for r in per_event]
            return [Result(Outcome.DELIVERED, "accepted", exchange=exchange)] * count
        outcome, reason, retry_after = self.classify(answer)
        return [Result(outcome, redact(reason, api_key), retry_after, exchange)] * count

    def classify(self, answer: http.HttpAnswer) -> tuple[Outcome, str, float | None]:
        """Map an unsuccessful answer to an outcome, a reason and a Retry-After."""
        if answer.status is None:
            return Outcome.RETRY, answer.error, None
        status = answer.status
        detail = self.error_reason(answer)
        reason = f"HTTP {status}" + (f": {detail}" if detail else "")
        if status in (401, 403):
            return Outcome.AUTH_FAILED, reason, None
        if status == 429:
            retry_after = parse_retry_after(_header(answer, "Retry-After"))
            return (
                Outcome.RETRY,
                reason,
                retry_after if retry_after is not None else self.default_retry_after,
            )
        if status in (408, 425) or status >= 500:
            return Outcome.RETRY, reason, parse_retry_after(_header(answer, "Retry-After"))
        return Outcome.FAILED, reason, None

    def _exchange(self, answer: http.HttpAnswer, request: Request, api_key: str) -> Exchange:
        headers = {"Content-Type": "application/json", self.auth_header: mask_secret(api_key)}
        return Exchange(
            url=answer.url,
            request_headers=headers,
            status=answer.status,
            response_headers=dict(answer.headers),
            response_body=redact(answer.text, api_key),
            error=redact(answer.error, api_key),
            duration_ms=answer.duration_ms,
            batch_size=len(request.events),
        )


def _with_exchange(result: Result, exchange: Exchange) -> Result:
    return Result(result.outcome, result.reason, result.retry_after, exchange)


def _header(answer: http.HttpAnswer, name: str) -> str | None:
    lowered = name.lower()
    for key, value in answer.headers.items():
        if key.lower() == lowered:
            return value
    return None


def _short(value: Any, limit: int = 300) -> str:
    """A one-line summary of an error body (strings, lists of messages, FastAPI-style details)."""
    if isinstance(value, list):
        return "; ".join(_short(v, limit) for v in value)[:limit]
    if isinstance(value, Mapping):
        if "msg" in value:
            loc = ".".join(str(p) for p in value.get("loc", ()) if p != "body")
            return f"{loc}: {value['msg']}" if loc else str(value["msg"])
        for key in ("message", "description", "detail"):
            if key in value:
                return _short(value[key], limit)
        return json.dumps(value)[:limit]
    return " ".join(str(value).split())[:limit]
