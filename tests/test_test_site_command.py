"""``manage.py conversions_test_site``: one test event, the provider's answer printed."""

from __future__ import annotations

import json
import uuid
from io import StringIO

import pytest
import requests
from django.core.management import call_command
from django.core.management.base import CommandError

from django_conversions.models import ConversionEvent, TrackingSite
from django_conversions.testevent import send_test_event
from tests.conftest import SCANOVA_KEY, VT_KEY

SCANOVA_URL = "https://track.example.test/server-events"
VT_URL = "https://vt.example.test/v1/event/"


def run_command(reference: str) -> str:
    stdout = StringIO()
    call_command("conversions_test_site", reference, stdout=stdout)
    return stdout.getvalue()


def test_an_accepted_test_event_prints_status_and_body(scanova_site, mocked_http):
    # given
    mocked_http.post(SCANOVA_URL, json={"success": True, "message": "Event received"})
    # when
    out = run_command(str(scanova_site.pk))
    # then
    assert f"POST {SCANOVA_URL}" in out
    assert "answered HTTP 200 OK" in out and "accepted" in out
    assert 'Response body: {"success": true, "message": "Event received"}' in out
    assert "The provider accepted the test event." in out
    body = json.loads(mocked_http.calls[0].request.body)
    assert body["event_name"] == "test_event"
    assert body["site_id"] == scanova_site.provider_site_id
    assert uuid.UUID(body["scan_session_id"])
    assert body["properties"]["test"] is True
    assert mocked_http.calls[0].request.headers["X-API-Key"] == SCANOVA_KEY
    assert not ConversionEvent.objects.exists()


def test_a_refused_key_exits_non_zero_with_the_reason_and_no_key(vt_site, mocked_http):
    # given: the provider echoes the key it got
    mocked_http.post(
        VT_URL,
        status=403,
        json={"errors": [{"message": f"Invalid API key {VT_KEY}"}]},
    )
    stdout = StringIO()
    # when
    with pytest.raises(CommandError, match="not accepted"):
        call_command("conversions_test_site", vt_site.name, stdout=stdout)
    # then
    out = stdout.getvalue()
    assert "HTTP 403 Forbidden" in out and "Invalid API key" in out
    assert VT_KEY not in out and VT_KEY[:-4] not in out
    body = json.loads(mocked_http.calls[0].request.body)
    assert "confirmation" in body["event"]  # VTmarketing only takes purchases
    vt_site.refresh_from_db()
    assert not vt_site.is_paused  # a test does not change the site


def test_no_answer_is_reported(scanova_site, mocked_http):
    # given
    mocked_http.post(SCANOVA_URL, body=requests.ConnectionError("Connection refused"))
    # when
    answer = send_test_event(scanova_site)
    # then
    assert answer.sent and not answer.accepted
    assert answer.http_status is None
    assert "no answer" in answer.summary() and "Connection refused" in answer.summary()


def test_a_site_without_an_active_key_is_not_sent_to(scanova_site, mocked_http):
    # given
    scanova_site.api_keys.update(is_active=False)
    stdout = StringIO()
    # when
    with pytest.raises(CommandError):
        call_command("conversions_test_site", str(scanova_site.pk), stdout=stdout)
    # then
    assert "not sent: the site has no active API key" in stdout.getvalue()
    assert not mocked_http.calls


def test_an_accepted_event_on_a_paused_site_suggests_resuming(scanova_site, mocked_http):
    # given
    mocked_http.post(SCANOVA_URL, json={"success": True})
    scanova_site.pause("Scanova refused the API key: HTTP 403")
    # when
    out = run_command(scanova_site.name)
    # then
    assert "still paused: resume it" in out


def test_a_site_is_found_by_name_case_insensitively(make_site, mocked_http):
    # given
    mocked_http.post(VT_URL, json={"results": {"message": "Event created"}})
    make_site("vtmarketing", name="Shop RO")
    # when
    out = run_command("shop ro")
    # then
    assert "Test event to Shop RO" in out


def test_an_ambiguous_or_unknown_site_is_explained(make_site):
    # given
    first = make_site("scanova", name="Twin")
    second = make_site("vtmarketing", name="Twin")
    # when / then
    with pytest.raises(CommandError, match=rf"give the id: {first.pk} \(scanova\), {second.pk}"):
        run_command("Twin")
    with pytest.raises(CommandError, match=r"No tracking site .*'Nowhere'.*Twin"):
        run_command("Nowhere")
    assert TrackingSite.objects.count() == 2
