"""Request shapes of the API (answers are in ``answers``).

Input is checked here only for shape and size (types, unknown fields, lengths, counts); the
rules of what makes a valid conversion live in ``django_conversions.conversion`` and are applied
by building the dataclasses, whose ``InvalidConversion(field, message)`` becomes a field error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from django_conversions.conversion import (
    CONSENT_VALUES,
    OCCURRED_AT_MAX_AGE,
    OCCURRED_AT_MAX_AHEAD,
    PROPERTIES_MAX_BYTES,
    Conversion,
    Customer,
    LineItem,
    properties_size,
)
from django_conversions.exceptions import InvalidConversion
from django_conversions.models import EventStatus, TrackingSite
from django_conversions.recording import dedup_key_for, order_key
from django_conversions.scan_session import InvalidScanSessionId, parse_scan_session_id

# The API's conversions are kept under keys of their own (see recording_key()).
API_KEY_PREFIX = "api:"
DEDUP_KEY_MAX = 255 - len(API_KEY_PREFIX)  # the model's dedup_key holds the prefix too

# Size limits, checked before anything is stored.
PROPERTIES_MAX_DEPTH = 32
ITEMS_MAX = 1000
COUPONS_MAX = 100
SITES_MAX = 100
QUANTITY_MAX = 1_000_000
# Money: up to 12 integer digits and 6 decimals; the conversion rounds to the currency's unit.
MONEY_DIGITS, MONEY_DECIMALS = 18, 6
# Largest id SQLite and PostgreSQL bigint columns hold; bigger ids would crash the lookup.
ID_MAX = 2**63 - 1


def _text(max_length: int, **kwargs: Any) -> serializers.CharField:
    options: dict[str, Any] = {"required": False, "allow_null": True, "allow_blank": True}
    options.update(kwargs)
    return serializers.CharField(max_length=max_length, **options)


class MoneyField(serializers.DecimalField):
    """A number (JSON number or string) within the size limit, handed on unrounded as text.

    Rounding to the currency's minor unit and the sign rule belong to the ``Conversion``.
    """

    def to_internal_value(self, data: Any) -> Any:
        return str(super().to_internal_value(data).normalize())

    def quantize(self, value: Any) -> Any:
        return value


def _money(**kwargs: Any) -> serializers.DecimalField:
    return MoneyField(
        max_digits=MONEY_DIGITS,
        decimal_places=MONEY_DECIMALS,
        coerce_to_string=False,
        required=False,
        allow_null=True,
        **kwargs,
    )


def nested_error(field: str, message: str) -> dict[str, Any]:
    """``"customer.email"`` -> ``{"customer": {"email": [message]}}``."""
    error: Any = [message]
    for part in reversed(field.split(".")):
        error = {part: error}
    return error


class StrictSerializer(serializers.Serializer):
    """Rejects fields it does not know: a misspelt field must not be dropped silently."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, Mapping):
            writable = {name for name, field in self.fields.items() if not field.read_only}
            unknown = sorted(str(name) for name in set(data) - writable)
            if unknown:
                raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
        return super().to_internal_value(data)


class CustomerInputSerializer(StrictSerializer):
    """The buyer; every field optional. Providers take only what they need."""

    email = _text(254)
    phone = _text(32)
    first_name = _text(255)
    last_name = _text(255)
    city = _text(255)
    country = _text(255)
    external_id = _text(255)
    email_sha256 = _text(64, help_text="SHA-256 hex of the normalised email, if you lack it raw.")
    phone_sha256 = _text(64, help_text="SHA-256 hex of the E.164 phone, if you lack it raw.")


class LineItemInputSerializer(StrictSerializer):
    """One order line."""

    id = serializers.CharField(max_length=128, help_text="Product id as in the product feed.")
    quantity = serializers.IntegerField(required=False, default=1, max_value=QUANTITY_MAX)
    price = _money()
    name = _text(255)


