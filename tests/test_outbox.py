"""The outbox: events are written in the order's transaction, once per order and site."""

from __future__ import annotations

import dataclasses
import sqlite3
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.contrib.contenttypes.models import ContentType
from django.db import connection, transaction
from django.db.models.signals import post_init
from django.test import override_settings

from django_conversions import Conversion, Customer, track
from django_conversions.adapters import OrderAdapter
from django_conversions.exceptions import InvalidConversion
from django_conversions.models import ConversionEvent, EventStatus
from django_conversions.signals import event_queued
from django_conversions.tasks import background
from tests.conftest import ON_POSTGRES
from tests.testapp.models import Order, OrderItem

NO_TASKS = {"TASK_BACKEND": None}


def conversions(**extra):
    from django.conf import settings

    return override_settings(CONVERSIONS={**settings.CONVERSIONS, **extra})


def scanned_purchase(order_id: str, value: str) -> Conversion:
    """A purchase that began with a QR scan, as Scanova takes it."""
    return Conversion(
        event_name="purchase",
        order_id=order_id,
        value=Decimal(value),
        currency="EUR",
        scan_session_id=str(uuid.uuid4()),
    )


def paid_order(number: str = "1001", **fields) -> Order:
    values = {
        "status": "paid",
        "total": Decimal("99.99"),
        "currency": "USD",
        "email": "buyer@example.com",
        "scan_session_id": str(uuid.uuid4()),
        "tracking_consent": "granted",
    }
    values.update(fields)
    return Order.objects.create(number=number, **values)


@pytest.mark.django_db(transaction=True)
def test_rolled_back_order_leaves_no_event(scanova_site, vt_site, mocked_http):
    # given: a checkout that fails after the order was saved
    with conversions(**NO_TASKS), pytest.raises(RuntimeError), transaction.atomic():
        paid_order()
        raise RuntimeError("payment declined after save")
    # then: nothing was recorded, nothing sent
    assert ConversionEvent.objects.count() == 0
    assert len(mocked_http.calls) == 0


@pytest.mark.django_db(transaction=True)
def test_committed_order_has_one_pending_event_per_active_site(scanova_site, vt_site, make_site):
    # given: a third, inactive site
    make_site("scanova", name="old", is_active=False)
    # when
    with conversions(**NO_TASKS):
        order = paid_order()
    # then
    events = ConversionEvent.objects.filter(source_object_id=str(order.pk))
    assert sorted(e.site_id for e in events) == sorted([scanova_site.pk, vt_site.pk])
    assert {e.status for e in events} == {EventStatus.PENDING}
    assert all(e.dedup_key == "purchase:order:1001" for e in events)


@pytest.mark.django_db(transaction=True)
def test_repeated_saves_keep_one_event_per_site(scanova_site, vt_site):
    with conversions(**NO_TASKS):
        order = paid_order()
        first_ids = set(ConversionEvent.objects.values_list("event_id", flat=True))
        # when: the order is saved again, paid, several times
        for _ in range(3):
            order.city = "Cluj"
            order.save()
    # then
    assert set(ConversionEvent.objects.values_list("event_id", flat=True)) == first_ids


@pytest.mark.django_db(transaction=True)
def test_unpaid_order_is_not_tracked_until_paid(scanova_site):
    with conversions(**NO_TASKS):
        order = paid_order(status="new")
        assert ConversionEvent.objects.count() == 0
        # when
        order.status = "paid"
        order.save()
    # then
    assert ConversionEvent.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_items_come_from_the_related_manager(scanova_site):
    # given: the lines are saved before the order turns paid (a typical checkout)
    with conversions(**NO_TASKS):
        order = paid_order(status="new")
        OrderItem.objects.create(order=order, sku="sku-1", quantity=2, price=Decimal("10"))
        OrderItem.objects.create(order=order, sku="sku-2", quantity=1)
        # when
        order.status = "paid"
        order.save()
    # then
    snapshot = ConversionEvent.objects.get().snapshot
    assert snapshot["items"] == [
        {"id": "sku-1", "quantity": 2, "price": "10.00"},
        {"id": "sku-2", "quantity": 1},
    ]


@pytest.mark.django_db(transaction=True)
def test_ineligible_events_are_stored_skipped_with_the_reason(scanova_site, vt_site):
    # when: no scan session id (Scanova) and no consent (VTmarketing)
    with conversions(**NO_TASKS):
        paid_order(scan_session_id="", tracking_consent="")
    # then
    events = {e.site.provider: e for e in ConversionEvent.objects.select_related("site")}
    assert events["scanova"].status == EventStatus.SKIPPED
    assert "no scan session id" in events["scanova"].last_error
    assert events["vtmarketing"].status == EventStatus.SKIPPED
    assert "consent" in events["vtmarketing"].last_error


