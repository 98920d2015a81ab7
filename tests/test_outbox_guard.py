"""The outbox write never poisons the host's transaction, with or without a savepoint.

On PostgreSQL the write runs in a savepoint; on SQLite, where a failed statement leaves the
transaction usable, the stock adapter's save runs without one (see ``outbox.guarded``). These
tests hold on both databases.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.db import OperationalError, connection, transaction
from django.db.transaction import TransactionManagementError
from django.test.utils import CaptureQueriesContext

from django_conversions import Conversion, bulk, outbox, track
from django_conversions.adapters import OrderAdapter
from django_conversions.models import ConversionEvent
from django_conversions.providers.scanova import ScanovaProvider
from tests.conftest import ON_POSTGRES
from tests.test_outbox import NO_TASKS, conversions, paid_order, scanned_purchase
from tests.testapp.models import Order


def savepoints(queries: CaptureQueriesContext) -> list[str]:
    return [q["sql"] for q in queries.captured_queries if "SAVEPOINT" in q["sql"].upper()]


@pytest.mark.django_db(transaction=True)
def test_the_stock_adapter_needs_a_savepoint_only_where_a_failed_statement_aborts(
    scanova_site, vt_site
):
    with conversions(**NO_TASKS), transaction.atomic():
        order = paid_order(status="new")
        order.status = "paid"
        with CaptureQueriesContext(connection) as queries:
            order.save()
    assert ConversionEvent.objects.count() == 2
    assert bool(savepoints(queries)) == ON_POSTGRES


class ReadingAdapter(OrderAdapter):
    """A host's adapter: its code might write, so it always runs in a savepoint."""


@pytest.mark.django_db(transaction=True)
def test_a_host_adapter_runs_in_a_savepoint(scanova_site):
    adapter = "tests.test_outbox_guard.ReadingAdapter"
    with conversions(ORDER_ADAPTER=adapter, **NO_TASKS), transaction.atomic():
        order = paid_order(status="new")
        order.status = "paid"
        with CaptureQueriesContext(connection) as queries:
            order.save()
    assert savepoints(queries)


class WriteThenFailAdapter(OrderAdapter):
    """Writes a row, then a write that fails through the ORM (which flags the transaction)."""

    def to_conversion(self, order: Any) -> Conversion:
        Order.objects.create(number=f"side-{order.number}")
        Order.objects.create(number=order.number)  # unique: fails
        raise AssertionError("unreachable")


@pytest.mark.django_db(transaction=True)
def test_a_host_adapter_failing_in_a_write_leaves_the_host_transaction_usable(scanova_site):
    adapter = "tests.test_outbox_guard.WriteThenFailAdapter"
    with conversions(ORDER_ADAPTER=adapter, **NO_TASKS), transaction.atomic():
        paid_order(number="1")
        paid_order(number="2")  # the host goes on in its transaction
    # then: the host's rows committed, and the adapter's write was undone
    assert sorted(Order.objects.values_list("number", flat=True)) == ["1", "2"]


class WriteThenFailProvider(ScanovaProvider):
    """A host's provider whose check writes on the checkout, and fails doing so."""

    id = "writes"
    name = "Writes while minimising"

    def minimize(self, conversion: Conversion) -> Conversion:
        Order.objects.create(number=f"side-{conversion.order_id}")
        Order.objects.create(number=conversion.order_id)  # the order's own number: fails
        raise AssertionError("unreachable")


@pytest.mark.django_db(transaction=True)
def test_a_host_provider_failing_in_a_write_leaves_the_host_transaction_usable(make_site):
    provider = "tests.test_outbox_guard.WriteThenFailProvider"
    with conversions(PROVIDERS=[provider], **NO_TASKS):
        make_site("writes", provider_site_id="site_abc123")
        with transaction.atomic():
            paid_order(number="1")
            paid_order(number="2")  # the host goes on in its transaction
    # then: the host's rows committed, and the provider's write was undone
    assert sorted(Order.objects.values_list("number", flat=True)) == ["1", "2"]
    assert ConversionEvent.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_a_save_whose_insert_clashes_returns_the_events_already_there(scanova_site):
    conversion = scanned_purchase("RACE-0", "3")
    with conversions(**NO_TASKS):
        [first] = track(conversion)
        # when: the same conversion again, in the host's transaction
        with transaction.atomic():
            [again] = track(conversion)
            Order.objects.create(number="after the clash")  # the transaction is still usable
    # then: the insert skipped the clashing row and the event already there came back
    assert again.pk == first.pk and again.event_id == first.event_id
    assert ConversionEvent.objects.count() == 1
    assert Order.objects.filter(number="after the clash").exists()


@pytest.mark.django_db(transaction=True)
def test_a_save_that_loses_the_race_returns_the_winners_events(scanova_site, monkeypatch):
    # given: a database whose insert can't skip clashing rows, so the outbox looks first
    monkeypatch.setattr(bulk, "skips_conflicts", lambda using: False)
    conversion = scanned_purchase("RACE-1", "3")
    with conversions(**NO_TASKS):
        [winner] = track(conversion)
        # and: a save that looked before the other one's row was visible
        lookups = []
        real_lookup = outbox._existing_events

        def late_lookup(*args: Any) -> Any:
            lookups.append(args)
            return {} if len(lookups) == 1 else real_lookup(*args)

        monkeypatch.setattr(outbox, "_existing_events", late_lookup)
        with transaction.atomic():
            [event] = track(conversion)
            Order.objects.create(number="after the race")  # the transaction is still usable
    # then: its insert clashed on the unique key, and the retry found the winner's event
    assert len(lookups) == 2
    assert event.pk == winner.pk and event.event_id == winner.event_id
    assert ConversionEvent.objects.count() == 1
    assert Order.objects.filter(number="after the race").exists()


@pytest.mark.django_db(transaction=True)
def test_a_transaction_the_database_gave_up_is_not_committed_piecemeal(scanova_site, monkeypatch):
    def insert_losing_the_transaction(*args: Any, **kwargs: Any) -> Any:
        # What SQLite does on a full disk or an I/O error: the whole transaction is gone.
        with connection.cursor() as cursor:
            cursor.execute("ROLLBACK")
        raise OperationalError("database or disk is full")

    monkeypatch.setattr(bulk, "insert", insert_losing_the_transaction)
    with (
        conversions(**NO_TASKS),
        pytest.raises(TransactionManagementError),
        transaction.atomic(),
    ):
        paid_order(number="1")  # the save itself does not raise
        paid_order(number="2")  # but the block can't go on as if nothing happened
    assert Order.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_rebuilding_failed_rows_and_adding_new_ones_is_all_or_none(
    scanova_site, make_site, monkeypatch
):
    # given: a malformed order (the stock adapter can't build it): one failed row per site
    with conversions(**NO_TASKS):
        order = paid_order(email="not an email")
    assert ConversionEvent.objects.filter(status="failed").count() == 1
    make_site("scanova", name="second")  # a site without a row for the order yet

    def failing_insert(*args: Any, **kwargs: Any) -> Any:
        raise OperationalError("database is locked")

    # when: the fixed order is saved, and the insert of the new site's row fails
    monkeypatch.setattr(bulk, "insert", failing_insert)
    with conversions(**NO_TASKS), transaction.atomic():
        order.email = "buyer@example.com"
        order.save()
        Order.objects.create(number="next")  # the host's transaction is still usable
    # then: the failed row was not rebuilt either, and the host's work committed
    assert list(ConversionEvent.objects.values_list("status", flat=True)) == ["failed"]
    assert Order.objects.filter(number="next").exists()
