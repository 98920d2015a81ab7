"""Where a site's events (and its key) may go: schemes and addresses refused by the model, the
admin form, delivery, the test event and the connection itself (issue 18)."""

from __future__ import annotations

import ipaddress
import select
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings
from django.core.exceptions import ValidationError
from django.test import override_settings

from django_conversions import http, track
from django_conversions.conversion import (
    Conversion,
)
from django_conversions.delivery import deliver_due
from django_conversions.models import ConversionEvent, EventStatus, TrackingSite
from django_conversions.providers.base import OutboundEvent, Outcome, SiteConfig
from django_conversions.providers.scanova import ScanovaProvider
from django_conversions.testevent import send_test_event
from tests.conftest import SCANOVA_KEY
from tests.test_admin import NEW_KEY, site_form_data, site_url


def conversions(**values: Any) -> dict[str, Any]:
    """The suite's settings with ``values`` over them (tests turn the local allowances off)."""
    return {**settings.CONVERSIONS, **values}


STRICT = conversions(ALLOW_INSECURE_ENDPOINTS=False, ALLOW_PRIVATE_ENDPOINTS=False)
PRIVATE_OFF = conversions(ALLOW_PRIVATE_ENDPOINTS=False)

REFUSED_ENDPOINTS = {
    "ftp": "ftp://track.example.com/",
    "file": "file:///etc/passwd",
    "gopher": "gopher://track.example.com/",
    "http": "http://track.example.com/",
    "loopback": "https://127.0.0.1:22/",
    "loopback-other": "https://127.8.9.10/",
    "localhost": "https://localhost:8443/",
    "metadata": "https://169.254.169.254/latest",
    "ten": "https://10.1.2.3/",
    "172-16": "https://172.16.5.4/",
    "172-31": "https://172.31.255.254/",
    "192-168": "https://192.168.1.1/",
    "unspecified": "https://0.0.0.0/",
    "ipv6-loopback": "https://[::1]/",
    "ipv6-unique-local": "https://[fc00::1]/",
    "ipv6-unique-local-fd": "https://[fd12:3456::1]/",
    "ipv6-link-local": "https://[fe80::1]/",
    "ipv4-mapped": "https://[::ffff:127.0.0.1]/",
}


def purchase(order_id: str) -> Conversion:
    """A purchase Scanova takes (it tracks conversions that began with a QR scan)."""
    return Conversion(event_name="purchase", order_id=order_id, scan_session_id=str(uuid.uuid4()))


def unsaved_site(endpoint_url: str) -> TrackingSite:
    return TrackingSite(
        name="shop", provider="scanova", provider_site_id="s1", endpoint_url=endpoint_url
    )


@pytest.mark.parametrize("url", REFUSED_ENDPOINTS.values(), ids=REFUSED_ENDPOINTS.keys())
@override_settings(CONVERSIONS=STRICT)
def test_the_model_refuses_a_scheme_or_an_address_no_provider_uses(db, url):
    # when
    with pytest.raises(ValidationError) as refused:
        unsaved_site(url).full_clean()
    # then
    assert "endpoint_url" in refused.value.message_dict


@override_settings(CONVERSIONS=STRICT)
def test_the_model_takes_a_public_https_endpoint(db):
    unsaved_site("https://track.example.com/v2").full_clean()
    unsaved_site("https://93.184.216.34:8443/").full_clean()
    unsaved_site("").full_clean()  # the provider's documented URL


@override_settings(CONVERSIONS=conversions(ALLOW_PRIVATE_ENDPOINTS=True))
def test_private_addresses_are_taken_when_the_setting_allows_them(db):
    unsaved_site("http://127.0.0.1:8000/").full_clean()
    unsaved_site("https://10.1.2.3/").full_clean()


@override_settings(CONVERSIONS=conversions(ALLOW_PRIVATE_ENDPOINTS=True))
def test_other_schemes_stay_refused_whatever_the_settings(db):
    with pytest.raises(ValidationError):
        unsaved_site("ftp://127.0.0.1/").full_clean()


@pytest.mark.parametrize(
    "url",
    [REFUSED_ENDPOINTS[name] for name in ("ftp", "http", "metadata", "ipv6-loopback", "ten")],
)
@override_settings(CONVERSIONS=STRICT)
def test_the_admin_form_refuses_the_endpoint(admin_client, url):
    # when
    response = admin_client.post(
        site_url("add"),
        site_form_data(
            endpoint_url=url, keys=[{"label": "primary", "key": NEW_KEY, "is_active": True}]
        ),
    )
    # then
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["endpoint_url"]
    assert not TrackingSite.objects.exists()