@pytest.mark.django_db(transaction=True)
def test_site_event_name_filter(make_site):
    # given: a site that only takes signups
    make_site("scanova", event_names="signup")
    scan = str(uuid.uuid4())
    with conversions(**NO_TASKS):
        # when
        purchase = track(Conversion(event_name="purchase", order_id="1", scan_session_id=scan))
        signup = track(Conversion(event_name="Signup", scan_session_id=scan))
    # then
    assert purchase == []
    assert [e.event_name for e in signup] == ["signup"]


@pytest.mark.django_db(transaction=True)
def test_track_returns_existing_events_for_a_repeated_order_id(scanova_site):
    conversion = scanned_purchase("A-1", "5")
    with conversions(**NO_TASKS):
        first = track(conversion)
        second = track(conversion)
    assert [e.event_id for e in first] == [e.event_id for e in second]
    assert ConversionEvent.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_event_queued_signal_fires_after_commit(scanova_site):
    received = []

    def receiver(sender, events, **kwargs):
        received.append([e.event_id for e in events])

    event_queued.connect(receiver)
    try:
        with conversions(**NO_TASKS), transaction.atomic():
            paid_order()
            assert received == []  # not before commit
    finally:
        event_queued.disconnect(receiver)
    assert len(received) == 1 and len(received[0]) == 1


class ExplodingAdapter(OrderAdapter):
    def to_conversion(self, order):
        if order.city == "broken":
            raise ValueError("total is not a number")
        return super().to_conversion(order)


class CenturyOldAdapter(OrderAdapter):
    """Reads the order's time from a field a migration filled wrongly (year 1900)."""

    def to_conversion(self, order):
        return dataclasses.replace(
            super().to_conversion(order), occurred_at=datetime(1900, 1, 1, tzinfo=UTC)
        )


@pytest.mark.django_db(transaction=True)
def test_an_order_time_no_provider_attributes_is_stored_failed_with_the_reason(scanova_site):
    with conversions(ORDER_ADAPTER="tests.test_outbox.CenturyOldAdapter", **NO_TASKS):
        # when
        paid_order()
    # then: the save succeeded, nothing is sent, and the admin says why
    event = ConversionEvent.objects.get()
    assert event.status == EventStatus.FAILED
    assert "1900-01-01" in event.last_error and "days ago" in event.last_error


@pytest.mark.django_db(transaction=True)
def test_track_refuses_an_event_time_years_ahead(scanova_site):
    conversion = dataclasses.replace(
        scanned_purchase("7", "10.00"), occurred_at=datetime(2999, 1, 1, tzinfo=UTC)
    )
    with pytest.raises(InvalidConversion, match="occurred_at"):
        track(conversion)
    assert not ConversionEvent.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_adapter_error_is_stored_and_a_fixed_order_replaces_it(scanova_site):
    with conversions(ORDER_ADAPTER="tests.test_outbox.ExplodingAdapter", **NO_TASKS):
        # when: the adapter raises inside the host's save
        order = paid_order(city="broken")
        # then: the save succeeded and the admin can see why nothing was sent
        failed = ConversionEvent.objects.get()
        assert failed.status == EventStatus.FAILED
        assert "total is not a number" in failed.last_error
        # when: the order is fixed and saved again
        order.city = "Cluj"
        order.save()
    # then: the same row became a real pending event
    event = ConversionEvent.objects.get()
    assert event.pk == failed.pk
    assert event.status == EventStatus.PENDING
    assert event.snapshot["order_id"] == "1001"


@pytest.mark.django_db(transaction=True)
def test_a_broken_order_already_recorded_another_way_keeps_its_event(scanova_site, caplog):
    # given: the order's conversion was recorded without the order object (the REST API)
    with conversions(**NO_TASKS):
        [recorded] = track(
            Conversion(
                event_name="purchase",
                order_id="1001",
                value=Decimal("99.99"),
                currency="USD",
                scan_session_id=str(uuid.uuid4()),
                customer=Customer(email="buyer@example.com"),
                consent="granted",
            )
        )
    # when: the order is saved and its adapter fails
    with conversions(ORDER_ADAPTER="tests.test_outbox.ExplodingAdapter", **NO_TASKS):
        paid_order(city="broken")
    # then: the recorded event stands, no failed row joins it, and nothing went wrong
    assert list(ConversionEvent.objects.values_list("pk", "status")) == [
        (recorded.pk, EventStatus.PENDING)
    ]
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]


@pytest.mark.django_db(transaction=True)
def test_host_transaction_stays_usable_when_recording_fails(scanova_site):
    # given: a malformed order inside the host's own transaction
    adapter = conversions(ORDER_ADAPTER="tests.test_outbox.ExplodingAdapter", **NO_TASKS)
    with adapter, transaction.atomic():
        paid_order(number="1", city="broken")
        # then: the host can keep using its transaction
        paid_order(number="2")
    assert Order.objects.count() == 2


