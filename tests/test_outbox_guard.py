"""The outbox write never poisons the host's transaction, whatever fails in it.

Faults are provoked on the real database: on PostgreSQL a trigger refuses the event INSERT with
a server error (which aborts the transaction it runs in, as a full disk does); on SQLite a
statement that fails, and a database that really runs out of pages.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.db import OperationalError, connection, connections, transaction
from django.db.transaction import TransactionManagementError

from django_conversions import Conversion, track
from django_conversions.adapters import OrderAdapter
from django_conversions.models import ConversionEvent, EventStatus, TrackingSite
from django_conversions.providers.scanova import ScanovaProvider
from tests.conftest import ON_POSTGRES
from tests.test_outbox import NO_TASKS, conversions, paid_order, scanned_purchase
from tests.testapp.models import Order

EVENTS_TABLE = ConversionEvent._meta.db_table


@contextmanager
def refused_event_inserts() -> Iterator[None]:
    """Every INSERT into the events table fails, as on a full disk.

    PostgreSQL: a trigger raises SQLSTATE 53100 (disk_full) in the server, which aborts the
    transaction the INSERT runs in. SQLite undoes only a failed statement, so there the
    statement fails as SQLite reports a full disk.
    """
    if ON_POSTGRES:
        with connection.cursor() as cursor:
            cursor.execute(
                "CREATE OR REPLACE FUNCTION conversions_test_refuse() RETURNS trigger AS $$ "
                "BEGIN RAISE EXCEPTION 'could not extend file' USING ERRCODE = '53100'; END "
                "$$ LANGUAGE plpgsql"
            )
            cursor.execute(
                f"CREATE TRIGGER conversions_test_refuse BEFORE INSERT ON {EVENTS_TABLE} "
                "FOR EACH ROW EXECUTE FUNCTION conversions_test_refuse()"
            )
        try:
            yield
        finally:
            with connection.cursor() as cursor:
                cursor.execute(f"DROP TRIGGER conversions_test_refuse ON {EVENTS_TABLE}")
        return

    def refuse(execute: Callable[..., Any], sql: str, *args: Any) -> Any:
        if sql.lstrip().upper().startswith("INSERT") and EVENTS_TABLE in sql:
            raise OperationalError("database or disk is full")
        return execute(sql, *args)

    with connection.execute_wrapper(refuse):
        yield


@pytest.mark.django_db(transaction=True)
def test_a_failed_outbox_write_leaves_the_host_transaction_usable(scanova_site, caplog):
    # given: the event INSERT fails inside the host's own transaction
    with conversions(**NO_TASKS), refused_event_inserts(), transaction.atomic():
        paid_order(number="1")  # the save succeeds
        paid_order(number="2")  # and the host goes on in its transaction
    # then: the host's orders committed, without events, and the failure was logged
    assert sorted(Order.objects.values_list("number", flat=True)) == ["1", "2"]
    assert ConversionEvent.objects.count() == 0
    assert "Could not record the conversion" in caplog.text


@pytest.mark.django_db(transaction=True)
def test_a_failed_outbox_write_raises_from_track_and_leaves_the_transaction_usable(scanova_site):
    with conversions(**NO_TASKS), transaction.atomic():
        with refused_event_inserts(), pytest.raises(OperationalError):
            track(scanned_purchase("T-1", "5"))
        Order.objects.create(number="after the failure")
    assert Order.objects.filter(number="after the failure").exists()


class QueryingAdapter(OrderAdapter):
    """A host's adapter whose should_track() runs a query that fails."""

    def should_track(self, order: Any, *, created: bool) -> bool:
        list(Order.objects.raw("SELECT * FROM conversions_no_such_table"))
        raise AssertionError("unreachable")


