"""``GET events/``, ``GET events/{event_id}/`` and ``POST events/{event_id}/retry/``."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

import pytest
import responses
from django.contrib.admin.models import LogEntry
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from django_conversions import Conversion, Customer, track
from django_conversions.adapters import OrderAdapter
from django_conversions.models import ConversionEvent, EventStatus
from tests.attempts import (
    SCANOVA_BATCH_URL,
    enqueued_ids,
    kept_tasks,
    record_attempt,
    scanova_batch_body,
)
from tests.conftest import SCANOVA_KEY, VT_KEY
from tests.test_api_support import EVENTS, event_url, logged_in, make_user
from tests.testapp.models import Order

SCAN = "5b0e6c3e-7c1a-4c57-9a53-7f4f3f1f9a10"


def _purchase(order_id: str = "1001", **fields: Any) -> Conversion:
    values: dict[str, Any] = {
        "event_name": "purchase",
        "order_id": order_id,
        "value": "20.00",
        "currency": "EUR",
        "consent": "granted",
        "scan_session_id": SCAN,
        "customer": Customer(email="buyer@example.com", first_name="Ana", phone="+40775123123"),
    }
    values.update(fields)
    return Conversion(**values)


@pytest.fixture
def viewer(db: Any) -> Client:
    return logged_in(make_user("viewer", perms=("view_conversionevent",)))


def test_list_pages_through_events_newest_first(viewer, vt_site):
    # given
    for number in range(3):
        track(_purchase(str(number)))
    # when
    first = viewer.get(EVENTS, {"page_size": 2})
    second = viewer.get(EVENTS, {"page_size": 2, "page": 2})
    # then
    assert first.status_code == 200
    assert (first.json()["count"], first.json()["count_exact"]) == (3, True)
    assert [e["order_id"] for e in first.json()["results"]] == ["2", "1"]
    assert [e["order_id"] for e in second.json()["results"]] == ["0"]
    assert second.json()["next"] is None


def test_page_size_defaults_to_the_setting(viewer, vt_site, settings):
    # given
    settings.CONVERSIONS = {**settings.CONVERSIONS, "API_PAGE_SIZE": 2}
    for number in range(3):
        track(_purchase(str(number)))
    # when
    response = viewer.get(EVENTS)
    # then
    assert len(response.json()["results"]) == 2


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"status": "skipped"}, {"scanova-2"}),
        ({"status": "pending"}, {"scanova-1", "vtmarketing-1", "scanova-signup"}),
        ({"event_name": "Signup"}, {"scanova-signup"}),
        ({"order_id": "2"}, {"scanova-2"}),
    ],
)
def test_list_filters_by_status_event_name_and_order(
    viewer, scanova_site, vt_site, params, expected
):
    # given
    track(_purchase("1"))
    track(_purchase("2", scan_session_id=None, consent="denied"))
    ConversionEvent.objects.filter(site=vt_site, order_reference="2").delete()
    track(_purchase(None, event_name="signup"), sites=[scanova_site])
    # when
    response = viewer.get(EVENTS, params)
    # then
    assert response.status_code == 200, response.content
    found = {
        f"{e['site']['provider']}-{e['order_id'] or e['event_name']}"
        for e in response.json()["results"]
    }
    assert found == expected


def test_list_filters_by_site(viewer, scanova_site, vt_site):
    # given
    track(_purchase("1"))
    # when
    response = viewer.get(EVENTS, {"site": vt_site.pk})
    # then
    assert [e["site"]["id"] for e in response.json()["results"]] == [vt_site.pk]


def test_list_filters_by_creation_time(viewer, vt_site):
    # given
    now = timezone.now()
    for order_id, age in (("old", 10), ("mid", 5), ("new", 0)):
        (event,) = track(_purchase(order_id))
        ConversionEvent.objects.filter(pk=event.pk).update(created_at=now - timedelta(days=age))
    # when
    response = viewer.get(
        EVENTS,
        {
            "created_after": (now - timedelta(days=6)).isoformat(),
            "created_before": (now - timedelta(days=1)).isoformat(),
        },
    )
    # then
    assert [e["order_id"] for e in response.json()["results"]] == ["mid"]


@pytest.mark.parametrize(
    "params",
    [
        {"status": "lost"},
        {"site": "abc"},
        {"created_after": "yesterday"},
        {"event_name": "!!!"},
        {"stauts": "failed"},
    ],
)
def test_invalid_or_unknown_filters_answer_400(viewer, vt_site, params):
    # when
    response = viewer.get(EVENTS, params)
    # then
    assert response.status_code == 400
    assert list(response.json()) == list(params)


def test_a_page_past_the_end_answers_404(viewer, vt_site):
    # when
    response = viewer.get(EVENTS, {"page": 5})
    # then
    assert response.status_code == 404


def test_personal_data_is_masked_without_the_permission(viewer, vt_site):
    # given
    track(_purchase())
    # when
    response = viewer.get(EVENTS)
    # then
    customer = response.json()["results"][0]["conversion"]["customer"]
    assert customer["email"] == "b•••@example.com"
    assert customer["first_name"] == "A•••"
    assert customer["phone"] == "+•••23"
    text = response.content.decode()
    assert "buyer@example.com" not in text
    assert "775123" not in text


def test_a_reason_quoting_the_buyer_is_masked_without_the_permission(viewer, vt_site):
    # given: the provider's refusal, kept as the reason, quotes the buyer
    (event,) = track(_purchase())
    ConversionEvent.objects.filter(pk=event.pk).update(
        status=EventStatus.FAILED, last_error="HTTP 400: Ana (buyer@example.com, +40775123123)"
    )
    dpo = logged_in(make_user("dpo", perms=("view_conversionevent", "view_personal_data")))
    # when
    listed = viewer.get(EVENTS).json()["results"][0]["reason"]
    detailed = viewer.get(event_url(event)).json()["reason"]
    unmasked = dpo.get(event_url(event)).json()["reason"]
    # then
    assert listed == detailed == "HTTP 400: A••• (b•••@example.com, +•••23)"
    assert unmasked == "HTTP 400: Ana (buyer@example.com, +40775123123)"


def test_personal_data_is_shown_with_the_permission(vt_site):
    # given
    track(_purchase())
    client = logged_in(make_user("dpo", perms=("view_conversionevent", "view_personal_data")))
    # when
    response = client.get(EVENTS)
    # then
    customer = response.json()["results"][0]["conversion"]["customer"]
    assert customer["email"] == "buyer@example.com"
    assert customer["first_name"] == "Ana"


def test_detail_shows_the_event_and_its_attempts(viewer, vt_site):
    # given
    (event,) = track(_purchase())
    record_attempt(
        [event],
        http_status=503,
        outcome="retry",
        error="HTTP 503",
        response_body='{"errors": [{"message": "busy"}]}',
        request_body='{"event": {"confirmation": {}}}',
        duration_ms=12,
        url="https://vt.example.test/v1/event/",
        request_headers={"Authorization": "••••••••8a7b"},
        created_at=timezone.now() - timedelta(minutes=5),
    )
    record_attempt([event], http_status=200, outcome="delivered", url="https://vt.example.test/")
    # when
    response = viewer.get(event_url(event))
    # then
    assert response.status_code == 200
    body = response.json()
    assert body["event_id"] == str(event.event_id)
    assert body["site"] == {"id": vt_site.pk, "name": vt_site.name, "provider": "vtmarketing"}
    newest, older = body["delivery_attempts"]
    assert newest["http_status"] == 200
    assert older == {
        "created_at": older["created_at"],
        "duration_ms": 12,
        "url": "https://vt.example.test/v1/event/",
        "http_status": 503,
        "event_count": 1,
        "outcome": "retry",
        "message": "",
        "error": "HTTP 503",
        "request_body": '{"event": {"confirmation": {}}}',
        "response_body": '{"errors": [{"message": "busy"}]}',
    }


def test_detail_reads_attempts_in_a_bounded_number_of_queries(
    viewer, vt_site, django_assert_max_num_queries
):
    # given
    (event,) = track(_purchase())
    for _ in range(20):
        record_attempt([event], http_status=503, outcome="retry")
    # when: session, user, two for permissions, the event, its results with their attempts
    with django_assert_max_num_queries(6):
        response = viewer.get(event_url(event))
    # then
    assert len(response.json()["delivery_attempts"]) == 20


def test_detail_gives_each_event_its_own_outcome_in_a_shared_request(viewer, scanova_site):
    # given: one batch request, accepted as a whole, one of its events refused
    (accepted,) = track(_purchase("1"))
    (refused,) = track(_purchase("2"))
    record_attempt(
        [accepted, refused],
        http_status=200,
        outcome="delivered",
        outcomes={refused.pk: "failed"},
        messages={refused.pk: "scan_session_id unknown"},
    )
    # when
    answers = {e: viewer.get(event_url(e)).json() for e in (accepted, refused)}
    # then
    (mine,) = answers[refused]["delivery_attempts"]
    assert (mine["outcome"], mine["message"], mine["event_count"]) == (
        "failed",
        "scan_session_id unknown",
        2,
    )
    assert answers[accepted]["delivery_attempts"][0]["outcome"] == "delivered"


def test_detail_masks_personal_data_a_provider_echoed(viewer, vt_site):
    # given
    (event,) = track(_purchase())
    record_attempt(
        [event],
        http_status=400,
        outcome="failed",
        response_body='{"error": "user buyer@example.com (Ana) rejected"}',
        request_body='{"user": {"email": "buyer@example.com", "tel": "+40775123123"}}',
        error="rejected +40775123123",
    )
    # when
    (attempt,) = viewer.get(event_url(event)).json()["delivery_attempts"]
    # then
    text = json.dumps(attempt, ensure_ascii=False)
    assert "buyer@example.com" not in text and "+40775123123" not in text
    assert "b•••@example.com" in attempt["response_body"]
    assert "b•••@example.com" in attempt["request_body"]


def test_a_batch_request_shows_no_other_customers_data_without_the_permission(viewer, scanova_site):
    # given: one Scanova batch carrying two customers' events
    (mine,) = track(_purchase("1"))
    (theirs,) = track(
        _purchase("2", customer=Customer(email="other@shop.example", phone="+40722000111"))
    )
    body = scanova_batch_body([mine, theirs])
    record_attempt(
        [mine, theirs],
        http_status=200,
        request_body=body,
        response_body=body,
        url=SCANOVA_BATCH_URL,
    )
    their_hashes = list(theirs.snapshot["customer"].values())
    my_hashes = list(mine.snapshot["customer"].values())
    # when
    (attempt,) = viewer.get(event_url(mine)).json()["delivery_attempts"]
    (unmasked,) = (
        logged_in(make_user("dpo", perms=("view_conversionevent", "view_personal_data")))
        .get(event_url(mine))
        .json()["delivery_attempts"]
    )
    # then: only this event's part, its hashes shortened; nothing of the other customer
    for text in (attempt["request_body"], attempt["response_body"]):
        assert str(mine.event_id) in text
        assert str(theirs.event_id) not in text
        for value in [*their_hashes, *my_hashes]:
            assert value not in text
        assert my_hashes[0][:8] + "…" in text
    assert unmasked["request_body"] == body


def test_a_cut_batch_body_has_every_value_masked_without_the_permission(viewer, scanova_site):
    # given: the stored body was cut before this event's part
    (mine,) = track(_purchase("1"))
    (theirs,) = track(_purchase("2", customer=Customer(email="other@shop.example")))
    body = scanova_batch_body([theirs, mine])
    record_attempt([theirs, mine], http_status=200, request_body=body[:150])
    # when
    (attempt,) = viewer.get(event_url(mine)).json()["delivery_attempts"]
    # then
    for value in theirs.snapshot["customer"].values():
        assert value[:9] not in attempt["request_body"]
    assert '"event_id": "' in attempt["request_body"]  # the shape stays readable


def test_no_answer_contains_an_api_key(vt_site, mocked_http):
    # given: the provider refuses the key and echoes it back in its answer
    mocked_http.post(
        "https://vt.example.test/v1/event/",
        status=401,
        json={"errors": [{"message": f"invalid key {VT_KEY}"}]},
    )
    (event,) = track(_purchase())
    client = logged_in(make_user("root", superuser=True))
    retried = client.post(event_url(event, "retry"))
    call_command("conversions_deliver")
    # when
    answers = [retried, client.get(EVENTS), client.get(event_url(event))]
    # then
    assert mocked_http.calls[0].request.headers["Authorization"] == VT_KEY
    assert answers[2].json()["delivery_attempts"][0]["http_status"] == 401
    for answer in answers:
        assert answer.status_code in (200, 202)
        text = answer.content.decode()
        assert VT_KEY not in text
        assert SCANOVA_KEY not in text


@pytest.fixture
def operator(db: Any) -> Client:
    return logged_in(make_user("ops", perms=("change_conversionevent",)))


def failing_on_any_call() -> responses.RequestsMock:
    """Provider HTTP that fails (nothing is registered) and records every call."""
    return responses.RequestsMock(assert_all_requests_are_fired=False)


def test_retry_queues_the_event_and_answers_at_once_with_its_state(
    vt_site, operator, django_capture_on_commit_callbacks
):
    # given: tasks run by Django's ImmediateBackend (the test settings)
    (event,) = track(_purchase())
    ConversionEvent.objects.filter(pk=event.pk).update(
        status=EventStatus.FAILED, last_error="HTTP 400: bad", attempts=2
    )
    # when: the web request, up to its answer
    with failing_on_any_call() as provider:
        with django_capture_on_commit_callbacks(execute=False) as after_commit:
            response = operator.post(event_url(event, "retry"))
        calls_in_request = len(provider.calls)
    # then: the request sent nothing; it answered with the event queued
    assert calls_in_request == 0
    assert response.status_code == 202, response.content
    assert response.json()["status"] == "pending"
    assert response.json()["attempts"] == 2
    # and after commit the event is handed to the task queue
    with kept_tasks() as queue:
        for callback in after_commit:
            callback()
    assert enqueued_ids(queue) == [[event.pk]]


def test_a_retried_event_is_delivered_by_the_worker(vt_site, operator, mocked_http):
    # given
    mocked_http.post(
        "https://vt.example.test/v1/event/", json={"results": {"message": "Event created"}}
    )
    (event,) = track(_purchase())
    ConversionEvent.objects.filter(pk=event.pk).update(status=EventStatus.FAILED)
    operator.post(event_url(event, "retry"))
    # when
    call_command("conversions_deliver")
    # then
    assert ConversionEvent.objects.get(pk=event.pk).status == EventStatus.DELIVERED
    sent = json.loads(mocked_http.calls[0].request.body)
    assert sent["event"]["confirmation"]["generic"]["orderId"] == "1001"


def test_retry_answers_in_a_bounded_number_of_queries(
    vt_site, operator, django_assert_max_num_queries
):
    # given: an event tried many times
    (event,) = track(_purchase())
    for _ in range(20):
        record_attempt([event], http_status=503, outcome="retry")
    ConversionEvent.objects.filter(pk=event.pk).update(status=EventStatus.FAILED)
    # when: the same count with one attempt or twenty (the answer lists them all)
    with django_assert_max_num_queries(13):
        response = operator.post(event_url(event, "retry"))
    # then
    assert response.status_code == 202
    assert len(response.json()["delivery_attempts"]) == 20


def test_retry_leaves_an_entry_in_the_events_history(vt_site, operator):
    # given
    (event,) = track(_purchase())
    ConversionEvent.objects.filter(pk=event.pk).update(status=EventStatus.FAILED)
    # when
    operator.post(event_url(event, "retry"))
    # then
    (entry,) = LogEntry.objects.filter(object_id=str(event.pk))
    assert entry.user.username == "ops"
    assert "Retry requested through the API: 1 event queued for delivery" in (
        entry.get_change_message()
    )


def test_retry_of_a_delivered_event_answers_409_and_sends_nothing(
    vt_site, operator, django_capture_on_commit_callbacks
):
    # given
    (event,) = track(_purchase())
    ConversionEvent.objects.filter(pk=event.pk).update(status=EventStatus.DELIVERED)
    # when
    with (
        failing_on_any_call() as provider,
        django_capture_on_commit_callbacks(execute=True) as after_commit,
    ):
        response = operator.post(event_url(event, "retry"))
    # then
    assert response.status_code == 409
    assert response.json()["detail"].startswith("The event was delivered")
    assert after_commit == [] and not provider.calls
    assert ConversionEvent.objects.get(pk=event.pk).status == EventStatus.DELIVERED


def test_retry_of_an_event_a_worker_is_sending_answers_409(
    vt_site, operator, django_capture_on_commit_callbacks
):
    # given
    (event,) = track(_purchase())
    ConversionEvent.objects.filter(pk=event.pk).update(
        status=EventStatus.SENDING, lease_expires_at=timezone.now() + timedelta(minutes=5)
    )
    # when
    with (
        failing_on_any_call() as provider,
        django_capture_on_commit_callbacks(execute=True) as after_commit,
    ):
        response = operator.post(event_url(event, "retry"))
    # then
    assert response.status_code == 409
    assert "A worker is sending this event" in response.json()["detail"]
    assert after_commit == [] and not provider.calls
    assert ConversionEvent.objects.get(pk=event.pk).status == EventStatus.SENDING


class RefusingAdapter(OrderAdapter):
    """An adapter that can no longer turn the order into a conversion."""

    def to_conversion(self, order: Any) -> Any:
        raise ValueError("the order's total is not a number")


def test_retry_of_an_event_whose_order_can_no_longer_be_built_answers_200_failed(
    vt_site, operator, settings
):
    # given: an event recorded from an order, which the adapter now refuses
    order = Order.objects.create(
        number="R-1",
        status="paid",
        total="20.00",
        email="buyer@example.com",
        tracking_consent="granted",
    )
    event = ConversionEvent.objects.get(order_reference="R-1")
    ConversionEvent.objects.filter(pk=event.pk).update(status=EventStatus.FAILED)
    settings.CONVERSIONS = {
        **settings.CONVERSIONS,
        "ORDER_ADAPTER": "tests.test_api_read.RefusingAdapter",
    }
    # when
    response = operator.post(event_url(event, "retry"))
    # then: not queued; the event says why
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "failed"
    assert "the order's total is not a number" in response.json()["reason"]
    assert event.source_object_id == str(order.pk)  # rebuilt from this order


def test_retry_of_an_unknown_event_answers_404(db):
    # given
    client = logged_in(make_user("root", superuser=True))
    # when
    response = client.post(event_url(str(uuid.uuid4()), "retry"))
    # then
    assert response.status_code == 404
