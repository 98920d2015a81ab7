"""The API's views. Recording goes through ``outbox.track`` and retrying through
``actions.retry_events``: the same code paths as the order hooks and the admin."""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.db import router, transaction
from django.db.models import Prefetch, QuerySet
from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import get_token
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.authentication import CSRFCheck
from rest_framework.exceptions import APIException, PermissionDenied, ValidationError
from rest_framework.pagination import PageNumberPagination
from rest_framework.permissions import AllowAny
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from django_conversions import scan_session
from django_conversions.actions import retry_events
from django_conversions.conf import conversions_settings, import_setting
from django_conversions.conversion import normalize_event_name
from django_conversions.exceptions import InvalidConversion
from django_conversions.masking import may_see_personal_data
from django_conversions.models import ConversionEvent, EventResult
from django_conversions.outbox import sites_for, track
from django_conversions.pagination import COUNT_LIMIT, CappedPaginator

from .answers import EventDetailSerializer, EventSerializer, RecordedSerializer
from .parsers import BoundedJSONParser
from .serializers import (
    ConversionInputSerializer,
    EventFilterSerializer,
    ScanSessionSerializer,
    ScanSessionStateSerializer,
)
from .throttling import ScanSessionThrottle


def document(**kwargs: Any) -> Any:
    """``extend_schema`` on drf-spectacular's AutoSchema, whatever the project's DRF default."""

    def decorator(method: Any) -> Any:
        method.schema = AutoSchema
        return extend_schema(**kwargs)(method)

    return decorator


def configured_classes(name: str) -> list[type]:
    """The classes named by ``CONVERSIONS[name]``, read per request so overrides apply."""
    paths = conversions_settings.raw(name)
    if isinstance(paths, str):
        paths = [paths]
    return [import_setting(name, path) if isinstance(path, str) else path for path in paths]


class EventPagination(PageNumberPagination):
    """Pages of events; ``count`` stops at ``COUNT_LIMIT`` (``count_exact`` says when more
    match): a ``COUNT(*)`` of the whole outbox on every page took seconds to minutes."""

    page_size_query_param = "page_size"
    max_page_size = 200
    django_paginator_class = CappedPaginator

    def get_page_size(self, request: Request) -> int | None:
        self.page_size = conversions_settings.API_PAGE_SIZE
        return super().get_page_size(request)

    def get_paginated_response(self, data: Any) -> Response:
        response = super().get_paginated_response(data)
        assert self.page is not None
        paginator = self.page.paginator
        exact = not (isinstance(paginator, CappedPaginator) and paginator.capped)
        response.data = {"count": response.data["count"], "count_exact": exact, **response.data}
        return response

    def get_paginated_response_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        described = super().get_paginated_response_schema(schema)
        described["properties"]["count"]["description"] = (
            f"Events that match, counted up to {COUNT_LIMIT:,}."
        )
        described["properties"]["count_exact"] = {
            "type": "boolean",
            "description": f"False when more than {COUNT_LIMIT:,} events match.",
        }
        described["required"] = [*described.get("required", ["count", "results"]), "count_exact"]
        return described


# django.contrib.admin.models.CHANGE: that module can't be imported where the admin app is not
# installed, and the API works without it.
ADMIN_CHANGE = 2

# Answers every staff endpoint may give, for the schema.
REFUSED = {
    401: OpenApiResponse(description="No credentials, or wrong ones."),
    403: OpenApiResponse(description="Not allowed (see docs/api.md, permissions)."),
}
NOT_FOUND = {404: OpenApiResponse(description="No event with this event_id.")}


class Conflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "A worker is sending this event right now; try again in a moment."
    default_code = "conflict"


class AlreadyDelivered(Conflict):
    default_detail = (
        "The event was delivered: it is never sent again (not every provider removes duplicates)."
    )
    default_code = "delivered"


def with_attempts(queryset: QuerySet[ConversionEvent]) -> QuerySet[ConversionEvent]:
    """Events with the results that carried them and their attempts, newest first, in two
    queries more whatever their number."""
    results = EventResult.objects.select_related("attempt").order_by("-attempt__created_at", "-pk")
    return queryset.prefetch_related(Prefetch("results", queryset=results))


class ConversionsAPIView(generics.GenericAPIView):
    """Base of the staff endpoints: JSON only, auth and permissions from the settings."""

    schema = AutoSchema()
    queryset = ConversionEvent.objects.select_related("site")
    parser_classes = (BoundedJSONParser,)
    renderer_classes = (JSONRenderer,)
    lookup_field = "event_id"

    def get_authenticators(self) -> list[Any]:
        return [cls() for cls in configured_classes("API_AUTHENTICATION_CLASSES")]

    def get_permissions(self) -> list[Any]:
        return [cls() for cls in configured_classes("API_PERMISSION_CLASSES")]

    def get_serializer_context(self) -> dict[str, Any]:
        return {
            **super().get_serializer_context(),
            "personal_data": may_see_personal_data(self.request.user),
        }


