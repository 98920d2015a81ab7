"""Reconciliation: a committed paid order whose outbox write was lost is recorded by the sweep,
exactly once, and nothing else is."""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from django_conversions import Conversion, Customer, outbox, reconciliation, track
from django_conversions.adapters import OrderAdapter
from django_conversions.models import ConversionEvent, EventStatus, TrackingSite
from django_conversions.tasks import background
from tests.conftest import ON_POSTGRES
from tests.test_outbox import NO_TASKS, conversions, paid_order
from tests.test_outbox_guard import refused_event_inserts, sqlite_pages_capped
from tests.testapp.models import Order

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _pages_from_the_oldest() -> None:
    # Each test's orders are new rows: where an earlier test's call left off says nothing.
    reconciliation.restart_pages()


def lost_order(number: str, **fields: Any) -> Order:
    """A paid order committed in autocommit mode while every outbox write failed."""
    with refused_event_inserts():
        order = paid_order(number, **fields)
    assert not ConversionEvent.objects.filter(source_object_id=str(order.pk)).exists()
    return order


def age(*objects: Order | TrackingSite, days: float) -> None:
    for obj in objects:
        type(obj).objects.filter(pk=obj.pk).update(created_at=timezone.now() - timedelta(days=days))


def test_a_lost_conversion_is_recorded_once_by_reconciliation(scanova_site, vt_site):
    with conversions(**NO_TASKS):
        # given: the order committed, its outbox write failed
        order = lost_order("1001")
        # when
        recorded = outbox.reconcile()
        again = outbox.reconcile()
    # then: one event per site, as the save would have written them, and none the second time
    assert (recorded, again) == (1, 0)
    events = ConversionEvent.objects.filter(source_object_id=str(order.pk))
    assert sorted(e.site_id for e in events) == sorted([scanova_site.pk, vt_site.pk])
    assert {(e.status, e.dedup_key) for e in events} == {
        (EventStatus.PENDING, "purchase:order:1001")
    }


def test_a_reconciled_conversion_is_delivered_after_its_commit(scanova_site, mocked_http):
    mocked_http.post("https://track.example.test/server-events", json={"success": True})
    with conversions():
        lost_order("1002")
        assert outbox.reconcile() == 1
        assert background.wait_idle(timeout=30)  # where BACKGROUND_DELIVERY is on
    assert ConversionEvent.objects.get().status == EventStatus.DELIVERED


def test_orders_that_have_their_events_are_left_alone(scanova_site):
    with conversions(**NO_TASKS):
        order = paid_order("1003")
        [event] = ConversionEvent.objects.all()
        assert outbox.reconcile() == 0
    assert list(ConversionEvent.objects.values_list("pk", "source_object_id")) == [
        (event.pk, str(order.pk))
    ]


def test_an_order_that_is_not_paid_is_ignored(scanova_site):
    with conversions(**NO_TASKS):
        lost_order("1004", status="new")
        assert outbox.reconcile() == 0
    assert ConversionEvent.objects.count() == 0


def test_an_order_outside_the_window_is_ignored(scanova_site):
    with conversions(SITE_CACHE_SECONDS=0, **NO_TASKS):
        # given: a site from long ago, and an order lost four days ago
        age(scanova_site, days=30)
        order = lost_order("1005")
        age(order, days=4)
        # when / then: the default window (RECONCILE_WINDOW, 3 days) leaves it alone
        assert outbox.reconcile() == 0
        assert outbox.reconcile(window=timedelta(days=2)) == 0
        with conversions(RECONCILE_WINDOW=5 * 24 * 3600, SITE_CACHE_SECONDS=0, **NO_TASKS):
            assert outbox.reconcile() == 1
    assert ConversionEvent.objects.get().source_object_id == str(order.pk)


def test_an_order_from_before_the_first_active_site_is_ignored(scanova_site):
    with conversions(SITE_CACHE_SECONDS=0, **NO_TASKS):
        # given: an order paid an hour before the shop added its first site
        order = lost_order("1006")
        age(order, days=1 / 24)
        # when / then: adding a site does not send the shop's past orders
        assert outbox.reconcile() == 0
        age(scanova_site, days=1)
        assert outbox.reconcile() == 1


def test_each_call_records_at_most_its_limit(scanova_site):
    with conversions(**NO_TASKS):
        orders = [lost_order(f"20{n}") for n in range(3)]
        assert [outbox.reconcile(limit=2) for _ in range(3)] == [2, 1, 0]
    assert sorted(ConversionEvent.objects.values_list("source_object_id", flat=True)) == sorted(
        str(o.pk) for o in orders
    )


def test_a_conversion_recorded_without_its_order_is_linked_not_recorded_again(scanova_site):
    with conversions(**NO_TASKS):
        # given: the order's save lost its write, and the conversion came in through track()
        order = lost_order("1007")
        [event] = track(
            Conversion(
                event_name="purchase",
                order_id="1007",
                value=Decimal("99.99"),
                currency="USD",
                scan_session_id=str(uuid.uuid4()),
                customer=Customer(email="buyer@example.com"),
            )
        )
        # when
        recorded = outbox.reconcile()
    # then: no second event; the one there now names its order, so it is not looked at again
    assert recorded == 0
    stored = ConversionEvent.objects.get()
    assert stored.pk == event.pk and stored.source == order


class ListingAdapter(OrderAdapter):
    """An adapter whose orders to check are a plain list, not a queryset."""

    def conversions_since(self, since: Any) -> list[Order]:
        return [o for o in Order.objects.order_by("pk") if o.status == "paid"]


