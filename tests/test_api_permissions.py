"""Who may call what: anonymous, staff without and with the model permission, superuser; token
and session authentication; the policy replaced through settings."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import Client
from rest_framework.authtoken.models import Token

from django_conversions import Conversion, track
from django_conversions.models import ConversionEvent
from tests.test_api_support import EVENTS, event_url, logged_in, make_user, post_json, purchase

# endpoint name -> (the permission it needs, the call)
Call = Callable[[Client, ConversionEvent], Any]
ENDPOINTS: dict[str, tuple[str, Call]] = {
    "list": ("view_conversionevent", lambda c, e: c.get(EVENTS)),
    "detail": ("view_conversionevent", lambda c, e: c.get(event_url(e))),
    "create": ("add_conversionevent", lambda c, e: post_json(c, EVENTS, purchase(order_id="2"))),
    "retry": ("change_conversionevent", lambda c, e: c.post(event_url(e, "retry"))),
}
ALLOWED = {"list": 200, "detail": 200, "create": 202, "retry": 202}
ALL_PERMS = tuple(perm for perm, _ in ENDPOINTS.values())


@pytest.fixture
def event(vt_site: Any, mocked_http: Any) -> ConversionEvent:
    mocked_http.post("https://vt.example.test/v1/event/", json={"results": {}})
    (event,) = track(
        Conversion(
            event_name="purchase",
            order_id="1",
            value="1",
            currency="EUR",
            consent="granted",
            customer={"email": "a@b.co"},
        )
    )
    return event


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_anonymous_callers_get_401(event, endpoint):
    # given
    _, call = ENDPOINTS[endpoint]
    # when
    response = call(Client(), event)
    # then
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Token"


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_staff_without_the_permission_get_403(event, endpoint):
    # given: staff holding every permission but the one this endpoint needs
    needed, call = ENDPOINTS[endpoint]
    others = tuple(p for p in ALL_PERMS if p != needed)
    client = logged_in(make_user("staff", perms=others))
    # when
    response = call(client, event)
    # then
    assert response.status_code == 403


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_staff_with_the_permission_are_allowed(event, endpoint):
    # given
    needed, call = ENDPOINTS[endpoint]
    client = logged_in(make_user("staff", perms=(needed,)))
    # when
    response = call(client, event)
    # then
    assert response.status_code == ALLOWED[endpoint], response.content


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_users_who_are_not_staff_get_403_even_with_the_permission(event, endpoint):
    # given
    needed, call = ENDPOINTS[endpoint]
    client = logged_in(make_user("customer", staff=False, perms=(needed,)))
    # when
    response = call(client, event)
    # then
    assert response.status_code == 403


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_superusers_may_call_everything(event, endpoint):
    # given
    _, call = ENDPOINTS[endpoint]
    client = logged_in(make_user("root", superuser=True))
    # when
    response = call(client, event)
    # then
    assert response.status_code == ALLOWED[endpoint], response.content


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_token_authentication_works_for_every_endpoint(event, endpoint):
    # given
    needed, call = ENDPOINTS[endpoint]
    token = Token.objects.create(user=make_user("script", perms=(needed,)))
    client = Client(HTTP_AUTHORIZATION=f"Token {token.key}")
    # when
    response = call(client, event)
    # then
    assert response.status_code == ALLOWED[endpoint], response.content


def test_a_wrong_token_is_refused(event):
    # given
    client = Client(HTTP_AUTHORIZATION="Token not-a-real-token")
    # when
    response = client.get(EVENTS)
    # then
    assert response.status_code == 401


def test_session_authentication_enforces_csrf_on_writes(event):
    # given
    client = Client(enforce_csrf_checks=True)
    client.force_login(make_user("writer", perms=("add_conversionevent",)))
    # when
    response = post_json(client, EVENTS, purchase(order_id="2"))
    # then
    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]


def test_permission_classes_can_be_replaced_in_settings(event, settings):
    # given
    settings.CONVERSIONS = {
        **settings.CONVERSIONS,
        "API_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
    }
    # when
    response = Client().get(EVENTS)
    # then
    assert response.status_code == 200
    assert response.json()["count"] == 1


def test_authentication_classes_can_be_replaced_in_settings(event, settings):
    # given: session only, so a token is not enough any more
    settings.CONVERSIONS = {
        **settings.CONVERSIONS,
        "API_AUTHENTICATION_CLASSES": ["rest_framework.authentication.SessionAuthentication"],
    }
    token = Token.objects.create(user=make_user("root", superuser=True))
    # when
    response = Client(HTTP_AUTHORIZATION=f"Token {token.key}").get(EVENTS)
    # then
    assert response.status_code == 403


def test_token_header_without_the_token_app_is_ignored_not_a_server_error(event, settings):
    # given
    settings.INSTALLED_APPS = [
        a for a in settings.INSTALLED_APPS if a != "rest_framework.authtoken"
    ]
    # when
    response = Client(HTTP_AUTHORIZATION="Token abc").get(EVENTS)
    # then
    assert response.status_code == 401


def test_a_misspelt_class_path_names_the_setting(event, settings):
    # given
    settings.CONVERSIONS = {
        **settings.CONVERSIONS,
        "API_PERMISSION_CLASSES": ["rest_framework.permissions.AlowAny"],
    }
    client = logged_in(make_user("root", superuser=True))
    # when / then
    with pytest.raises(ImproperlyConfigured, match=r"API_PERMISSION_CLASSES.*AlowAny"):
        client.get(EVENTS)
