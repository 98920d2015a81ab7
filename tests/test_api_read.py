"""``GET events/``, ``GET events/{event_id}/`` and ``POST events/{event_id}/retry/``."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from django_conversions import Conversion, Customer, track
from django_conversions.models import ConversionEvent, DeliveryAttempt, EventStatus
from tests.conftest import SCANOVA_KEY, VT_KEY
from tests.test_api_support import EVENTS, event_url, logged_in, make_user

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
    assert first.json()["count"] == 3
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
    DeliveryAttempt.objects.create(
        event=event,
        http_status=503,
        outcome="retry",
        error="HTTP 503",
        response_body='{"errors": [{"message": "busy"}]}',
        duration_ms=12,
        url="https://vt.example.test/v1/event/",
        request_headers={"Authorization": "••••••••8a7b"},
    )
    # when
    response = viewer.get(event_url(event))
    # then
    assert response.status_code == 200
    body = response.json()
    assert body["event_id"] == str(event.event_id)
    assert body["site"] == {"id": vt_site.pk, "name": vt_site.name, "provider": "vtmarketing"}
    (attempt,) = body["delivery_attempts"]
    assert attempt["http_status"] == 503
    assert attempt["outcome"] == "retry"
    assert attempt["response_body"] == '{"errors": [{"message": "busy"}]}'
    assert "request_headers" not in attempt


def test_detail_masks_personal_data_a_provider_echoed(viewer, vt_site):
    # given
    (event,) = track(_purchase())
    DeliveryAttempt.objects.create(
        event=event,
        http_status=400,
        outcome="failed",
        response_body='{"error": "user buyer@example.com (Ana) rejected"}',
    )
    # when
    response = viewer.get(event_url(event))
    # then
    body = response.json()["delivery_attempts"][0]["response_body"]
    assert "buyer@example.com" not in body
    assert "b•••@example.com" in body


def test_unknown_event_answers_404(viewer, vt_site):
    # when
    response = viewer.get(event_url(str(uuid.uuid4())))
    # then
    assert response.status_code == 404


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
    # when
    answers = [retried, client.get(EVENTS), client.get(event_url(event))]
    # then
    assert mocked_http.calls[0].request.headers["Authorization"] == VT_KEY
    assert answers[2].json()["delivery_attempts"][0]["http_status"] == 401
    for answer in answers:
        assert answer.status_code == 200
        text = answer.content.decode()
        assert VT_KEY not in text
        assert SCANOVA_KEY not in text


def test_retry_sends_the_event_again_and_answers_with_its_new_state(vt_site, mocked_http):
    # given
    (event,) = track(_purchase())
    ConversionEvent.objects.filter(pk=event.pk).update(
        status=EventStatus.FAILED, last_error="HTTP 400: bad"
    )
    mocked_http.post(
        "https://vt.example.test/v1/event/", json={"results": {"message": "Event created"}}
    )
    client = logged_in(make_user("ops", perms=("change_conversionevent",)))
    # when
    response = client.post(event_url(event, "retry"))
    # then
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "delivered"
    assert len(response.json()["delivery_attempts"]) == 1
    event.refresh_from_db()
    assert event.status == EventStatus.DELIVERED
    sent = json.loads(mocked_http.calls[0].request.body)
    assert sent["event"]["confirmation"]["generic"]["orderId"] == "1001"


def test_retry_of_an_event_a_worker_is_sending_answers_409(vt_site, mocked_http):
    # given
    (event,) = track(_purchase())
    ConversionEvent.objects.filter(pk=event.pk).update(
        status=EventStatus.SENDING, lease_expires_at=timezone.now() + timedelta(minutes=5)
    )
    client = logged_in(make_user("ops", perms=("change_conversionevent",)))
    # when
    response = client.post(event_url(event, "retry"))
    # then
    assert response.status_code == 409
    assert len(mocked_http.calls) == 0
    assert ConversionEvent.objects.get(pk=event.pk).status == EventStatus.SENDING


def test_retry_of_an_unknown_event_answers_404(db):
    # given
    client = logged_in(make_user("root", superuser=True))
    # when
    response = client.post(event_url(str(uuid.uuid4()), "retry"))
    # then
    assert response.status_code == 404