@pytest.mark.django_db(transaction=True)
def test_snapshot_keeps_only_what_each_provider_needs(scanova_site, vt_site):
    with conversions(**NO_TASKS):
        paid_order(phone="+40 775 123 123", first_name="Ana", city="Cluj")
    events = {e.site.provider: e for e in ConversionEvent.objects.select_related("site")}
    scanova_customer = events["scanova"].snapshot["customer"]
    # Scanova only ever receives hashes: the raw email and phone are never stored for it.
    assert "email" not in scanova_customer and "phone" not in scanova_customer
    assert len(scanova_customer["email_sha256"]) == 64
    assert events["vtmarketing"].snapshot["customer"]["email"] == "buyer@example.com"


def test_customer_without_data_is_empty():
    assert Customer().is_empty()


@pytest.mark.django_db(transaction=True)
def test_a_site_added_in_this_process_is_used_at_once_despite_the_cache(make_site):
    make_site("scanova")
    scan = str(uuid.uuid4())
    with conversions(SITE_CACHE_SECONDS=3600, **NO_TASKS):
        assert (
            len(track(Conversion(event_name="purchase", order_id="1", scan_session_id=scan))) == 1
        )
        # when: a site is added (the cached list is now stale)
        make_site("scanova", name="new site")
        # then
        assert (
            len(track(Conversion(event_name="purchase", order_id="2", scan_session_id=scan))) == 2
        )


@pytest.mark.django_db(transaction=True)
def test_new_events_match_their_rows_and_read_their_site_without_a_query(
    scanova_site, vt_site, django_assert_num_queries
):
    with conversions(**NO_TASKS):
        order = paid_order(status="new")  # not paid: no event yet
        events = track(Conversion(event_name="purchase", order_id="1001"), source=order)
    # the returned events carry their site and source type without another query
    order_type = ContentType.objects.get_for_model(Order)
    with django_assert_num_queries(0):
        assert [e.site for e in events] == [scanova_site, vt_site]
        assert [e.source_content_type for e in events] == [order_type, order_type]
    # and each matches its stored row, defaults included
    for event in events:
        stored = ConversionEvent.objects.get(pk=event.pk)
        fields = [f.attname for f in ConversionEvent._meta.concrete_fields]
        assert [getattr(event, name) for name in fields if name != "updated_at"] == [
            getattr(stored, name) for name in fields if name != "updated_at"
        ]
        assert (event.attempts, event.delivered_at, event.claim_token) == (0, None, None)
        assert event.event_id.version == 7
    # and saving a returned event updates its row: it is known as stored
    events[0].last_error = "seen"
    events[0].save()
    assert ConversionEvent.objects.count() == 2
    assert ConversionEvent.objects.get(pk=events[0].pk).last_error == "seen"


@pytest.mark.django_db(transaction=True)
def test_init_signal_receivers_see_new_events(scanova_site):
    seen = []

    def receiver(sender, instance, **kwargs):
        seen.append(instance)

    post_init.connect(receiver, sender=ConversionEvent)
    try:
        with conversions(**NO_TASKS):
            events = track(Conversion(event_name="purchase", order_id="1001"))
    finally:
        post_init.disconnect(receiver, sender=ConversionEvent)
    assert seen == events and seen[0] is events[0]


@pytest.mark.django_db(transaction=True)
def test_a_changed_event_name_filter_is_used_at_once_despite_the_cache(make_site):
    site = make_site("scanova", event_names="signup")
    other = make_site("scanova", name="other")
    scan = str(uuid.uuid4())
    with conversions(SITE_CACHE_SECONDS=3600, **NO_TASKS):
        first = track(Conversion(event_name="purchase", order_id="1", scan_session_id=scan))
        assert [e.site_id for e in first] == [other.pk]
        # when: the filter is widened
        site.event_names = ""
        site.save()
        # then: both sites take the next purchase, and a subset still limits the sites
        second = track(Conversion(event_name="purchase", order_id="2", scan_session_id=scan))
        assert sorted(e.site_id for e in second) == sorted([site.pk, other.pk])
        third = track(
            Conversion(event_name="purchase", order_id="3", scan_session_id=scan), sites=[site.pk]
        )
        assert [e.site_id for e in third] == [site.pk]


