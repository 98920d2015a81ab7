from __future__ import annotations

import json
import uuid
from decimal import Decimal

import pytest

from django_conversions.models import ConversionEvent, EventStatus
from django_conversions.tasks import background
from tests.testapp.models import Order


@pytest.mark.django_db(transaction=True)
def test_paid_order_is_delivered_to_both_providers(scanova_site, vt_site, mocked_http):
    # given
    mocked_http.post("https://track.example.test/server-events", json={"success": True})
    mocked_http.post(
        "https://vt.example.test/v1/event/", json={"results": {"message": "Event created"}}
    )
    scan = str(uuid.uuid4())
    # when
    Order.objects.create(
        number="1001",
        status="paid",
        total=Decimal("99.99"),
        currency="USD",
        email="Buyer@Example.com",
        scan_session_id=scan,
        tracking_consent="granted",
    )
    # then: both were sent after the order's commit (from the background thread, where
    # BACKGROUND_DELIVERY is on: wait until it is idle)
    assert background.wait_idle(timeout=30)
    events = {e.site.provider: e for e in ConversionEvent.objects.select_related("site")}
    assert events["scanova"].status == EventStatus.DELIVERED, events["scanova"].last_error
    assert events["vtmarketing"].status == EventStatus.DELIVERED, events["vtmarketing"].last_error
    # (sites are sent independently: the requests may come in either order)
    [scanova_call] = [c for c in mocked_http.calls if "track.example.test" in c.request.url]
    scanova_body = json.loads(scanova_call.request.body)
    assert scanova_body["scan_session_id"] == scan
    assert scanova_body["conversion_value"] == {"amount": 99.99, "currency": "USD"}