@pytest.mark.django_db(transaction=True)
def test_a_failing_query_in_should_track_leaves_the_host_transaction_usable(scanova_site):
    adapter = "tests.test_outbox_guard.QueryingAdapter"
    with conversions(ORDER_ADAPTER=adapter, **NO_TASKS), transaction.atomic():
        paid_order(number="1")
        paid_order(number="2")
    assert sorted(Order.objects.values_list("number", flat=True)) == ["1", "2"]


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
        Order.objects.create(number=str(conversion.order_id))  # the order's own number: fails
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
def test_a_repeated_conversion_returns_the_events_already_there(scanova_site):
    conversion = scanned_purchase("RACE-0", "3")
    with conversions(**NO_TASKS):
        [first] = track(conversion)
        # when: the same conversion again, in the host's transaction
        with transaction.atomic():
            [again] = track(conversion)
            Order.objects.create(number="after")  # the transaction is still usable
    # then: the event already there came back
    assert again.pk == first.pk and again.event_id == first.event_id
    assert ConversionEvent.objects.count() == 1
    assert Order.objects.filter(number="after").exists()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_concurrent_save_of_the_same_conversion_gets_the_winners_events(scanova_site, caplog):
    """Two transactions record the same order: the second one's INSERT waits on the unique
    (site, dedup_key) index until the first commits, clashes, and reads the winner's events."""
    caplog.set_level(logging.INFO, logger="django_conversions")
    conversion = scanned_purchase("RACE-1", "3")
    first_inserted, may_commit = threading.Event(), threading.Event()
    results: dict[str, Any] = {}

    def first() -> None:
        try:
            with transaction.atomic():
                results["first"] = track(conversion)
                first_inserted.set()
                assert may_commit.wait(30)
        finally:
            connections.close_all()

    def second() -> None:
        try:
            connection.ensure_connection()
            results["second_pid"] = connection.connection.info.backend_pid
            with transaction.atomic():
                results["second"] = track(conversion)
                Order.objects.create(number="after the race")  # still usable
        except Exception as err:
            results["second_error"] = err
        finally:
            connections.close_all()

    with conversions(**NO_TASKS):
        winner = threading.Thread(target=first)
        winner.start()
        assert first_inserted.wait(30)
        loser = threading.Thread(target=second)
        loser.start()
        # when: the second save waits for the first's row lock, the first commits
        wait_until_blocked_on_a_lock(lambda: results.get("second_pid"))
        may_commit.set()
        winner.join(30)
        loser.join(30)
    # then
    assert "second_error" not in results, results.get("second_error")
    [won], [lost] = results["first"], results["second"]
    assert (lost.pk, lost.event_id) == (won.pk, won.event_id)
    assert ConversionEvent.objects.count() == 1
    assert Order.objects.filter(number="after the race").exists()
    assert "A concurrent save recorded this conversion first" in caplog.text


def wait_until_blocked_on_a_lock(pid: Callable[[], int | None], polls: int = 3000) -> None:
    """Poll the server's activity view until backend ``pid`` waits for a lock."""
    for _ in range(polls):
        backend = pid()
        if backend is not None:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", [backend]
                )
                row = cursor.fetchone()
            if row and row[0] == "Lock":
                return
        time.sleep(0.01)  # the poll's interval; the condition above is what is waited for
    raise AssertionError("the second save never waited on the first one's row")


@pytest.mark.django_db(transaction=True)
def test_rebuilding_failed_rows_and_adding_new_ones_is_all_or_none(scanova_site, make_site):
    # given: a malformed order (the stock adapter can't build it): one failed row per site
    with conversions(**NO_TASKS):
        order = paid_order(email="not an email")
    assert ConversionEvent.objects.filter(status="failed").count() == 1
    make_site("scanova", name="second")  # a site without a row for the order yet
    # when: the fixed order is saved, and the insert of the new site's row fails
    with conversions(**NO_TASKS), refused_event_inserts(), transaction.atomic():
        order.email = "buyer@example.com"
        order.save()
        Order.objects.create(number="next")  # the host's transaction is still usable
    # then: the failed row was not rebuilt either, and the host's work committed
    assert list(ConversionEvent.objects.values_list("status", flat=True)) == ["failed"]
    assert Order.objects.filter(number="next").exists()


class BigPropertiesAdapter(OrderAdapter):
    """Conversions that need more than one database page."""

    def to_conversion(self, order: Any) -> Conversion:
        conversion = super().to_conversion(order)
        return dataclasses.replace(conversion, properties={"note": "x" * 9000})


