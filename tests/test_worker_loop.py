"""``conversions_deliver --loop`` as a real process: it outlives a lost database connection and
stops on SIGTERM within one request deadline, recording what was in flight."""

from __future__ import annotations

import signal
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from io import StringIO
from typing import Any

import psycopg
import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection
from django.test import override_settings

from django_conversions import Conversion, track
from django_conversions.delivery import deliver_due
from django_conversions.models import ApiKey, ConversionEvent, EventStatus, TrackingSite
from tests.conditions import wait_until
from tests.servers import Answer, Received, RecordingServer, recording_server
from tests.testapp.models import Order
from tests.workers import start_command

WORKER_SETTINGS = {"TASK_BACKEND": None, "BATCH_SIZE": 1, "DELIVERY_CONCURRENCY": 1}


def conversions(**extra: Any) -> Any:
    return override_settings(CONVERSIONS={**settings.CONVERSIONS, **WORKER_SETTINGS, **extra})


def local_site(url: str) -> TrackingSite:
    site = TrackingSite.objects.create(
        name="local", provider="scanova", provider_site_id="site_local", endpoint_url=url
    )
    ApiKey.objects.create(site=site, key="scn_local_key_0123456789abcdef")
    return site


def record(order_id: str) -> ConversionEvent:
    [event] = track(
        Conversion(
            event_name="purchase",
            order_id=order_id,
            value=Decimal("5.00"),
            currency="EUR",
            scan_session_id=str(uuid.uuid4()),
        )
    )
    return event


def status_of(event: ConversionEvent) -> str:
    return ConversionEvent.objects.get(pk=event.pk).status


class Worker:
    """``conversions_deliver --loop`` in its own process, its output read as it comes."""

    def __init__(self, overrides: dict[str, Any]) -> None:
        self.process = start_command(
            "conversions_deliver", "--loop", "--interval", "0.1", overrides=overrides
        )
        self.out: list[str] = []
        self.err: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(stream, lines), daemon=True)
            for stream, lines in ((self.process.stdout, self.out), (self.process.stderr, self.err))
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream: Any, lines: list[str]) -> None:
        for line in stream:
            lines.append(line)

    def alive(self) -> bool:
        return self.process.poll() is None

    def stderr_count(self, text: str) -> int:
        return sum(text in line for line in list(self.err))

    def stop(self, within: float) -> int:
        """SIGTERM; the exit status, failing if the process takes over ``within`` seconds."""
        self.process.send_signal(signal.SIGTERM)
        returncode = self.process.wait(timeout=within)
        for reader in self._readers:
            reader.join(timeout=10)
        return returncode

    def output(self) -> str:
        return "".join(self.out) + "".join(self.err)


@contextmanager
def worker_loop(**extra: Any) -> Iterator[Worker]:
    """A polling worker; killed if a test leaves it running."""
    worker = Worker({**WORKER_SETTINGS, **extra})
    try:
        yield worker
    finally:
        if worker.alive():
            worker.process.kill()
            worker.process.wait(timeout=30)


def other_backends() -> list[int]:
    """Server pids of the other sessions on the test database (the worker's)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return [pid for (pid,) in cursor.fetchall()]


def terminate_other_backends() -> list[int]:
    """Drop the worker's database connections from the server side."""
    pids = other_backends()
    with connection.cursor() as cursor:
        for pid in pids:
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
    return pids


# --- a lost database connection --------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_connection_dropped_between_polls_is_reopened_and_delivery_goes_on():
    with recording_server() as server, conversions(), worker_loop() as worker:
        local_site(server.url)
        # given: a worker that delivered once, and so holds a database connection
        first = record("L-1")
        wait_until(lambda: status_of(first) == EventStatus.DELIVERED)
        # when: the database drops its connection while it waits for the next poll
        dropped = terminate_other_backends()
        assert dropped
        wait_until(lambda: not set(dropped) & set(other_backends()))
        second = record("L-2")
        # then: it is still alive, on a new connection, and delivers the new event
        wait_until(lambda: status_of(second) == EventStatus.DELIVERED)
        assert worker.alive()
        assert worker.stop(within=30) == 0, worker.output()
    assert server.event_id_counts() == {str(first.event_id): 1, str(second.event_id): 1}