@pytest.mark.parametrize("url", ["ftp://track.example.com/", "file:///etc/passwd"])
@override_settings(CONVERSIONS=STRICT)
def test_a_stored_bad_endpoint_pauses_its_site_instead_of_retrying(make_site, url):
    # given: an endpoint written past the form (a data migration, the shell)
    site = make_site("scanova", endpoint_url=url)
    (event,) = track(purchase("1001"))
    # when
    deliver_due()
    # then: the site waits with the reason; the event keeps its attempts for when it is fixed
    site.refresh_from_db()
    event.refresh_from_db()
    assert site.is_paused
    assert "only https:// is allowed" in site.paused_reason
    assert event.status == EventStatus.PENDING
    assert event.attempts == 0
    assert not site.delivery_attempts.exists()


# --- the address a name resolves to, when sending ------------------------------------------


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A bare listening socket on every local address: any connection shows in its backlog."""
    sock = socket.create_server(("0.0.0.0", 0))
    try:
        yield sock
    finally:
        sock.close()


def connections_waiting(sock: socket.socket) -> bool:
    readable, _, _ = select.select([sock], [], [], 0)
    return bool(readable)


def local_name() -> str:
    """A name (not ``localhost``) that resolves to a local address here: the machine's own."""
    name = socket.gethostname()
    try:
        infos = socket.getaddrinfo(name, 80, type=socket.SOCK_STREAM)
    except OSError:
        pytest.skip(f"this machine's name {name!r} does not resolve")
    addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
    if not any(a.is_loopback or a.is_private for a in addresses):
        pytest.skip(f"this machine's name {name!r} resolves to public addresses only")
    return name


@override_settings(CONVERSIONS=PRIVATE_OFF)
def test_the_http_layer_refuses_a_name_resolving_to_a_local_address(listener):
    # given
    port = listener.getsockname()[1]
    # when
    answer = http.post(
        http.get_session(),
        f"http://localhost:{port}/server-events",
        body=b"{}",
        headers={"X-API-Key": SCANOVA_KEY},
        timeout=(2, 2),
    )
    # then: no status, the reason, and nothing reached the server
    assert answer.status is None
    assert answer.refused
    assert "resolves to" in answer.error
    assert "ALLOW_PRIVATE_ENDPOINTS" in answer.error
    assert not connections_waiting(listener)


@override_settings(CONVERSIONS=PRIVATE_OFF)
def test_a_refused_address_is_a_site_problem_not_a_retry(listener):
    # given: a provider whose checks before sending are skipped (the name resolved publicly
    # then, locally now)
    port = listener.getsockname()[1]
    provider = ScanovaProvider(SiteConfig("s1", f"http://{local_name()}:{port}"))
    event = OutboundEvent(uuid.uuid4(), purchase("1"))
    # when
    [result] = provider.send(http.get_session(), SCANOVA_KEY, [event], timeout=(2, 2))
    # then: the outcome that pauses the site, with the reason; no connection was made
    assert result.outcome == Outcome.AUTH_FAILED
    assert "resolves to" in result.reason
    assert not connections_waiting(listener)


@override_settings(CONVERSIONS=PRIVATE_OFF)
def test_delivery_pauses_a_site_whose_host_resolves_to_a_local_address(make_site, listener):
    # given: a site saved with a name, which resolves to this machine
    port = listener.getsockname()[1]
    site = make_site("scanova", endpoint_url=f"http://{local_name()}:{port}")
    (event,) = track(purchase("1001"))
    # when
    deliver_due()
    # then
    site.refresh_from_db()
    event.refresh_from_db()
    assert site.is_paused
    assert "resolves to" in site.paused_reason
    assert event.status == EventStatus.PENDING
    assert not connections_waiting(listener)
    assert not ConversionEvent.objects.filter(attempts__gt=0).exists()


@override_settings(CONVERSIONS=PRIVATE_OFF)
def test_a_test_event_to_a_host_resolving_to_a_local_address_is_not_sent(make_site, listener):
    # given: the attack of the issue: a site pointed at a port of the worker's own machine
    port = listener.getsockname()[1]
    site = make_site("scanova", endpoint_url=f"http://{local_name()}:{port}")
    # when
    answer = send_test_event(site)
    # then
    assert not answer.sent
    assert "resolves to" in answer.reason
    assert not connections_waiting(listener)
