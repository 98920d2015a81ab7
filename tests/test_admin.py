"""The admin: tracking sites and their keys, events and attempts, actions and permissions."""

from __future__ import annotations

import json
import re
import uuid
from datetime import timedelta
from html import unescape
from typing import Any

import pytest
import responses
from django.contrib.admin.models import LogEntry
from django.core.management import call_command
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from django.views.debug import SafeExceptionReporterFilter

from django_conversions.conversion import Conversion, Customer
from django_conversions.models import (
    ApiKey,
    ConversionEvent,
    EventResult,
    EventStatus,
    TrackingSite,
)
from django_conversions.providers.base import Outcome
from tests.attempts import enqueued_ids, kept_tasks, record_attempt
from tests.conftest import SCANOVA_KEY, VT_KEY

NEW_KEY = "scn_live_NEWKEY_0123456789abcdefWXYZ"
SCANOVA_URL = "https://track.example.test/server-events"
VT_URL = "https://vt.example.test/v1/event/"


# --- helpers -----------------------------------------------------------------------------------


def make_event(site: TrackingSite, **fields: Any) -> ConversionEvent:
    conversion = Conversion(
        event_name="purchase",
        order_id=fields.pop("order_id", uuid.uuid4().hex[:8]),
        value="25.00",
        currency="EUR",
        scan_session_id=str(uuid.uuid4()),
        consent="granted",
        customer=Customer(
            email="buyer@example.com",
            phone="+40775123123",
            first_name="Mariana",
            last_name="Ionescu",
        ),
    )
    defaults: dict[str, Any] = {
        "event_name": "purchase",
        "dedup_key": f"purchase:order:{conversion.order_id}",
        "order_reference": conversion.order_id,
        "snapshot": conversion.to_snapshot(),
    }
    defaults.update(fields)
    return ConversionEvent.objects.create(site=site, **defaults)


def site_form_data(
    site: TrackingSite | None = None, keys: list[dict[str, Any]] | None = None, **fields: Any
) -> dict[str, Any]:
    """POST data for the site change form with its API key inline."""
    data: dict[str, Any] = {
        "name": site.name if site else "Shop EU",
        "provider": site.provider if site else "scanova",
        "provider_site_id": site.provider_site_id if site else "site_abc123",
        "endpoint_url": site.endpoint_url if site else "https://track.example.test",
        "event_names": "",
        "is_active": "on",
    }
    data.update(fields)
    keys = keys or []
    existing = [k for k in keys if k.get("id")]
    data.update(
        {
            "api_keys-TOTAL_FORMS": str(len(keys)),
            "api_keys-INITIAL_FORMS": str(len(existing)),
            "api_keys-MIN_NUM_FORMS": "0",
            "api_keys-MAX_NUM_FORMS": "1000",
        }
    )
    for index, key in enumerate(keys):
        for name, value in key.items():
            if value is True:
                value = "on"
            if value is False or value is None:
                continue
            data[f"api_keys-{index}-{name}"] = value
    return data


def raw_key_column() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT key FROM django_conversions_apikey")
        return [row[0] for row in cursor.fetchall()]


def failing_on_any_call() -> responses.RequestsMock:
    """Provider HTTP that fails (nothing is registered) and records every call."""
    return responses.RequestsMock(assert_all_requests_are_fired=False)


def html(response: Any) -> str:
    """The page as a reader sees it (entities decoded), so escaping can't hide a value."""
    return unescape(response.content.decode())


def messages_of(response: Any) -> list[str]:
    return [str(m) for m in response.context["messages"]] if response.context else []


def site_url(name: str, *args: Any) -> str:
    return reverse(f"admin:django_conversions_trackingsite_{name}", args=args)


def event_url(name: str, *args: Any) -> str:
    return reverse(f"admin:django_conversions_conversionevent_{name}", args=args)


# --- tracking sites and keys -------------------------------------------------------------------


def test_adding_a_site_with_a_key_stores_ciphertext_and_shows_only_the_mask(admin_client):
    # given
    data = site_form_data(keys=[{"label": "primary", "key": NEW_KEY, "is_active": True}])
    # when
    response = admin_client.post(site_url("add"), data)
    # then
    assert response.status_code == 302, response.context and response.context["errors"]
    site = TrackingSite.objects.get(name="Shop EU")
    assert site.current_key().key == NEW_KEY
    assert all(NEW_KEY not in value for value in raw_key_column())
    page = html(admin_client.get(site_url("change", site.pk)))
    assert NEW_KEY not in page and NEW_KEY[:-4] not in page
    assert "••••••••WXYZ" in page
    assert 'type="password"' in page


def test_a_new_key_row_without_a_key_is_refused(admin_client, scanova_site):
    # given: a label typed into the extra row but no key pasted
    existing = scanova_site.api_keys.get()
    data = site_form_data(
        scanova_site,
        keys=[
            {"id": existing.pk, "site": scanova_site.pk, "label": "primary", "is_active": True},
            {"label": "spare", "key": "", "is_active": True},
        ],
    )
    # when
    response = admin_client.post(site_url("change", scanova_site.pk), data)
    # then
    assert response.status_code == 200
    assert "Paste the API key." in html(response)
    assert scanova_site.api_keys.count() == 1


