"""The host's save() never raises, whatever the order holds, the adapter returns or the provider
answers; every event that is not pending carries a reason a person can read."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, ClassVar

import pytest
from django.conf import settings
from django.test import override_settings
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from django_conversions.adapters import OrderAdapter
from django_conversions.delivery import deliver_due
from django_conversions.models import ConversionEvent, EventStatus
from tests.testapp.models import Order

FUZZ = hsettings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
anything = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.decimals(allow_nan=True, allow_infinity=True),
    st.text(max_size=300),
    st.lists(st.text(max_size=20), max_size=5),
    st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=3),
)
FIELDS = (
    "event_name", "order_id", "value", "currency", "shipping", "coupons", "status", "customer",
    "items", "scan_session_id", "consent", "properties", "occurred_at",
)  # fmt: skip


class FuzzedAdapter(OrderAdapter):
    """Returns whatever the test put in ``values`` for each Conversion field."""

    values: ClassVar[dict[str, Any]] = {}

    def to_conversion(self, order: Any) -> Any:
        from django_conversions import Conversion

        return Conversion(**self.values)


def conversions(**extra: Any) -> Any:
    return override_settings(CONVERSIONS={**settings.CONVERSIONS, "TASK_BACKEND": None, **extra})


def assert_readable(events: Any) -> None:
    for event in events:
        assert event.status in EventStatus.values
        if event.status in (EventStatus.FAILED, EventStatus.SKIPPED):
            assert event.last_error.strip(), event


@pytest.mark.django_db
@FUZZ
@given(values=st.fixed_dictionaries({}, optional={name: anything for name in FIELDS}))
def test_save_never_raises_whatever_the_adapter_returns(scanova_site, vt_site, values):
    FuzzedAdapter.values = {"event_name": "purchase", **values}
    with conversions(ORDER_ADAPTER="tests.test_never_raises.FuzzedAdapter"):
        order = Order.objects.create(number=f"F-{Order.objects.count()}", status="paid")
    assert Order.objects.filter(pk=order.pk).exists()
    assert_readable(ConversionEvent.objects.filter(source_object_id=str(order.pk)))


# The host's own columns can't hold NUL or lone surrogates on PostgreSQL: that would fail the
# host's INSERT before the app runs, which is not what this test is about.
storable = st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",))
order_text = st.text(storable, max_size=30)


@pytest.mark.django_db
@FUZZ
@given(
    email=order_text,
    phone=order_text,
    currency=st.text(storable, max_size=3),
    scan=order_text,
    consent=st.sampled_from(["", "granted", "denied", "pending", "yes", "GRANTED"]),
    coupon=order_text,
    total=st.decimals(min_value=-(10**9), max_value=10**9, places=2),
    shipping=st.one_of(st.none(), st.decimals(min_value=-100, max_value=100, places=2)),
)
def test_save_never_raises_whatever_the_order_holds(
    scanova_site, vt_site, email, phone, currency, scan, consent, coupon, total, shipping
):
    with conversions():
        order = Order.objects.create(
            number=f"O-{Order.objects.count()}", status="paid", email=email, phone=phone,
            currency=currency, scan_session_id=scan, tracking_consent=consent,
            coupon_code=coupon, total=total, shipping=shipping,
        )  # fmt: skip
    events = ConversionEvent.objects.filter(source_object_id=str(order.pk))
    assert events.count() == 2  # one per site, always: sent, skipped or failed with a reason
    assert_readable(events)


@pytest.mark.django_db
@FUZZ
# A NUL character can't be stored in PostgreSQL text: the answer's body must still be recorded.
@example(status=500, body="\x00", retry_after=None)
@given(
    status=st.integers(min_value=100, max_value=599),
    body=st.one_of(st.text(max_size=200), st.binary(max_size=50).map(repr)),
    retry_after=st.one_of(st.none(), st.text(max_size=30), st.integers(-5, 10**6).map(str)),
)
def test_delivery_never_raises_whatever_the_provider_answers(
    scanova_site, mocked_http, status, body, retry_after
):
    import uuid

    from django_conversions import Conversion, track

    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    mocked_http.post(
        "https://track.example.test/server-events", status=status, body=body, headers=headers
    )
    with conversions():
        [event] = track(
            Conversion(
                event_name="purchase",
                value=Decimal("1"),
                currency="EUR",
                scan_session_id=str(uuid.uuid4()),
            )
        )
        deliver_due()
    mocked_http.reset()
    event.refresh_from_db()
    assert event.status != EventStatus.SENDING
    if event.status != EventStatus.DELIVERED:
        assert event.last_error.strip()
    scanova_site.resume()