class EventListView(ConversionsAPIView):
    """Conversion events, newest first, filtered and paginated; or record a new conversion."""

    pagination_class = EventPagination
    serializer_class = EventSerializer

    def filter_queryset(self, queryset: QuerySet[Any]) -> QuerySet[Any]:
        params = {
            name: value
            for name, value in self.request.query_params.items()
            if name not in ("page", "page_size")
        }
        filters = EventFilterSerializer(data=params)
        filters.is_valid(raise_exception=True)
        given = filters.validated_data
        if "status" in given:
            queryset = queryset.filter(status=given["status"])
        if "site" in given:
            queryset = queryset.filter(site_id=given["site"])
        if "event_name" in given:
            try:
                queryset = queryset.filter(event_name=normalize_event_name(given["event_name"]))
            except InvalidConversion as err:
                raise ValidationError({"event_name": [err.message]}) from None
        if "order_id" in given:
            queryset = queryset.filter(order_reference=given["order_id"])
        if "created_after" in given:
            queryset = queryset.filter(created_at__gte=given["created_after"])
        if "created_before" in given:
            queryset = queryset.filter(created_at__lt=given["created_before"])
        return queryset

    @document(
        operation_id="conversions_events_list",
        summary="List conversion events",
        description=(
            "Newest first; filters combine. Personal data in `conversion` is masked unless "
            "the caller has the `django_conversions.view_personal_data` permission."
        ),
        parameters=[EventFilterSerializer],
        responses={
            200: EventSerializer(many=True),
            400: OpenApiResponse(description="A filter value is invalid or unknown."),
            404: OpenApiResponse(description="The page is past the last one."),
            **REFUSED,
        },
    )
    def get(self, request: Request) -> Response:
        queryset = self.filter_queryset(self.get_queryset())
        page = self.paginate_queryset(queryset)
        serializer = self.get_serializer(page, many=True)
        return self.get_paginated_response(serializer.data)

    @document(
        operation_id="conversions_events_create",
        summary="Record a conversion",
        description=(
            "Records the conversion for every active tracking site that takes it (or the given "
            "`sites`), with the same validation and guarantees as `track()`. Answers 202 with "
            "the events created. A repeat with the same `dedup_key` (default: event name and "
            "order id) creates nothing and answers 200 with the existing events. The API's "
            "keys are apart from the order hook's (prefixed `api:`) unless "
            "`replaces_order_hook` is set: recording an order first never keeps the shop's "
            "own order from being recorded; an order the shop recorded already is a repeat."
        ),
        request=ConversionInputSerializer,
        responses={
            202: RecordedSerializer,
            200: OpenApiResponse(RecordedSerializer, description="A repeat: nothing created."),
            400: OpenApiResponse(description="Field errors, keyed by field."),
            413: OpenApiResponse(description="Request body over 1 MiB."),
            415: OpenApiResponse(description="The body is not JSON."),
            **REFUSED,
        },
    )
    def post(self, request: Request) -> Response:
        serializer = ConversionInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        conversion = data["conversion"]
        key = data["key"]
        using = router.db_for_write(ConversionEvent)
        with transaction.atomic(using=using):
            targets = sites_for(conversion.event_name, data.get("sites"))
            hooked = ConversionEvent.objects.using(using).filter(
                dedup_key=data["order_hook_key"], site__in=targets
            )
            if data["order_hook_key"] and hooked.exists():
                # The shop's order already recorded it: a repeat, whatever the API's key.
                key = data["order_hook_key"]
            events = ConversionEvent.objects.using(using).filter(dedup_key=key, site__in=targets)
            before = set(events.values_list("pk", flat=True))
            track(conversion, sites=targets, dedup_key=key, using=using)
            # Read back rather than trust track()'s list: under a concurrent repeat the row
            # another request inserted first is the one to answer with.
            recorded = list(events.select_related("site").order_by("site__name", "site_id"))
        created = any(event.pk not in before for event in recorded)
        repeat = bool(recorded) and not created
        answer = RecordedSerializer(
            {"created": created, "dedup_key": key, "events": recorded},
            context=self.get_serializer_context(),
        )
        return Response(
            answer.data, status=status.HTTP_200_OK if repeat else status.HTTP_202_ACCEPTED
        )


class EventDetailView(ConversionsAPIView):
    """One event with every delivery attempt (newest first)."""

    serializer_class = EventDetailSerializer

    def get_queryset(self) -> QuerySet[ConversionEvent]:
        return with_attempts(super().get_queryset())

    @document(
        operation_id="conversions_events_retrieve",
        summary="One event with its delivery attempts",
        responses={200: EventDetailSerializer, **REFUSED, **NOT_FOUND},
    )
    def get(self, request: Request, event_id: Any) -> Response:
        return Response(self.get_serializer(self.get_object()).data)