def test_saving_with_the_key_field_empty_keeps_the_stored_key(admin_client, scanova_site):
    # given
    existing = scanova_site.api_keys.get()
    data = site_form_data(
        scanova_site,
        keys=[{"id": existing.pk, "site": scanova_site.pk, "label": "renamed", "is_active": True}],
    )
    # when
    response = admin_client.post(site_url("change", scanova_site.pk), data)
    # then
    assert response.status_code == 302
    existing.refresh_from_db()
    assert existing.label == "renamed"
    assert existing.key == SCANOVA_KEY


def test_pasting_a_new_value_into_an_existing_row_replaces_the_key(admin_client, scanova_site):
    # given
    existing = scanova_site.api_keys.get()
    data = site_form_data(
        scanova_site,
        keys=[
            {
                "id": existing.pk,
                "site": scanova_site.pk,
                "label": "primary",
                "key": NEW_KEY,
                "is_active": True,
            }
        ],
    )
    # when
    admin_client.post(site_url("change", scanova_site.pk), data)
    # then
    existing.refresh_from_db()
    assert existing.key == NEW_KEY


def test_unticking_active_revokes_the_key(admin_client, scanova_site):
    # given
    existing = scanova_site.api_keys.get()
    data = site_form_data(
        scanova_site,
        keys=[{"id": existing.pk, "site": scanova_site.pk, "label": "primary", "is_active": False}],
    )
    # when
    admin_client.post(site_url("change", scanova_site.pk), data)
    # then
    existing.refresh_from_db()
    assert not existing.is_active
    assert existing.revoked_at is not None
    assert scanova_site.current_key() is None


def test_revoke_action_deactivates_keys(admin_client, scanova_site):
    # given
    existing = scanova_site.api_keys.get()
    # when
    response = admin_client.post(
        reverse("admin:django_conversions_apikey_changelist"),
        {"action": "revoke_keys", "_selected_action": [existing.pk]},
        follow=True,
    )
    # then
    existing.refresh_from_db()
    assert not existing.is_active and existing.revoked_at is not None
    assert "Revoked 1 API key(s)" in " ".join(messages_of(response))


def test_a_key_added_on_the_api_key_page_is_stored_and_masked(admin_client, scanova_site):
    # when
    response = admin_client.post(
        reverse("admin:django_conversions_apikey_add"),
        {"site": scanova_site.pk, "label": "rotation", "key": NEW_KEY, "is_active": "on"},
    )
    # then
    assert response.status_code == 302
    assert scanova_site.current_key().key == NEW_KEY
    listing = html(admin_client.get(reverse("admin:django_conversions_apikey_changelist")))
    assert "rotation ••••••••WXYZ" in listing and NEW_KEY not in listing


def test_ticking_active_again_clears_the_revocation_time(admin_client, scanova_site):
    # given
    existing = scanova_site.api_keys.get()
    existing.revoke()
    # when
    admin_client.post(
        reverse("admin:django_conversions_apikey_change", args=[existing.pk]),
        {"site": scanova_site.pk, "label": "primary", "key": "", "is_active": "on"},
    )
    # then
    existing.refresh_from_db()
    assert existing.is_active and existing.revoked_at is None
    assert existing.key == SCANOVA_KEY


def test_a_new_active_key_resumes_a_paused_site(admin_client, scanova_site):
    # given
    scanova_site.pause("Scanova refused the API key: HTTP 403")
    existing = scanova_site.api_keys.get()
    data = site_form_data(
        scanova_site,
        keys=[
            {"id": existing.pk, "site": scanova_site.pk, "label": "old", "is_active": False},
            {"label": "new", "key": NEW_KEY, "is_active": True},
        ],
    )
    # when
    admin_client.post(site_url("change", scanova_site.pk), data)
    # then
    scanova_site.refresh_from_db()
    assert not scanova_site.is_paused
    assert scanova_site.current_key().key == NEW_KEY


def test_moving_a_sites_endpoint_to_another_host_revokes_its_stored_keys(
    admin_client, scanova_site
):
    # given: the key was stored for track.example.test
    existing = scanova_site.api_keys.get()
    data = site_form_data(
        scanova_site,
        endpoint_url="https://collector.elsewhere.test",
        keys=[{"id": existing.pk, "site": scanova_site.pk, "label": "primary", "is_active": True}],
    )
    # when
    response = admin_client.post(site_url("change", scanova_site.pk), data, follow=True)
    # then: the key is not sent to the new host; the admin says why
    existing.refresh_from_db()
    assert not existing.is_active and existing.revoked_at is not None
    assert scanova_site.current_key() is None
    assert "1 stored API key(s) were revoked" in " ".join(messages_of(response))
    assert LogEntry.objects.filter(object_id=str(existing.pk)).exists()


