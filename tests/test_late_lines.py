"""Orders whose lines are written after the order's save, in the same transaction, are sent
with their lines: delivery rebuilds the events from the committed order (the delivery started
after commit, the sweep, or the worker about to send one), never the request that saved the
order. Real transactions (``transaction=True``), on SQLite and, in the PostgreSQL pass, on
PostgreSQL."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection, transaction
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from django_conversions.delivery import deliver_due, deliver_events
from django_conversions.models import ConversionEvent, EventStatus
from django_conversions.refresh import mark_for_rebuild, refresh_marked
from django_conversions.sweep import sweep
from django_conversions.tasks import background
from tests.testapp.models import Order, OrderItem

SCAN = "550e8400-e29b-41d4-a716-446655440000"
SCANOVA_URL = "https://track.example.test/server-events"
CONTROL = {"BEGIN", "COMMIT", "SAVEPOINT", "RELEASE"}

pytestmark = pytest.mark.django_db(transaction=True)


def paid_then_lines() -> Order:
    """A checkout that takes payment first: the order is saved paid, then its lines."""
    with transaction.atomic():
        order = Order.objects.create(
            number="L-1", status="paid", total=Decimal("30"), scan_session_id=SCAN
        )
        OrderItem.objects.create(order=order, sku="sku-1", quantity=2, price=Decimal("10"))
        OrderItem.objects.create(order=order, sku="sku-2", quantity=1, price=Decimal("10"))
    return order


def sent_products(mocked_http) -> list[str]:
    [call] = [c for c in mocked_http.calls if c.request.url == SCANOVA_URL]
    return json.loads(call.request.body)["properties"]["product_ids"]


def test_lines_written_after_the_paid_save_are_sent(scanova_site, mocked_http):
    # given
    mocked_http.post(SCANOVA_URL, json={"success": True})
    # when: delivery starts after commit (inline in the test settings)
    paid_then_lines()
    # then
    event = ConversionEvent.objects.get()
    assert event.status == EventStatus.DELIVERED
    assert sent_products(mocked_http) == ["sku-1", "sku-2"]
    assert not event.rebuild_before_send


def test_the_request_reads_nothing_after_commit_and_the_sweep_rebuilds_the_event(
    scanova_site, mocked_http
):
    # given: no delivery after commit
    mocked_http.post(SCANOVA_URL, json={"success": True})
    with override_settings(CONVERSIONS={**_settings(), "TASK_BACKEND": None}):
        # when: the checkout commits
        with CaptureQueriesContext(connection) as queries:
            paid_then_lines()
        # then: its last statement, transaction control aside, was its own (the second line);
        # the event waits, marked
        statements = [
            q["sql"] for q in queries.captured_queries if q["sql"].split()[0] not in CONTROL
        ]
        assert statements[-1].startswith('INSERT INTO "testapp_orderitem"'), statements[-1]
        stale = ConversionEvent.objects.get()
        assert stale.rebuild_before_send and "items" not in stale.snapshot
        # when: the sweep runs
        _, report = sweep()
    # then: it rebuilt the event from the committed order, then sent it with its lines
    assert report.delivered == 1
    assert sent_products(mocked_http) == ["sku-1", "sku-2"]
    event = ConversionEvent.objects.get()
    assert (event.status, event.rebuild_before_send) == (EventStatus.DELIVERED, False)


def test_the_event_is_written_in_the_orders_transaction(scanova_site):
    # given: a rolled-back checkout
    with pytest.raises(RuntimeError), transaction.atomic():
        order = Order.objects.create(number="R-1", status="paid", scan_session_id=SCAN)
        OrderItem.objects.create(order=order, sku="sku-1")
        assert ConversionEvent.objects.filter(rebuild_before_send=True).count() == 1
        raise RuntimeError("payment declined")
    # then
    assert not ConversionEvent.objects.exists()


def test_a_worker_sending_a_marked_event_rebuilds_it_first(scanova_site, mocked_http):
    # given: the event still marked (the process ended before its delivery ran)
    mocked_http.post(SCANOVA_URL, json={"success": True})
    with override_settings(CONVERSIONS={**_settings(), "TASK_BACKEND": None}):
        paid_then_lines()
        stale = ConversionEvent.objects.get()
        assert stale.rebuild_before_send and "items" not in stale.snapshot
        # when: a worker sends what is due, without the sweep's rebuild first
        report = deliver_due()
    # then
    assert report.delivered == 1
    assert sent_products(mocked_http) == ["sku-1", "sku-2"]
    event = ConversionEvent.objects.get()
    assert not event.rebuild_before_send


def test_an_order_saved_in_autocommit_is_not_marked(scanova_site, mocked_http):
    # given
    mocked_http.post(SCANOVA_URL, json={"success": True})
    order = Order.objects.create(number="A-1", status="new", scan_session_id=SCAN)
    OrderItem.objects.create(order=order, sku="sku-1")
    # when
    order.status = "paid"
    order.save()
    # then
    event = ConversionEvent.objects.get()
    assert not event.rebuild_before_send
    assert sent_products(mocked_http) == ["sku-1"]


@pytest.mark.parametrize("path", ["inline", "background thread", "database worker"])
def test_a_skipped_event_the_rest_of_its_transaction_makes_eligible_is_sent_after_commit(
    scanova_site, mocked_http, path
):
    # given: delivery after commit by each path the outbox hands events to
    mocked_http.post(SCANOVA_URL, json={"success": True})
    paths = {
        "inline": {},
        "background thread": {"CONVERSIONS": {**_settings(), "BACKGROUND_DELIVERY": True}},
        "database worker": {"TASKS": {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}},
    }
    with override_settings(**paths[path]):
        # when: an order is saved paid before it has its scan id (Scanova skips it), and
        # gets the scan id later in the same transaction (no save: nothing records it again)
        with transaction.atomic():
            order = Order.objects.create(number="S-1", status="paid", total=Decimal("30"))
            OrderItem.objects.create(order=order, sku="sku-1", quantity=1, price=Decimal("30"))
            assert ConversionEvent.objects.get().status == EventStatus.SKIPPED
            Order.objects.filter(pk=order.pk).update(scan_session_id=SCAN)
        if path == "background thread":
            assert background.wait_idle(timeout=30)
        elif path == "database worker":
            call_command("db_worker", "--batch", "--no-startup-delay", verbosity=0)
    # then: the delivery started after commit rebuilt it first (the sender never takes a
    # skipped event), and sent it without waiting for the sweep
    event = ConversionEvent.objects.get()
    assert (event.status, event.rebuild_before_send) == (EventStatus.DELIVERED, False)
    assert sent_products(mocked_http) == ["sku-1"]


def test_delivery_after_an_autocommit_save_looks_up_no_marks(scanova_site, mocked_http):
    # given: an order saved paid outside a transaction: its event is not marked
    mocked_http.post(SCANOVA_URL, json={"success": True})
    order = Order.objects.create(number="A-2", status="new", scan_session_id=SCAN)
    OrderItem.objects.create(order=order, sku="sku-1")
    # when: it is paid, and delivered after commit (inline in the test settings)
    order.status = "paid"
    with CaptureQueriesContext(connection) as queries:
        order.save()
    # then: sent, and delivery did not look for marked events (the outbox said there were none)
    assert ConversionEvent.objects.get().status == EventStatus.DELIVERED
    lookups = [q["sql"] for q in queries.captured_queries if _is_mark_lookup(q["sql"])]
    assert lookups == []
    # and: delivery asked to look them up (no list from the caller) does
    event = ConversionEvent.objects.get()
    with CaptureQueriesContext(connection) as queries:
        deliver_events([event.pk])
    assert [q for q in queries.captured_queries if _is_mark_lookup(q["sql"])]


def _is_mark_lookup(sql: str) -> bool:
    """``refresh_marked()``'s read: the orders of marked events."""
    return sql.startswith("SELECT DISTINCT") and '"rebuild_before_send"' in sql