@contextmanager
def connections_refused() -> Iterator[None]:
    """New connections to the test database are refused until the block ends (this test's
    own connection stays open). Set from the server's maintenance database, as PostgreSQL
    wants."""
    db = connection.settings_dict
    name = connection.ops.quote_name(db["NAME"])

    def alter(allow: bool) -> None:
        with psycopg.connect(
            host=db["HOST"], port=db["PORT"], user=db["USER"], dbname="postgres", autocommit=True
        ) as admin:
            admin.execute(f"ALTER DATABASE {name} WITH ALLOW_CONNECTIONS {str(allow).lower()}")

    alter(False)
    try:
        yield
    finally:
        alter(True)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_database_refusing_connections_is_waited_out_with_a_log_line():
    with recording_server() as server, conversions(), worker_loop() as worker:
        local_site(server.url)
        first = record("R-1")
        wait_until(lambda: status_of(first) == EventStatus.DELIVERED)
        # given: the database refuses the worker for a while
        with connections_refused():
            terminate_other_backends()
            second = record("R-2")
            # when: polls fail, twice
            wait_until(lambda: worker.stderr_count("Database unavailable") >= 2)
            assert worker.alive()
        # then: once it may connect again, the worker delivers what came in meanwhile
        wait_until(lambda: status_of(second) == EventStatus.DELIVERED, timeout=90)
        assert worker.stop(within=30) == 0, worker.output()
    assert server.event_id_counts() == {str(first.event_id): 1, str(second.event_id): 1}


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_connection_dropped_mid_request_loses_no_answer_and_resends_nothing():
    # given: a provider that holds the request until the test lets it answer
    arrived = threading.Event()
    release = threading.Event()

    def hold(received: Received) -> Answer:
        arrived.set()
        release.wait(30)
        return Answer()

    with recording_server() as server, conversions(), worker_loop() as worker:
        server.responder = hold
        local_site(server.url)
        event = record("M-1")
        assert arrived.wait(30)
        # when: the worker's connection is dropped while the provider is answering
        assert terminate_other_backends()
        release.set()
        # then: the accepted event is recorded as delivered, and was sent once
        wait_until(lambda: status_of(event) == EventStatus.DELIVERED)
        assert worker.alive()
        assert worker.stop(within=30) == 0, worker.output()
    assert server.event_id_counts() == {str(event.event_id): 1}


# --- SIGTERM ----------------------------------------------------------------------------------


def held_requests(server: RecordingServer, seconds: float) -> threading.Event:
    """Each request waits ``seconds`` before its answer; the event is set when one arrives."""
    arrived = threading.Event()

    def hold(received: Received) -> Answer:
        arrived.set()
        return Answer(delay=seconds)

    server.responder = hold
    return arrived


@pytest.mark.django_db(transaction=True)
def test_sigterm_records_the_answer_in_flight_and_sends_nothing_more():
    with recording_server() as server, conversions(), worker_loop() as worker:
        arrived = held_requests(server, 1.0)
        local_site(server.url)
        # given: a backlog, one event per request, one request at a time
        events = [record(f"T-{n}") for n in range(5)]
        assert arrived.wait(30)
        # when: the worker is told to stop while the first request is in flight
        returncode = worker.stop(within=30)
    # then: it exited cleanly after recording that answer, and sent no other request
    assert returncode == 0, worker.output()
    assert len(server.received) == 1
    statuses = [status_of(e) for e in events]
    assert statuses.count(EventStatus.DELIVERED) == 1
    assert statuses.count(EventStatus.PENDING) == 4
    assert "Total: delivered 1" in "".join(worker.out)


@pytest.mark.django_db(transaction=True)
def test_sigterm_during_an_answer_slower_than_the_deadline_stops_at_the_deadline():
    # given: a provider that would hold the request for a minute, and a 2 s request deadline
    with (
        recording_server() as server,
        conversions(REQUEST_DEADLINE=2),
        worker_loop(REQUEST_DEADLINE=2) as worker,
    ):
        arrived = held_requests(server, 60.0)
        local_site(server.url)
        event, *backlog = [record(f"D-{n}") for n in range(3)]
        assert arrived.wait(30)
        # when
        returncode = worker.stop(within=20)  # well before the provider would answer
    # then: the request was given up at its deadline and recorded (nothing is left 'sending'),
    # and no other request went out
    assert returncode == 0, worker.output()
    assert len(server.received) == 1
    event.refresh_from_db()
    assert event.status == EventStatus.PENDING and event.attempts == 1
    assert "deadline" in event.last_error
    assert [status_of(e) for e in backlog] == [EventStatus.PENDING] * 2


# --- reconciliation ----------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_sweep_records_and_delivers_a_paid_order_whose_outbox_write_was_lost():
    with recording_server() as server, conversions():
        local_site(server.url)
        # given: a paid order committed without its events (bulk_create sends no post_save)
        [order] = Order.objects.bulk_create(
            [
                Order(
                    number="LOST-1",
                    status="paid",
                    total=Decimal("20.00"),
                    currency="EUR",
                    email="buyer@example.com",
                    scan_session_id=str(uuid.uuid4()),
                    tracking_consent="granted",
                )
            ]
        )
        assert not ConversionEvent.objects.exists()
        # when
        out = StringIO()
        call_command("conversions_deliver", stdout=out)
    # then: the sweep recorded its conversion and delivered it
    event = ConversionEvent.objects.get()
    assert event.source_object_id == str(order.pk)
    assert event.status == EventStatus.DELIVERED
    assert "Recorded 1 conversion(s) whose outbox write was lost" in out.getvalue()
    assert server.event_id_counts() == {str(event.event_id): 1}


# --- a provider that never finishes its answer -------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_provider_dripping_its_answer_is_left_at_the_deadline_and_retried():
    # given: a provider sending its answer a byte a second (about a minute in all), each byte
    # well inside the read timeout
    with (
        recording_server(Answer(drip=1.0)) as server,
        conversions(REQUEST_DEADLINE=1.5, READ_TIMEOUT=10),
    ):
        local_site(server.url)
        event = record("DRIP-1")
        # when
        report = deliver_due()
    # then: the request was given up at its deadline, and the event waits for a retry
    assert report.retrying == 1
    event.refresh_from_db()
    assert event.status == EventStatus.PENDING and event.attempts == 1
    assert event.last_error.endswith("no complete answer within 1.5 s (deadline)")