def test_a_key_pasted_with_the_move_is_kept(admin_client, scanova_site):
    # given
    existing = scanova_site.api_keys.get()
    data = site_form_data(
        scanova_site,
        provider="vtmarketing",
        provider_site_id="",
        endpoint_url="https://vt.example.test",
        keys=[
            {"id": existing.pk, "site": scanova_site.pk, "label": "old", "is_active": True},
            {"label": "new", "key": NEW_KEY, "is_active": True},
        ],
    )
    # when
    admin_client.post(site_url("change", scanova_site.pk), data)
    # then
    assert scanova_site.current_key().key == NEW_KEY
    assert not ApiKey.objects.get(pk=existing.pk).is_active


@pytest.mark.parametrize(
    "change",
    [{"name": "Renamed"}, {"endpoint_url": "https://track.example.test/v2"}],
)
def test_changes_that_keep_the_destination_keep_the_keys(admin_client, scanova_site, change):
    # given
    existing = scanova_site.api_keys.get()
    data = site_form_data(
        scanova_site,
        keys=[{"id": existing.pk, "site": scanova_site.pk, "label": "primary", "is_active": True}],
        **change,
    )
    # when
    response = admin_client.post(site_url("change", scanova_site.pk), data)
    # then
    assert response.status_code == 302
    assert ApiKey.objects.get(pk=existing.pk).is_active


def test_staff_without_the_key_permission_cannot_move_a_site(staff_client, scanova_site):
    # given: may change sites, not API keys
    client = staff_client("view_trackingsite", "change_trackingsite")
    data = site_form_data(scanova_site, endpoint_url="https://attacker.example.test")
    data.pop("api_keys-TOTAL_FORMS")  # the key inline is not on their form
    # when
    page = html(client.get(site_url("change", scanova_site.pk)))
    client.post(site_url("change", scanova_site.pk), {**data, "name": "Renamed"})
    # then: the destination is shown, not editable; the rest of the form still works
    assert 'name="endpoint_url"' not in page and 'name="provider"' not in page
    scanova_site.refresh_from_db()
    assert scanova_site.name == "Renamed"
    assert scanova_site.endpoint_url == "https://track.example.test"
    assert scanova_site.current_key().key == SCANOVA_KEY


@override_settings(
    CONVERSIONS={"ENCRYPTION_KEYS": ["FWy1bLl2Ou0H6dkejRys2oRrqzIuK56OTdRWaJHiJfE="]}
)
def test_an_http_endpoint_is_refused_without_allow_insecure_endpoints(admin_client):
    # given
    data = site_form_data(
        endpoint_url="http://track.example.test",
        keys=[{"label": "primary", "key": NEW_KEY, "is_active": True}],
    )
    # when
    response = admin_client.post(site_url("add"), data)
    # then
    assert response.status_code == 200
    assert "ALLOW_INSECURE_ENDPOINTS" in html(response)
    assert not TrackingSite.objects.exists()


def test_site_list_shows_provider_state_reason_and_event_counts(admin_client, make_site):
    # given
    site = make_site("scanova", name="Paused shop")
    site.pause("Scanova refused the API key: HTTP 403 key revoked")
    make_event(site)  # pending
    make_event(site, attempts=2)  # retrying
    make_event(site, attempts=2)  # retrying
    make_event(site, status=EventStatus.FAILED, last_error="HTTP 422")
    make_event(site, status=EventStatus.DELIVERED)
    # when
    response = admin_client.get(site_url("changelist"))
    # then
    page = html(response)
    assert "Scanova (QR scan attribution)" in page
    assert "paused" in page and "HTTP 403 key revoked" in page
    row = response.context["cl"].result_list[0]
    assert (row.pending_events, row.retrying_events, row.failed_events) == (1, 2, 1)
    assert "status=retrying" in page


def test_site_list_counts_take_the_same_number_of_queries_for_many_sites(admin_client, make_site):
    # given
    first = make_site("scanova", name="one")
    make_event(first)

    def count_queries() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert admin_client.get(site_url("changelist")).status_code == 200
        return len(queries)

    with_one_site = count_queries()
    for number in range(4):
        make_event(make_site("vtmarketing", name=f"more {number}"), status=EventStatus.FAILED)
    # when
    with_five_sites = count_queries()
    # then
    assert with_five_sites == with_one_site


