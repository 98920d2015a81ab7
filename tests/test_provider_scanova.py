"""Scanova: golden bodies, eligibility, every status row, Retry-After, batches, limits, secrets."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from email.utils import format_datetime
from typing import Any

import pytest
import requests
import responses
from django.conf import settings
from django.test import override_settings

from django_conversions.conversion import (
    PROPERTIES_MAX_BYTES,
    Conversion,
    Customer,
    LineItem,
    properties_size,
)
from django_conversions.providers.base import Outcome, SiteConfig
from django_conversions.providers.scanova import ScanovaProvider
from django_conversions.testing import (
    SCAN_SESSION,
    full_conversion,
    last_headers,
    last_json,
    outbound,
)

BASE = "https://track.example.test"
EVENT_URL = f"{BASE}/server-events"
BATCH_URL = f"{BASE}/server-events/batch"
KEY = "scn_live_5f2a9c1e7b3d4e8f9a0b1c2d"
EMAIL_HASH = "ad972ab068ba55a1865da271ea3432a090ba8e2e4940cace698c001dc9629e3d"
PHONE_HASH = "0fafb671dccdb1669e97af79ded7bc9b91b40e83020c04539d0c3aebc54deb08"
LIMIT = PROPERTIES_MAX_BYTES


def scanova(**site: Any) -> ScanovaProvider:
    return ScanovaProvider(
        SiteConfig(**{"provider_site_id": "site_abc123", "endpoint_url": BASE, **site})
    )


def send(provider: ScanovaProvider, events: list[Any]) -> list[Any]:
    return provider.send(requests.Session(), KEY, events, timeout=(1.0, 2.0))


def minimal(**changes: Any) -> Conversion:
    return Conversion(**{"event_name": "purchase", "scan_session_id": SCAN_SESSION, **changes})


def consent_policy(policy: dict[str, Any]) -> Any:
    return override_settings(CONVERSIONS={**settings.CONVERSIONS, "CONSENT_POLICY": policy})


# --- golden bodies -------------------------------------------------------------------------


def test_full_conversion_golden_body(mocked_http: responses.RequestsMock) -> None:
    # given
    mocked_http.post(EVENT_URL, json={"success": True, "message": "Event received"})
    # when
    [result] = send(scanova(), [outbound(full_conversion())])
    # then
    assert result.outcome == Outcome.DELIVERED
    assert last_json(mocked_http) == {
        "site_id": "site_abc123",
        "event_name": "purchase",
        "scan_session_id": "550e8400-e29b-41d4-a716-446655440000",
        "event_id": "3c90c3cc-0d44-4b50-8888-8dd25736052a",
        "event_time": "2024-05-01T12:30:00.000Z",
        "conversion_value": {"amount": 400.34, "currency": "RON"},
        "user_identifiers": {
            "email_hash": EMAIL_HASH,
            "phone_hash": PHONE_HASH,
            "external_id": "cust-42",
        },
        "properties": {
            "order_id": "1001",
            "product_ids": ["sku-1", "sku-2"],
            "coupons": ["SPRING10", "VIP"],
            "order_status": "paid",
            "channel": "qr-flyer",
        },
        "consent": "granted",
    }
    raw = mocked_http.calls[0].request.body.decode()
    assert '"amount":400.34,' in raw
    assert "ana.pop@example.com" not in raw.lower() and "775" not in raw


def test_minimal_conversion_golden_body(mocked_http: responses.RequestsMock) -> None:
    mocked_http.post(EVENT_URL, json={"event_id": "x", "status": "accepted"})
    [result] = send(scanova(), [outbound(minimal())])
    assert result.outcome == Outcome.DELIVERED
    assert last_json(mocked_http) == {
        "site_id": "site_abc123",
        "event_name": "purchase",
        "scan_session_id": SCAN_SESSION,
        "event_id": "3c90c3cc-0d44-4b50-8888-8dd25736052a",
        "event_time": "2024-05-01T12:30:00.000Z",
    }


def test_headers_are_the_documented_ones(mocked_http: responses.RequestsMock) -> None:
    mocked_http.post(EVENT_URL, json={"success": True})
    send(scanova(), [outbound(minimal())])
    headers = last_headers(mocked_http)
    assert headers["X-API-Key"] == KEY
    assert headers["Content-Type"] == "application/json"
    assert "Authorization" not in headers


def test_the_default_endpoint_is_the_documented_one() -> None:
    provider = ScanovaProvider(SiteConfig(provider_site_id="s"))
    assert provider.url(provider.event_path) == "https://track.scanova.io/server-events"
    assert provider.url(provider.batch_path or "") == "https://track.scanova.io/server-events/batch"


def test_event_time_falls_back_to_when_the_event_was_recorded() -> None:
    # given: no occurred_at, recorded at 14:00 in UTC+2
    recorded = datetime(2024, 5, 1, 14, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    event = outbound(minimal())
    event = type(event)(event.event_id, event.conversion, recorded)
    # when
    body = scanova().build_body(event)
    # then
    assert body["event_time"] == "2024-05-01T12:00:00.123Z"


def test_an_endpoint_url_with_a_path_prefix_keeps_it(mocked_http: responses.RequestsMock) -> None:
    mocked_http.post("https://proxy.example.test/scanova/server-events", json={"success": True})
    provider = scanova(endpoint_url="https://proxy.example.test/scanova/")
    [result] = send(provider, [outbound(minimal())])
    assert result.outcome == Outcome.DELIVERED


# --- money -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "currency", "wire"),
    [
        (0, "USD", "0.00"),
        ("0.005", "USD", "0.01"),
        (0.005, "EUR", "0.01"),
        (1e9, "USD", "1000000000.00"),
        ("0.1234567891", "USD", "0.12"),
        (400.335, "RON", "400.34"),
        ("1500", "JPY", "1500"),
        ("1500.5", "JPY", "1501"),
        ("12.3456", "BHD", "12.346"),
        ("12345678901234567.89", "USD", "12345678901234567.89"),
    ],
)
def test_money_goes_out_as_an_exact_number(
    mocked_http: responses.RequestsMock, value: Any, currency: str, wire: str
) -> None:
    # given
    mocked_http.post(EVENT_URL, json={"success": True})
    # when
    send(scanova(), [outbound(minimal(value=value, currency=currency))])
    # then: the JSON number has the currency's minor unit, digit for digit
    raw = mocked_http.calls[0].request.body.decode()
    assert f'"conversion_value":{{"amount":{wire},"currency":"{currency}"}}' in raw
    parsed = json.loads(raw, parse_float=Decimal)["conversion_value"]["amount"]
    assert Decimal(parsed) == Decimal(wire)


# --- eligibility ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"scan_session_id": None}, "no scan session id"),
        ({"scan_session_id": "   "}, "no scan session id"),
        ({"scan_session_id": "not-a-uuid"}, "is not a UUID"),
        ({"value": "10", "currency": None}, "needs an ISO 4217 code"),
        ({"properties": {"blob": "x" * LIMIT}}, "over Scanova's 10 KB limit"),
        ({"coupons": ["é" * 250] * 10}, "over Scanova's 10 KB limit"),  # \u00e9: 6 bytes each
    ],
)
def test_ineligible_conversions_are_not_sent(
    mocked_http: responses.RequestsMock, changes: dict[str, Any], words: str
) -> None:
    # given
    conversion = minimal(**changes)
    # when
    [result] = send(scanova(), [outbound(conversion)])
    # then
    assert result.outcome == Outcome.INELIGIBLE
    assert words in result.reason
    assert result.exchange is None and len(mocked_http.calls) == 0


@pytest.mark.parametrize("coupons", [["c" * 250] * 10, ["é" * 250] * 5, ["c"] * 2])
def test_order_facts_under_the_limit_are_eligible(coupons: list[str]) -> None:
    assert scanova().ineligible_reason(minimal(order_id="A-1", coupons=coupons)) is None


def test_a_site_without_a_site_id_has_a_problem() -> None:
    assert "provider site id" in (scanova(provider_site_id="").site_problem() or "")


def test_a_site_id_over_64_characters_has_a_problem() -> None:
    assert scanova(provider_site_id="s" * 64).site_problem() is None
    assert "at most 64" in (scanova(provider_site_id="s" * 65).site_problem() or "")


def test_the_consent_policy_can_require_consent_for_scanova() -> None:
    with consent_policy({"scanova": {"requires_consent": True}}):
        assert "consent" in (scanova().ineligible_reason(minimal(consent="pending")) or "")
        assert scanova().ineligible_reason(minimal(consent="granted")) is None


# --- consent and identifiers --------------------------------------------------------------------


@pytest.mark.parametrize("consent", ["denied", "pending"])
def test_without_consent_no_user_identifiers_are_sent(
    mocked_http: responses.RequestsMock, consent: str
) -> None:
    # given
    mocked_http.post(EVENT_URL, json={"success": True})
    # when
    [result] = send(scanova(), [outbound(full_conversion(consent=consent))])
    # then: the event goes, without identifiers, with the consent signal
    body = last_json(mocked_http)
    assert result.outcome == Outcome.DELIVERED
    assert "user_identifiers" not in body
    assert body["consent"] == consent


@pytest.mark.parametrize("consent", ["denied", "pending"])
def test_without_consent_the_outbox_keeps_no_customer(consent: str) -> None:
    stored = scanova().minimize(full_conversion(consent=consent))
    assert stored.customer is None


def test_unknown_consent_sends_hashes_and_no_consent_field(
    mocked_http: responses.RequestsMock,
) -> None:
    mocked_http.post(EVENT_URL, json={"success": True})
    send(scanova(), [outbound(full_conversion(consent=None))])
    body = last_json(mocked_http)
    assert body["user_identifiers"]["email_hash"] == EMAIL_HASH
    assert "consent" not in body


def test_a_national_phone_without_country_code_sends_no_phone_hash() -> None:
    conversion = minimal(customer=Customer(email="ana.pop@example.com", phone="0775 123 123"))
    body = scanova().build_body(outbound(conversion))
    assert body["user_identifiers"] == {"email_hash": EMAIL_HASH}


def test_the_stored_hashes_are_what_is_sent() -> None:
    # given: the outbox stores only hashes for Scanova
    stored = scanova().minimize(full_conversion())
    # then
    assert stored.customer == Customer(
        external_id="cust-42", email_sha256=EMAIL_HASH, phone_sha256=PHONE_HASH
    )
    ids = scanova().build_body(outbound(stored))["user_identifiers"]
    assert ids == {"email_hash": EMAIL_HASH, "phone_hash": PHONE_HASH, "external_id": "cust-42"}


def test_an_external_id_that_is_an_email_is_not_sent(caplog: pytest.LogCaptureFixture) -> None:
    conversion = minimal(customer=Customer(email="ana.pop@example.com", external_id="ana@x.io"))
    body = scanova().build_body(outbound(conversion))
    assert body["user_identifiers"] == {"email_hash": EMAIL_HASH}
    assert "ana@x.io" not in caplog.text


# --- properties ---------------------------------------------------------------------------------


def test_raw_emails_are_dropped_from_properties(caplog: pytest.LogCaptureFixture) -> None:
    # given
    caplog.set_level(logging.WARNING)
    properties = {
        "note": "call me, or write to Ana <ana.pop@example.com>",
        "tags": ["vip", "mailto:b@c.org", "spring"],
        "nested": {"contact": "d@e.co.uk", "count": 3},
        "who@example.com": True,
        "channel": "flyer",
    }
    # when
    body = scanova().build_body(outbound(minimal(properties=properties)))
    # then
    assert body["properties"] == {
        "tags": ["vip", "spring"],
        "nested": {"count": 3},
        "channel": "flyer",
    }
    assert "@" not in json.dumps(body)
    assert caplog.records and "@" not in caplog.text


def test_an_email_in_the_order_facts_is_not_sent() -> None:
    # given: no custom properties, an email where a coupon code and a product id should be
    conversion = minimal(
        order_id="A-7", coupons=["SPRING", "ana@example.com"], items=[LineItem(id="b@c.org")]
    )
    # when
    body = scanova().build_body(outbound(conversion))
    # then: only the email addresses are left out
    assert body["properties"] == {"order_id": "A-7", "product_ids": [], "coupons": ["SPRING"]}


def test_the_outbox_does_not_store_property_emails_for_scanova() -> None:
    stored = scanova().minimize(minimal(properties={"note": "x@y.com", "keep": 1}))
    assert stored.properties == {"keep": 1}


def test_properties_just_under_the_limit_are_sent_whole(
    mocked_http: responses.RequestsMock,
) -> None:
    # given: properties that serialise to exactly the limit
    base = {"order_id": "1001", "blob": ""}
    filler = LIMIT - properties_size(base)
    conversion = minimal(order_id="1001", properties={"blob": "é" * (filler // 6)})
    size = properties_size(scanova().properties(conversion))
    assert LIMIT - 6 < size <= LIMIT
    mocked_http.post(EVENT_URL, json={"success": True})
    # when
    [result] = send(scanova(), [outbound(conversion)])
    # then: the UTF-8 body carries the characters unescaped
    assert result.outcome == Outcome.DELIVERED
    assert last_json(mocked_http)["properties"]["blob"] == "é" * (filler // 6)
    assert "é" in mocked_http.calls[0].request.body.decode()


def test_properties_one_character_over_the_limit_are_refused() -> None:
    base = {"order_id": "1001", "blob": ""}
    conversion = minimal(
        order_id="1001", properties={"blob": "x" * (LIMIT - properties_size(base) + 1)}
    )
    reason = scanova().ineligible_reason(conversion)
    assert reason is not None and f"{LIMIT + 1} bytes" in reason


def test_a_long_product_list_is_shortened_to_fit(caplog: pytest.LogCaptureFixture) -> None:
    # given: 2,000 order lines
    caplog.set_level(logging.INFO)
    items = [LineItem(f"product-{n:05d}") for n in range(2000)]
    conversion = minimal(order_id="1001", items=items)
    # when
    provider = scanova()
    body = provider.build_body(outbound(conversion))
    # then: still eligible, as many ids as fit, marked as cut
    assert provider.ineligible_reason(conversion) is None
    properties = body["properties"]
    assert properties["product_ids_truncated"] is True
    kept = len(properties["product_ids"])
    assert properties["product_ids"] == [f"product-{n:05d}" for n in range(kept)]
    assert properties_size(properties) <= LIMIT
    one_more = {**properties, "product_ids": [i.id for i in items[: kept + 1]]}
    assert properties_size(one_more) > LIMIT
    assert f"Sending {kept} of 2000 product ids" in caplog.text


def test_custom_properties_win_over_the_order_facts() -> None:
    conversion = minimal(order_id="1001", properties={"order_id": "A-1001"})
    assert scanova().build_body(outbound(conversion))["properties"] == {"order_id": "A-1001"}


# --- Unicode ------------------------------------------------------------------------------------


def test_unicode_names_and_values(mocked_http: responses.RequestsMock) -> None:
    # given
    mocked_http.post(EVENT_URL, json={"success": True})
    conversion = minimal(
        event_name="Achat Réussi",
        order_id="Nº 1001",
        coupons=("ÉTÉ-2024",),
        properties={"城市": "東京"},
    )
    # when
    send(scanova(), [outbound(conversion)])
    # then
    body = last_json(mocked_http)
    assert body["event_name"] == "achat_réussi"
    assert body["properties"] == {"order_id": "Nº 1001", "coupons": ["ÉTÉ-2024"], "城市": "東京"}
    assert "東京".encode() in mocked_http.calls[0].request.body


# --- every status row ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [
        {
            "success": True,
            "event_id": "3c90c3cc-0d44-4b50-8888-8dd25736052a",
            "message": "Event received",
        },
        {"event_id": "3c90c3cc-0d44-4b50-8888-8dd25736052a", "status": "accepted"},
    ],
)
def test_200_in_either_documented_form_is_delivered(
    mocked_http: responses.RequestsMock, answer: dict[str, Any]
) -> None:
    mocked_http.post(EVENT_URL, json=answer)
    [result] = send(scanova(), [outbound(minimal())])
    assert result.outcome == Outcome.DELIVERED


def test_a_duplicate_event_id_answered_200_is_delivered(
    mocked_http: responses.RequestsMock,
) -> None:
    # given: the same event sent twice (a retry after a lost answer)
    mocked_http.post(EVENT_URL, json={"success": True})
    event = outbound(minimal())
    # when
    first = send(scanova(), [event])
    again = send(scanova(), [event])
    # then: same event_id on the wire both times
    assert [r.outcome for r in first + again] == [Outcome.DELIVERED, Outcome.DELIVERED]
    ids = {json.loads(c.request.body)["event_id"] for c in mocked_http.calls}
    assert ids == {str(event.event_id)}


@pytest.mark.parametrize(
    ("status", "body", "outcome", "reason"),
    [
        (400, {"detail": "site_id not found or inactive"}, Outcome.AUTH_FAILED,
         "HTTP 400: site_id not found or inactive"),
        (401, {"detail": "Missing X-API-Key header"}, Outcome.AUTH_FAILED,
         "HTTP 401: Missing X-API-Key header"),
        (403, {"detail": "Invalid or revoked API key"}, Outcome.AUTH_FAILED,
         "HTTP 403: Invalid or revoked API key"),
        (403, {"detail": "site_id does not match the API key's site"}, Outcome.AUTH_FAILED,
         "HTTP 403: site_id does not match the API key's site"),
        (413, {"detail": "Payload too large"}, Outcome.FAILED, "HTTP 413: Payload too large"),
        (422, {"detail": [{"loc": ["body", "scan_session_id"], "msg": "value is not a valid uuid",
                           "type": "type_error.uuid"}]}, Outcome.FAILED,
         "HTTP 422: scan_session_id: value is not a valid uuid"),
        (429, {"detail": "Rate limit exceeded"}, Outcome.RETRY, "HTTP 429: Rate limit exceeded"),
        (500, {"detail": "Internal error"}, Outcome.RETRY, "HTTP 500: Internal error"),
        (502, "<html>Bad Gateway</html>", Outcome.RETRY, "HTTP 502: <html>Bad Gateway</html>"),
        (503, None, Outcome.RETRY, "HTTP 503"),
        (504, {"detail": "Gateway timeout"}, Outcome.RETRY, "HTTP 504: Gateway timeout"),
    ],
)  # fmt: skip
def test_every_documented_status_row(
    mocked_http: responses.RequestsMock, status: int, body: Any, outcome: Outcome, reason: str
) -> None:
    # given
    if isinstance(body, str):
        mocked_http.post(EVENT_URL, status=status, body=body)
    elif body is None:
        mocked_http.post(EVENT_URL, status=status)
    else:
        mocked_http.post(EVENT_URL, status=status, json=body)
    # when
    [result] = send(scanova(), [outbound(minimal())])
    # then
    assert (result.outcome, result.reason) == (outcome, reason)
    assert result.exchange is not None and result.exchange.status == status


def test_422_lists_every_field_error(mocked_http: responses.RequestsMock) -> None:
    detail = [
        {"loc": ["body", "conversion_value", "currency"], "msg": "must be 3 letters", "type": "x"},
        {"loc": ["body", "properties"], "msg": "raw email address", "type": "y"},
    ]
    mocked_http.post(EVENT_URL, status=422, json={"detail": detail})
    [result] = send(scanova(), [outbound(minimal())])
    assert result.reason == (
        "HTTP 422: conversion_value.currency: must be 3 letters; properties: raw email address"
    )


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (requests.ReadTimeout("slow"), Outcome.RETRY),
        (requests.ConnectionError("reset"), Outcome.RETRY),
    ],
)
def test_timeouts_and_connection_errors_are_retried(
    mocked_http: responses.RequestsMock, error: Exception, outcome: Outcome
) -> None:
    mocked_http.post(EVENT_URL, body=error)
    [result] = send(scanova(), [outbound(minimal())])
    assert result.outcome == outcome


# --- Retry-After -------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_in_seconds(mocked_http: responses.RequestsMock, status: int) -> None:
    mocked_http.post(EVENT_URL, status=status, headers={"Retry-After": "17"})
    [result] = send(scanova(), [outbound(minimal())])
    assert result.outcome == Outcome.RETRY and result.retry_after == 17.0


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_as_an_http_date(mocked_http: responses.RequestsMock, status: int) -> None:
    when = datetime.now(UTC) + timedelta(seconds=120)
    mocked_http.post(
        EVENT_URL, status=status, headers={"Retry-After": format_datetime(when, usegmt=True)}
    )
    [result] = send(scanova(), [outbound(minimal())])
    assert result.outcome == Outcome.RETRY
    assert result.retry_after is not None and 110 <= result.retry_after <= 120


def test_429_without_retry_after_waits_60_seconds(mocked_http: responses.RequestsMock) -> None:
    mocked_http.post(EVENT_URL, status=429)
    [result] = send(scanova(), [outbound(minimal())])
    assert result.retry_after == 60.0


def test_503_without_retry_after_leaves_the_wait_to_delivery(
    mocked_http: responses.RequestsMock,
) -> None:
    mocked_http.post(EVENT_URL, status=503)
    [result] = send(scanova(), [outbound(minimal())])
    assert result.outcome == Outcome.RETRY and result.retry_after is None


# --- batches ------------------------------------------------------------------------------------


def events(n: int, **changes: Any) -> list[Any]:
    return [outbound(minimal(order_id=str(1000 + i), **changes), n=i) for i in range(n)]


def test_several_events_go_in_one_batch_request(mocked_http: responses.RequestsMock) -> None:
    # given
    mocked_http.post(BATCH_URL, json={"success": True})
    batch = events(3)
    # when
    results = send(scanova(), batch)
    # then: {"events": [<the single bodies>]}
    assert [r.outcome for r in results] == [Outcome.DELIVERED] * 3
    assert len(mocked_http.calls) == 1
    provider = scanova()
    assert last_json(mocked_http) == {
        "events": [json.loads(json.dumps(provider.build_body(e), default=str)) for e in batch]
    }
    assert all(r.exchange and r.exchange.batch_size == 3 for r in results)


def test_prepare_builds_the_requests_without_sending_and_deliver_sends_them(
    mocked_http: responses.RequestsMock,
) -> None:
    # given: two sendable events and one Scanova can't take
    mocked_http.post(BATCH_URL, json={"success": True})
    provider = scanova()
    batch = [*events(2), outbound(minimal(scan_session_id=None), n=9)]
    # when
    prepared = provider.prepare(KEY, batch)
    # then: the bodies are built, nothing went out, the ineligible one is settled already
    assert len(mocked_http.calls) == 0
    [request] = prepared.requests
    assert json.loads(request.data)["events"][1]["event_id"] == str(batch[1].event_id)
    assert prepared.results[2].outcome == Outcome.INELIGIBLE
    # when
    results = provider.deliver(requests.Session(), KEY, prepared, timeout=(1.0, 2.0))
    # then: one request, a result per event in the order given
    assert len(mocked_http.calls) == 1
    assert [r.outcome for r in results] == [
        Outcome.DELIVERED,
        Outcome.DELIVERED,
        Outcome.INELIGIBLE,
    ]


def test_the_batch_size_is_configurable(mocked_http: responses.RequestsMock) -> None:
    # given: batches of 2
    mocked_http.post(BATCH_URL, json={"success": True})
    mocked_http.post(EVENT_URL, json={"success": True})
    # when
    results = send(scanova(batch_size=2), events(5))
    # then: 2 + 2 in batches, the last one alone on the single endpoint
    assert [r.outcome for r in results] == [Outcome.DELIVERED] * 5
    sent = [(c.request.url, json.loads(c.request.body)) for c in mocked_http.calls]
    assert [(url, len(b["events"]) if "events" in b else 1) for url, b in sent] == [
        (BATCH_URL, 2),
        (BATCH_URL, 2),
        (EVENT_URL, 1),
    ]


def test_a_batch_answered_413_is_split_until_it_fits(mocked_http: responses.RequestsMock) -> None:
    # given: the provider takes at most 2 events per request
    def answer(request: Any) -> tuple[int, dict[str, str], str]:
        size = len(json.loads(request.body)["events"])
        return (413, {}, '{"detail":"Payload too large"}') if size > 2 else (200, {}, "{}")

    mocked_http.add_callback(responses.POST, BATCH_URL, callback=answer)
    mocked_http.post(EVENT_URL, json={"success": True})
    batch = events(5)
    # when
    results = send(scanova(), batch)
    # then: 5 -> 2 + 3 -> 2 + (1 + 2); every event delivered once
    assert [r.outcome for r in results] == [Outcome.DELIVERED] * 5
    sent_ids = []
    for call in mocked_http.calls:
        body = json.loads(call.request.body)
        if call.response is not None and call.response.status_code == 200:
            sent_ids += [e["event_id"] for e in body.get("events", [body])]
    assert sorted(sent_ids) == sorted(str(e.event_id) for e in batch)


def test_a_single_event_answered_413_fails(mocked_http: responses.RequestsMock) -> None:
    mocked_http.post(EVENT_URL, status=413, json={"detail": "Payload too large"})
    [result] = send(scanova(), [outbound(minimal())])
    assert result.outcome == Outcome.FAILED


def test_a_batch_refused_for_one_bad_event_fails_only_that_event(
    mocked_http: responses.RequestsMock,
) -> None:
    # given: the provider refuses any request that carries event 2
    batch = events(4)
    bad = str(batch[2].event_id)

    def answer(request: Any) -> tuple[int, dict[str, str], str]:
        body = json.loads(request.body)
        if bad in [e["event_id"] for e in body.get("events", [body])]:
            detail = [{"loc": ["body", "event_name"], "msg": "reserved name", "type": "x"}]
            return 422, {}, json.dumps({"detail": detail})
        return 200, {}, "{}"

    mocked_http.add_callback(responses.POST, BATCH_URL, callback=answer)
    mocked_http.add_callback(responses.POST, EVENT_URL, callback=answer)
    # when
    results = send(scanova(), batch)
    # then
    assert [r.outcome for r in results] == [
        Outcome.DELIVERED,
        Outcome.DELIVERED,
        Outcome.FAILED,
        Outcome.DELIVERED,
    ]
    assert results[2].reason == "HTTP 422: event_name: reserved name"


def test_a_batch_refused_for_its_site_id_is_not_split(mocked_http: responses.RequestsMock) -> None:
    mocked_http.post(BATCH_URL, status=400, json={"detail": "site_id not found or inactive"})
    results = send(scanova(), events(4))
    assert len(mocked_http.calls) == 1
    assert {r.outcome for r in results} == {Outcome.AUTH_FAILED}


@pytest.mark.parametrize(("status", "outcome"), [(401, Outcome.AUTH_FAILED), (503, Outcome.RETRY)])
def test_a_batch_error_applies_to_every_event(
    mocked_http: responses.RequestsMock, status: int, outcome: Outcome
) -> None:
    mocked_http.post(BATCH_URL, status=status, headers={"Retry-After": "5"})
    results = send(scanova(), events(3))
    assert len(mocked_http.calls) == 1
    assert [r.outcome for r in results] == [outcome] * 3


def test_per_event_batch_results_are_mapped_back_by_event_id(
    mocked_http: responses.RequestsMock,
) -> None:
    # given: an answer listing each event, in another order than sent
    batch = events(4)
    ids = [str(e.event_id) for e in batch]
    mocked_http.post(
        BATCH_URL,
        json={
            "results": [
                {"event_id": ids[3], "status": "accepted"},
                {"event_id": ids[1], "status": "rejected", "status_code": 422,
                 "detail": [{"loc": ["body", "scan_session_id"], "msg": "unknown scan session"}]},
                {"event_id": ids[0], "success": True},
                {"event_id": ids[2], "status": "duplicate"},
            ]
        },
    )  # fmt: skip
    # when
    results = send(scanova(), batch)
    # then
    assert [r.outcome for r in results] == [
        Outcome.DELIVERED,
        Outcome.FAILED,
        Outcome.DELIVERED,
        Outcome.DELIVERED,
    ]
    assert results[1].reason == "HTTP 422: scan_session_id: unknown scan session (in batch)"


def test_an_event_missing_from_a_batch_answer_is_retried(
    mocked_http: responses.RequestsMock,
) -> None:
    batch = events(2)
    mocked_http.post(
        BATCH_URL, json={"results": [{"event_id": str(batch[0].event_id), "success": True}]}
    )
    results = send(scanova(), batch)
    assert [r.outcome for r in results] == [Outcome.DELIVERED, Outcome.RETRY]


def test_a_batch_answer_listing_only_refusals(mocked_http: responses.RequestsMock) -> None:
    batch = events(3)
    mocked_http.post(
        BATCH_URL,
        json={
            "errors": [{"event_id": str(batch[1].event_id), "code": 429, "message": "slow down"}]
        },
    )
    results = send(scanova(), batch)
    assert [r.outcome for r in results] == [Outcome.DELIVERED, Outcome.RETRY, Outcome.DELIVERED]
    assert results[1].retry_after == 60.0


def test_batch_results_without_event_ids_follow_the_request_order(
    mocked_http: responses.RequestsMock,
) -> None:
    mocked_http.post(BATCH_URL, json={"results": [{"success": True}, {"status": "rejected"}]})
    results = send(scanova(), events(2))
    assert [r.outcome for r in results] == [Outcome.DELIVERED, Outcome.FAILED]


def test_an_ineligible_event_in_a_batch_keeps_its_place(
    mocked_http: responses.RequestsMock,
) -> None:
    mocked_http.post(BATCH_URL, json={"success": True})
    batch = events(3)
    batch[1] = outbound(minimal(scan_session_id=None), n=9)
    results = send(scanova(), batch)
    assert [r.outcome for r in results] == [
        Outcome.DELIVERED,
        Outcome.INELIGIBLE,
        Outcome.DELIVERED,
    ]
    assert len(last_json(mocked_http)["events"]) == 2


# --- secrets ------------------------------------------------------------------------------------


def test_no_api_key_in_any_reason_log_or_exception(
    mocked_http: responses.RequestsMock, caplog: pytest.LogCaptureFixture
) -> None:
    # given: answers that echo the key in every place they can
    caplog.set_level(logging.DEBUG)
    mocked_http.post(BATCH_URL, status=200, json={"results": [
        {"event_id": str(outbound(n=0).event_id), "status": "rejected", "detail": f"key {KEY}"},
        {"event_id": str(outbound(n=1).event_id), "success": True},
    ]}, headers={"X-Key": KEY})  # fmt: skip
    mocked_http.post(EVENT_URL, body=requests.ConnectionError(f"refused {KEY}"))
    # when
    results = send(scanova(), events(2)) + send(scanova(), [outbound(minimal(), n=5)])
    with pytest.raises(Exception) as raised:  # a broken batch reader is a bug: it raises
        bad = scanova()
        bad.read_batch_answer = lambda answer, request: []  # type: ignore[method-assign]
        send(bad, events(2))
    # then
    assert [r.outcome for r in results] == [Outcome.FAILED, Outcome.DELIVERED, Outcome.RETRY]
    for result in results:
        assert KEY not in result.reason and KEY not in repr(result.exchange)
    assert KEY not in caplog.text
    assert KEY not in str(raised.value)


def test_properties_follow_the_conversion_asked_about() -> None:
    # one provider checks and builds many events in a row (and on several threads)
    provider = scanova()
    first, second = minimal(order_id="A-1"), minimal(order_id="B-2", status="paid")
    seen = [provider.properties(c)["order_id"] for c in (first, second, first, first, second)]
    assert seen == ["A-1", "B-2", "A-1", "A-1", "B-2"]
    assert provider.properties(second)["order_status"] == "paid"
