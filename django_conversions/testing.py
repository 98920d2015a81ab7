"""The provider contract: the tests every provider must pass, shipped with the package so a
provider registered in a host project can run them from a pip install.

**A test-only module.** Importing it needs pytest, pytest-django and responses (``pip install
"django-conversions[testing]"``); the app itself never imports it.

Every provider in the registry is covered (``CONVERSIONS["PROVIDERS"]`` included): its bodies
must serialise, its answers must be classified like every other provider's, its results must
line up with the events, and its API key must never show up in a reason, a stored exchange or
a log record. To run it on your own provider, list it in ``CONVERSIONS["PROVIDERS"]`` in your
test settings and import the suite into one of your test modules::

    # myshop/tests/test_acme_contract.py
    import pytest

    from django_conversions.testing import *  # noqa: F403  (the contract's tests and fixtures)


    @pytest.fixture(params=["acme"])  # only your provider (default: every registered one)
    def provider_id(request: pytest.FixtureRequest) -> str:
        return request.param

The helpers (``last_json``, ``last_headers``, ``outbound``, ``full_conversion``) serve a
provider's own test module too. See docs/providers/adding.md.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
import requests
import responses
from django.conf import settings
from django.test import override_settings

from django_conversions import http
from django_conversions.conversion import Conversion, Customer, LineItem
from django_conversions.providers import registry
from django_conversions.providers.base import OutboundEvent, Outcome, Provider, Result, SiteConfig

BASE_URL = "https://provider.example.test"
API_KEY = "contract-key-7d1e5c9a2b4f6e8d"
SCAN_SESSION = "550e8400-e29b-41d4-a716-446655440000"
CREATED_AT = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)


# --- helpers shared with the provider modules --------------------------------------------


def last_json(mocked: responses.RequestsMock) -> Any:
    """The JSON body of the last request sent."""
    body = mocked.calls[-1].request.body
    assert body is not None, "the last request had no body"
    return json.loads(body)


def last_headers(mocked: responses.RequestsMock) -> Any:
    """The headers of the last request sent."""
    return mocked.calls[-1].request.headers


def full_conversion(**changes: Any) -> Conversion:
    """A conversion with every field set, eligible for every built-in provider."""
    values: dict[str, Any] = {
        "event_name": "Purchase",
        "order_id": "1001",
        "value": Decimal("400.335"),
        "currency": "ron",
        "shipping": 22,
        "coupons": ("SPRING10", "VIP"),
        "status": "paid",
        "customer": Customer(
            email="  Ana.Pop@Example.COM ",
            phone="+40 775 123 123",
            first_name="Ana",
            last_name="Pop",
            city="Brașov",
            country="Romania",
            external_id="cust-42",
        ),
        "items": (LineItem("sku-1", 2, price=Decimal("10.5")), LineItem("sku-2")),
        "scan_session_id": SCAN_SESSION.upper(),
        "consent": "granted",
        "properties": {"channel": "qr-flyer"},
        "occurred_at": CREATED_AT,
    }
    values.update(changes)
    return Conversion(**values)


def outbound(conversion: Conversion | None = None, n: int = 0) -> OutboundEvent:
    """An outbox event with a fixed id (``n`` tells several apart)."""
    event_id = uuid.UUID(int=0x3C90C3CC0D444B5088888DD25736052A + n)
    return OutboundEvent(event_id, conversion or full_conversion(), CREATED_AT)


def make_provider(provider_id: str, **site: Any) -> Provider:
    config = {"provider_site_id": "site_abc123", "endpoint_url": BASE_URL, **site}
    return registry.get_class(provider_id)(SiteConfig(**config))


def mock_all(mocked: responses.RequestsMock, provider: Provider, **answer: Any) -> None:
    """Answer every endpoint of ``provider`` the same way."""
    for path in (provider.event_path, provider.batch_path):
        if path:
            mocked.add(responses.POST, provider.url(path), **answer)


def send(provider: Provider, events: Sequence[OutboundEvent], key: str = API_KEY) -> list[Result]:
    return provider.send(requests.Session(), key, events, timeout=(1.0, 2.0))


def no_secret_in(result: Result, secret: str) -> None:
    assert secret not in result.reason
    assert secret not in repr(result.exchange)


def with_consent_policy(policy: dict[str, Any]) -> Any:
    """``CONVERSIONS["CONSENT_POLICY"]`` set to ``policy`` (the other settings kept)."""
    return override_settings(CONVERSIONS={**settings.CONVERSIONS, "CONSENT_POLICY": policy})


# --- fixtures (override ``provider_id`` to choose the providers) -----------------------------


@pytest.fixture(params=registry.ids())
def provider_id(request: pytest.FixtureRequest) -> str:
    """The id of the provider under test: every registered one, unless overridden."""
    param: str = request.param
    return param


@pytest.fixture
def provider(provider_id: str) -> Provider:
    return make_provider(provider_id)


@pytest.fixture
def mocked_http() -> Iterator[responses.RequestsMock]:
    """Provider HTTP answered by ``responses``; nothing reaches the network."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mocked:
        yield mocked