def test_resume_action_unpauses_the_site_and_queues_what_waited(
    admin_client, scanova_site, django_capture_on_commit_callbacks
):
    # given
    scanova_site.pause("Scanova refused the API key: HTTP 403")
    event = make_event(
        scanova_site,
        last_error="waiting: site paused",
        next_attempt_at=timezone.now() + timedelta(hours=1),
    )
    # when: the web request, up to its answer (tasks run by Django's ImmediateBackend)
    with (
        failing_on_any_call() as provider,
        django_capture_on_commit_callbacks(execute=False) as after_commit,
    ):
        response = admin_client.post(
            site_url("changelist"),
            {"action": "resume_sites", "_selected_action": [scanova_site.pk]},
            follow=True,
        )
    # then: the site runs again, its event is due now and handed to the queue; nothing sent
    assert not provider.calls
    scanova_site.refresh_from_db()
    event.refresh_from_db()
    assert not scanova_site.is_paused
    assert event.status == EventStatus.PENDING and event.next_attempt_at <= timezone.now()
    with kept_tasks() as queue:  # after commit, the event is handed to the task queue
        for callback in after_commit:
            callback()
    assert enqueued_ids(queue) == [[event.pk]]
    text = " ".join(messages_of(response))
    assert "Resumed scanova site; 1 waiting event queued for delivery." in text
    assert LogEntry.objects.get(object_id=str(scanova_site.pk)).get_change_message() == "Resumed."


def test_send_test_event_action_shows_the_providers_answer(admin_client, vt_site, mocked_http):
    # given
    mocked_http.post(
        VT_URL,
        status=400,
        json={"errors": [{"message": "Missing event information", "description": "no items"}]},
    )
    # when
    response = admin_client.post(
        site_url("changelist"),
        {"action": "send_test_events", "_selected_action": [vt_site.pk]},
        follow=True,
    )
    # then
    text = " ".join(messages_of(response))
    assert "HTTP 400 Bad Request" in text
    assert "Missing event information" in text
    assert "not accepted" in text
    assert VT_KEY not in html(response)
    assert mocked_http.calls[0].request.headers["Authorization"] == VT_KEY
    assert not ConversionEvent.objects.exists()  # a test event is not written to the outbox


def test_send_test_event_leaves_an_entry_in_the_sites_history(
    admin_client, scanova_site, mocked_http
):
    # given
    mocked_http.post(SCANOVA_URL, json={"success": True, "message": "Event received"})
    # when
    admin_client.post(site_url("send_test_event", scanova_site.pk))
    # then
    (entry,) = LogEntry.objects.filter(object_id=str(scanova_site.pk))
    message = entry.get_change_message()
    assert message.startswith("Sent a test event: Test event to scanova site: ")
    assert "HTTP 200 OK" in message and "accepted" in message
    assert SCANOVA_KEY not in message


def test_send_test_event_button_posts_and_returns_to_the_site(
    admin_client, scanova_site, mocked_http
):
    # given
    mocked_http.post(SCANOVA_URL, json={"success": True, "message": "Event received"})
    change_page = html(admin_client.get(site_url("change", scanova_site.pk)))
    assert site_url("send_test_event", scanova_site.pk) in change_page
    # when
    response = admin_client.post(site_url("send_test_event", scanova_site.pk), follow=True)
    # then
    assert response.redirect_chain[-1][0] == site_url("change", scanova_site.pk)
    text = " ".join(messages_of(response))
    assert "HTTP 200 OK" in text and "accepted" in text and "Event received" in text
    assert admin_client.get(site_url("send_test_event", scanova_site.pk)).status_code == 405


def test_resume_button_appears_only_on_a_paused_site(admin_client, scanova_site):
    # given
    resume = site_url("resume", scanova_site.pk)
    assert resume not in html(admin_client.get(site_url("change", scanova_site.pk)))
    scanova_site.pause("no active API key")
    # when
    page = html(admin_client.get(site_url("change", scanova_site.pk)))
    # then
    assert resume in page


def test_deleting_a_busy_site_counts_its_events_instead_of_listing_them(
    admin_client, scanova_site, vt_site
):
    # given
    events = [make_event(scanova_site) for _ in range(3)]
    record_attempt(events[:2], outcome=Outcome.RETRY)  # a batch of two
    record_attempt(events[2:], outcome=Outcome.RETRY)
    record_attempt(events[2:], outcome=Outcome.DELIVERED)
    make_event(vt_site)

    def confirmation() -> tuple[str, int]:
        with CaptureQueriesContext(connection) as queries:
            response = admin_client.get(site_url("delete", scanova_site.pk))
        return html(response), len(queries)

    page, few_queries = confirmation()
    for _ in range(5):
        make_event(scanova_site)
    # when
    page_after, more_queries = confirmation()
    response = admin_client.post(site_url("delete", scanova_site.pk), {"post": "yes"})
    # then
    assert "3 conversion events" in page and "3 delivery attempts" in page
    assert "1 API key" in page and "1 API keys" not in page
    assert "8 conversion events" in page_after
    assert more_queries == few_queries
    assert response.status_code == 302
    assert not TrackingSite.objects.filter(pk=scanova_site.pk).exists()
    assert ConversionEvent.objects.filter(site=vt_site).count() == 1


