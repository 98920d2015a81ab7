"""ScanSessionMiddleware and the scan session helpers, through real requests and sessions."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import pytest
from django.conf import settings
from django.contrib.sessions.middleware import SessionMiddleware
from django.http import HttpRequest, HttpResponse
from django.test import RequestFactory, override_settings

from django_conversions import scan_session
from django_conversions.middleware import ScanSessionMiddleware
from django_conversions.scan_session import (
    InvalidScanSessionId,
    get_scan_session,
    remember_scan_session,
)

MIDDLEWARE = [
    *settings.MIDDLEWARE[:2],  # security, sessions
    "django_conversions.middleware.ScanSessionMiddleware",
    *settings.MIDDLEWARE[2:],
]
SCAN = "550e8400-e29b-41d4-a716-446655440000"
KEY = "conversions_scan_session"

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("scan_middleware")]


@pytest.fixture
def scan_middleware() -> Any:
    with override_settings(MIDDLEWARE=MIDDLEWARE):
        yield


def _with_session(request: HttpRequest) -> HttpRequest:
    SessionMiddleware(lambda r: HttpResponse()).process_request(request)
    return request


def test_landing_with_a_scan_id_keeps_it_in_the_session(client):
    # when
    response = client.get(f"/admin/login/?scnv={SCAN}")
    # then
    assert response.status_code == 200
    assert client.session[KEY]["id"] == SCAN


def test_the_kept_id_is_canonical_whatever_form_the_link_used(client):
    # given
    shouted = "{" + SCAN.upper().replace("-", "") + "}"
    # when
    client.get("/admin/login/", {"scnv": shouted})
    # then
    assert client.session[KEY]["id"] == SCAN


@pytest.mark.parametrize(
    "value", ["", "not-a-uuid", "550e8400-e29b-41d4-a716", "x" * 5000, "<script>", "' OR 1=1"]
)
def test_a_malformed_scan_id_is_ignored_and_logged_at_debug(client, caplog, value):
    # given
    caplog.set_level(logging.DEBUG, logger="django_conversions.middleware")
    # when
    response = client.get("/admin/login/", {"scnv": value})
    # then
    assert response.status_code == 200
    assert KEY not in client.session
    record = next(r for r in caplog.records if r.name == "django_conversions.middleware")
    assert record.levelno == logging.DEBUG
    assert len(record.getMessage()) < 200  # a huge value is not copied into the log


def test_a_malformed_scan_id_does_not_replace_a_good_one(client):
    # given
    client.get("/admin/login/", {"scnv": SCAN})
    # when
    client.get("/admin/login/", {"scnv": "garbage"})
    # then
    assert client.session[KEY]["id"] == SCAN


def test_a_new_scan_replaces_the_previous_one(client):
    # given
    client.get("/admin/login/", {"scnv": SCAN})
    second = str(uuid.uuid4())
    # when
    client.get("/admin/login/", {"scnv": second})
    # then
    assert client.session[KEY]["id"] == second


def test_the_parameter_name_comes_from_the_settings(client):
    # given
    conversions = {**settings.CONVERSIONS, "SCAN_SESSION_PARAM": "qr"}
    with override_settings(CONVERSIONS=conversions):
        # when
        client.get("/admin/login/", {"scnv": SCAN})
        ignored = KEY in client.session
        client.get("/admin/login/", {"qr": SCAN})
    # then
    assert not ignored
    assert client.session[KEY]["id"] == SCAN


def test_the_scan_id_expires_after_max_age_without_shortening_the_session(monkeypatch):
    # given
    now = [1_000_000.0]
    monkeypatch.setattr(scan_session, "_clock", lambda: now[0])
    conversions = {**settings.CONVERSIONS, "SCAN_SESSION_MAX_AGE": 3600}
    request = _with_session(RequestFactory().get("/", {"scnv": SCAN}))
    with override_settings(CONVERSIONS=conversions):
        ScanSessionMiddleware(lambda r: HttpResponse())(request)
        session_age = request.session.get_expiry_age()
        # when
        now[0] += 3599
        before_expiry = get_scan_session(request)
        now[0] += 1
        at_expiry = get_scan_session(request)
    # then
    assert before_expiry == SCAN
    assert at_expiry is None
    assert KEY not in request.session  # the stale entry is dropped
    assert request.session.get_expiry_age() == session_age == settings.SESSION_COOKIE_AGE


def test_remember_returns_the_canonical_id_and_get_reads_it_back():
    # given
    request = _with_session(RequestFactory().post("/scan-session/"))
    # when
    kept = remember_scan_session(request, SCAN.upper())
    # then
    assert kept == SCAN
    assert get_scan_session(request) == SCAN


def test_remember_refuses_a_non_uuid_with_a_value_error_and_keeps_the_session():
    # given
    request = _with_session(RequestFactory().post("/scan-session/"))
    remember_scan_session(request, SCAN)
    # when
    with pytest.raises(ValueError) as caught:
        remember_scan_session(request, "nope")
    # then
    assert isinstance(caught.value, InvalidScanSessionId)
    assert "is not a UUID" in str(caught.value)
    assert get_scan_session(request) == SCAN


def test_get_without_a_stored_id_is_none():
    # given
    request = _with_session(RequestFactory().get("/"))
    # then
    assert get_scan_session(request) is None


def test_a_corrupted_entry_reads_as_none():
    # given
    request = _with_session(RequestFactory().get("/"))
    request.session[KEY] = "not the stored shape"
    # then
    assert get_scan_session(request) is None
    assert KEY not in request.session


def test_requests_without_the_parameter_leave_the_session_untouched(client):
    # given
    client.get("/admin/login/", {"scnv": SCAN})
    stored = client.session[KEY]
    # when
    client.get("/admin/login/")
    # then
    assert client.session[KEY] == stored