# --- bodies ----------------------------------------------------------------------------------


def test_bodies_serialise_to_json(provider: Provider) -> None:
    # given
    events = [outbound(n=0), outbound(n=1)]
    # when
    single = http.dumps(provider.build_body(events[0]))
    batch = provider.requests_for(events)[0].data if provider.supports_batch else b"{}"
    # then
    assert isinstance(json.loads(single), dict)
    assert json.loads(batch) is not None
    assert API_KEY not in single.decode()


def test_the_minimised_conversion_builds_the_same_body(provider: Provider) -> None:
    # given: what the outbox stores for this provider, read back from its JSON snapshot
    conversion = full_conversion(properties={"channel": "qr", "note": "ana@example.com"})
    stored = Conversion.from_snapshot(
        json.loads(json.dumps(provider.minimize(conversion).to_snapshot()))
    )
    # when
    original = provider.build_body(outbound(conversion))
    rebuilt = provider.build_body(outbound(stored))
    # then
    assert provider.ineligible_reason(stored) is None
    assert rebuilt == original


def test_a_configured_site_has_no_problem(provider: Provider) -> None:
    assert provider.site_problem() is None


# --- answers ---------------------------------------------------------------------------------


def test_an_accepted_answer_delivers_and_sends_json_with_the_key(
    provider: Provider, mocked_http: responses.RequestsMock
) -> None:
    # given
    mock_all(mocked_http, provider, status=200, json={})
    # when
    [result] = send(provider, [outbound()])
    # then
    assert result.outcome == Outcome.DELIVERED
    assert result.http_status == 200
    headers = last_headers(mocked_http)
    assert headers["Content-Type"] == "application/json"
    assert headers[provider.auth_header] == API_KEY
    assert headers["User-Agent"].startswith("django-conversions/")
    assert result.exchange is not None
    assert result.exchange.request_headers[provider.auth_header].endswith(API_KEY[-4:])
    assert API_KEY not in repr(result.exchange)


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (400, Outcome.FAILED),
        (401, Outcome.AUTH_FAILED),
        (403, Outcome.AUTH_FAILED),
        (404, Outcome.FAILED),
        (408, Outcome.RETRY),
        (429, Outcome.RETRY),
        (500, Outcome.RETRY),
        (502, Outcome.RETRY),
        (503, Outcome.RETRY),
        (504, Outcome.RETRY),
    ],
)
def test_error_statuses_are_classified(
    provider: Provider, mocked_http: responses.RequestsMock, status: int, outcome: Outcome
) -> None:
    # given
    mock_all(mocked_http, provider, status=status, json={"detail": "nope"})
    # when
    [result] = send(provider, [outbound()])
    # then
    assert result.outcome == outcome
    assert result.reason.startswith(f"HTTP {status}")
    assert result.http_status == status


def test_429_without_retry_after_waits_the_provider_default(
    provider: Provider, mocked_http: responses.RequestsMock
) -> None:
    mock_all(mocked_http, provider, status=429)
    [result] = send(provider, [outbound()])
    assert result.outcome == Outcome.RETRY
    assert result.retry_after == provider.default_retry_after


@pytest.mark.parametrize(
    ("error", "words"),
    [
        (requests.ReadTimeout("read timed out"), "no answer within 2 s"),
        (requests.ConnectTimeout("connect timed out"), "could not connect within 1 s"),
        (requests.ConnectionError("Connection refused"), "Connection refused"),
    ],
)
def test_no_answer_is_retried(
    provider: Provider, mocked_http: responses.RequestsMock, error: Exception, words: str
) -> None:
    mock_all(mocked_http, provider, body=error)
    [result] = send(provider, [outbound()])
    assert result.outcome == Outcome.RETRY
    assert words in result.reason
    assert result.http_status is None and result.exchange is not None