def test_deleting_a_site_needs_delete_permission_on_its_events(staff_client, scanova_site):
    # given
    make_event(scanova_site)
    client = staff_client("view_trackingsite", "delete_trackingsite")
    # when
    response = client.get(site_url("delete", scanova_site.pk))
    # then
    assert "conversion event" in html(response)
    assert response.context["perms_lacking"]
    assert client.post(site_url("delete", scanova_site.pk), {"post": "yes"}).status_code == 403


# --- the plaintext of a key is nowhere ---------------------------------------------------------


def test_no_admin_page_contains_a_keys_plaintext(admin_client, scanova_site, vt_site, mocked_http):
    # given: keys added and edited through the admin (history entries), events and attempts
    # The provider echoes the key it was sent in its error (stored reasons must mask it).
    mocked_http.add_callback(
        "POST",
        SCANOVA_URL,
        callback=lambda request: (
            403,
            {},
            json.dumps({"detail": f"key {request.headers['X-API-Key']} is revoked"}),
        ),
    )
    existing = scanova_site.api_keys.get()
    admin_client.post(
        site_url("change", scanova_site.pk),
        site_form_data(
            scanova_site,
            keys=[
                {"id": existing.pk, "site": scanova_site.pk, "label": "old", "is_active": True},
                {"label": "new", "key": NEW_KEY, "is_active": True},
            ],
        ),
    )
    event = make_event(scanova_site)
    admin_client.post(
        event_url("changelist"), {"action": "retry_selected", "_selected_action": [event.pk]}
    )
    call_command("conversions_deliver")  # the worker sends what the retry queued
    assert EventResult.objects.filter(event=event).exists()
    new_key = ApiKey.objects.get(label="new")
    pages = [
        reverse("admin:index"),
        reverse("admin:app_list", args=["django_conversions"]),
        site_url("changelist"),
        site_url("add"),
        site_url("change", scanova_site.pk),
        site_url("change", vt_site.pk),
        site_url("history", scanova_site.pk),
        site_url("delete", scanova_site.pk),
        reverse("admin:django_conversions_apikey_changelist"),
        reverse("admin:django_conversions_apikey_change", args=[new_key.pk]),
        reverse("admin:django_conversions_apikey_change", args=[existing.pk]),
        reverse("admin:django_conversions_apikey_history", args=[new_key.pk]),
        reverse("admin:django_conversions_apikey_delete", args=[new_key.pk]),
        event_url("changelist"),
        event_url("change", event.pk),
        reverse("admin:django_conversions_overview"),
        reverse("admin:admin_logentry_changelist")
        if _logentry_registered()
        else reverse("admin:index"),
    ]
    # when
    responses = {url: admin_client.get(url) for url in pages}
    # then
    for url, response in responses.items():
        assert response.status_code == 200, url
        page = html(response)
        for secret in (SCANOVA_KEY, VT_KEY, NEW_KEY):
            assert secret not in page, f"{url} shows a key"
            assert secret[:-4] not in page, f"{url} shows most of a key"
    for entry in LogEntry.objects.all():
        for secret in (SCANOVA_KEY, NEW_KEY):
            assert secret not in entry.object_repr + entry.change_message


@pytest.mark.parametrize("page", ["site_add", "site_change", "key_add"])
def test_an_error_report_never_shows_a_pasted_key(admin_client, scanova_site, page):
    # given: the form as posted, a key pasted in it
    existing = scanova_site.api_keys.get()
    url, data = {
        "site_add": (
            site_url("add"),
            site_form_data(keys=[{"label": "new", "key": NEW_KEY, "is_active": True}]),
        ),
        "site_change": (
            site_url("change", scanova_site.pk),
            site_form_data(
                scanova_site,
                keys=[
                    {"id": existing.pk, "site": scanova_site.pk, "label": "x", "is_active": True},
                    {"label": "new", "key": NEW_KEY, "is_active": True},
                ],
            ),
        ),
        "key_add": (
            reverse("admin:django_conversions_apikey_add"),
            {"site": scanova_site.pk, "label": "new", "key": NEW_KEY, "is_active": "on"},
        ),
    }[page]
    response = admin_client.post(url, data)
    # when: what Django's error reporting (ADMINS mail, DEBUG page) would show of the request
    shown = SafeExceptionReporterFilter().get_post_parameters(response.wsgi_request)
    # then
    assert NEW_KEY not in repr(dict(shown))


def _logentry_registered() -> bool:
    from django.contrib import admin
    from django.contrib.admin.models import LogEntry as Entry

    return admin.site.is_registered(Entry)


# --- conversion events -------------------------------------------------------------------------


