"""Answer shapes of the event endpoints: sites, events and the attempts that carried them.

Personal data is masked unless the serializer's context says the caller may see it
(``personal_data``): the stored conversion by ``masking.mask_snapshot``, attempt texts by the
rules of ``attempt_masking``.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from django_conversions.attempt_masking import visible_body, visible_text
from django_conversions.masking import mask_known, mask_snapshot
from django_conversions.models import ConversionEvent, EventResult, TrackingSite
from django_conversions.providers.base import Outcome


class SiteSerializer(serializers.ModelSerializer):
    """A tracking site (never its API keys)."""

    class Meta:
        model = TrackingSite
        fields = ("id", "name", "provider")
        read_only_fields = fields


class MaskedReasonMixin:
    """``reason`` may quote a provider's answer, which may quote the buyer: masked as the
    admin masks it, with the event's own customer values, unless the caller may see them."""

    context: dict[str, Any]

    def to_representation(self, event: ConversionEvent) -> dict[str, Any]:
        row: dict[str, Any] = super().to_representation(event)  # type: ignore[misc]
        if row.get("reason") and not self.context.get("personal_data"):
            row["reason"] = mask_known(row["reason"], event.snapshot)
        return row


class EventSummarySerializer(MaskedReasonMixin, serializers.ModelSerializer):
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


class EventSerializer(MaskedReasonMixin, serializers.ModelSerializer):
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
