"""The provider sandbox: each documented answer, the fault switches, and the real provider
modules talking to it over HTTP (``live_server``)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest
from django.conf import settings
from django.core.management import call_command
from django.test import Client, override_settings
from django.urls import include, path
from django.utils import timezone

from django_conversions import http
from django_conversions.contrib.sandbox import control, exchange
from django_conversions.contrib.sandbox.models import (
    SandboxEvent,
    SandboxKey,
    SandboxRequest,
    SandboxSite,
)
from django_conversions.conversion import PROPERTIES_MAX_BYTES, properties_size
from django_conversions.delivery import deliver_due
from django_conversions.models import ApiKey, ConversionEvent, EventStatus, TrackingSite
from django_conversions.outbox import rebuild_snapshot
from tests import urls as test_urls
from tests.conditions import wait_until
from tests.testapp.models import Order, OrderItem

SCANOVA_URL = "/sandbox/scanova/server-events"
BATCH_URL = "/sandbox/scanova/server-events/batch"
VT_URL = "/sandbox/vtmarketing/v1/event/"

# This module is its own URLconf: the test project's URLs plus the sandbox under /sandbox/.
urlpatterns = [
    *test_urls.urlpatterns,
    path("sandbox/", include("django_conversions.contrib.sandbox.urls")),
]
pytestmark = pytest.mark.urls(__name__)


# --- helpers -----------------------------------------------------------------------------------


@pytest.fixture
def accounts(db: Any) -> dict[str, control.Account]:
    return control.ensure_accounts()


def scanova_event(**changes: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "site_id": control.DEFAULT_SCANOVA_SITE_ID,
        "event_name": "Purchase Complete",
        "scan_session_id": "550e8400-e29b-41d4-a716-446655440000",
        "event_id": str(uuid.uuid4()),
        "event_time": "2025-03-01T10:00:00+00:00",
        "conversion_value": {"amount": 99.99, "currency": "USD"},
        "user_identifiers": {
            "email_hash": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "external_id": "user_12345",
        },
        "properties": {"order_id": "order_789", "product_ids": ["prod_1", "prod_2"]},
        "consent": "granted",
    }
    event.update(changes)
    return {k: v for k, v in event.items() if v is not None}


def vt_body(**generic_changes: Any) -> dict[str, Any]:
    generic = {
        "orderId": "1001",
        "total": 400.33,
        "status": "paid",
        "coupons": ["coupon1"],
        "phone": "0775123123",
        "currency": "RON",
        "total_shipping": 22.0,
    }
    generic.update(generic_changes)
    return {
        "user": {"email": "buyer@example.com", "tel": "0775123123", "firstname": "Ana"},
        "event": {
            "confirmation": {
                "generic": {k: v for k, v in generic.items() if v is not None},
                "items": [{"id": "12345", "quantity": 1}, {"id": "amnsdf", "quantity": 3}],
            }
        },
    }


def post_scanova(client: Client, body: Any, key: str | None, url: str = SCANOVA_URL) -> Any:
    headers = {"X-API-Key": key} if key is not None else {}
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    return client.post(url, data=data, content_type="application/json", headers=headers)


def post_vt(client: Client, body: Any, key: str | None) -> Any:
    headers = {"Authorization": key} if key is not None else {}
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    return client.post(VT_URL, data=data, content_type="application/json", headers=headers)


def locs(response: Any) -> list[list[Any]]:
    return [item["loc"] for item in response.json()["detail"]]


# --- Scanova: the documented answers ---------------------------------------------------------


def test_scanova_accepts_a_documented_event_and_records_it(client, accounts):
    # given
    key = accounts["scanova"].key
    body = scanova_event()
    # when
    response = post_scanova(client, body, key)
    # then
    assert response.status_code == 200
    assert response.json() == {
        "success": True,
        "event_id": body["event_id"],
        "message": "Event received",
    }
    stored = SandboxEvent.objects.get()
    assert stored.event_name == "purchase_complete"  # normalised like the real API
    assert stored.order_id == "order_789"
    recorded = SandboxRequest.objects.get()
    assert recorded.event_ids == [body["event_id"]]
    assert key not in json.dumps(recorded.headers)  # the key is recorded masked
    assert recorded.headers["X-Api-Key"].endswith(key[-4:])


def test_scanova_without_a_key_is_401(client, accounts):
    # when
    response = post_scanova(client, scanova_event(), None)
    # then
    assert response.status_code == 401
    assert response.json() == {"detail": "X-API-Key header missing"}


def test_scanova_with_an_unknown_or_revoked_key_is_403(client, accounts):
    # given
    unknown = post_scanova(client, scanova_event(), "scn_not_a_key_at_all")
    control.revoke_keys("scanova")
    # when
    revoked = post_scanova(client, scanova_event(), accounts["scanova"].key)
    # then
    assert unknown.status_code == revoked.status_code == 403
    assert revoked.json() == {"detail": "invalid or revoked API key"}
    assert not SandboxEvent.objects.exists()


def test_scanova_refuses_a_vtmarketing_key(client, accounts):
    # when
    response = post_scanova(client, scanova_event(), accounts["vtmarketing"].key)
    # then
    assert response.status_code == 403


def test_scanova_site_id_of_another_site_is_403(client, accounts):
    # given
    other = control.ensure_account("scanova", site_id="site_other")
    # when
    response = post_scanova(client, scanova_event(site_id=other.site_id), accounts["scanova"].key)
    # then
    assert response.status_code == 403
    assert response.json() == {"detail": "site_id does not match the API key's site"}


@pytest.mark.parametrize("site_id", ["site_missing", "inactive"])
def test_scanova_unknown_or_inactive_site_is_400(client, accounts, site_id):
    # given
    SandboxSite.objects.create(provider="scanova", site_id="inactive", is_active=False)
    # when
    response = post_scanova(client, scanova_event(site_id=site_id), accounts["scanova"].key)
    # then
    assert response.status_code == 400
    assert response.json() == {"detail": "site_id not found or inactive"}


def test_scanova_bad_json_and_wrong_content_type_are_400(client, accounts):
    # given
    key = accounts["scanova"].key
    # when
    bad_json = post_scanova(client, "{not json", key)
    form = client.post(SCANOVA_URL, data={"site_id": "x"}, headers={"X-API-Key": key})
    # then
    assert bad_json.status_code == 400
    assert bad_json.json() == {"detail": "the body is not valid JSON"}
    assert form.status_code == 400
    assert "application/json" in form.json()["detail"]


def test_scanova_oversized_body_is_413(client, accounts):
    # given
    body = scanova_event(padding="x" * 40_000)
    # when
    response = post_scanova(client, body, accounts["scanova"].key)
    # then
    assert response.status_code == 413
    assert "payload too large" in response.json()["detail"]


CV, UI, PR = "conversion_value", "user_identifiers", "properties"


@pytest.mark.parametrize(
    ("changes", "loc"),
    [
        ({"site_id": None}, ["site_id"]),
        ({"event_name": None}, ["event_name"]),
        ({"scan_session_id": None}, ["scan_session_id"]),
        ({"scan_session_id": "scan-123"}, ["scan_session_id"]),
        ({"event_id": "42"}, ["event_id"]),
        ({"event_name": "x" * 65}, ["event_name"]),
        ({"site_id": 12}, ["site_id"]),
        ({"event_time": "yesterday"}, ["event_time"]),
        ({CV: {"amount": 9, "currency": "EURO"}}, [CV, "currency"]),
        ({CV: {"amount": "9.99", "currency": "EUR"}}, [CV, "amount"]),
        ({CV: {"amount": 9}}, [CV, "currency"]),
        ({UI: {"email": "a@b.co"}}, [UI, "email"]),
        ({UI: {"email_hash": "a@b.co"}}, [UI, "email_hash"]),
        ({PR: {"note": "x" * 10_300}}, [PR]),
        ({PR: {"buyer": {"contact": "Ana <ana@example.com>"}}}, [PR, "buyer", "contact"]),
        ({PR: ["not", "an", "object"]}, [PR]),
        ({"consent": "yes"}, ["consent"]),
        ({"siteId": "typo"}, ["siteId"]),
    ],
)
def test_scanova_field_errors_are_422_with_the_field_located(client, accounts, changes, loc):
    # when
    response = post_scanova(client, scanova_event(**changes), accounts["scanova"].key)
    # then
    assert response.status_code == 422
    assert ["body", *loc] in locs(response)
    assert {"msg", "type"} <= set(response.json()["detail"][0])
    assert not SandboxEvent.objects.exists()


def test_scanova_minimal_event_is_accepted(client, accounts):
    # given: only the three required fields
    body = {
        "site_id": control.DEFAULT_SCANOVA_SITE_ID,
        "event_name": "signup",
        "scan_session_id": str(uuid.uuid4()),
    }
    # when
    response = post_scanova(client, body, accounts["scanova"].key)
    # then
    assert response.status_code == 200
    assert uuid.UUID(response.json()["event_id"])  # the provider assigns one


def test_scanova_properties_limit_is_the_one_the_app_sends_by(client, accounts):
    # given: properties exactly at the app's limit, and one byte over it
    base = {"note": ""}
    at_limit = {"note": "é" * ((PROPERTIES_MAX_BYTES - properties_size(base)) // 6)}
    at_limit["note"] += "x" * (PROPERTIES_MAX_BYTES - properties_size(at_limit))
    over = {"note": at_limit["note"] + "x"}
    assert properties_size(at_limit) == PROPERTIES_MAX_BYTES
    # when
    accepted = post_scanova(client, scanova_event(properties=at_limit), accounts["scanova"].key)
    refused = post_scanova(client, scanova_event(properties=over), accounts["scanova"].key)
    # then
    assert accepted.status_code == 200
    assert refused.status_code == 422
    assert ["body", "properties"] in locs(refused)


def test_scanova_repeated_event_id_is_200_and_counted_once(client, accounts):
    # given
    body = scanova_event()
    post_scanova(client, body, accounts["scanova"].key)
    # when
    again = post_scanova(client, body, accounts["scanova"].key)
    # then
    assert again.status_code == 200
    assert again.json()["event_id"] == body["event_id"]
    stored = SandboxEvent.objects.get()
    assert stored.times_received == 2
    assert len(control.requests_for_event(body["event_id"])) == 2


def test_scanova_rate_limit_is_429_with_retry_after(client, accounts):
    # given: a minute's worth of requests already received with this key
    key = SandboxKey.objects.get(key=accounts["scanova"].key)
    SandboxRequest.objects.bulk_create(
        SandboxRequest(provider="scanova", method="POST", path=SCANOVA_URL, api_key=key,
                       status_code=200)
        for _ in range(1050)
    )  # fmt: skip
    # when
    response = post_scanova(client, scanova_event(), key.key)
    # then
    assert response.status_code == 429
    assert 1 <= int(response["Retry-After"]) <= 60


def test_scanova_batch_answers_per_event(client, accounts):
    # given
    good = scanova_event()
    bad = scanova_event(scan_session_id="not-a-uuid")
    foreign = scanova_event(site_id="site_missing")
    # when
    response = post_scanova(client, {"events": [good, bad, foreign]}, accounts["scanova"].key,
                            BATCH_URL)  # fmt: skip
    # then
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["status"] for r in results] == ["accepted", "rejected", "rejected"]
    assert results[0]["event_id"] == good["event_id"]
    assert results[1]["status_code"] == 422
    assert results[1]["detail"][0]["loc"] == ["body", "events", 1, "scan_session_id"]
    assert results[2]["status_code"] == 400
    assert SandboxEvent.objects.count() == 1


def test_scanova_batch_too_many_events_is_413_and_missing_list_is_422(client, accounts):
    # given
    key = accounts["scanova"].key
    # when
    too_many = post_scanova(client, {"events": [scanova_event() for _ in range(101)]}, key,
                            BATCH_URL)  # fmt: skip
    no_list = post_scanova(client, {"event": []}, key, BATCH_URL)
    # then
    assert too_many.status_code == 413
    assert no_list.status_code == 422
    assert not SandboxEvent.objects.exists()


def test_get_is_405(client, accounts):
    # when
    response = client.get(SCANOVA_URL)
    # then
    assert response.status_code == 405
    assert response["Allow"] == "POST"


# --- VTmarketing: the documented answers -----------------------------------------------------


def test_vtmarketing_accepts_the_documented_example(client, accounts):
    # when
    response = post_vt(client, vt_body(), accounts["vtmarketing"].key)
    # then
    assert response.status_code == 200
    assert response.json() == {
        "results": {"message": "Event created", "email": "Event was created for the specified user"}
    }
    assert SandboxEvent.objects.get().order_id == "1001"


def test_vtmarketing_without_orderid_is_still_accepted(client, accounts):
    # when: the docs say a missing orderId is not an error
    response = post_vt(client, vt_body(orderId=None), accounts["vtmarketing"].key)
    # then
    assert response.status_code == 200


def test_vtmarketing_auth_401_403(client, accounts):
    # given
    key = accounts["vtmarketing"].key
    # when
    missing = post_vt(client, vt_body(), None)
    bearer = post_vt(client, vt_body(), f"Bearer {key}")
    wrong = post_vt(client, vt_body(), "vtm_wrong_key")
    scanova_key = post_vt(client, vt_body(), accounts["scanova"].key)
    # then
    assert missing.status_code == bearer.status_code == 401
    assert "without a scheme word" in bearer.json()["errors"][0]["description"]
    assert wrong.status_code == scanova_key.status_code == 403
    assert set(wrong.json()["errors"][0]) == {"message", "description"}


EVENT = vt_body()["event"]


def _descriptions(response: Any) -> str:
    return " | ".join(f"{e['message']}: {e['description']}" for e in response.json()["errors"])


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"user": {"email": "a@example.com"}}, "Missing event information"),
        ({"event": EVENT}, "Missing user information"),
        ({"user": {"tel": "1"}, "event": EVENT}, "user.email is required"),
        ({"user": {"email": "sam@localhost"}, "event": EVENT}, "not a valid email"),
        ({"user": {"Email": "a@example.com", "email": "a@example.com"}, "event": EVENT},
         "did you mean user.email"),
        (vt_body(total="400.33"), "generic.total must be a float, got string"),
        (vt_body(total=None), "generic.total is required"),
        (vt_body(orderId=1001), "generic.orderId must be a string, got number"),
        (vt_body(orderid="1001"), "did you mean event.confirmation.generic.orderId"),
        (vt_body(coupons="SPRING"), "coupons must be a list of strings"),
        (vt_body(currency="lei"), "3-letter ISO code"),
        ({"user": {"email": "a@b.co"}, "event": {"purchase": {}}}, "only takes 'confirmation'"),
    ],
)  # fmt: skip
def test_vtmarketing_field_errors_are_400_with_errors_list(client, accounts, body, expected):
    # when
    response = post_vt(client, body, accounts["vtmarketing"].key)
    # then
    assert response.status_code == 400
    assert expected in _descriptions(response)
    assert not SandboxEvent.objects.exists()


def test_vtmarketing_item_types_are_exact(client, accounts):
    # given
    body = vt_body()
    body["event"]["confirmation"]["items"] = [{"id": 12345, "quantity": "1"}]
    # when
    response = post_vt(client, body, accounts["vtmarketing"].key)
    # then
    assert response.status_code == 400
    assert "items[0].id must be a non-empty string" in _descriptions(response)
    assert "items[0].quantity must be a whole number" in _descriptions(response)


# --- fault switches ----------------------------------------------------------------------------


def test_server_error_fault_for_a_number_of_requests(client, accounts):
    # given
    control.set_fault("scanova", "server_error", status_code=502, times=2)
    key = accounts["scanova"].key
    # when
    answers = [post_scanova(client, scanova_event(), key).status_code for _ in range(3)]
    # then
    assert answers == [502, 502, 200]
    assert [r.fault for r in SandboxRequest.objects.order_by("pk")] == [
        "server_error",
        "server_error",
        "",
    ]


def test_rate_limit_fault_sends_retry_after(client, accounts):
    # given
    control.set_fault("vtmarketing", "rate_limit", retry_after=7)
    # when
    response = post_vt(client, vt_body(), accounts["vtmarketing"].key)
    # then
    assert response.status_code == 429
    assert response["Retry-After"] == "7"
    assert "errors" in response.json()


def test_revoked_key_fault_and_reject_fault(client, accounts):
    # given
    control.set_fault("scanova", "revoked_key")
    control.set_fault("vtmarketing", "reject", status_code=409)
    # when
    scanova = post_scanova(client, scanova_event(), accounts["scanova"].key)
    vt = post_vt(client, vt_body(), accounts["vtmarketing"].key)
    control.clear_faults()
    after = post_scanova(client, scanova_event(), accounts["scanova"].key)
    # then
    assert scanova.status_code == 403
    assert vt.status_code == 409
    assert after.status_code == 200


def test_slow_fault_records_the_request_before_answering_late(client, accounts, monkeypatch):
    # given: the sandbox's pause before answering, observed
    control.set_fault("scanova", "slow", delay=0.3)
    pauses: list[tuple[float, bool]] = []

    def pause(seconds: float) -> None:
        pauses.append((seconds, SandboxRequest.objects.filter(fault="slow").exists()))

    monkeypatch.setattr(exchange, "time", SimpleNamespace(sleep=pause))
    # when
    response = post_scanova(client, scanova_event(), accounts["scanova"].key)
    # then: the answer waited the fault's delay, and the request was on record before it
    assert pauses == [(0.3, True)]
    assert response.status_code == 200


def test_fault_command_and_setup_command(accounts):
    # when
    call_command("conversions_sandbox_fault", "all", "server_error", "--status", "500")
    # then
    assert [f.mode for f in control.SandboxFault.objects.order_by("provider")] == [
        "server_error",
        "server_error",
    ]
    # when
    call_command("conversions_sandbox_fault", "all", "off")
    call_command("conversions_sandbox_setup", "--connect", "http://127.0.0.1:9/sandbox")
    # then
    assert not control.SandboxFault.objects.exclude(mode="off").exists()
    site = TrackingSite.objects.get(provider="scanova")
    assert site.endpoint_url == "http://127.0.0.1:9/sandbox/scanova"
    assert site.current_key().key == accounts["scanova"].key


# --- the real provider modules over HTTP -----------------------------------------------------


@pytest.fixture
def wired(live_server: Any, transactional_db: Any) -> Iterator[dict[str, TrackingSite]]:
    accounts = control.ensure_accounts()
    sites = control.connect_tracking_sites(f"{live_server.url}/sandbox", accounts)
    yield {site.provider: site for site in sites}
    # Close the pooled keep-alive connection so the server's request thread ends with the test.
    http.close_session()


def place_order(number: str = "1001", **fields: Any) -> Order:
    values: dict[str, Any] = {
        "number": number,
        "status": "new",
        "total": Decimal("104.99"),
        "shipping": Decimal("5.00"),
        "currency": "EUR",
        "email": "Ana.Pop@example.com",
        "phone": "+40 775 123 123",
        "first_name": "Ana",
        "city": "Cluj",
        "scan_session_id": str(uuid.uuid4()),
        "tracking_consent": "granted",
    }
    values.update(fields)
    order = Order.objects.create(**values)
    OrderItem.objects.create(order=order, sku="MUG-01", quantity=2, price=Decimal("49.99"))
    order.status = "paid"
    order.save()
    return order


def event_for(provider: str, order: Order) -> ConversionEvent:
    return ConversionEvent.objects.get(site__provider=provider, order_reference=order.number)


def test_a_paid_order_is_delivered_to_both_sandbox_providers(wired):
    # when
    order = place_order()
    # then
    scanova = event_for("scanova", order)
    vt = event_for("vtmarketing", order)
    assert (scanova.status, vt.status) == (EventStatus.DELIVERED, EventStatus.DELIVERED)
    received = SandboxEvent.objects.get(provider="scanova")
    assert received.event_id == scanova.event_id
    assert received.payload["scan_session_id"] == order.scan_session_id
    assert received.payload["conversion_value"] == {"amount": 104.99, "currency": "EUR"}
    confirmation = SandboxEvent.objects.get(provider="vtmarketing").payload
    assert confirmation["user"]["email"] == "ana.pop@example.com"
    assert confirmation["event"]["confirmation"]["generic"]["orderId"] == "1001"
    assert confirmation["event"]["confirmation"]["items"] == [{"id": "MUG-01", "quantity": 2}]


def test_a_5xx_is_retried_and_counted_once(wired):
    # given: a retry scheduled an hour after the 503
    control.set_fault("scanova", "server_error", status_code=503, times=1)
    with override_settings(CONVERSIONS={**settings.CONVERSIONS, "RETRY_SCHEDULE": (3600,)}):
        order = place_order()
    event = event_for("scanova", order)
    assert event.status == EventStatus.PENDING and event.attempts == 1
    assert "HTTP 503" in event.last_error
    deliver_due()
    assert len(control.requests_for_event(event.event_id)) == 1  # not due yet: nothing sent
    # when: the retry falls due
    ConversionEvent.objects.filter(pk=event.pk).update(next_attempt_at=timezone.now())
    deliver_due()
    # then
    event.refresh_from_db()
    assert event.status == EventStatus.DELIVERED
    assert event.attempts == 2
    assert [r.status_code for r in control.requests_for_event(event.event_id)] == [503, 200]
    assert SandboxEvent.objects.filter(event_id=event.event_id).count() == 1


def test_a_revoked_key_pauses_the_site_until_a_new_key_is_added(wired):
    # given
    control.revoke_keys("scanova")
    order = place_order()
    site = TrackingSite.objects.get(pk=wired["scanova"].pk)
    event = event_for("scanova", order)
    assert site.is_paused
    assert "403" in site.paused_reason
    assert event.status == EventStatus.PENDING
    assert event_for("vtmarketing", order).status == EventStatus.DELIVERED
    # when: the provider issues a new key and the shop pastes it in
    fresh = control.ensure_account("scanova")
    ApiKey.objects.create(site=site, label="rotated", key=fresh.key)
    deliver_due()
    # then
    site.refresh_from_db()
    event.refresh_from_db()
    assert not site.is_paused
    assert event.status == EventStatus.DELIVERED
    assert fresh.key not in site.paused_reason + event.last_error


def test_an_event_sent_again_is_deduplicated_by_the_provider(wired):
    # given: a delivered event whose outcome was lost (the worker died after sending, before
    # recording), so it is pending and due again
    order = place_order()
    event = event_for("scanova", order)
    # Its conversion as stored before the delivery was recorded (recording trims it).
    assert rebuild_snapshot(event) is None
    ConversionEvent.objects.filter(pk=event.pk).update(
        status=EventStatus.PENDING,
        delivered_at=None,
        next_attempt_at=timezone.now(),
        snapshot=event.snapshot,
    )
    # when
    deliver_due()
    # then
    event.refresh_from_db()
    assert event.status == EventStatus.DELIVERED
    assert len(control.requests_for_event(event.event_id)) == 2
    received = SandboxEvent.objects.get(provider="scanova")
    assert received.times_received == 2


def test_a_timeout_is_retried_and_the_provider_counts_the_event_once(wired):
    # given: the sandbox takes 1 s to answer, the client waits 0.3 s
    control.set_fault("scanova", "slow", delay=1.0, times=1)
    conversions = {**settings.CONVERSIONS, "READ_TIMEOUT": 0.3}
    with override_settings(CONVERSIONS=conversions):
        order = place_order()
    event = event_for("scanova", order)
    assert event.status == EventStatus.PENDING
    assert "timed out" in event.last_error
    # The slow fault is spent once the sandbox has recorded that request (before its late
    # answer): from then on, the retry gets a prompt answer.
    wait_until(lambda: len(control.requests_for_event(event.event_id)) == 1)
    # when
    ConversionEvent.objects.filter(pk=event.pk).update(next_attempt_at=timezone.now())
    deliver_due()
    # then
    event.refresh_from_db()
    assert event.status == EventStatus.DELIVERED
    received = SandboxEvent.objects.get(provider="scanova")
    assert received.times_received == 2  # received twice, counted once


def test_several_due_events_go_to_scanova_in_one_batch(wired):
    # given: no task backend, so nothing is sent until the sweep
    conversions = {**settings.CONVERSIONS, "TASK_BACKEND": None}
    with override_settings(CONVERSIONS=conversions):
        orders = [place_order(str(1000 + n)) for n in range(3)]
        # when
        report = deliver_due()
    # then
    assert report.delivered == 6
    batch = SandboxRequest.objects.get(provider="scanova")
    assert batch.path.endswith("/server-events/batch")
    assert len(batch.event_ids) == 3
    assert SandboxRequest.objects.filter(provider="vtmarketing").count() == 3
    assert {e.order_id for e in SandboxEvent.objects.filter(provider="vtmarketing")} == {
        o.number for o in orders
    }


def test_a_429_holds_the_site_for_retry_after(wired):
    # given
    control.set_fault("vtmarketing", "rate_limit", retry_after=120, times=1)
    before = timezone.now()
    # when
    order = place_order()
    # then
    event = event_for("vtmarketing", order)
    site = TrackingSite.objects.get(pk=wired["vtmarketing"].pk)
    assert event.status == EventStatus.PENDING
    assert event.next_attempt_at >= before + timedelta(seconds=119)
    assert site.held_until >= before + timedelta(seconds=119)


def test_an_address_the_provider_refuses_fails_with_its_reason(wired):
    # given: Django accepts user@localhost, VTmarketing wants a deliverable address
    # when
    order = place_order(email="sam@localhost")
    # then
    vt = event_for("vtmarketing", order)
    assert vt.status == EventStatus.FAILED
    assert "HTTP 400" in vt.last_error
    assert "user.email is not a valid email address" in vt.last_error
    assert event_for("scanova", order).status == EventStatus.DELIVERED