def test_event_list_shows_status_badges_and_reasons(admin_client, scanova_site):
    # given
    make_event(scanova_site, status=EventStatus.FAILED, last_error="HTTP 422: currency invalid")
    make_event(scanova_site, attempts=3, last_error="attempt 3 failed: HTTP 503")
    make_event(scanova_site, status=EventStatus.DELIVERED)
    # when
    page = html(admin_client.get(event_url("changelist")))
    # then
    assert 'class="conversions-badge conversions-failed"' in page
    assert 'class="conversions-badge conversions-retrying"' in page
    assert 'class="conversions-badge conversions-delivered"' in page
    assert "HTTP 422: currency invalid" in page
    # the attempts under the state: a column of their own would not fit beside the sidebar
    assert re.search(
        r'conversions-retrying">retrying</span>\s*<span class="conversions-attempt-count">'
        r"3 attempts</span>",
        page,
    )
    assert "django_conversions/admin.css" in page


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"status": "failed"}, {"failed"}),
        ({"status": "retrying"}, {"retrying"}),
        ({"status": "pending"}, {"pending"}),
        ({"provider": "vtmarketing"}, {"vt"}),
        ({"event_name": "signup"}, {"signup"}),
    ],
)
def test_event_list_filters(admin_client, scanova_site, vt_site, query, expected):
    # given
    make_event(scanova_site, order_id="failed", status=EventStatus.FAILED)
    make_event(scanova_site, order_id="retrying", attempts=1)
    make_event(scanova_site, order_id="pending")
    make_event(vt_site, order_id="vt", status=EventStatus.DELIVERED)
    make_event(scanova_site, order_id="signup", event_name="signup", status=EventStatus.SKIPPED)
    # when
    response = admin_client.get(event_url("changelist"), query)
    # then
    assert response.status_code == 200
    assert {e.order_reference for e in response.context["cl"].result_list} == expected


def test_event_list_filters_by_site(admin_client, scanova_site, vt_site):
    # given
    make_event(scanova_site, order_id="s1")
    make_event(vt_site, order_id="v1")
    # when
    response = admin_client.get(event_url("changelist"), {"site__id__exact": vt_site.pk})
    # then
    assert [e.order_reference for e in response.context["cl"].result_list] == ["v1"]


def test_event_search_by_event_id_dedup_key_and_order_reference(admin_client, scanova_site):
    # given
    wanted = make_event(scanova_site, order_id="A-1001", dedup_key="purchase:order:A-1001")
    make_event(scanova_site, order_id="B-2002", dedup_key="purchase:order:B-2002")

    def search(term: str) -> list[str]:
        response = admin_client.get(event_url("changelist"), {"q": term})
        return [e.order_reference for e in response.context["cl"].result_list]

    # when / then: exact values, each read through an index (a part matches nothing)
    assert search(str(wanted.event_id)) == ["A-1001"]
    assert search(" purchase:order:A-1001 ") == ["A-1001"]
    assert search("A-1001") == ["A-1001"]
    assert search("order:A-1001") == []
    assert search("nothing-like-this") == []


def test_event_list_filters_by_creation_date(admin_client, scanova_site):
    # given: an event of last year and one of today
    now = timezone.now()
    make_event(scanova_site, order_id="old", created_at=now - timedelta(days=400))
    make_event(scanova_site, order_id="new", created_at=now)
    page = html(admin_client.get(event_url("changelist")))
    assert "created_at__gte=" in page  # the date filter's choices
    # when: the past 7 days
    since = (now - timedelta(days=7)).isoformat()
    response = admin_client.get(event_url("changelist"), {"created_at__gte": since})
    # then
    assert [e.order_reference for e in response.context["cl"].result_list] == ["new"]


def test_the_event_name_filter_offers_the_sites_names_and_the_newest_events(
    admin_client, scanova_site
):
    # given: a site set up for "lead", and a "signup" event
    scanova_site.event_names = "purchase,lead"
    scanova_site.save()
    make_event(scanova_site, order_id="s", event_name="signup")
    # when
    page = html(admin_client.get(event_url("changelist")))
    # then
    for name in ("lead", "purchase", "signup"):
        assert f"?event_name={name}" in page


def test_events_cannot_be_added_or_edited_by_hand(admin_client, scanova_site):
    # given
    event = make_event(scanova_site)
    # when
    add = admin_client.get(event_url("add"))
    change = admin_client.get(event_url("change", event.pk))
    post = admin_client.post(event_url("change", event.pk), {"event_name": "hacked"})
    # then
    assert add.status_code == 403
    assert change.status_code == 200
    assert 'name="_save"' not in html(change)
    assert post.status_code == 403
    event.refresh_from_db()
    assert event.event_name == "purchase"


def test_event_page_shows_the_snapshot_pretty_printed_and_attempts_newest_first(
    admin_client, scanova_site
):
    # given
    event = make_event(scanova_site, attempts=2)
    now = timezone.now()
    for minutes, status in ((10, 503), (5, 502)):
        record_attempt(
            [event],
            created_at=now - timedelta(minutes=minutes),
            duration_ms=42,
            url=SCANOVA_URL,
            http_status=status,
            request_headers={"X-API-Key": "••••••••1c2d", "Content-Type": "application/json"},
            response_body="upstream " + "x" * 3000,
            error=f"HTTP {status}",
            outcome=Outcome.RETRY,
        )
    # when
    page = html(admin_client.get(event_url("change", event.pk)))
    # then
    assert '"currency": "EUR"' in page  # indented JSON, one key per line
    assert page.index("HTTP 502") < page.index("HTTP 503")
    assert "X-API-Key: ••••••••1c2d" in page
    assert "x" * 3000 not in page  # long bodies are cut


