"""Issue 18's hardening, as a hostile tester would probe it: what an error page shows, what an
API caller can pre-empt, which event times are taken, what the public endpoints let a bot do.
Where requests may go: tests/test_endpoints.py."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.conf import settings
from django.contrib.sessions.middleware import SessionMiddleware
from django.contrib.sessions.models import Session
from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpResponse
from django.test import Client, RequestFactory, override_settings
from django.views.debug import ExceptionReporter

from django_conversions import http, track
from django_conversions.api.throttling import check_proxy_setting
from django_conversions.conversion import (
    OCCURRED_AT_MAX_AGE,
    OCCURRED_AT_MAX_AHEAD,
    Conversion,
    Customer,
)
from django_conversions.exceptions import InvalidConversion
from django_conversions.fields import mask_secret
from django_conversions.middleware import ScanSessionMiddleware
from django_conversions.models import ConversionEvent, EventStatus
from django_conversions.providers.base import Outcome
from django_conversions.providers.scanova import ScanovaProvider
from django_conversions.scan_session import parse_rate
from django_conversions.testevent import send_test_event
from tests.conftest import SCANOVA_KEY
from tests.servers import Answer, recording_server
from tests.test_admin import site_url
from tests.test_api_support import EVENTS, SCAN_SESSION, logged_in, make_user, post_json
from tests.test_api_support import purchase as api_purchase
from tests.testapp.models import Order

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def conversions(**values: Any) -> dict[str, Any]:
    """The suite's settings with ``values`` over them."""
    return {**settings.CONVERSIONS, **values}


# --- API-recorded conversions and the order hook ----------------------------------------------


@pytest.fixture
def writer(db: Any) -> Any:
    return logged_in(make_user("writer", perms=("add_conversionevent", "view_conversionevent")))


def test_an_api_call_recording_an_order_first_does_not_shadow_the_real_order(writer, vt_site):
    # given: a caller records order 1001 at 1.00 before the shop's order exists
    recorded = post_json(writer, EVENTS, api_purchase(order_id="1001", value="1.00"))
    assert recorded.status_code == 202, recorded.content
    # when: the real order 1001 is paid
    Order.objects.create(
        number="1001", status="paid", total=Decimal("999.00"), currency="EUR", email="a@b.co"
    )
    # then: the order hook's event is recorded with its real value, beside the API's
    hook_event = ConversionEvent.objects.get(site=vt_site, dedup_key="purchase:order:1001")
    assert hook_event.snapshot["value"] == "999.00"
    assert hook_event.status != EventStatus.FAILED
    assert ConversionEvent.objects.get(dedup_key="api:purchase:order:1001").snapshot["value"] == (
        "1.00"
    )


def test_replaces_order_hook_records_under_the_hooks_key(writer, vt_site):
    # given: the integration says its call is the order's conversion
    body = api_purchase(order_id="1001", value="999.00", replaces_order_hook=True)
    # when
    recorded = post_json(writer, EVENTS, body)
    Order.objects.create(number="1001", status="paid", total=Decimal("999.00"), currency="EUR")
    # then: one event for the order: the hook's save found it as a repeat
    assert recorded.status_code == 202, recorded.content
    assert recorded.json()["dedup_key"] == "purchase:order:1001"
    assert ConversionEvent.objects.filter(site=vt_site).count() == 1


@pytest.mark.parametrize(
    "fields",
    [
        {"replaces_order_hook": True, "order_id": None},
        {"replaces_order_hook": True, "dedup_key": "mine"},
    ],
)
def test_replaces_order_hook_needs_an_order_id_and_no_key_of_its_own(writer, vt_site, fields):
    # when
    response = post_json(writer, EVENTS, api_purchase(**fields))
    # then
    assert response.status_code == 400
    assert list(response.json()) == ["replaces_order_hook"]
    assert not ConversionEvent.objects.exists()


def test_a_given_dedup_key_can_not_take_the_order_hooks_key_either(writer, vt_site):
    # given
    post_json(writer, EVENTS, api_purchase(order_id="9", dedup_key="purchase:order:1001"))
    # when
    Order.objects.create(number="1001", status="paid", total=Decimal("999.00"), currency="EUR")
    # then
    assert ConversionEvent.objects.get(dedup_key="purchase:order:1001").snapshot["value"] == (
        "999.00"
    )


# --- event times ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "when",
    [
        datetime(1900, 1, 1, tzinfo=UTC),
        datetime(2999, 1, 1, tzinfo=UTC),
        NOW - OCCURRED_AT_MAX_AGE - timedelta(seconds=1),
        NOW + OCCURRED_AT_MAX_AHEAD + timedelta(seconds=1),
    ],
)
def test_an_event_time_outside_the_window_is_refused_naming_the_field(when):
    # when
    with pytest.raises(InvalidConversion) as refused:
        Conversion("purchase", occurred_at=when).check_time(NOW)
    # then
    assert refused.value.field == "occurred_at"


