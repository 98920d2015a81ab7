"""VTmarketing: golden bodies, exact field names and types, eligibility, answers, secrets."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.utils import format_datetime
from typing import Any

import pytest
import requests
import responses
from django.conf import settings
from django.test import override_settings

from django_conversions.conversion import Conversion, Customer, LineItem
from django_conversions.providers.base import Outcome, SiteConfig
from django_conversions.providers.vtmarketing import VTMarketingProvider
from django_conversions.testing import full_conversion, last_headers, last_json, outbound

BASE = "https://vt.example.test"
URL = f"{BASE}/v1/event/"
KEY = "vtm-api-8c7d6e5f4a3b2c1d0e9f8a7b"
CREATED = {
    "results": {"message": "Event created", "email": "Event was created for the specified user"}
}


def vt() -> VTMarketingProvider:
    return VTMarketingProvider(SiteConfig(endpoint_url=BASE))


def send(events: list[Any], key: str = KEY) -> list[Any]:
    return vt().send(requests.Session(), key, events, timeout=(1.0, 2.0))


def minimal(**changes: Any) -> Conversion:
    values: dict[str, Any] = {
        "event_name": "purchase",
        "order_id": "7",
        "value": "10",
        "customer": Customer(email="ana@example.com"),
        "consent": "granted",
    }
    return Conversion(**{**values, **changes})


def conversions(**extra: Any) -> Any:
    return override_settings(CONVERSIONS={**settings.CONVERSIONS, **extra})


# --- golden bodies -------------------------------------------------------------------------


def test_full_conversion_golden_body(mocked_http: responses.RequestsMock) -> None:
    # given
    mocked_http.post(URL, json=CREATED)
    # when
    [result] = send([outbound(full_conversion())])
    # then
    assert result.outcome == Outcome.DELIVERED
    assert last_json(mocked_http) == {
        "user": {
            "email": "ana.pop@example.com",
            "tel": "+40775123123",
            "firstname": "Ana",
            "lastname": "Pop",
            "country": "Romania",
            "city": "Brașov",
        },
        "event": {
            "confirmation": {
                "generic": {
                    "orderId": "1001",
                    "total": 400.34,
                    "status": "paid",
                    "coupons": ["SPRING10", "VIP"],
                    "currency": "RON",
                    "total_shipping": 22.0,
                    "phone": "+40775123123",
                },
                "items": [{"id": "sku-1", "quantity": 2}, {"id": "sku-2", "quantity": 1}],
            }
        },
    }
    raw = mocked_http.calls[0].request.body.decode()
    assert '"total":400.34,' in raw and '"total_shipping":22.00,' in raw
    assert '"orderId":"1001"' in raw and '"quantity":2}' in raw
    assert "Brașov" in raw  # UTF-8, not \\u escapes


def test_minimal_conversion_golden_body(mocked_http: responses.RequestsMock) -> None:
    mocked_http.post(URL, json=CREATED)
    [result] = send([outbound(minimal())])
    assert result.outcome == Outcome.DELIVERED
    assert mocked_http.calls[0].request.body == (
        b'{"user":{"email":"ana@example.com"},'
        b'"event":{"confirmation":{"generic":{"orderId":"7","total":10.00}}}}'
    )


def test_headers_carry_the_raw_key_without_a_scheme(mocked_http: responses.RequestsMock) -> None:
    mocked_http.post(URL, json=CREATED)
    send([outbound(minimal())])
    headers = last_headers(mocked_http)
    assert headers["Authorization"] == KEY
    assert headers["Content-Type"] == "application/json"
    assert "X-API-Key" not in headers


def test_the_default_endpoint_is_the_documented_one() -> None:
    assert VTMarketingProvider().url(VTMarketingProvider.event_path) == (
        "https://api.vtcdn.net/v1/event/"
    )


def test_types_are_exact_whatever_the_conversion_was_given() -> None:
    # given: numbers where strings go, strings where numbers go
    conversion = minimal(
        order_id=1001,
        value="99.9",
        shipping="5",
        currency="eur",
        items=[{"id": 12345, "quantity": "3"}, LineItem(id="amnsdf", quantity=1)],
    )
    # when
    body = vt().build_body(outbound(conversion))
    generic = body["event"]["confirmation"]["generic"]
    # then
    assert generic["orderId"] == "1001"
    assert generic["total"] == Decimal("99.90") and generic["total_shipping"] == Decimal("5.00")
    assert generic["currency"] == "EUR"
    assert body["event"]["confirmation"]["items"] == [
        {"id": "12345", "quantity": 3},
        {"id": "amnsdf", "quantity": 1},
    ]


@pytest.mark.parametrize(
    ("value", "currency", "wire"),
    [
        (0, "RON", "0.00"),
        ("0.005", "USD", "0.01"),
        (1e9, "EUR", "1000000000.00"),
        ("400.3349999999", "RON", "400.33"),
        (400.335, "RON", "400.34"),
        ("1500.4", "JPY", "1500"),
    ],
)
def test_total_is_an_exact_number(
    mocked_http: responses.RequestsMock, value: Any, currency: str, wire: str
) -> None:
    mocked_http.post(URL, json=CREATED)
    send([outbound(minimal(value=value, currency=currency))])
    raw = mocked_http.calls[0].request.body.decode()
    assert f'"total":{wire},"currency":"{currency}"' in raw


def test_unicode_names_go_out_as_utf8(mocked_http: responses.RequestsMock) -> None:
    mocked_http.post(URL, json=CREATED)
    customer = Customer(
        email="zoe@example.com", first_name="Zoë", last_name="Ștefănescu", city="東京"
    )
    send([outbound(minimal(customer=customer))])
    assert last_json(mocked_http)["user"] == {
        "email": "zoe@example.com",
        "firstname": "Zoë",
        "lastname": "Ștefănescu",
        "city": "東京",
    }
    assert "Ștefănescu".encode() in mocked_http.calls[0].request.body


# --- eligibility ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"customer": None}, "no customer email"),
        ({"customer": Customer(phone="+40775123123")}, "no customer email"),
        ({"order_id": None}, "no order id"),
        ({"value": None}, "no order total"),
        ({"consent": None}, "consent unknown"),
        ({"consent": "denied"}, "consent denied"),
        ({"consent": "pending"}, "consent pending"),
    ],
)
def test_ineligible_conversions_are_not_sent(
    mocked_http: responses.RequestsMock, changes: dict[str, Any], words: str
) -> None:
    [result] = send([outbound(minimal(**changes))])
    assert result.outcome == Outcome.INELIGIBLE
    assert words in result.reason
    assert len(mocked_http.calls) == 0


def test_consent_can_be_made_optional_for_vtmarketing() -> None:
    with conversions(CONSENT_POLICY={"vtmarketing": {"requires_consent": False}}):
        assert vt().ineligible_reason(minimal(consent=None)) is None
        assert vt().ineligible_reason(minimal(consent="denied")) is not None  # no identifiers


def test_only_order_events_are_taken() -> None:
    assert vt().accepts_event("purchase")
    assert not vt().accepts_event("signup")
    with conversions(ORDER_EVENT_NAME="Order Completed"):
        assert vt().accepts_event("order_completed")


def test_the_outbox_keeps_what_vtmarketing_needs_and_nothing_else() -> None:
    # given
    conversion = full_conversion(properties={"campaign": "spring"})
    # when
    stored = vt().minimize(conversion)
    # then
    assert stored.customer == Customer(
        email="ana.pop@example.com",
        phone="+40775123123",
        first_name="Ana",
        last_name="Pop",
        city="Brașov",
        country="Romania",
    )
    assert stored.properties is None


def test_the_outbox_keeps_no_customer_without_consent() -> None:
    assert vt().minimize(full_conversion(consent="pending")).customer is None


# --- answers -------------------------------------------------------------------------------


def test_200_is_delivered(mocked_http: responses.RequestsMock) -> None:
    mocked_http.post(URL, json=CREATED)
    [result] = send([outbound(minimal())])
    assert (result.outcome, result.reason) == (Outcome.DELIVERED, "accepted (HTTP 200)")


@pytest.mark.parametrize(
    ("errors", "reason"),
    [
        (
            [{"message": "Missing event information",
              "description": "Please send event information along with user"}],
            "Missing event information (Please send event information along with user)",
        ),
        (
            [{"message": "Invalid email"}, {"message": "Invalid total", "description": "float"}],
            "Invalid email; Invalid total (float)",
        ),
        ([{"description": "only a description"}], "only a description"),
    ],
)  # fmt: skip
def test_errors_messages_become_the_reason(
    mocked_http: responses.RequestsMock, errors: list[dict[str, str]], reason: str
) -> None:
    mocked_http.post(URL, status=400, json={"errors": errors})
    [result] = send([outbound(minimal())])
    assert (result.outcome, result.reason) == (Outcome.FAILED, f"HTTP 400: {reason}")


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (201, Outcome.FAILED),  # "any status code other than 200 indicates an error"
        (204, Outcome.FAILED),
        (400, Outcome.FAILED),
        (401, Outcome.AUTH_FAILED),
        (403, Outcome.AUTH_FAILED),
        (404, Outcome.FAILED),
        (405, Outcome.FAILED),
        (408, Outcome.RETRY),
        (409, Outcome.FAILED),
        (422, Outcome.FAILED),
        (429, Outcome.RETRY),
        (500, Outcome.RETRY),
        (502, Outcome.RETRY),
        (503, Outcome.RETRY),
        (504, Outcome.RETRY),
    ],
)
def test_statuses(mocked_http: responses.RequestsMock, status: int, outcome: Outcome) -> None:
    mocked_http.post(URL, status=status, json={"errors": [{"message": "nope"}]})
    [result] = send([outbound(minimal())])
    assert result.outcome == outcome
    assert result.reason.startswith(f"HTTP {status}")


def test_a_non_json_error_body_is_the_reason(mocked_http: responses.RequestsMock) -> None:
    mocked_http.post(URL, status=500, body="<h1>Internal   Server\nError</h1>")
    [result] = send([outbound(minimal())])
    assert result.reason == "HTTP 500: <h1>Internal Server Error</h1>"


@pytest.mark.parametrize("error", [requests.ReadTimeout("slow"), requests.ConnectionError("down")])
def test_timeouts_and_connection_errors_are_retried(
    mocked_http: responses.RequestsMock, error: Exception
) -> None:
    mocked_http.post(URL, body=error)
    [result] = send([outbound(minimal())])
    assert result.outcome == Outcome.RETRY and result.http_status is None


def test_429_retry_after_seconds(mocked_http: responses.RequestsMock) -> None:
    mocked_http.post(URL, status=429, headers={"Retry-After": "90"})
    [result] = send([outbound(minimal())])
    assert (result.outcome, result.retry_after) == (Outcome.RETRY, 90.0)


def test_429_retry_after_http_date(mocked_http: responses.RequestsMock) -> None:
    when = datetime.now(UTC) + timedelta(minutes=5)
    mocked_http.post(URL, status=429, headers={"Retry-After": format_datetime(when, usegmt=True)})
    [result] = send([outbound(minimal())])
    assert result.retry_after is not None and 290 <= result.retry_after <= 300


def test_429_without_retry_after_waits_a_minute(mocked_http: responses.RequestsMock) -> None:
    mocked_http.post(URL, status=429)
    [result] = send([outbound(minimal())])
    assert result.retry_after == 60.0


def test_several_events_are_sent_one_request_each(mocked_http: responses.RequestsMock) -> None:
    mocked_http.post(URL, json=CREATED)
    events = [outbound(minimal(order_id=str(n)), n=n) for n in range(3)]
    results = send(events)
    assert [r.outcome for r in results] == [Outcome.DELIVERED] * 3
    order_ids = [
        json.loads(c.request.body)["event"]["confirmation"]["generic"]["orderId"]
        for c in mocked_http.calls
    ]
    assert order_ids == ["0", "1", "2"]


# --- secrets ---------------------------------------------------------------------------------


def test_no_api_key_in_any_reason_log_or_exception(
    mocked_http: responses.RequestsMock, caplog: pytest.LogCaptureFixture
) -> None:
    # given: answers that echo the key back
    caplog.set_level(logging.DEBUG)
    mocked_http.post(URL, status=401, json={"errors": [{"message": f"Unknown key {KEY}"}]})
    mocked_http.post(URL, body=requests.ConnectionError(f"proxy refused Authorization: {KEY}"))
    mocked_http.post(URL, status=200, json={"results": {"message": KEY}}, headers={"X-Echo": KEY})
    # when
    results = send([outbound(minimal(), n=n) for n in range(3)])
    # then
    assert [r.outcome for r in results] == [Outcome.AUTH_FAILED, Outcome.RETRY, Outcome.DELIVERED]
    for result in results:
        assert KEY not in result.reason
        assert KEY not in repr(result.exchange)
        assert result.exchange is not None
        assert result.exchange.request_headers["Authorization"] == "••••••••" + KEY[-4:]
    assert caplog.records and KEY not in caplog.text