@pytest.mark.django_db(transaction=True)
def test_a_changed_provider_minimises_at_once_despite_the_cache(make_site):
    site = make_site("scanova")
    customer = Customer(email="buyer@example.com")
    scan = str(uuid.uuid4())
    with conversions(SITE_CACHE_SECONDS=3600, **NO_TASKS):
        [first] = track(
            Conversion(event_name="purchase", order_id="1", scan_session_id=scan, customer=customer)
        )
        assert "email" not in first.snapshot["customer"]  # Scanova keeps the hash only
        # when: the site is switched to a provider that takes the raw email
        site.provider = "vtmarketing"
        site.save()
        [second] = track(
            Conversion(
                event_name="purchase",
                order_id="2",
                consent="granted",
                customer=customer,
                value=Decimal("10.00"),  # VTmarketing takes no order without a total
                currency="EUR",
            )
        )
    # then: the new provider's minimisation applies to the next event
    assert second.snapshot["customer"] == {"email": "buyer@example.com"}


@pytest.mark.django_db(transaction=True)
def test_sites_taking_many_event_names_stay_right_and_keep_a_bounded_memo(make_site):
    from django_conversions import sites

    only_e1 = make_site("scanova", event_names="e1")
    every = make_site("scanova", name="every")
    with conversions(SITE_CACHE_SECONDS=3600):
        names = [f"e{n}" for n in range(sites.TAKING_NAMES_MAX + 20)]
        for name in names + names:  # the second round reads the memo where it kept the name
            expected = [only_e1, every] if name == "e1" else [every]
            assert sorted(sites.sites_taking("default", name), key=lambda s: s.pk) == expected
        assert len(sites._cache["default"].taking) == sites.TAKING_NAMES_MAX


@pytest.mark.skipif(ON_POSTGRES, reason="SQLite's bound-variable limit")
@pytest.mark.django_db(transaction=True)
def test_many_sites_fit_sqlites_variable_limit(make_site):
    # given: SQLite's default limit of 999 bound variables, and more sites than one INSERT of
    # every field can hold under it
    connection.ensure_connection()
    connection.connection.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)
    sites = [make_site("scanova", name=f"site {n}") for n in range(70)]
    # when
    with conversions(**NO_TASKS):
        events = track(scanned_purchase("MANY-1", "5"))
    # then: every site has its event, and each returned event is its row
    assert sorted(e.site_id for e in events) == [s.pk for s in sites]
    stored = dict(ConversionEvent.objects.values_list("pk", "event_id"))
    assert {e.pk: e.event_id for e in events} == stored


@pytest.mark.django_db(transaction=True)
def test_events_know_their_keys_where_the_insert_returns_no_rows(
    scanova_site, vt_site, monkeypatch
):
    # given: a database whose multi-row INSERT returns nothing (as MySQL's)
    monkeypatch.setattr(type(connection.features), "can_return_rows_from_bulk_insert", False)
    # when
    with conversions(**NO_TASKS):
        events = track(scanned_purchase("NORET-1", "5"))
    # then: each returned event carries its row's key
    assert all(e.pk is not None for e in events)
    for event in events:
        assert ConversionEvent.objects.get(pk=event.pk).event_id == event.event_id


@pytest.mark.django_db(transaction=True)
def test_a_save_that_is_not_the_conversion_adds_no_query(scanova_site, django_assert_num_queries):
    with conversions(**NO_TASKS):
        order = paid_order(status="new")
        order.city = "Cluj"
        with django_assert_num_queries(1):  # the host's UPDATE alone
            order.save()
    assert ConversionEvent.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_without_an_active_site_a_paid_order_is_not_even_read(make_site, django_assert_num_queries):
    make_site("scanova", is_active=False)
    with conversions(**NO_TASKS):
        order = paid_order(status="new")
        order.status = "paid"
        with django_assert_num_queries(1):  # the host's UPDATE alone: no lines read
            order.save()
    assert ConversionEvent.objects.count() == 0


class QuotingAdapter(OrderAdapter):
    """Fails with a message quoting order data a text column can't hold as it is."""

    def to_conversion(self, order):
        raise ValueError("email: 'a\x00b\ud800@example.com' is not an email")


@pytest.mark.django_db(transaction=True)
def test_a_failure_quoting_unstorable_text_is_still_stored_with_its_reason(scanova_site):
    with conversions(ORDER_ADAPTER="tests.test_outbox.QuotingAdapter", **NO_TASKS):
        paid_order()
    failed = ConversionEvent.objects.get()
    assert failed.status == EventStatus.FAILED
    assert failed.last_error.endswith("email: 'ab\\ud800@example.com' is not an email")


@pytest.mark.django_db(transaction=True)
def test_a_failing_event_queued_receiver_does_not_stop_delivery(scanova_site, mocked_http):
    mocked_http.post("https://track.example.test/server-events", json={"success": True})

    def broken(sender, events, **kwargs):
        raise RuntimeError("the host's receiver is broken")

    event_queued.connect(broken)
    try:
        with conversions(TASK_BACKEND="default"):
            paid_order()
            assert background.wait_idle(timeout=30)  # where BACKGROUND_DELIVERY is on
    finally:
        event_queued.disconnect(broken)
    assert ConversionEvent.objects.get().status == EventStatus.DELIVERED