@pytest.mark.parametrize(
    "when", [NOW - OCCURRED_AT_MAX_AGE, NOW, NOW + OCCURRED_AT_MAX_AHEAD, None]
)
def test_an_event_time_inside_the_window_is_taken(when):
    Conversion("purchase", occurred_at=when).check_time(NOW)


@pytest.mark.parametrize("when", ["1900-01-01T00:00:00Z", "2999-01-01T00:00:00Z"])
def test_the_api_answers_400_for_an_event_time_outside_the_window(writer, vt_site, when):
    # when
    response = post_json(writer, EVENTS, api_purchase(occurred_at=when))
    # then
    assert response.status_code == 400
    assert list(response.json()) == ["occurred_at"]
    assert not ConversionEvent.objects.exists()


# --- the key in error reports ------------------------------------------------------------------


class BrokenAnswerProvider(ScanovaProvider):
    """A provider module with a bug in reading refusals: sending through it raises."""

    id = "broken_answers"
    name = "Broken answers"

    def error_reason(self, answer: http.HttpAnswer) -> str:
        raise RuntimeError("the provider module failed to read the answer")


@override_settings(
    DEBUG=True,
    CONVERSIONS=conversions(PROVIDERS=["tests.test_security.BrokenAnswerProvider"]),
)
def test_the_debug_error_page_of_a_failed_test_event_never_shows_the_key(make_site, admin_user):
    # given: a site whose provider module raises while reading the refusal of a real server
    with recording_server(Answer(status=400, body={"detail": "refused"})) as server:
        site = make_site(
            "broken_answers", key=SCANOVA_KEY, provider_site_id="s1", endpoint_url=server.url
        )
        client = Client(raise_request_exception=False)
        client.force_login(admin_user)
        # when: "send test event"
        response = client.post(site_url("send_test_event", site.pk))
        reached = len(server.received)
    # then: Django's technical 500 page, every frame's variables listed, but not the key
    assert response.status_code == 500
    page = response.content.decode()
    assert "the provider module failed to read the answer" in page
    assert "<td>api_key</td>" in page  # the frames that held the key are on the page...
    assert mask_secret(SCANOVA_KEY) in page  # ...showing it masked
    assert reached == 1
    assert SCANOVA_KEY not in page
    assert SCANOVA_KEY[-20:] not in page


def test_an_answer_nested_too_deep_to_parse_reads_as_no_json():
    # given: a provider answering with JSON nested 100,000 deep
    answer = http.HttpAnswer("https://x.test", 400, text="[" * 100_000 + "]" * 100_000)
    # when / then: a reason from the text, never an exception
    assert answer.json() is None
    outcome, reason, _ = ScanovaProvider().classify(answer)
    assert outcome == Outcome.FAILED
    assert reason.startswith("HTTP 400")


@override_settings(CONVERSIONS=conversions(PROVIDERS=["tests.test_security.BrokenAnswerProvider"]))
def test_an_error_report_hides_the_frames_that_hold_the_key(make_site):
    # given: the same failure, reported the production way (DEBUG off: the ADMINS mail)
    with recording_server(Answer(status=400, body={"detail": "refused"})) as server:
        site = make_site(
            "broken_answers", key=SCANOVA_KEY, provider_site_id="s1", endpoint_url=server.url
        )
        with pytest.raises(RuntimeError) as raised:
            send_test_event(site)
    # when
    frames = ExceptionReporter(None, raised.type, raised.value, raised.tb).get_traceback_data()
    shown = {frame["function"]: dict(frame["vars"]) for frame in frames["frames"]}
    # then: the key's variables are cleansed, not even masked
    assert shown["deliver"]["api_key"] == "'********************'"
    assert shown["send"]["api_key"] == "'********************'"
    assert "********************" in shown["send_test_event"]["key"]
    assert SCANOVA_KEY not in repr(shown)


# --- the public endpoints ----------------------------------------------------------------------

SCAN_MIDDLEWARE = [
    *settings.MIDDLEWARE[:2],  # security, sessions
    "django_conversions.middleware.ScanSessionMiddleware",
    *settings.MIDDLEWARE[2:],
]


@pytest.fixture
def fresh_cache() -> Iterator[None]:
    cache.clear()
    yield
    cache.clear()


def landing(scan_id: str) -> str:
    return f"/?scnv={scan_id}"


@override_settings(
    MIDDLEWARE=SCAN_MIDDLEWARE, CONVERSIONS=conversions(SCAN_SESSION_NEW_RATE="5/minute")
)
def test_a_bot_landing_with_new_ids_starts_a_bounded_number_of_sessions(db, fresh_cache):
    # when: twenty landings without cookies, each with a new id
    for _ in range(20):
        Client().get(landing(str(uuid.uuid4())))
    # then
    assert Session.objects.count() == 5