def test_an_adapter_may_list_its_orders_without_a_queryset(scanova_site):
    adapter = "tests.test_reconcile.ListingAdapter"
    with conversions(ORDER_ADAPTER=adapter, **NO_TASKS):
        paid_order("1008")  # recorded on its save
        lost = lost_order("1009")
        assert (outbox.reconcile(limit=1), outbox.reconcile()) == (1, 0)
    assert ConversionEvent.objects.filter(source_object_id=str(lost.pk)).count() == 1
    assert ConversionEvent.objects.count() == 2


def test_no_active_site_means_nothing_to_reconcile(scanova_site):
    with conversions(SITE_CACHE_SECONDS=0, **NO_TASKS):
        lost_order("1010")
        TrackingSite.objects.update(is_active=False)
        assert outbox.reconcile() == 0
    assert ConversionEvent.objects.count() == 0


@pytest.mark.skipif(ON_POSTGRES, reason="SQLite's own full-disk behaviour")
def test_an_order_saved_on_a_full_disk_is_recorded_once_there_is_room(scanova_site):
    adapter = "tests.test_outbox_guard.BigPropertiesAdapter"
    with conversions(ORDER_ADAPTER=adapter, **NO_TASKS):
        with sqlite_pages_capped() as cap_pages:
            # given: an autocommit save whose outbox write finds the disk full
            order = paid_order(number="1011", status="new")
            cap_pages()
            order.status = "paid"
            order.save()
            assert ConversionEvent.objects.count() == 0
        # when: there is room again
        assert outbox.reconcile() == 1
        assert outbox.reconcile() == 0
    assert ConversionEvent.objects.get().source_object_id == str(order.pk)


def test_each_call_reads_the_newest_orders_and_the_next_page_of_the_older_ones(scanova_site):
    # given: a window of 23 orders, two of them lost; with limit=1 a call examines the 10
    # newest and a page of 10 older ones
    assert reconciliation.SCAN_PER_RECORDED == 10
    with conversions(**NO_TASKS):
        oldest_lost = lost_order("3000")
        for n in range(1, 12):
            paid_order(f"30{n:02}")
        middle_lost = lost_order("3012")
        for n in range(13, 23):
            paid_order(f"30{n:02}")
        # when / then: the first call's older page (the 10 oldest) holds one lost order
        assert outbox.reconcile(limit=1) == 1
        assert recorded_orders() == {oldest_lost.pk}
        # the second call's page is the next 10, with the other one
        assert outbox.reconcile(limit=1) == 1
        assert recorded_orders() == {oldest_lost.pk, middle_lost.pk}
        # then the pages start again from the oldest: nothing left
        assert [outbox.reconcile(limit=1) for _ in range(3)] == [0, 0, 0]
        # and a loss among the newest is found by the very next call
        newest_lost = lost_order("3099")
        assert outbox.reconcile(limit=1) == 1
    assert recorded_orders() == {oldest_lost.pk, middle_lost.pk, newest_lost.pk}


def recorded_orders() -> set[int]:
    """The orders recorded by reconciliation (the others were recorded on their save)."""
    lost = Order.objects.filter(number__in=["3000", "3012", "3099"])
    return {
        int(pk)
        for pk in ConversionEvent.objects.filter(
            source_object_id__in=[str(o.pk) for o in lost]
        ).values_list("source_object_id", flat=True)
    }


@pytest.mark.postgres
def test_the_search_probes_the_source_index_and_reads_bounded_ranges(scanova_site):
    # given: 20,000 paid orders in the window, each with its event but three
    now = timezone.now()
    orders = Order.objects.bulk_create(
        Order(number=f"V{n}", status="paid", created_at=now) for n in range(20_000)
    )
    order_type = ContentType.objects.get_for_model(Order)
    ConversionEvent.objects.bulk_create(
        ConversionEvent(
            site=scanova_site,
            event_name="purchase",
            dedup_key=f"purchase:order:{o.number}",
            source_content_type=order_type,
            source_object_id=str(o.pk),
        )
        for n, o in enumerate(orders)
        if n not in (0, 10_000, 19_999)
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    # when
    with conversions(**NO_TASKS), CaptureQueriesContext(connection) as queries:
        recorded = outbox.reconcile(limit=50)
    # then: every search is an index read of a bounded key range, probing the source index
    searches = [q["sql"] for q in queries.captured_queries if 'FROM "testapp_order"' in q["sql"]]
    assert searches
    for sql in searches:
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN " + sql)
            plan = "\n".join(row[0] for row in cursor.fetchall())
        assert "Seq Scan" not in plan, plan
        if "NOT EXISTS" in sql:
            assert "conversions_event_source" in plan, plan
    # and with limit=50 the call read the 500 newest and the 500 oldest: two of the three
    assert recorded == 2
    found = set(ConversionEvent.objects.values_list("source_object_id", flat=True))
    assert {str(orders[0].pk), str(orders[-1].pk)} <= found
    assert str(orders[10_000].pk) not in found


class BrokenListingAdapter(OrderAdapter):
    def conversions_since(self, since: Any) -> list[Order]:
        raise LookupError("the shop's own query failed")


def test_a_broken_conversions_since_is_logged_and_records_nothing(scanova_site, caplog):
    with conversions(ORDER_ADAPTER="tests.test_reconcile.BrokenListingAdapter", **NO_TASKS):
        lost_order("4000")
        assert outbox.reconcile() == 0
    assert "Could not look for lost conversions" in caplog.text
    assert "LookupError" in caplog.text