def test_a_redirect_is_not_followed(
    provider: Provider, mocked_http: responses.RequestsMock
) -> None:
    # given: following it would carry the key to another host
    mock_all(mocked_http, provider, status=301, headers={"Location": "https://elsewhere.test/"})
    # when
    [result] = send(provider, [outbound()])
    # then
    assert len(mocked_http.calls) == 1
    assert result.outcome == Outcome.FAILED
    assert "https://elsewhere.test/" in result.reason


# --- results line up with events -------------------------------------------------------------


def test_results_line_up_with_events(
    provider: Provider, mocked_http: responses.RequestsMock
) -> None:
    # given: the middle event is one the consent policy keeps from this provider
    mock_all(mocked_http, provider, status=200, json={})
    policy = {provider.id: {"requires_consent": True, "identifiers_with": ["granted"]}}
    denied = full_conversion(consent="denied")
    events = [outbound(n=0), outbound(denied, n=1), outbound(n=2)]
    # when
    with with_consent_policy(policy):
        results = send(provider, events)
    # then
    assert [r.outcome for r in results] == [
        Outcome.DELIVERED,
        Outcome.INELIGIBLE,
        Outcome.DELIVERED,
    ]
    assert results[1].exchange is None and results[1].reason


def test_no_events_send_nothing(provider: Provider, mocked_http: responses.RequestsMock) -> None:
    assert send(provider, []) == []
    assert len(mocked_http.calls) == 0


def test_a_body_that_cannot_be_built_fails_only_its_event(
    provider: Provider, mocked_http: responses.RequestsMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given: a bug (or an impossible value) hits the second event only
    mock_all(mocked_http, provider, status=200, json={})
    build = provider.build_body
    bad = outbound(n=1)

    def flaky(event: OutboundEvent) -> dict[str, Any]:
        if event.event_id == bad.event_id:
            raise ValueError("cannot encode this")
        return build(event)

    monkeypatch.setattr(provider, "build_body", flaky)
    # when
    results = send(provider, [outbound(n=0), bad, outbound(n=2)])
    # then
    assert [r.outcome for r in results] == [Outcome.DELIVERED, Outcome.FAILED, Outcome.DELIVERED]
    assert "cannot encode this" in results[1].reason


def test_a_key_that_cannot_travel_in_a_header_sends_nothing(
    provider: Provider, mocked_http: responses.RequestsMock
) -> None:
    # given
    mock_all(mocked_http, provider, status=200, json={})
    key = "bad key\nwith-a-newline"
    # when
    [result] = send(provider, [outbound()], key=key)
    # then
    assert result.outcome == Outcome.AUTH_FAILED
    assert "key" in result.reason and key not in result.reason
    assert len(mocked_http.calls) == 0


# --- the key never leaks -----------------------------------------------------------------------

_ECHOES: list[tuple[str, Callable[[str], dict[str, Any]]]] = [
    ("body", lambda key: {"status": 400, "json": {"detail": f"bad key {key}"}}),
    ("header", lambda key: {"status": 403, "headers": {"X-Echo": key}, "body": key}),
    ("error", lambda key: {"body": requests.ConnectionError(f"refused for key={key}")}),
    ("accepted", lambda key: {"status": 200, "json": {"message": f"hello {key}"}}),
]


@pytest.mark.parametrize(("where", "answer"), _ECHOES, ids=[e[0] for e in _ECHOES])
def test_the_api_key_never_appears_in_results_or_logs(
    provider: Provider,
    mocked_http: responses.RequestsMock,
    caplog: pytest.LogCaptureFixture,
    where: str,
    answer: Callable[[str], dict[str, Any]],
) -> None:
    # given: a provider that echoes the key back
    mock_all(mocked_http, provider, **answer(API_KEY))
    caplog.set_level(logging.DEBUG)
    # when
    results = send(provider, [outbound(n=0), outbound(n=1)])
    # then
    for result in results:
        no_secret_in(result, API_KEY)
    assert caplog.records, "the HTTP layer logs each request"
    for record in caplog.records:
        assert API_KEY not in record.getMessage()
        assert API_KEY not in str(record.exc_info or "")


def test_the_consent_policy_can_make_any_provider_skip(provider: Provider) -> None:
    # given: the site owner wants explicit consent for this provider
    policy = {provider.id: {"requires_consent": True, "identifiers_with": ["granted"]}}
    conversion = full_conversion(consent="denied")
    # when
    with with_consent_policy(policy):
        reason = provider.ineligible_reason(conversion)
    # then
    assert reason is not None and "consent" in reason