@contextmanager
def sqlite_pages_capped() -> Iterator[Callable[[], None]]:
    """SQLite's file may not grow: yields a function that caps it at its current size.

    A write that needs a new page then fails with "database or disk is full", and SQLite rolls
    back the whole transaction it was in, as on a real full disk.
    """
    with connection.cursor() as cursor:
        cursor.execute("VACUUM")  # no free pages left to reuse

    def cap() -> None:
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA page_count")
            cursor.execute(f"PRAGMA max_page_count = {cursor.fetchone()[0]}")

    try:
        yield cap
    finally:
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA max_page_count = 1073741823")


@pytest.mark.skipif(ON_POSTGRES, reason="SQLite's own full-disk behaviour")
@pytest.mark.django_db(transaction=True)
def test_a_full_disk_inside_the_host_transaction_never_commits_half_of_it(scanova_site):
    adapter = "tests.test_outbox_guard.BigPropertiesAdapter"
    gave_up = None
    with conversions(ORDER_ADAPTER=adapter, **NO_TASKS), sqlite_pages_capped() as cap_pages:
        try:
            with transaction.atomic():
                order = paid_order(number="1", status="new")
                cap_pages()
                order.status = "paid"
                order.save()  # the outbox write fails: save() does not raise
                Order.objects.create(number="2")  # small enough for the pages left
        except TransactionManagementError as err:
            gave_up = err
    # then: SQLite undid the failed statement (the host's block committed whole, without the
    # event), or it dropped the transaction (nothing of the block was committed)
    committed = sorted(Order.objects.values_list("number", flat=True))
    assert committed == ([] if gave_up else ["1", "2"])
    assert ConversionEvent.objects.count() == 0


@contextmanager
def transaction_dropped_by_the_database() -> Iterator[None]:
    """The event INSERT fails and the database ends the whole transaction, as SQLite may on a
    full disk or an I/O error."""

    def drop(execute: Callable[..., Any], sql: str, *args: Any) -> Any:
        if sql.lstrip().upper().startswith("INSERT") and EVENTS_TABLE in sql:
            execute("ROLLBACK", None, False, args[-1])
            raise OperationalError("database or disk is full")
        return execute(sql, *args)

    with connection.execute_wrapper(drop):
        yield


@pytest.mark.django_db(transaction=True)
def test_a_transaction_the_database_gave_up_is_rolled_back_whole(scanova_site):
    with (
        conversions(**NO_TASKS),
        transaction_dropped_by_the_database(),
        pytest.raises(TransactionManagementError),
        transaction.atomic(),
    ):
        paid_order(number="1")  # the save itself does not raise
        paid_order(number="2")  # but the block can't go on as if nothing happened
    assert Order.objects.count() == 0


@pytest.mark.skipif(ON_POSTGRES, reason="SQLite's own full-disk behaviour")
@pytest.mark.django_db(transaction=True)
def test_a_full_disk_after_an_autocommit_save_keeps_the_order(scanova_site):
    adapter = "tests.test_outbox_guard.BigPropertiesAdapter"
    with conversions(ORDER_ADAPTER=adapter, **NO_TASKS), sqlite_pages_capped() as cap_pages:
        order = paid_order(number="1", status="new")
        cap_pages()
        order.status = "paid"
        order.save()  # committed on its own; the outbox write after it fails
    assert Order.objects.get().status == "paid"
    assert not ConversionEvent.objects.filter(status=EventStatus.PENDING).exists()


@pytest.mark.django_db(transaction=True)
def test_a_sites_table_not_migrated_yet_leaves_the_host_transaction_usable(scanova_site):
    sites_table = TrackingSite._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {sites_table} RENAME TO conversions_test_moved")
    try:
        with conversions(**NO_TASKS), transaction.atomic():
            paid_order(number="1")  # the sites can't be read: the save still succeeds
            paid_order(number="2")  # and the host goes on in its transaction
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"ALTER TABLE conversions_test_moved RENAME TO {sites_table}")
    assert sorted(Order.objects.values_list("number", flat=True)) == ["1", "2"]
