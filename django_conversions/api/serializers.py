"""Request and answer shapes of the API.

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

from django_conversions import http
from django_conversions.attempt_masking import visible_body, visible_text
from django_conversions.conversion import CONSENT_VALUES, Conversion, Customer, LineItem
from django_conversions.exceptions import InvalidConversion
from django_conversions.masking import mask_snapshot
from django_conversions.models import ConversionEvent, EventResult, EventStatus, TrackingSite
from django_conversions.providers.base import Outcome
from django_conversions.scan_session import InvalidScanSessionId, parse_scan_session_id

# Size limits, checked before anything is stored.
PROPERTIES_MAX_BYTES = 10 * 1024  # serialised as compact UTF-8 JSON
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
    """A conversion to record (the fields of `Conversion`), plus `sites` and `dedup_key`."""

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
    occurred_at = serializers.DateTimeField(required=False, allow_null=True)
    sites = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=ID_MAX),
        required=False,
        allow_null=True,
        max_length=SITES_MAX,
        help_text="Tracking site ids; default: every active site that takes the event.",
    )
    dedup_key = serializers.CharField(
        max_length=255,
        required=False,
        allow_null=True,
        help_text="Your idempotency key; default: the event name and order id.",
    )

    def validate_properties(self, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            problem = _json_shape_problem(value)
            if problem:
                raise serializers.ValidationError(problem)
            size = len(http.dumps(value))
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
        attrs["conversion"] = build_conversion(attrs)
        return attrs


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
        return Conversion(
            **fields,
            coupons=tuple(attrs.get("coupons") or ()),
            customer=customer,
            items=tuple(items),
        )
    except InvalidConversion as err:
        raise serializers.ValidationError(nested_error(err.field, err.message)) from None


def _given(data: Mapping[str, Any]) -> dict[str, Any]:
    """The values the client gave: null and "" mean "not given", as in the dataclasses."""
    return {name: value for name, value in data.items() if value is not None and value != ""}


# --- answers ---------------------------------------------------------------------------------


class SiteSerializer(serializers.ModelSerializer):
    """A tracking site (never its API keys)."""

    class Meta:
        model = TrackingSite
        fields = ("id", "name", "provider")
        read_only_fields = fields


class EventSummarySerializer(serializers.ModelSerializer):
    """An event as recording answers it: no conversion data is echoed back."""

    site = SiteSerializer(read_only=True)
    reason = serializers.CharField(
        source="last_error",
        read_only=True,
        help_text="Why the event was skipped or failed, or what it is waiting for.",
    )

    class Meta:
        model = ConversionEvent
        fields = ("event_id", "event_name", "site", "status", "reason", "created_at")
        read_only_fields = fields


class RecordedSerializer(serializers.Serializer):
    """What recording a conversion gave: the events, new or existing."""

    created = serializers.BooleanField(
        help_text=(
            "True when this request created at least one event (answered 202). False for a "
            "repeat whose events all existed (answered 200) or when no site takes the event "
            "(answered 202 with no events)."
        )
    )
    dedup_key = serializers.CharField()
    events = EventSummarySerializer(many=True)


class EventSerializer(serializers.ModelSerializer):
    """A conversion event: one conversion for one tracking site, and its delivery state."""

    site = SiteSerializer(read_only=True)
    order_id = serializers.CharField(source="order_reference", read_only=True)
    reason = serializers.CharField(source="last_error", read_only=True)
    conversion = serializers.SerializerMethodField(
        help_text="The stored conversion; personal data masked without view_personal_data."
    )

    class Meta:
        model = ConversionEvent
        fields: tuple[str, ...] = (
            "event_id",
            "event_name",
            "site",
            "status",
            "reason",
            "order_id",
            "dedup_key",
            "attempts",
            "next_attempt_at",
            "created_at",
            "updated_at",
            "delivered_at",
            "conversion",
        )
        read_only_fields: tuple[str, ...] = fields

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_conversion(self, event: ConversionEvent) -> dict[str, Any]:
        if self.context.get("personal_data"):
            return dict(event.snapshot or {})
        return mask_snapshot(event.snapshot or {})


class AttemptSerializer(serializers.Serializer):
    """One request that carried the event: the request as a whole (time, URL, HTTP status, how
    many events it carried, what was sent and answered) and this event's own outcome in it."""

    created_at = serializers.DateTimeField(source="attempt.created_at", read_only=True)
    duration_ms = serializers.IntegerField(source="attempt.duration_ms", read_only=True)
    url = serializers.CharField(source="attempt.url", read_only=True)
    http_status = serializers.IntegerField(
        source="attempt.http_status", allow_null=True, read_only=True
    )
    event_count = serializers.IntegerField(
        source="attempt.event_count",
        read_only=True,
        help_text="How many events the request carried.",
    )
    outcome = serializers.ChoiceField(
        choices=Outcome.choices, read_only=True, help_text="This event's outcome in the request."
    )
    message = serializers.CharField(
        read_only=True,
        help_text="The provider's word on this event; blank when it adds nothing to `error`.",
    )
    error = serializers.CharField(source="attempt.error", read_only=True)
    request_body = serializers.CharField(
        source="attempt.request_body",
        read_only=True,
        help_text=(
            "As sent, cut to RESPONSE_BODY_LIMIT, without the key. Without view_personal_data "
            "masked, and for a request carrying several events only this event's part."
        ),
    )
    response_body = serializers.CharField(source="attempt.response_body", read_only=True)

    def to_representation(self, result: EventResult) -> dict[str, Any]:
        row = super().to_representation(result)
        if self.context.get("personal_data"):
            return row
        event, attempt = result.event, result.attempt
        shared = attempt.event_count > 1
        for name in ("message", "error"):
            row[name] = visible_text(row[name], event.snapshot, unmasked=False, shared=shared)
        for name in ("request_body", "response_body"):
            row[name] = visible_body(
                row[name],
                event.snapshot,
                event_id=event.event_id,
                unmasked=False,
                shared=shared,
            )
        return row


class EventDetailSerializer(EventSerializer):
    """A conversion event with every delivery attempt that carried it."""

    delivery_attempts = AttemptSerializer(
        source="results",
        many=True,
        read_only=True,
        help_text="Every request that carried the event, newest first.",
    )

    class Meta(EventSerializer.Meta):
        fields = (*EventSerializer.Meta.fields, "delivery_attempts")
        read_only_fields = fields


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