class EventRetryView(ConversionsAPIView):
    """Queue an event for delivery again now, as the admin's "retry now" does."""

    serializer_class = EventDetailSerializer
    # Retrying changes the event: it needs change_conversionevent, not add.
    required_action = "change"

    @document(
        operation_id="conversions_events_retry",
        summary="Queue an event for delivery again now",
        description=(
            'The admin\'s "retry now": rebuilds the conversion from the order where it still '
            "exists, makes the event due now and queues it for a worker. Nothing is sent "
            "within this request: it answers at once (202) with the event's current state; "
            "poll the event to see the delivery."
        ),
        request=None,
        responses={
            202: OpenApiResponse(EventDetailSerializer, description="Queued for delivery."),
            200: OpenApiResponse(
                EventDetailSerializer,
                description=(
                    "Not queued: the conversion could not be rebuilt from its order; the "
                    "event is failed and `reason` says why."
                ),
            ),
            409: OpenApiResponse(
                description="Refused: the event was delivered, or a worker is sending it."
            ),
            **REFUSED,
            **NOT_FOUND,
        },
    )
    def post(self, request: Request, event_id: Any) -> Response:
        event = self.get_object()
        outcome = retry_events([event])
        if outcome.delivered:
            raise AlreadyDelivered()
        if outcome.in_flight:
            raise Conflict()
        _record_history(request, event, outcome.summary())
        event = with_attempts(self.get_queryset()).get(pk=event.pk)
        answer = status.HTTP_202_ACCEPTED if outcome.queued else status.HTTP_200_OK
        return Response(self.get_serializer(event).data, status=answer)


def _record_history(request: Request, event: ConversionEvent, what: str) -> None:
    """An entry in the event's admin history, as the admin's own retry leaves."""
    if not apps.is_installed("django.contrib.admin") or not request.user.is_authenticated:
        return
    log_entry = apps.get_model("admin", "LogEntry")
    log_entry.objects.log_actions(
        user_id=request.user.pk,
        queryset=[event],
        action_flag=ADMIN_CHANGE,
        change_message=f"Retry requested through the API: {what}.",
        single_object=True,
    )


def _no_response(request: HttpRequest) -> HttpResponse:
    """The view the CSRF check wraps: it only decides, so nothing is ever called."""
    return HttpResponse(status=204)


def enforce_csrf(request: Request) -> None:
    """Django's CSRF check for an endpoint that has no logged-in user to tie it to."""
    check = CSRFCheck(_no_response)
    check.process_request(request._request)
    reason = check.process_view(request._request, _no_response, (), {})
    if reason:
        raise PermissionDenied(f"CSRF Failed: {reason}")


class ScanSessionView(generics.GenericAPIView):
    """Public: the storefront's JavaScript hands over the ``scnv`` scan session id."""

    schema = AutoSchema()
    authentication_classes = ()
    permission_classes = (AllowAny,)
    throttle_classes = (ScanSessionThrottle,)
    parser_classes = (BoundedJSONParser,)
    renderer_classes = (JSONRenderer,)
    serializer_class = ScanSessionSerializer

    @document(
        operation_id="conversions_scan_session_retrieve",
        summary="The scan session kept for this visitor",
        description="Also sets the CSRF cookie that the POST needs.",
        responses={200: ScanSessionStateSerializer},
    )
    def get(self, request: Request) -> Response:
        get_token(request._request)  # sets the csrftoken cookie on the answer
        return Response(_visitor_state(request))

    @document(
        operation_id="conversions_scan_session_create",
        summary="Keep a scan session id and/or the tracking consent for this visitor",
        description=(
            "Stores the UUID in the visitor's session, as the middleware does for the `scnv` "
            "query parameter. Needs the CSRF cookie and the `X-CSRFToken` header."
        ),
        responses={
            200: ScanSessionStateSerializer,
            400: OpenApiResponse(description="Not a UUID, or not a consent value."),
            403: OpenApiResponse(description="CSRF check failed."),
            429: OpenApiResponse(description="Too many requests from this address."),
        },
    )
    def post(self, request: Request) -> Response:
        enforce_csrf(request)
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        if "scan_session_id" in data:
            scan_session.remember_scan_session(request._request, data["scan_session_id"])
        if "consent" in data:
            scan_session.remember_consent(request._request, data["consent"])
        return Response(_visitor_state(request))


def _visitor_state(request: Request) -> dict[str, Any]:
    return {
        "scan_session_id": scan_session.get_scan_session(request._request),
        "consent": scan_session.get_consent(request._request),
    }
