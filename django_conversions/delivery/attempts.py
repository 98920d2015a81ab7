"""The rows that record HTTP exchanges: one ``DeliveryAttempt`` per request, one
``EventResult`` per event it carried (with that event's own outcome and the provider's word
on it), every text made storable (PostgreSQL takes no NUL character in text or JSON).

A request whose events were all delivered keeps its outline only (URL, HTTP status, duration,
outcome, how many events): its headers and bodies explain nothing a person needs, and they
were most of the bytes a delivered event kept. A request with any other outcome keeps them
all, so the admin shows why it failed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from django.db import connections

from django_conversions.delivery.policy import Decision
from django_conversions.models import ConversionEvent, DeliveryAttempt, EventResult, TrackingSite
from django_conversions.normalize import storable_text
from django_conversions.outcomes import Outcome
from django_conversions.providers.base import Exchange, Result


@dataclass(frozen=True)
class Recorded:
    """One event's result and what the policy made of it."""

    event: ConversionEvent
    result: Result
    decision: Decision


def write_attempts(
    using: str,
    site: TrackingSite,
    items: Sequence[Recorded],
    held: set[int],
    now: datetime,
    plain: bool = False,
) -> int:
    """One DeliveryAttempt per exchange, and an EventResult per event it carried that this
    claim still holds."""
    by_exchange = _by_exchange(items)
    if not by_exchange:
        return 0
    attempts = [
        _attempt(site, exchange, carried, now, plain) for exchange, carried in by_exchange.values()
    ]
    connection = connections[using]
    if connection.features.can_return_rows_from_bulk_insert:
        DeliveryAttempt.objects.using(using).bulk_create(attempts)
    else:  # the rows' ids are needed for their EventResults
        for attempt in attempts:
            attempt.save(using=using)
    results = [
        EventResult(
            attempt=attempt,
            event_id=item.event.pk,
            outcome=item.result.outcome,
            message="" if plain else storable_text(_message(item.result, attempt)),
        )
        for attempt, (_, carried) in zip(attempts, by_exchange.values(), strict=True)
        for item in carried
        if item.event.pk in held
    ]
    fields = [
        EventResult._meta.get_field(name) for name in ("attempt", "event", "outcome", "message")
    ]
    EventResult.objects.using(using).bulk_create(
        results, batch_size=max(1, connection.ops.bulk_batch_size(fields, results))
    )
    return len(attempts)


def all_delivered(items: Sequence[Recorded]) -> bool:
    """Did the provider take every event of this exchange (nothing about it to explain)?"""
    return all(item.result.outcome == Outcome.DELIVERED for item in items)


def delivered_exchanges(items: Sequence[Recorded]) -> set[int]:
    """The events (pks) whose request delivered every event it carried: their attempt is
    stored without its texts (see ``all_delivered``)."""
    return {
        item.event.pk
        for _, carried in _by_exchange(items).values()
        if all_delivered(carried)
        for item in carried
    }


def _by_exchange(items: Sequence[Recorded]) -> dict[int, tuple[Exchange, list[Recorded]]]:
    """The items by the HTTP exchange that carried them (items without one left out)."""
    by_exchange: dict[int, tuple[Exchange, list[Recorded]]] = {}
    for item in items:
        exchange = item.result.exchange
        if exchange is not None:
            by_exchange.setdefault(id(exchange), (exchange, []))[1].append(item)
    return by_exchange


def _attempt(
    site: TrackingSite, exchange: Exchange, items: Sequence[Recorded], now: datetime, plain: bool
) -> DeliveryAttempt:
    outcome, reason = _request_outcome(items)
    error = exchange.error or ("" if outcome == Outcome.DELIVERED else reason)
    attempt = DeliveryAttempt(
        site=site,
        created_at=now,
        duration_ms=exchange.duration_ms,
        url=storable_text(exchange.url),
        http_status=exchange.status,
        outcome=outcome,
        event_count=len(items),
    )
    if plain:  # the database refused the provider's texts: keep the exchange's outline
        attempt.error = "the request and the answer could not be stored"
        return attempt
    if all_delivered(items):
        return attempt
    attempt.request_headers = _storable_headers(exchange.request_headers)
    attempt.request_body = storable_text(exchange.request_body)
    attempt.response_headers = _storable_headers(exchange.response_headers)
    attempt.response_body = storable_text(exchange.response_body)
    attempt.error = storable_text(error[:2000])
    return attempt


def _request_outcome(items: Sequence[Recorded]) -> tuple[str, str]:
    """What the answer meant for the request: delivered when the provider took any of its
    events, else the first event's outcome."""
    for item in items:
        if item.result.outcome == Outcome.DELIVERED:
            return Outcome.DELIVERED, item.result.reason
    return items[0].result.outcome, items[0].result.reason


def _storable_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {storable_text(str(k)): storable_text(str(v)) for k, v in headers.items()}


def _message(result: Result, attempt: DeliveryAttempt) -> str:
    """The provider's word on one event, blank when the attempt already says it."""
    if result.outcome == attempt.outcome and result.reason in ("", attempt.error):
        return ""
    if result.outcome == Outcome.DELIVERED == attempt.outcome:
        return ""
    return result.reason
