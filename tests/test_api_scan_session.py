"""``scan-session/``: the storefront's JavaScript hands over the ``scnv`` scan session id."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client

from django_conversions.scan_session import get_scan_session
from tests.test_api_support import SCAN_SESSION, clear_throttles, post_json

SCAN = "5b0e6c3e-7c1a-4c57-9a53-7f4f3f1f9a10"


@pytest.fixture(autouse=True)
def fresh_throttle() -> Iterator[None]:
    clear_throttles()
    yield
    clear_throttles()


@pytest.fixture
def browser(db: Any) -> Client:
    """A visitor's browser: CSRF enforced as in production, cookie fetched with a GET."""
    client = Client(enforce_csrf_checks=True)
    client.get(SCAN_SESSION)
    return client


def _hand_over(client: Client, body: Any, **extra: Any) -> Any:
    token = client.cookies["csrftoken"].value
    return post_json(client, SCAN_SESSION, body, HTTP_X_CSRFTOKEN=token, **extra)


def _session_value(client: Client) -> str | None:
    request = type("R", (), {"session": client.session})()
    return get_scan_session(request)


def test_get_sets_the_csrf_cookie_and_says_there_is_no_scan_yet(db):
    # given
    client = Client(enforce_csrf_checks=True)
    # when
    response = client.get(SCAN_SESSION)
    # then
    assert response.status_code == 200
    assert response.json() == {"scan_session_id": None, "consent": None}
    assert "csrftoken" in response.cookies


def test_post_keeps_the_scan_session_in_the_visitors_session(browser):
    # when
    response = _hand_over(browser, {"scan_session_id": SCAN.upper()})
    # then
    assert response.status_code == 200, response.content
    assert response.json() == {"scan_session_id": SCAN, "consent": None}
    assert _session_value(browser) == SCAN
    assert browser.get(SCAN_SESSION).json() == {"scan_session_id": SCAN, "consent": None}


def test_a_later_scan_replaces_the_earlier_one(browser):
    # given
    later = str(uuid.uuid4())
    _hand_over(browser, {"scan_session_id": SCAN})
    # when
    _hand_over(browser, {"scan_session_id": later})
    # then
    assert _session_value(browser) == later


def test_post_without_the_csrf_token_is_refused(browser):
    # when
    response = post_json(browser, SCAN_SESSION, {"scan_session_id": SCAN})
    # then
    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]
    assert _session_value(browser) is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"scan_session_id": "not-a-uuid"}, "scan_session_id"),
        ({"scan_session_id": ""}, "scan_session_id"),
        ({}, "non_field_errors"),
        ({"consent": "yes"}, "consent"),
        ({"scan_session_id": SCAN, "extra": 1}, "extra"),
    ],
)
def test_invalid_bodies_answer_400_and_keep_nothing(browser, body, field):
    # when
    response = _hand_over(browser, body)
    # then
    assert response.status_code == 400
    assert list(response.json()) == [field]
    assert _session_value(browser) is None


def test_the_endpoint_is_throttled_per_address(browser, settings):
    # given
    settings.CONVERSIONS = {**settings.CONVERSIONS, "API_SCAN_SESSION_THROTTLE_RATE": "3/minute"}
    clear_throttles()
    # when
    answers = [_hand_over(browser, {"scan_session_id": SCAN}) for _ in range(4)]
    other = _hand_over(browser, {"scan_session_id": SCAN}, REMOTE_ADDR="10.9.8.7")
    # then
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert 0 < int(answers[-1].headers["Retry-After"]) <= 60
    assert other.status_code == 200


def test_throttling_can_be_turned_off(browser, settings):
    # given
    settings.CONVERSIONS = {**settings.CONVERSIONS, "API_SCAN_SESSION_THROTTLE_RATE": None}
    # when
    codes = {_hand_over(browser, {"scan_session_id": SCAN}).status_code for _ in range(40)}
    # then
    assert codes == {200}


def test_logged_in_users_need_no_permission(browser, django_user_model):
    # given: a shop customer, not staff
    browser.force_login(django_user_model.objects.create_user("customer", password=None))
    browser.get(SCAN_SESSION)
    # when
    response = _hand_over(browser, {"scan_session_id": SCAN})
    # then
    assert response.status_code == 200


def test_consent_from_the_banner_is_kept_with_the_scan(browser):
    # when: the landing page hands over the scan, the consent banner the answer later
    _hand_over(browser, {"scan_session_id": SCAN})
    response = _hand_over(browser, {"consent": "granted"})
    # then: both are kept for the checkout to copy onto the order
    assert response.status_code == 200, response.content
    assert response.json() == {"scan_session_id": SCAN, "consent": "granted"}
    assert browser.get(SCAN_SESSION).json()["consent"] == "granted"