@override_settings(
    MIDDLEWARE=SCAN_MIDDLEWARE, CONVERSIONS=conversions(SCAN_SESSION_NEW_RATE="5/minute")
)
def test_the_limit_is_per_client_address(db, fresh_cache):
    # given: one address used its allowance
    for _ in range(5):
        Client().get(landing(str(uuid.uuid4())))
    # when
    Client().get(landing(str(uuid.uuid4())))  # over the limit
    Client(REMOTE_ADDR="203.0.113.9").get(landing(str(uuid.uuid4())))
    # then
    assert Session.objects.count() == 6


@override_settings(
    MIDDLEWARE=SCAN_MIDDLEWARE, CONVERSIONS=conversions(SCAN_SESSION_NEW_RATE="1/minute")
)
def test_a_visitor_with_a_session_can_scan_again_whatever_the_limit(db, fresh_cache):
    # given
    visitor = Client()
    visitor.get(landing(str(uuid.uuid4())))
    # when: later scans, past the limit of new sessions
    last = str(uuid.uuid4())
    for scan_id in [str(uuid.uuid4()), str(uuid.uuid4()), last]:
        visitor.get(landing(scan_id))
    # then
    assert visitor.session["conversions_scan_session"]["id"] == last
    assert Session.objects.count() == 1


@override_settings(MIDDLEWARE=SCAN_MIDDLEWARE)
def test_the_same_scan_again_writes_nothing(db, fresh_cache):
    # given
    scan_id = str(uuid.uuid4())
    request = RequestFactory().get(landing(scan_id))
    SessionMiddleware(lambda r: HttpResponse()).process_request(request)
    middleware = ScanSessionMiddleware(lambda r: HttpResponse())
    middleware.capture(request)
    request.session.save()
    again = RequestFactory().get(landing(scan_id.upper()))
    again.COOKIES[settings.SESSION_COOKIE_NAME] = request.session.session_key
    SessionMiddleware(lambda r: HttpResponse()).process_request(again)
    # when
    kept = middleware.capture(again)
    # then: the id is the session's, and the session is not saved again
    assert kept == scan_id
    assert not again.session.modified


def test_a_forged_x_forwarded_for_does_not_dodge_the_throttle(db, fresh_cache):
    # given: no NUM_PROXIES, a client naming a new address on every request
    client = Client()
    with override_settings(CONVERSIONS=conversions(API_SCAN_SESSION_THROTTLE_RATE="3/minute")):
        # when
        answers = [
            client.get(SCAN_SESSION, HTTP_X_FORWARDED_FOR=f"198.51.100.{n}") for n in range(4)
        ]
    # then
    assert [a.status_code for a in answers] == [200, 200, 200, 429]


@override_settings(REST_FRAMEWORK={"NUM_PROXIES": 1})
def test_behind_a_declared_proxy_the_forwarded_address_is_the_client(db, fresh_cache):
    # given: one proxy in front: it appends the address it saw
    client = Client()
    with override_settings(CONVERSIONS=conversions(API_SCAN_SESSION_THROTTLE_RATE="2/minute")):
        # when
        first = [
            client.get(SCAN_SESSION, HTTP_X_FORWARDED_FOR="forged, 198.51.100.1") for _ in "abc"
        ]
        second = client.get(SCAN_SESSION, HTTP_X_FORWARDED_FOR="198.51.100.2")
    # then
    assert [a.status_code for a in first] == [200, 200, 429]
    assert second.status_code == 200


def test_the_proxy_check_warns_while_num_proxies_is_unset():
    # when
    with override_settings(REST_FRAMEWORK={}):
        unset = check_proxy_setting()
    with override_settings(REST_FRAMEWORK={"NUM_PROXIES": 0}):
        declared = check_proxy_setting()
    with override_settings(
        REST_FRAMEWORK={},
        CONVERSIONS=conversions(API_SCAN_SESSION_THROTTLE_RATE=None, SCAN_SESSION_NEW_RATE=None),
    ):
        unlimited = check_proxy_setting()
    # then
    assert [m.id for m in unset] == ["conversions.W004"]
    assert "NUM_PROXIES" in unset[0].hint
    assert declared == unlimited == []


# --- personal data -----------------------------------------------------------------------------


def test_a_skipped_event_keeps_no_personal_data(scanova_site):
    # given: a purchase Scanova will never receive (no scan session), with the buyer's details
    conversion = Conversion(
        event_name="purchase",
        order_id="1001",
        customer=Customer(email="buyer@example.com", phone="+40775123123", first_name="Ana"),
    )
    # when
    (event,) = track(conversion)
    # then
    assert event.status == EventStatus.SKIPPED
    assert "customer" not in ConversionEvent.objects.get(pk=event.pk).snapshot


@pytest.mark.parametrize("rate", ["many/minute", "10/fortnight", "10"])
def test_a_malformed_session_rate_is_named(rate):
    with pytest.raises(ImproperlyConfigured, match="SCAN_SESSION_NEW_RATE"):
        parse_rate(rate)


def test_a_session_rate_reads_like_drfs():
    assert parse_rate("30/minute") == (30, 60)
    assert parse_rate("5/h") == (5, 3600)