class ConversionInputSerializer(StrictSerializer):
    """A conversion to record (the fields of `Conversion`), plus `sites`, `dedup_key` and
    `replaces_order_hook`."""

    event_name = serializers.CharField(max_length=128, help_text="e.g. purchase, signup, lead.")
    order_id = _text(128)
    value = _money(help_text="Total including shipping.")
    currency = _text(3, help_text="ISO 4217 code, e.g. EUR.")
    shipping = _money()
    coupons = serializers.ListField(
        child=serializers.CharField(max_length=255), required=False, max_length=COUPONS_MAX
    )
    status = _text(64, help_text="The order's status, as the shop names it.")
    customer = CustomerInputSerializer(required=False, allow_null=True)
    items = serializers.ListField(
        child=LineItemInputSerializer(), required=False, max_length=ITEMS_MAX
    )
    scan_session_id = _text(128, help_text="The QR scan session (scnv) UUID.")
    consent = serializers.ChoiceField(choices=CONSENT_VALUES, required=False, allow_null=True)
    properties = serializers.DictField(
        required=False,
        allow_null=True,
        help_text=f"Free custom data, at most {PROPERTIES_MAX_BYTES} bytes as JSON.",
    )
    occurred_at = serializers.DateTimeField(
        required=False,
        allow_null=True,
        help_text=(
            f"When the conversion happened; default: when it is recorded. At most "
            f"{OCCURRED_AT_MAX_AGE.days} days ago and "
            f"{int(OCCURRED_AT_MAX_AHEAD.total_seconds() // 60)} minutes ahead."
        ),
    )
    sites = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=ID_MAX),
        required=False,
        allow_null=True,
        max_length=SITES_MAX,
        help_text="Tracking site ids; default: every active site that takes the event.",
    )
    dedup_key = serializers.CharField(
        max_length=DEDUP_KEY_MAX,
        required=False,
        allow_null=True,
        help_text=(
            "Your idempotency key; default: the event name and order id. Kept under the "
            f"API's own prefix ({API_KEY_PREFIX!r}), apart from the order hook's keys."
        ),
    )
    replaces_order_hook = serializers.BooleanField(
        default=False,
        help_text=(
            "Record this as the order's own conversion, under the key the order hook uses "
            "(needs order_id, excludes dedup_key): whichever records the order first is the "
            "one kept. Without it the API's conversions never stand in for the hook's."
        ),
    )

    def validate_properties(self, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            problem = _json_shape_problem(value)
            if problem:
                raise serializers.ValidationError(problem)
            size = properties_size(value)
            if size > PROPERTIES_MAX_BYTES:
                raise serializers.ValidationError(
                    f"{size} bytes as JSON; at most {PROPERTIES_MAX_BYTES} are allowed."
                )
        return value

    def validate_sites(self, value: list[int] | None) -> list[TrackingSite] | None:
        if value is None:
            return None
        found = {site.pk: site for site in TrackingSite.objects.filter(pk__in=value)}
        missing = sorted(set(value) - set(found))
        if missing:
            raise serializers.ValidationError(
                f"No tracking site with id {', '.join(map(str, missing))}."
            )
        return [found[pk] for pk in dict.fromkeys(value)]

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        conversion = build_conversion(attrs)
        attrs["conversion"] = conversion
        attrs["key"] = recording_key(
            conversion, attrs.get("dedup_key"), replaces_order_hook=attrs["replaces_order_hook"]
        )
        # The key the order hook records this order under, if it has an order id.
        attrs["order_hook_key"] = (
            order_key(conversion.event_name, conversion.order_id) if conversion.order_id else None
        )
        return attrs


def recording_key(conversion: Conversion, given: str | None, *, replaces_order_hook: bool) -> str:
    """The dedup key an API-recorded conversion is kept under.

    Apart from the order hook's keys, so that a caller recording order 1001 first can't make
    the real order's conversion a repeat that is never recorded; the order hook's own key only
    when the caller says this is that conversion.
    """
    if not replaces_order_hook:
        return API_KEY_PREFIX + (given or dedup_key_for(conversion, None))
    if given:
        raise serializers.ValidationError(
            {"replaces_order_hook": ["Not with dedup_key: the order hook's key is used."]}
        )
    if not conversion.order_id:
        raise serializers.ValidationError(
            {"replaces_order_hook": ["Needs order_id: the order hook keys by order id."]}
        )
    return order_key(conversion.event_name, conversion.order_id)


def _json_shape_problem(value: Any) -> str | None:
    """What makes parsed JSON unfit to store: too deep to handle, or a NUL character, which
    PostgreSQL refuses in text and JSON. Iterative, so depth itself can't exhaust the stack."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list) and depth > PROPERTIES_MAX_DEPTH:
            return f"nested deeper than {PROPERTIES_MAX_DEPTH} levels."
        if isinstance(item, str):
            if "\x00" in item:
                return "text may not contain NUL (\\u0000) characters."
        elif isinstance(item, dict):
            stack.extend((key, depth) for key in item)
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
    return None


def build_conversion(attrs: Mapping[str, Any]) -> Conversion:
    """The ``Conversion`` for validated input; ``InvalidConversion`` becomes a field error."""
    errors: dict[str, Any] = {}
    items = []
    item_errors: dict[int, Any] = {}
    for index, data in enumerate(attrs.get("items") or ()):
        try:
            items.append(LineItem(**_given(data)))
        except InvalidConversion as err:
            item_errors[index] = {err.field.rsplit(".", 1)[-1]: [err.message]}
    if item_errors:
        errors["items"] = item_errors
    customer = None
    if attrs.get("customer"):
        try:
            customer = Customer(**_given(attrs["customer"]))
        except InvalidConversion as err:
            errors.update(nested_error(err.field, err.message))
    if errors:
        raise serializers.ValidationError(errors)
    fields = _given(
        {
            name: attrs.get(name)
            for name in (
                "event_name",
                "order_id",
                "value",
                "currency",
                "shipping",
                "status",
                "scan_session_id",
                "consent",
                "properties",
                "occurred_at",
            )
        }
    )
    try:
        conversion = Conversion(
            **fields,
            coupons=tuple(attrs.get("coupons") or ()),
            customer=customer,
            items=tuple(items),
        )
        conversion.check_time()
        return conversion
    except InvalidConversion as err:
        raise serializers.ValidationError(nested_error(err.field, err.message)) from None


def _given(data: Mapping[str, Any]) -> dict[str, Any]:
    """The values the client gave: null and "" mean "not given", as in the dataclasses."""
    return {name: value for name, value in data.items() if value is not None and value != ""}


class EventFilterSerializer(StrictSerializer):
    """Filters of the event list; unknown parameters are refused."""

    status = serializers.ChoiceField(choices=EventStatus.choices, required=False)
    site = serializers.IntegerField(min_value=1, max_value=ID_MAX, required=False)
    event_name = serializers.CharField(max_length=128, required=False)
    order_id = serializers.CharField(max_length=128, required=False)
    created_after = serializers.DateTimeField(required=False, help_text="Inclusive.")
    created_before = serializers.DateTimeField(required=False, help_text="Exclusive.")


@extend_schema_field(OpenApiTypes.UUID)
class ScanSessionIdField(serializers.CharField):
    """Text checked by the middleware's rule (any case, with or without hyphens)."""


class ScanSessionSerializer(StrictSerializer):
    """The scan session id and/or the tracking consent to keep for this visitor."""

    scan_session_id = ScanSessionIdField(
        max_length=45,
        required=False,
        help_text="The scnv UUID from the QR code's landing URL.",
    )
    consent = serializers.ChoiceField(
        choices=CONSENT_VALUES,
        required=False,
        help_text="The visitor's answer to the shop's tracking-consent banner.",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if not attrs:
            raise serializers.ValidationError("Send scan_session_id, consent, or both.")
        return attrs

    def validate_scan_session_id(self, value: str) -> str:
        # The middleware's rule, so both ways in accept the same ids.
        try:
            return parse_scan_session_id(value)
        except InvalidScanSessionId as err:
            raise serializers.ValidationError(str(err)) from None


class ScanSessionStateSerializer(serializers.Serializer):
    """What is kept for this visitor (null: nothing, or expired)."""

    scan_session_id = serializers.UUIDField(allow_null=True)
    consent = serializers.ChoiceField(choices=CONSENT_VALUES, allow_null=True)
