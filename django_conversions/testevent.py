"""Send one synthetic test conversion to a site and report the provider's answer.

Used by the admin's "send test event" action and by ``manage.py conversions_test_site``. The
test event goes straight to the provider with the site's current key: it is not written to the
outbox, is never retried, and does not pause or resume the site. The answer holds nothing
secret (providers mask the key in what they return).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal
from http import HTTPStatus

from django.utils import timezone
from django.views.decorators.debug import sensitive_variables

from django_conversions import http
from django_conversions.conf import conversions_settings
from django_conversions.conversion import Conversion, Customer, LineItem
from django_conversions.models import TrackingSite
from django_conversions.providers.base import OutboundEvent, Outcome, Provider

TEST_EVENT_NAME = "test_event"
TEST_EMAIL = "conversions-test@example.com"
BODY_LIMIT = 300


@dataclass(frozen=True)
class ProviderAnswer:
    """What happened to the test event, ready to show to a person."""

    site_name: str
    provider_name: str
    sent: bool
    accepted: bool
    reason: str
    http_status: int | None = None
    body: str = ""
    url: str = ""
    duration_ms: int = 0
    site_paused: bool = False

    @property
    def status_text(self) -> str:
        if self.http_status is None:
            return "no answer"
        try:
            phrase = HTTPStatus(self.http_status).phrase
        except ValueError:
            phrase = ""
        return f"HTTP {self.http_status} {phrase}".rstrip()

    def summary(self) -> str:
        """One line: who answered what, and why."""
        if not self.sent:
            return f"Test event to {self.site_name} not sent: {self.reason}"
        verdict = "accepted" if self.accepted else "not accepted"
        line = (
            f"Test event to {self.site_name}: {self.provider_name} answered {self.status_text} "
            f"in {self.duration_ms} ms, {verdict}"
        )
        if self.reason and not self.accepted:
            line += f" ({self.reason})"
        if self.accepted and self.site_paused:
            line += "; the site is still paused: resume it to send the events waiting for it"
        return line

    def __str__(self) -> str:
        text = self.summary()
        if self.body:
            text += f". Response body: {self.body}"
        return text


def synthetic_conversion(provider: Provider) -> Conversion:
    """A conversion every built-in provider can take, clearly marked as a test."""
    if provider.accepts_event(TEST_EVENT_NAME):
        event_name = TEST_EVENT_NAME
    else:  # e.g. VTmarketing only takes purchases
        event_name = sorted(provider.supported_event_names or {"purchase"})[0]
    return Conversion(
        event_name=event_name,
        order_id=f"test-{uuid.uuid4().hex[:12]}",
        value=Decimal("1.00"),
        currency="EUR",
        status="test",
        customer=Customer(email=TEST_EMAIL, first_name="Test", last_name="Event"),
        items=(LineItem(id="conversions-test-item", quantity=1),),
        scan_session_id=str(uuid.uuid4()),
        consent="granted",
        properties={"test": True, "source": "django-conversions test event"},
        occurred_at=timezone.now(),
    )


@sensitive_variables("key")
def send_test_event(site: TrackingSite) -> ProviderAnswer:
    """Send one test conversion through ``site``'s provider with its current key."""
    provider = site.provider_instance()

    def not_sent(reason: str) -> ProviderAnswer:
        return ProviderAnswer(site.name, provider.name, sent=False, accepted=False, reason=reason)

    problem = site.endpoint_problem() or provider.site_problem()
    if problem:
        return not_sent(problem)
    key = site.current_key()
    if key is None:
        return not_sent("the site has no active API key")
    if not key.is_readable or not isinstance(key.key, str):
        return not_sent(f"API key {key.label or key.pk} can't be decrypted: {key.key}")
    outbound = OutboundEvent(uuid.uuid4(), synthetic_conversion(provider))
    timeout = (
        float(conversions_settings.CONNECT_TIMEOUT),
        float(conversions_settings.READ_TIMEOUT),
    )
    [result] = provider.send(http.get_session(), key.key, [outbound], timeout=timeout)
    exchange = result.exchange
    if exchange is None:
        return not_sent(result.reason)
    body = " ".join(exchange.response_body.split())
    if len(body) > BODY_LIMIT:
        body = body[:BODY_LIMIT] + "…"
    return ProviderAnswer(
        site_name=site.name,
        provider_name=provider.name,
        sent=True,
        accepted=result.outcome == Outcome.DELIVERED,
        reason=exchange.error or result.reason,
        http_status=exchange.status,
        body=body,
        url=exchange.url,
        duration_ms=exchange.duration_ms,
        site_paused=site.is_paused,
    )