def test_personal_data_is_masked_without_the_permission(staff_client, scanova_site):
    # given
    event = make_event(scanova_site, last_error="rejected buyer@example.com")
    record_attempt(
        [event],
        url=SCANOVA_URL,
        http_status=422,
        request_body='{"user": {"email": "buyer@example.com", "tel": "+40775123123"}}',
        response_body='{"detail": "raw email buyer@example.com in properties"}',
        error="user Mariana Ionescu (+40775123123) refused",
        outcome=Outcome.FAILED,
        messages={event.pk: "Mariana Ionescu is not a customer"},
    )
    viewer = staff_client("view_conversionevent")
    # when
    page = html(viewer.get(event_url("change", event.pk)))
    listing = html(viewer.get(event_url("changelist")))
    # then
    assert "buyer@example.com" not in page and "buyer@example.com" not in listing
    assert "+40775123123" not in page
    assert "Mariana" not in page and "Ionescu" not in page
    assert "M•••" in page
    assert "b•••@example.com" in page
    assert "Personal data is masked." in page


def test_personal_data_is_shown_with_the_permission(staff_client, scanova_site):
    # given
    event = make_event(scanova_site)
    viewer = staff_client("view_conversionevent", "view_personal_data")
    # when
    page = html(viewer.get(event_url("change", event.pk)))
    # then
    assert "buyer@example.com" in page
    assert "Mariana" in page and "Ionescu" in page


def test_retry_queues_failed_events_and_never_resends_delivered_or_held_ones(
    admin_client, scanova_site, django_capture_on_commit_callbacks
):
    # given
    failed = make_event(scanova_site, status=EventStatus.FAILED, attempts=3, last_error="HTTP 500")
    delivered = make_event(scanova_site, status=EventStatus.DELIVERED)
    in_flight = make_event(
        scanova_site,
        status=EventStatus.SENDING,
        lease_expires_at=timezone.now() + timedelta(minutes=5),
    )
    selected = [failed.pk, delivered.pk, in_flight.pk]
    # when: the web request, up to its answer (tasks run by Django's ImmediateBackend)
    with (
        failing_on_any_call() as provider,
        django_capture_on_commit_callbacks(execute=False) as after_commit,
    ):
        response = admin_client.post(
            event_url("changelist"),
            {"action": "retry_selected", "_selected_action": selected},
            follow=True,
        )
    # then: nothing was sent within the request; the failed event is due and queued
    assert not provider.calls
    statuses = dict(ConversionEvent.objects.values_list("pk", "status"))
    assert statuses == {
        failed.pk: EventStatus.PENDING,
        delivered.pk: EventStatus.DELIVERED,
        in_flight.pk: EventStatus.SENDING,
    }
    assert ConversionEvent.objects.get(pk=failed.pk).attempts == 3
    with kept_tasks() as queue:  # after commit, the event is handed to the task queue
        for callback in after_commit:
            callback()
    assert enqueued_ids(queue) == [[failed.pk]]
    text = " ".join(messages_of(response))
    assert (
        "1 event queued for delivery; 1 already delivered (never resent); "
        "1 being sent right now." in text
    )
    (entry,) = LogEntry.objects.all()
    assert entry.object_id == str(failed.pk)
    assert entry.get_change_message() == "Retry requested: queued for delivery."


def test_the_worker_sends_only_the_retried_event(admin_client, scanova_site, mocked_http):
    # given
    mocked_http.post(SCANOVA_URL, json={"success": True})
    failed = make_event(scanova_site, status=EventStatus.FAILED)
    delivered = make_event(scanova_site, status=EventStatus.DELIVERED)
    admin_client.post(
        event_url("changelist"),
        {"action": "retry_selected", "_selected_action": [failed.pk, delivered.pk]},
    )
    # when
    call_command("conversions_deliver")
    # then
    failed.refresh_from_db()
    assert failed.status == EventStatus.DELIVERED
    sent = [json.loads(call.request.body)["event_id"] for call in mocked_http.calls]
    assert sent == [str(failed.event_id)]  # the delivered event was not sent again