def test_the_worker_fails_an_event_whose_order_can_no_longer_be_built(scanova_site, mocked_http):
    # given: marked, and the order broken before the worker got to it
    with override_settings(CONVERSIONS={**_settings(), "TASK_BACKEND": None}):
        order = paid_then_lines()
        Order.objects.filter(pk=order.pk).update(currency="XXQ")
        # when: the sweep can't rebuild it either
        sweep()
    # then: not sent stale; failed with the reason
    event = ConversionEvent.objects.get()
    assert event.status == EventStatus.FAILED
    assert "Could not build the conversion" in event.last_error
    assert not [c for c in mocked_http.calls if c.request.url == SCANOVA_URL]


def test_a_paused_sites_unbuildable_orders_never_hold_back_the_sweeps_rebuilds(
    scanova_site, make_site, mocked_http
):
    # given: three orders whose events wait on a paused site, marked, and can't be rebuilt
    mocked_http.post(SCANOVA_URL, json={"success": True})
    with override_settings(CONVERSIONS={**_settings(), "TASK_BACKEND": None}):
        scanova_site.is_active = False
        scanova_site.save()
        paused = make_site("scanova", name="paused site")
        for n in range(3):
            with transaction.atomic():
                Order.objects.create(number=f"B-{n}", status="paid", scan_session_id=SCAN)
        paused.pause("maintenance")
        scanova_site.is_active = True
        scanova_site.save()
        # and: one on the active site, waiting for its retry
        with transaction.atomic():
            Order.objects.create(number="B-retry", status="paid", scan_session_id=SCAN)
        ConversionEvent.objects.filter(site=scanova_site).update(
            next_attempt_at=timezone.now() + timedelta(hours=1)
        )
        Order.objects.filter(number__startswith="B-").update(currency="XXQ")
        # and: a later order skipped for want of a scan, then attributed to one
        order = Order.objects.create(number="L-9", status="paid", total=Decimal("5"))
        skipped = ConversionEvent.objects.get(site=scanova_site, source_object_id=str(order.pk))
        assert skipped.status == EventStatus.SKIPPED
        Order.objects.filter(pk=order.pk).update(scan_session_id=SCAN)
        mark_for_rebuild(order)
        # when: one rebuild call with room for one order
        assert refresh_marked(limit=1) == 1
        # then: that order was the attributed one, not a paused site's
        rebuilt = ConversionEvent.objects.get(pk=skipped.pk)
        assert (rebuilt.status, rebuilt.rebuild_before_send) == (EventStatus.PENDING, False)
        waiting = ConversionEvent.objects.filter(
            site__in=[paused, scanova_site],
            source_object_id__in=[
                str(pk)
                for pk in Order.objects.filter(number__startswith="B-").values_list("pk", flat=True)
            ],
        )
        assert waiting.count() == 5  # B-0 to B-2 on the paused site, B-retry on both sites
        assert all(e.rebuild_before_send for e in waiting)
        # when: the sweep runs
        _, report = sweep()
    # then: the attributed order went out
    assert report.delivered == 1
    assert ConversionEvent.objects.get(pk=skipped.pk).status == EventStatus.DELIVERED


def _settings() -> dict:
    return dict(settings.CONVERSIONS)
