"""``POST events/``: recording conversions through the API."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client

from django_conversions.conversion import PROPERTIES_MAX_BYTES, properties_size
from django_conversions.models import ConversionEvent, EventStatus
from tests.test_api_support import EVENTS, logged_in, make_user, post_json, purchase
from tests.testapp.models import Order


@pytest.fixture
def writer(db: Any) -> Client:
    return logged_in(make_user("writer", perms=("add_conversionevent",)))


def test_post_records_one_event_per_active_site_and_answers_202(writer, scanova_site, vt_site):
    # given
    body = purchase()
    # when
    response = post_json(writer, EVENTS, body)
    # then
    assert response.status_code == 202, response.content
    answer = response.json()
    assert answer["created"] is True
    assert answer["dedup_key"] == "api:purchase:order:1001"
    stored = {str(e.event_id): e for e in ConversionEvent.objects.all()}
    assert {e["event_id"] for e in answer["events"]} == set(stored)
    by_provider = {e["site"]["provider"]: e for e in answer["events"]}
    assert by_provider["scanova"]["site"] == {
        "id": scanova_site.pk,
        "name": scanova_site.name,
        "provider": "scanova",
    }
    assert by_provider["scanova"]["status"] == "pending"
    assert by_provider["vtmarketing"]["status"] == "pending"
    assert by_provider["vtmarketing"]["reason"] == ""


def test_post_answer_does_not_echo_the_conversion(writer, vt_site):
    # given
    body = purchase()
    # when
    response = post_json(writer, EVENTS, body)
    # then
    text = response.content.decode()
    assert response.status_code == 202
    assert "buyer@example.com" not in text.lower()
    assert "Ana" not in text
    assert set(response.json()["events"][0]) == {
        "event_id",
        "event_name",
        "site",
        "status",
        "reason",
        "created_at",
    }


def test_post_stores_the_conversion_normalised_by_the_dataclasses(writer, vt_site):
    # given
    body = purchase(event_name="Purchase", currency="eur", value=12.345)
    # when
    response = post_json(writer, EVENTS, body)
    # then
    assert response.status_code == 202, response.content
    snapshot = ConversionEvent.objects.get().snapshot
    assert snapshot["event_name"] == "purchase"
    assert snapshot["currency"] == "EUR"
    assert Decimal(snapshot["value"]) == Decimal("12.35")
    assert snapshot["customer"]["email"] == "buyer@example.com"
    assert snapshot["items"] == [{"id": "sku-1", "quantity": 2, "price": "49.99"}]


def test_ineligible_conversion_is_recorded_as_skipped_with_the_reason(writer, scanova_site):
    # given: Scanova only takes conversions that began with a QR scan
    body = purchase(scan_session_id=None)
    # when
    response = post_json(writer, EVENTS, body)
    # then
    assert response.status_code == 202
    (event,) = response.json()["events"]
    assert event["status"] == "skipped"
    assert "no scan session id" in event["reason"]
    assert ConversionEvent.objects.get().status == EventStatus.SKIPPED


def test_repeat_with_the_same_order_id_answers_200_with_the_existing_events(
    writer, scanova_site, vt_site
):
    # given
    first = post_json(writer, EVENTS, purchase())
    # when
    repeat = post_json(writer, EVENTS, purchase(value="1.00"))
    # then
    assert first.status_code == 202
    assert repeat.status_code == 200
    assert repeat.json()["created"] is False
    assert repeat.json()["events"] == first.json()["events"]
    assert ConversionEvent.objects.count() == 2
    assert {e.snapshot["value"] for e in ConversionEvent.objects.all()} == {"99.99"}


def test_repeat_with_the_same_client_dedup_key_answers_with_the_existing_events(
    writer, scanova_site
):
    # given: a signup has no order id; the client sends its own key
    body = purchase(event_name="signup", order_id=None, dedup_key="signup-user-42")
    first = post_json(writer, EVENTS, body)
    # when
    repeat = post_json(writer, EVENTS, body)
    # then
    assert (first.status_code, repeat.status_code) == (202, 200)
    assert repeat.json()["dedup_key"] == "api:signup-user-42"
    assert [e["event_id"] for e in repeat.json()["events"]] == [
        e["event_id"] for e in first.json()["events"]
    ]
    assert ConversionEvent.objects.get().dedup_key == "api:signup-user-42"


def test_without_order_id_or_dedup_key_every_post_is_a_new_conversion(writer, scanova_site):
    # given
    body = purchase(event_name="lead", order_id=None)
    # when
    first = post_json(writer, EVENTS, body)
    second = post_json(writer, EVENTS, body)
    # then
    assert (first.status_code, second.status_code) == (202, 202)
    assert ConversionEvent.objects.count() == 2


def test_an_order_already_tracked_by_the_shop_is_not_recorded_twice(writer, vt_site):
    # given: the order model hook recorded order 1001 already
    Order.objects.create(
        number="1001",
        status="paid",
        total=Decimal("99.99"),
        email="buyer@example.com",
        tracking_consent="granted",
    )
    assert ConversionEvent.objects.count() == 1
    # when: the storefront reports the same purchase
    response = post_json(writer, EVENTS, purchase())
    # then
    assert response.status_code == 200
    assert response.json()["events"][0]["event_id"] == str(ConversionEvent.objects.get().event_id)


def test_sites_limits_the_conversion_to_those_sites(writer, scanova_site, vt_site):
    # given
    body = purchase(sites=[vt_site.pk])
    # when
    response = post_json(writer, EVENTS, body)
    # then
    assert response.status_code == 202
    assert [e["site"]["id"] for e in response.json()["events"]] == [vt_site.pk]
    assert list(ConversionEvent.objects.values_list("site_id", flat=True)) == [vt_site.pk]


def test_an_event_no_site_takes_answers_202_with_no_events(writer, make_site):
    # given: the only site takes purchases alone
    make_site("vtmarketing", event_names="purchase")
    # when
    response = post_json(writer, EVENTS, purchase(event_name="signup"))
    # then
    assert response.status_code == 202
    assert response.json()["events"] == []
    assert response.json()["created"] is False
    assert not ConversionEvent.objects.exists()


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"sites": [999]}, {"sites": ["No tracking site with id 999."]}),
        ({"event_name": "!!!"}, {"event_name": ["'!!!' has no letters or digits"]}),
        ({"currency": "XYZ"}, {"currency": ["'XYZ' is not an ISO 4217 currency code"]}),
        ({"value": "-1"}, {"value": ["'-1' is negative"]}),
        (
            {"customer": {"email": "not-an-address"}},
            {"customer": {"email": ["is not a valid email address"]}},
        ),
        ({"customer": {"phone": "12"}}, {"customer": {"phone": ["is not a phone number"]}}),
        (
            {"items": [{"id": "ok"}, {"id": "bad", "quantity": 0}]},
            {"items": {"1": {"quantity": ["must be at least 1"]}}},
        ),
        (
            {"consent": "maybe"},
            {"consent": ['"maybe" is not a valid choice.']},
        ),
        ({"event_name": ""}, {"event_name": ["This field may not be blank."]}),
        ({"occurred_at": "yesterday"}, None),
        ({"occurred_at": "1900-01-01T00:00:00Z"}, None),
        ({"occurred_at": "2999-01-01T00:00:00Z"}, None),
    ],
)
def test_invalid_conversion_answers_400_naming_the_field(
    writer, vt_site, fields: dict[str, Any], error: dict[str, Any] | None
):
    # given
    body = purchase(**fields)
    # when
    response = post_json(writer, EVENTS, body)
    # then
    assert response.status_code == 400
    if error is None:
        assert set(response.json()) == set(fields)
    else:
        assert response.json() == error
    assert not ConversionEvent.objects.exists()


def test_missing_event_name_is_a_field_error(writer, vt_site):
    # given
    body = purchase()
    del body["event_name"]
    # when
    response = post_json(writer, EVENTS, body)
    # then
    assert response.status_code == 400
    assert response.json() == {"event_name": ["This field is required."]}


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"amount": 5}, {"amount": ["Unknown field."]}),
        (
            {"customer": {"email": "a@b.co", "mail": "x"}},
            {"customer": {"mail": ["Unknown field."]}},
        ),
        ({"items": [{"id": "a", "qty": 2}]}, {"items": {"0": {"qty": ["Unknown field."]}}}),
    ],
)
def test_unknown_fields_are_rejected(writer, vt_site, fields, error):
    # given
    body = purchase(**fields)
    # when
    response = post_json(writer, EVENTS, body)
    # then
    assert response.status_code == 400
    assert response.json() == error
    assert not ConversionEvent.objects.exists()


def _properties_of_size(size: int) -> dict[str, str]:
    # {"p": "xxx…"} serialises to 9 bytes plus the value (json.dumps' default separators).
    properties = {"p": "x" * (size - 9)}
    assert properties_size(properties) == size
    return properties


@pytest.mark.parametrize(
    ("fields", "field", "accepted"),
    [
        ({"properties": _properties_of_size(PROPERTIES_MAX_BYTES)}, "properties", True),
        ({"properties": _properties_of_size(PROPERTIES_MAX_BYTES + 1)}, "properties", False),
        # Non-ASCII text counts as json.dumps escapes it (6 bytes a letter).
        ({"properties": {"ä": "é" * 1660}}, "properties", True),  # 9,974 bytes
        ({"properties": {"ä": "é" * 1670}}, "properties", False),  # 10,034 bytes
        ({"items": [{"id": f"sku-{i}"} for i in range(1000)]}, "items", True),
        ({"items": [{"id": f"sku-{i}"} for i in range(1001)]}, "items", False),
        ({"order_id": "x" * 128}, "order_id", True),
        ({"order_id": "x" * 129}, "order_id", False),
        ({"status": "s" * 65}, "status", False),
        ({"coupons": ["C"] * 101}, "coupons", False),
        ({"coupons": ["c" * 256]}, "coupons", False),
        ({"customer": {"first_name": "n" * 256}}, "customer", False),
        ({"customer": {"email": "a" * 250 + "@b.co"}}, "customer", False),
        ({"items": [{"id": "i" * 129}]}, "items", False),
        ({"items": [{"id": "a", "name": "n" * 256}]}, "items", False),
        ({"items": [{"id": "a", "quantity": 1_000_001}]}, "items", False),
        ({"value": "1234567890123.5"}, "value", False),
        ({"sites": list(range(1, 102))}, "sites", False),
        ({"dedup_key": "k" * 251}, "dedup_key", True),
        ({"dedup_key": "k" * 252}, "dedup_key", False),  # 255 with the API's prefix
        ({"scan_session_id": "s" * 129}, "scan_session_id", False),
    ],
)
def test_size_limits_are_enforced_before_anything_is_stored(
    writer, vt_site, fields: dict[str, Any], field: str, accepted: bool
):
    # given
    body = purchase(**fields)
    # when
    response = post_json(writer, EVENTS, body)
    # then
    if accepted:
        assert response.status_code == 202, response.content
        assert ConversionEvent.objects.count() == 1
    else:
        assert response.status_code == 400
        assert list(response.json()) == [field]
        assert not ConversionEvent.objects.exists()


def _nested(depth: int) -> dict[str, Any]:
    value: Any = "leaf"
    for _ in range(depth - 1):
        value = [value]
    return {"p": value}


@pytest.mark.parametrize(
    ("properties", "error"),
    [
        ({"note": "a\x00b"}, "text may not contain NUL (\\u0000) characters."),
        ({"a\x00": 1}, "text may not contain NUL (\\u0000) characters."),
        ({"list": [{"deep": ["\x00"]}]}, "text may not contain NUL (\\u0000) characters."),
        (_nested(33), "nested deeper than 32 levels."),
        (_nested(900), "nested deeper than 32 levels."),
    ],
)
def test_properties_that_cannot_be_stored_are_field_errors(writer, scanova_site, properties, error):
    # given: PostgreSQL refuses NUL characters; deep nesting would exhaust the stack later
    body = purchase(properties=properties)
    # when
    response = post_json(writer, EVENTS, body)
    # then
    assert response.status_code == 400
    assert response.json() == {"properties": [error]}
    assert not ConversionEvent.objects.exists()


def test_properties_nested_32_levels_are_accepted(writer, scanova_site):
    # when
    response = post_json(writer, EVENTS, purchase(properties=_nested(32)))
    # then
    assert response.status_code == 202, response.content
    assert ConversionEvent.objects.get().snapshot["properties"] == _nested(32)


def test_nul_characters_in_text_fields_are_field_errors(writer, scanova_site):
    # when
    response = post_json(writer, EVENTS, purchase(order_id="10\x0001", customer={"city": "\x00"}))
    # then
    assert response.status_code == 400
    assert set(response.json()) == {"order_id", "customer"}
    assert not ConversionEvent.objects.exists()


def test_properties_over_the_limit_say_how_big_they_were(writer, vt_site):
    # given
    body = purchase(properties=_properties_of_size(PROPERTIES_MAX_BYTES + 1))
    # when
    response = post_json(writer, EVENTS, body)
    # then
    assert response.json() == {
        "properties": [
            f"{PROPERTIES_MAX_BYTES + 1} bytes as JSON; at most {PROPERTIES_MAX_BYTES} are allowed."
        ]
    }


def test_a_body_over_one_mebibyte_is_refused_with_413(writer, vt_site):
    # given
    body = purchase(properties={"blob": "x" * (1024 * 1024)})
    # when
    response = post_json(writer, EVENTS, body)
    # then
    assert response.status_code == 413
    assert not ConversionEvent.objects.exists()


def test_deeply_nested_json_is_a_400_not_a_server_error(writer, vt_site):
    # given
    body = '{"event_name": "purchase", "properties": {"a": ' + "[" * 100_000 + "]" * 100_000 + "}}"
    # when
    response = writer.post(EVENTS, body, content_type="application/json")
    # then
    assert response.status_code == 400
    assert "JSON parse error" in response.json()["detail"]


@pytest.mark.parametrize("text", ["{not json", '{"event_name": NaN}', "[1, 2]", '"purchase"'])
def test_malformed_bodies_answer_400(writer, vt_site, text: str):
    # when
    response = writer.post(EVENTS, text, content_type="application/json")
    # then
    assert response.status_code == 400
    assert not ConversionEvent.objects.exists()


def test_form_encoded_bodies_are_refused_with_415(writer, vt_site):
    # when
    response = writer.post(EVENTS, {"event_name": "purchase"})
    # then
    assert response.status_code == 415


@pytest.mark.django_db(transaction=True)
def test_recorded_conversion_is_delivered_after_commit(scanova_site, mocked_http):
    # given
    mocked_http.post("https://track.example.test/server-events", json={"success": True})
    client = logged_in(make_user("writer", perms=("add_conversionevent",)))
    # when
    response = post_json(client, EVENTS, purchase())
    # then
    assert response.status_code == 202
    event_id = response.json()["events"][0]["event_id"]
    event = ConversionEvent.objects.get(event_id=uuid.UUID(event_id))
    assert event.status == EventStatus.DELIVERED, event.last_error
    sent = json.loads(mocked_http.calls[0].request.body)
    assert sent["event_id"] == event_id
    assert sent["scan_session_id"] == purchase()["scan_session_id"]
