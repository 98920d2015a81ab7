"""What goes into a provider and what comes out: the site's settings, the events to send, the
requests built from them, and the result for each event with the HTTP exchange it came from.

Plain values: no database, no I/O. ``django_conversions.providers.base`` re-exports them.
"""

from __future__ import annotations

import email.utils
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from uuid import UUID

from django.utils import timezone

from django_conversions.conversion import Conversion
from django_conversions.outcomes import Outcome

_DELTA_SECONDS = re.compile(r"\d+(\.\d+)?")


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


@dataclass(frozen=True, eq=False)
class Exchange:
    """One HTTP request as it may be stored: secrets masked, bodies cut to size.

    Compared by identity: the results of one request share its exchange, and two requests are
    two exchanges even when everything in them is alike.
    """

    url: str
    request_headers: Mapping[str, str]
    request_body: str
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
    """Seconds from a ``Retry-After`` header given as delta-seconds or as an HTTP date.

    ``"120"`` -> 120.0; ``"Wed, 21 Oct 2015 07:28:00 GMT"`` -> seconds until then (0 if past);
    anything else (``"soon"``, ``"-5"``, ``"inf"``) -> None.
    """
    if not value:
        return None
    value = value.strip()
    if _DELTA_SECONDS.fullmatch(value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000": HTTP dates are always in GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or timezone.now())).total_seconds())


@dataclass(frozen=True)
class Request:
    """A request about to be sent, and the events it carries (in body order).

    ``positions`` are the events' indexes in the list given to ``send()`` / ``prepare()``.
    """

    url: str
    data: bytes  # the JSON body as sent
    events: Sequence[OutboundEvent]
    positions: Sequence[int] = ()


@dataclass
class Prepared:
    """Events checked and encoded into requests by ``Provider.prepare()``, ready to post."""

    count: int  # events given to prepare()
    results: dict[int, Result] = field(default_factory=dict)  # by position: settled unsent
    requests: list[Request] = field(default_factory=list)