def test_mark_as_skipped_leaves_delivered_and_in_flight_events_alone(admin_client, scanova_site):
    # given
    failed = make_event(scanova_site, status=EventStatus.FAILED)
    pending = make_event(scanova_site)
    delivered = make_event(scanova_site, status=EventStatus.DELIVERED)
    in_flight = make_event(
        scanova_site,
        status=EventStatus.SENDING,
        lease_expires_at=timezone.now() + timedelta(minutes=5),
    )
    selected = [failed.pk, pending.pk, delivered.pk, in_flight.pk]
    # when
    response = admin_client.post(
        event_url("changelist"),
        {"action": "skip_selected", "_selected_action": selected},
        follow=True,
    )
    # then
    statuses = dict(ConversionEvent.objects.values_list("pk", "status"))
    assert statuses[failed.pk] == statuses[pending.pk] == EventStatus.SKIPPED
    assert statuses[delivered.pk] == EventStatus.DELIVERED
    assert statuses[in_flight.pk] == EventStatus.SENDING
    failed.refresh_from_db()
    assert failed.last_error == "skipped by admin in the admin"
    assert "Marked 2 event(s) as skipped. 2 were left alone" in " ".join(messages_of(response))
    logged = LogEntry.objects.filter(change_message="Marked as skipped.")
    assert sorted(logged.values_list("object_id", flat=True)) == sorted(
        [str(failed.pk), str(pending.pk)]
    )


# --- permissions -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url_name",
    [
        "admin:django_conversions_trackingsite_changelist",
        "admin:django_conversions_apikey_changelist",
        "admin:django_conversions_conversionevent_changelist",
        "admin:django_conversions_overview",
    ],
)
def test_staff_without_permissions_cannot_see_the_pages(staff_client, url_name):
    # given
    client = staff_client()
    # when
    response = client.get(reverse(url_name))
    # then
    assert response.status_code == 403


def test_staff_without_permissions_do_not_see_the_app(staff_client, scanova_site):
    # given
    client = staff_client()
    # when
    index = client.get(reverse("admin:index"))
    app = client.get(reverse("admin:app_list", args=["django_conversions"]))
    change = client.get(site_url("change", scanova_site.pk))
    # then
    assert "django_conversions" not in html(index).replace("static/django_conversions", "")
    assert app.status_code == 404
    assert change.status_code == 403


def test_anonymous_users_are_sent_to_the_login_page(client, scanova_site):
    # when
    response = client.get(site_url("changelist"))
    # then
    assert response.status_code == 302
    assert reverse("admin:login") in response["Location"]


def test_staff_with_view_permission_see_but_cannot_act(staff_client, scanova_site, mocked_http):
    # given
    viewer = staff_client("view_trackingsite", "view_conversionevent")
    event = make_event(scanova_site, status=EventStatus.FAILED)
    # when
    sites = viewer.get(site_url("changelist"))
    events = viewer.get(event_url("changelist"))
    retry = viewer.post(
        event_url("changelist"), {"action": "retry_selected", "_selected_action": [event.pk]}
    )
    test_event = viewer.post(site_url("send_test_event", scanova_site.pk))
    change = viewer.get(site_url("change", scanova_site.pk))
    # then
    assert sites.status_code == events.status_code == 200
    assert "retry_selected" not in html(events)
    assert "send_test_events" not in html(sites)
    assert retry.status_code in (200, 302)
    event.refresh_from_db()
    assert event.status == EventStatus.FAILED
    assert test_event.status_code == 403
    assert not mocked_http.calls
    assert site_url("send_test_event", scanova_site.pk) not in html(change)
    assert SCANOVA_KEY not in html(change)


def test_staff_with_change_permission_can_retry(staff_client, scanova_site, mocked_http):
    # given
    mocked_http.post(SCANOVA_URL, json={"success": True})
    operator = staff_client("view_conversionevent", "change_conversionevent")
    event = make_event(scanova_site, status=EventStatus.FAILED)
    # when
    operator.post(
        event_url("changelist"), {"action": "retry_selected", "_selected_action": [event.pk]}
    )
    call_command("conversions_deliver")
    # then
    event.refresh_from_db()
    assert event.status == EventStatus.DELIVERED
    assert json.loads(mocked_http.calls[0].request.body)["event_id"] == str(event.event_id)


@pytest.mark.parametrize("action", ["retry_selected", "skip_selected"])
def test_an_action_on_more_events_than_the_list_counts_changes_nothing(
    admin_client, scanova_site, monkeypatch, action
):
    # given: three failed events and a list that counts up to two
    monkeypatch.setattr("django_conversions.pagination.COUNT_LIMIT", 2)
    events = [make_event(scanova_site, status=EventStatus.FAILED) for _ in range(3)]
    page = html(admin_client.get(event_url("changelist")))
    assert "More than 2 events match" in page
    # when: the action is asked for all of them
    response = admin_client.post(
        event_url("changelist"),
        {"action": action, "select_across": "1", "_selected_action": [events[0].pk]},
        follow=True,
    )
    # then: refused with the reason, every event as it was
    assert "More than 2 events are selected: nothing was changed" in " ".join(messages_of(response))
    assert set(ConversionEvent.objects.values_list("status", flat=True)) == {EventStatus.FAILED}
    # when: two of them, within the limit
    admin_client.post(
        event_url("changelist"),
        {"action": action, "_selected_action": [events[0].pk, events[1].pk]},
    )
    # then: they changed
    assert ConversionEvent.objects.exclude(status=EventStatus.FAILED).count() == 2
