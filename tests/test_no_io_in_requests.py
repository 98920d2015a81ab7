"""No provider I/O inside a web request, with README's install settings.

Without ``TASKS`` Django runs tasks with its ImmediateBackend, inside the call that enqueues
them: here, the request that saves the order. The request must answer while a slow provider is
still holding the delivery, and the event must be delivered afterwards by the background thread.
"""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from django.conf import settings
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.test import Client, override_settings
from django.urls import path

from django_conversions.conf import DEFAULTS
from django_conversions.models import ApiKey, ConversionEvent, EventStatus, TrackingSite
from django_conversions.tasks import background
from tests.conditions import wait_until
from tests.servers import held_provider
from tests.testapp.models import Order

# Django's own default when a project sets no TASKS (README's install doesn't).
_TASKS_MODULE = settings.TASKS["default"]["BACKEND"].rsplit(".backends.", 1)[0]
README_TASKS = {"default": {"BACKEND": f"{_TASKS_MODULE}.backends.immediate.ImmediateBackend"}}

# The background delivery thread is switched by CONVERSIONS["BACKGROUND_DELIVERY"] (default True);
# until conf.py defines that key these tests cannot set it, and say so instead of failing.
needs_background_setting = pytest.mark.skipif(
    "BACKGROUND_DELIVERY" not in DEFAULTS,
    reason="needs CONVERSIONS['BACKGROUND_DELIVERY'] in django_conversions.conf.DEFAULTS",
)


def checkout(request: HttpRequest) -> HttpResponse:
    """A shop's checkout: the order is paid and saved in the request's transaction."""
    with transaction.atomic():
        order = Order.objects.create(
            number=request.POST["number"],
            status="paid",
            total=Decimal("49.90"),
            currency="EUR",
            email="buyer@example.com",
            scan_session_id=str(uuid.uuid4()),
            tracking_consent="granted",
        )
    return HttpResponse(f"order {order.number} paid")


urlpatterns = [path("checkout/", checkout)]


@needs_background_setting
@pytest.mark.django_db(transaction=True)
def test_checkout_answers_while_the_provider_is_still_holding_the_delivery():
    conversions = {
        key: value for key, value in settings.CONVERSIONS.items() if key != "BACKGROUND_DELIVERY"
    }  # README's settings leave it at its default
    with (
        held_provider() as (url, provider),
        override_settings(TASKS=README_TASKS, CONVERSIONS=conversions, ROOT_URLCONF=__name__),
    ):
        site = TrackingSite.objects.create(
            name="slow", provider="scanova", provider_site_id="site_local", endpoint_url=url
        )
        ApiKey.objects.create(site=site, key="scn_local_key_0123456789abcdef")
        # when
        response = Client().post("/checkout/", {"number": "N-1"})
        # then: the shop answered while the provider still held the delivery (had the request
        # waited for the provider, the provider would have given up holding it first)
        assert response.status_code == 200
        assert not provider.gave_up.is_set()
        # and the delivery is under way from elsewhere, the request being over
        assert provider.arrived.wait(20)
        assert ConversionEvent.objects.get().status == EventStatus.SENDING
        # when the provider answers, the event is delivered
        provider.release.set()
        wait_until(lambda: ConversionEvent.objects.get().status == EventStatus.DELIVERED)
        assert background.wait_idle(timeout=20)
