"""The provider-independent conversion model: normalisation, validation, snapshots."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings
from hypothesis import given
from hypothesis import strategies as st

from django_conversions import http
from django_conversions.conversion import (
    Conversion,
    Customer,
    LineItem,
    is_uuid,
    normalize_event_name,
    round_money,
    sha256_hex,
)
from django_conversions.exceptions import InvalidConversion


def conversions(**extra: Any) -> Any:
    return override_settings(CONVERSIONS={**settings.CONVERSIONS, **extra})


# --- event names ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given_name", "normalized"),
    [
        ("purchase", "purchase"),
        ("Purchase Complete", "purchase_complete"),
        ("  --Sign-Up!!  ", "sign_up"),
        ("lead.form/submitted", "lead_form_submitted"),
        ("Achat Réussi", "achat_réussi"),
        ("Acha\u0301t", "achát"),  # combining accent composed (NFKC)
        ("\uff30\uff35\uff32\uff23\uff28\uff21\uff33\uff25", "purchase"),  # full-width
        ("購入 完了", "購入_完了"),
        ("खरीदारी", "खरीदारी"),  # vowel signs are marks, kept inside the word
        ("x" * 64, "x" * 64),
    ],
)
def test_event_names_are_normalised(given_name: str, normalized: str) -> None:
    assert normalize_event_name(given_name) == normalized
    assert Conversion(event_name=given_name).event_name == normalized


@pytest.mark.parametrize(
    ("bad", "words"),
    [("", "no letters"), ("--!!", "no letters"), ("x" * 65, "more than 64"), (42, "a string")],
)
def test_bad_event_names_are_refused(bad: Any, words: str) -> None:
    for _ in range(2):  # names are normalised once and kept: a refusal is never kept
        with pytest.raises(InvalidConversion, match=words) as raised:
            Conversion(event_name=bad)
        assert raised.value.field == "event_name"


def test_unhashable_event_names_are_refused_as_not_strings() -> None:
    with pytest.raises(InvalidConversion, match="a string"):
        normalize_event_name(["purchase"])  # type: ignore[arg-type]


# --- money ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "currency", "expected"),
    [
        (0, "USD", "0.00"),
        ("0.005", "USD", "0.01"),
        (0.005, "USD", "0.01"),
        ("0.004999", "USD", "0.00"),
        (1e9, "USD", "1000000000.00"),
        ("0.1234567891", "EUR", "0.12"),
        (Decimal("400.335"), "RON", "400.34"),
        (400.335, "RON", "400.34"),
        (400.33, "RON", "400.33"),
        ("1500.5", "JPY", "1501"),
        ("1500.49", "jpy", "1500"),
        ("1.0005", "KWD", "1.001"),
        ("1E+2", "EUR", "100.00"),
        (Decimal("-0"), "USD", "0.00"),
        ("99.999", None, "100.00"),  # no currency: two digits
    ],
)
def test_money_is_rounded_half_up_to_the_minor_unit(
    value: Any, currency: str | None, expected: str
) -> None:
    # when
    conversion = Conversion("purchase", value=value, shipping=value, currency=currency)
    # then: the same digits, and the same text on the wire
    assert conversion.value is not None
    assert str(conversion.value) == expected and str(conversion.shipping) == expected
    assert http.dumps(conversion.value).decode() == expected


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("-0.01", "negative"),
        (-5, "negative"),
        (float("nan"), "not a finite number"),
        (float("inf"), "not a finite number"),
        (Decimal("NaN"), "not a finite number"),
        ("Infinity", "not a finite number"),
        ("12,50", "not a number"),
        ("abc", "not a number"),
        (True, "not a boolean"),
        ([1], "not a number"),
        ("1e30", "too large"),
    ],
)
def test_bad_amounts_are_refused_with_the_field_named(value: Any, words: str) -> None:
    with pytest.raises(InvalidConversion, match=words) as raised:
        Conversion("purchase", value=value, currency="USD")
    assert raised.value.field == "value"
    with pytest.raises(InvalidConversion) as raised:
        Conversion("purchase", shipping=value, currency="USD")
    assert raised.value.field == "shipping"


@given(
    amount=st.decimals(min_value=0, max_value=10**12, places=10, allow_nan=False),
    currency=st.sampled_from(["USD", "JPY", "BHD", "RON", "CLF"]),
)
def test_any_amount_serialises_exactly_to_its_rounded_value(amount: Decimal, currency: str) -> None:
    # given
    rounded = round_money(amount, currency)
    # when
    wire = http.dumps({"amount": rounded})
    # then: a JSON number (not a string), the rounded value digit for digit, no float noise
    parsed = json.loads(wire, parse_float=Decimal, parse_int=Decimal)["amount"]
    assert isinstance(json.loads(wire)["amount"], int | float)
    assert parsed == rounded and parsed.as_tuple().exponent == rounded.as_tuple().exponent
    assert abs(rounded - amount) <= Decimal("0.5") * Decimal(10) ** rounded.as_tuple().exponent


def test_item_prices_follow_the_order_currency() -> None:
    conversion = Conversion("purchase", currency="JPY", items=[LineItem("a", price="99.5")])
    assert conversion.items[0].price == Decimal("100")


# --- currency ------------------------------------------------------------------------------


@pytest.mark.parametrize(("code", "normalized"), [("usd", "USD"), (" eur ", "EUR"), ("JPY", "JPY")])
def test_currencies_are_upper_cased(code: str, normalized: str) -> None:
    assert Conversion("purchase", currency=code).currency == normalized


@pytest.mark.parametrize("code", ["XYZ", "US", "EURO", "", "€", 978])
def test_unknown_currencies_are_refused(code: Any) -> None:
    with pytest.raises(InvalidConversion) as raised:
        Conversion("purchase", currency=code)
    assert raised.value.field == "currency"


# --- customer ------------------------------------------------------------------------------


def test_email_is_trimmed_lower_cased_and_hashed() -> None:
    customer = Customer(email="  Ana.Pop@Example.COM ")
    assert customer.email == "ana.pop@example.com"
    assert customer.email_hash == (
        "ad972ab068ba55a1865da271ea3432a090ba8e2e4940cace698c001dc9629e3d"
    )


@pytest.mark.parametrize(
    "email", ["ana", "ana@", "@example.com", "ana@example", "a b@example.com", "ana@@x.com"]
)
def test_invalid_emails_are_refused(email: str) -> None:
    with pytest.raises(InvalidConversion, match="not a valid email") as raised:
        Customer(email=email)
    assert raised.value.field == "customer.email"


def test_an_empty_email_is_no_email() -> None:
    assert Customer(email="   ").email is None


@pytest.mark.parametrize(
    ("phone", "country_code", "normalized"),
    [
        ("+40 (775) 123-123", None, "+40775123123"),
        ("(+40) 775.123.123", None, "+40775123123"),
        ("0040775123123", None, "+40775123123"),
        ("0775 123 123", "40", "+40775123123"),
        ("0775 123 123", "+40", "+40775123123"),
        ("775123123", "40", "+40775123123"),
        ("0775 123 123", None, "0775123123"),
        ("+1 555 123 4567", "40", "+15551234567"),
    ],
)
def test_phones_are_normalised_to_e164_where_possible(
    phone: str, country_code: str | None, normalized: str
) -> None:
    with conversions(DEFAULT_PHONE_COUNTRY_CODE=country_code):
        assert Customer(phone=phone).phone == normalized


@pytest.mark.parametrize(
    "phone",
    ["call me", "+40 775 123 123 ext. 5", "+40+775", "12", "+123456", "+0775123123",
     "+1234567890123456", "٠٧٧٥١٢٣١٢٣"],
)  # fmt: skip
def test_bad_phones_are_refused(phone: str) -> None:
    with pytest.raises(InvalidConversion) as raised:
        Customer(phone=phone)
    assert raised.value.field == "customer.phone"


def test_phone_hash_only_for_e164() -> None:
    assert Customer(phone="+40775123123").phone_hash == sha256_hex("+40775123123")
    assert Customer(phone="0775123123").phone_hash is None


def test_a_bad_default_country_code_names_the_setting() -> None:
    with (
        conversions(DEFAULT_PHONE_COUNTRY_CODE="Romania"),
        pytest.raises(ImproperlyConfigured, match="DEFAULT_PHONE_COUNTRY_CODE"),
    ):
        Customer(phone="0775123123")


def test_given_hashes_are_checked_and_lower_cased() -> None:
    digest = sha256_hex("ana@example.com")
    assert Customer(email_sha256=digest.upper()).email_hash == digest
    with pytest.raises(InvalidConversion, match="64 hex digits"):
        Customer(email_sha256="not-a-hash")


def test_sha256_of_the_empty_string_is_the_documented_example() -> None:
    assert sha256_hex("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


# --- items, coupons, consent, scan session -----------------------------------------------------


@pytest.mark.parametrize("quantity", [3, "3", 3.0, Decimal("3"), " 3 "])
def test_item_quantities_become_whole_numbers(quantity: Any) -> None:
    assert LineItem("sku", quantity).quantity == 3


@pytest.mark.parametrize("quantity", [0, -1, 2.5, "two", True])
def test_bad_item_quantities_are_refused(quantity: Any) -> None:
    with pytest.raises(InvalidConversion) as raised:
        LineItem("sku", quantity)
    assert raised.value.field == "items.quantity"


def test_items_need_an_id() -> None:
    with pytest.raises(InvalidConversion) as raised:
        LineItem("  ")
    assert raised.value.field == "items.id"


def test_coupons_from_a_string_or_with_blanks() -> None:
    assert Conversion("purchase", coupons="VIP").coupons == ("VIP",)
    assert Conversion("purchase", coupons=[" A ", "", None, "B"]).coupons == ("A", "B")


@pytest.mark.parametrize(("consent", "normalized"), [("Granted", "granted"), ("", None)])
def test_consent_values(consent: str, normalized: str | None) -> None:
    assert Conversion("purchase", consent=consent).consent == normalized


def test_unknown_consent_values_are_refused() -> None:
    with pytest.raises(InvalidConversion, match="consent"):
        Conversion("purchase", consent="yes")


@pytest.mark.parametrize(
    "given_id",
    [
        "550E8400-E29B-41D4-A716-446655440000",
        "550e8400e29b41d4a716446655440000",
        uuid.UUID("550e8400-e29b-41d4-a716-446655440000"),
    ],
)
def test_scan_session_ids_are_canonical_uuids(given_id: Any) -> None:
    conversion = Conversion("purchase", scan_session_id=given_id)
    assert conversion.scan_session_id == "550e8400-e29b-41d4-a716-446655440000"


def test_a_scan_session_id_that_is_not_a_uuid_is_kept_for_providers_to_judge() -> None:
    assert Conversion("purchase", scan_session_id=" abc ").scan_session_id == "abc"


def test_a_naive_time_gets_the_current_time_zone() -> None:
    conversion = Conversion("purchase", occurred_at=datetime(2024, 5, 1, 12, 0))
    assert conversion.occurred_at is not None and conversion.occurred_at.tzinfo is not None


# --- properties ----------------------------------------------------------------------------


def test_properties_become_plain_json_data() -> None:
    # given
    when = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    properties = {
        "price": Decimal("12.50"),
        "count": Decimal("3"),
        "id": uuid.UUID(int=1),
        "at": when,
        "day": date(2024, 5, 1),
        "tags": ("a", "b"),
        7: "seven",
    }
    # when
    conversion = Conversion("purchase", properties=properties)
    # then
    assert conversion.properties == {
        "price": 12.5,
        "count": 3,
        "id": "00000000-0000-0000-0000-000000000001",
        "at": "2024-05-01T12:00:00+00:00",
        "day": "2024-05-01",
        "tags": ["a", "b"],
        "7": "seven",
    }


@pytest.mark.parametrize(
    ("properties", "field"),
    [
        ({"x": object()}, "properties.x"),
        ({"x": {"y": float("nan")}}, "properties.x.y"),
        ({"x": [1, {2, 3}]}, "properties.x[1]"),
        ({(1, 2): "tuple key"}, "properties"),
        (["not", "a", "mapping"], "properties"),
    ],
)
def test_properties_that_are_not_json_are_refused(properties: Any, field: str) -> None:
    with pytest.raises(InvalidConversion) as raised:
        Conversion("purchase", properties=properties)
    assert raised.value.field == field


# --- snapshots -----------------------------------------------------------------------------


def test_a_snapshot_turns_back_into_the_same_conversion() -> None:
    # given: every field set, stored as JSON (as the outbox's JSONField does)
    conversion = Conversion(
        event_name="Purchase",
        order_id="1001",
        value=Decimal("400.335"),
        currency="ron",
        shipping=22,
        coupons=("SPRING10", "VIP"),
        status="paid",
        customer=Customer(
            email="Ana@Example.com",
            phone="+40 775 123 123",
            first_name="Ana",
            last_name="Pop",
            city="Brașov",
            country="Romania",
            external_id="42",
            phone_sha256="ab" * 32,
        ),
        items=(LineItem("sku-1", 2, price="10.5", name="Mug"), LineItem("sku-2")),
        scan_session_id="550E8400-E29B-41D4-A716-446655440000",
        consent="granted",
        occurred_at=datetime(2024, 5, 1, 14, 30, 15, 123456, tzinfo=timezone(timedelta(hours=2))),
        properties={"price": Decimal("1.50"), "nested": {"list": [1, "two", None, True]}},
    )
    # when
    stored = json.loads(json.dumps(conversion.to_snapshot()))
    restored = Conversion.from_snapshot(stored)
    # then
    assert restored == conversion
    assert restored.to_snapshot() == conversion.to_snapshot()
    assert stored["value"] == "400.34"  # money kept as exact text in the snapshot


def test_a_snapshot_is_read_back_as_recorded_after_a_settings_change() -> None:
    # given: a national phone number recorded while no default country code was set
    recorded = Conversion(event_name="purchase", customer=Customer(phone="0775 123 123"))
    snapshot = json.loads(json.dumps(recorded.to_snapshot()))
    conversions = {**settings.CONVERSIONS, "DEFAULT_PHONE_COUNTRY_CODE": "40"}
    # when: read back once a country code is configured
    with override_settings(CONVERSIONS=conversions):
        restored = Conversion.from_snapshot(snapshot)
    # then: what is sent is what was recorded, not normalised again under today's settings
    assert restored == recorded
    assert restored.customer is not None and restored.customer.phone == "0775123123"


def test_a_minimal_snapshot() -> None:
    conversion = Conversion("Sign Up")
    assert conversion.to_snapshot() == {"event_name": "sign_up"}
    assert Conversion.from_snapshot({"event_name": "sign_up"}) == conversion


def test_a_snapshot_with_unknown_fields_is_refused() -> None:
    with pytest.raises(InvalidConversion, match="unknown fields"):
        Conversion.from_snapshot({"event_name": "purchase", "colour": "red"})


def test_replace_normalises_again() -> None:
    conversion = Conversion("purchase", value="1500.40", currency="EUR")
    assert conversion.replace(currency="JPY").value == Decimal("1500")


def test_a_customer_of_the_wrong_type_is_refused() -> None:
    with pytest.raises(InvalidConversion, match="customer"):
        Conversion("purchase", customer="ana@example.com")  # type: ignore[arg-type]


def test_nul_characters_are_removed_everywhere() -> None:
    # given: text PostgreSQL could store neither in a text column nor in jsonb
    conversion = Conversion(
        "pur\x00chase",
        order_id="10\x0001",
        coupons=["VI\x00P"],
        customer=Customer(email="ana\x00@example.com", first_name="A\x00na"),
        items=[LineItem("sku\x00-1")],
        scan_session_id="abc\x00",
        properties={"k\x00": ["v\x00", {"n\x00": "x\x00"}]},
    )
    # then
    assert "\\u0000" not in json.dumps(conversion.to_snapshot())
    assert conversion.order_id == "1001" and conversion.customer is not None
    assert conversion.customer.email == "ana@example.com"
    assert conversion.properties == {"k": ["v", {"n": "x"}]}


@pytest.mark.parametrize(
    "snapshot",
    [
        {"order_id": "1"},  # no event name
        {"event_name": "purchase", "value": "a lot"},
        {"event_name": "purchase", "items": [{"quantity": 2}]},  # an item without its id
        {"event_name": "purchase", "items": ["sku-1"]},
        {"event_name": "purchase", "customer": {"email": "a@b.c", "shoe_size": 42}},
    ],
)
def test_what_is_not_a_snapshot_is_refused(snapshot: dict[str, Any]) -> None:
    with pytest.raises(InvalidConversion):
        Conversion.from_snapshot(snapshot)


@given(st.uuids())
def test_is_uuid_accepts_exactly_the_canonical_form(value: uuid.UUID):
    text = str(value)
    assert is_uuid(text)
    assert not is_uuid(text.upper()) or text == text.upper()
    for other in (value.hex, "{" + text + "}", "urn:uuid:" + text, text + "\n", text[:-1]):
        assert not is_uuid(other)


@pytest.mark.parametrize(
    "text", [None, "", "scan-1", "0" * 36, "g" * 8 + "-0000-0000-0000-" + "0" * 12]
)
def test_is_uuid_refuses_what_is_not_a_uuid(text: str | None):
    assert not is_uuid(text)
