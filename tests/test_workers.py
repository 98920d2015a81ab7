"""Real worker processes against a real local HTTP server: crashes and concurrency."""

from __future__ import annotations

import re
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connections
from django.test import override_settings
from django.utils import timezone

from django_conversions import Conversion, Customer, track
from django_conversions.delivery import deliver_due
from django_conversions.models import ApiKey, ConversionEvent, EventStatus, TrackingSite
from tests.conditions import wait_until
from tests.servers import Answer, RecordingServer, recording_server
from tests.workers import start_command, start_python


def conversions(**extra):
    return override_settings(CONVERSIONS={**settings.CONVERSIONS, "TASK_BACKEND": None, **extra})


def local_site(url: str, provider: str = "scanova") -> TrackingSite:
    site = TrackingSite.objects.create(
        name=f"local {provider}", provider=provider, provider_site_id="site_local", endpoint_url=url
    )
    ApiKey.objects.create(site=site, key="scn_local_key_0123456789abcdef")
    return site


def record_many(count: int, start: int = 0) -> list[ConversionEvent]:
    events = []
    for n in range(start, start + count):
        events += track(
            Conversion(
                event_name="purchase",
                order_id=f"W-{n}",
                value=Decimal("1.00"),
                currency="EUR",
                scan_session_id=str(uuid.uuid4()),
                customer=Customer(email=f"c{n}@example.com"),
            )
        )
    return events


@contextmanager
def slow_site_one_event_per_request(answer: Answer | None = None) -> Iterator[RecordingServer]:
    """A local site answering after 0.3 s (or as ``answer`` says), sent one event per request
    with up to four requests in flight."""
    with (
        recording_server(answer or Answer(delay=0.3)) as server,
        conversions(BATCH_SIZE=1, DELIVERY_CONCURRENCY=4),
    ):
        local_site(server.url)
        yield server


@pytest.mark.django_db(transaction=True)
def test_worker_killed_mid_delivery_loses_nothing():
    # given: a provider that hangs on the first request
    with recording_server() as server, conversions(LEASE_SECONDS=2):
        server.script.append(Answer(delay=30))
        local_site(server.url)
        [event] = record_many(1)
        worker = start_command(
            "conversions_deliver",
            overrides={"LEASE_SECONDS": 2, "REQUEST_DEADLINE": 1, "TASK_BACKEND": None},
        )
        wait_until(lambda: len(server.received) == 1)
        # when: the worker is killed with SIGKILL while the request is in flight
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
        event.refresh_from_db()
        assert event.status == EventStatus.SENDING  # left behind by the dead worker
        # then: once the lease expires, the sweep delivers it, with the same event_id
        wait_until(lambda: timezone.now() > event.lease_expires_at)
        call_command("conversions_deliver", verbosity=0)
        event.refresh_from_db()
        assert event.status == EventStatus.DELIVERED
        assert server.event_id_counts() == {str(event.event_id): 2}


@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_drain_resends_at_most_its_requests_in_flight():
    # given: a slow provider, one event per request, four requests in flight per site
    overrides = {
        "TASK_BACKEND": None,
        "BATCH_SIZE": 1,
        "DELIVERY_CONCURRENCY": 4,
        "LEASE_SECONDS": 2,
        "REQUEST_DEADLINE": 1,
    }
    with recording_server(Answer(delay=0.3)) as server, conversions(**overrides):
        local_site(server.url)
        events = record_many(20)
        worker = start_command("conversions_deliver", overrides=overrides)
        # when: it is killed with SIGKILL in the middle of the drain
        wait_until(lambda: len(server.received) >= 9)
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
        # then: once the leases run out, the sweep delivers everything
        wait_until(
            lambda: (
                not ConversionEvent.objects.filter(
                    status=EventStatus.SENDING, lease_expires_at__gt=timezone.now()
                ).exists()
            )
        )
        call_command("conversions_deliver", verbosity=0)
    assert ConversionEvent.objects.filter(status=EventStatus.DELIVERED).count() == 20
    counts = server.event_id_counts()
    assert sorted(counts) == sorted(str(e.event_id) for e in events)
    # and only requests that were on the wire at the kill went out twice
    resent = [event_id for event_id, n in counts.items() if n > 1]
    assert len(resent) <= 4 and set(counts.values()) <= {1, 2}


@pytest.mark.django_db(transaction=True)
def test_two_workers_with_a_lease_shorter_than_the_sending_never_send_an_event_twice():
    # given: a provider answering in 0.2 s, one event per request, 60 events: about 6 s of
    # sending for one worker, with leases of 2 s
    overrides = {
        "TASK_BACKEND": None,
        "BATCH_SIZE": 1,
        "DELIVERY_CONCURRENCY": 2,
        "LEASE_SECONDS": 2,
        "REQUEST_DEADLINE": 1,
    }
    with recording_server(Answer(delay=0.2)) as server, conversions(**overrides):
        local_site(server.url)
        events = record_many(60)
        # when: two polling workers drain the outbox at once
        args = ("conversions_deliver", "--loop", "--interval", "0.1")
        workers = [start_command(*args, overrides=overrides) for _ in range(2)]
        wait_until(
            lambda: ConversionEvent.objects.filter(status=EventStatus.DELIVERED).count() == 60,
            timeout=120,
        )
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        outputs = [w.communicate(timeout=60) for w in workers]
    # then: every event was sent exactly once and recorded delivered once
    assert all(w.returncode == 0 for w in workers), outputs
    counts = server.event_id_counts()
    assert sorted(counts) == sorted(str(e.event_id) for e in events)
    assert set(counts.values()) == {1}
    delivered_by = [int(re.search(r"Total: delivered (\d+)", out).group(1)) for out, _ in outputs]
    assert sum(delivered_by) == 60, delivered_by
    assert ConversionEvent.objects.filter(status=EventStatus.DELIVERED).count() == 60


@pytest.mark.django_db(transaction=True)
def test_two_workers_against_a_dripping_provider_send_each_attempt_once():
    # given: a provider that sends its headers, then one byte of the body every 0.5 s (never
    # done within the request deadline), leases of 2 s, and retries far away
    overrides = {
        "TASK_BACKEND": None,
        "BATCH_SIZE": 1,
        "DELIVERY_CONCURRENCY": 2,
        "LEASE_SECONDS": 2,
        "REQUEST_DEADLINE": 1,
        "RETRY_SCHEDULE": [3600],
    }
    with recording_server(Answer(drip=0.5)) as server, conversions(**overrides):
        local_site(server.url)
        events = record_many(8)
        # when: two polling workers take them
        args = ("conversions_deliver", "--loop", "--interval", "0.1")
        workers = [start_command(*args, overrides=overrides) for _ in range(2)]
        retried = ConversionEvent.objects.filter(status=EventStatus.PENDING, attempts=1)
        wait_until(lambda: retried.count() == 8, timeout=120)
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        outputs = [w.communicate(timeout=60) for w in workers]
    # then: each request was cut at its deadline, recorded as a failed attempt, and no other
    # worker sent the event meanwhile
    assert all(w.returncode == 0 for w in workers), outputs
    assert server.event_id_counts() == {str(e.event_id): 1 for e in events}
    reasons = list(retried.values_list("last_error", flat=True))
    assert all(reason.startswith("attempt 1 failed: ") for reason in reasons), reasons


@dataclass
class HangingAndQuick:
    """Two sites: one whose provider hangs until ``release`` is set, one that answers at once."""

    hanging: RecordingServer
    quick: RecordingServer
    stuck_site: TrackingSite
    other_site: TrackingSite
    release: threading.Event


@contextmanager
def hanging_and_quick_sites(**overrides) -> Iterator[HangingAndQuick]:
    release = threading.Event()

    def hang(received) -> Answer:
        release.wait(timeout=60)
        return Answer()

    with recording_server() as hanging, recording_server() as quick, conversions(**overrides):
        hanging.responder = hang
        yield HangingAndQuick(
            hanging, quick, local_site(hanging.url), local_site(quick.url), release
        )


@contextmanager
def draining_in_a_thread(release: threading.Event) -> Iterator[list]:
    """One worker running ``deliver_due()`` meanwhile; on leaving, the provider is released
    and the worker's report is in the list."""
    report: list = []

    def drain() -> None:
        try:
            report.append(deliver_due())
        finally:
            connections.close_all()

    worker = threading.Thread(target=drain)
    worker.start()
    try:
        yield report
    finally:
        release.set()
        worker.join(timeout=60)


@pytest.mark.django_db(transaction=True)
def test_a_hanging_site_does_not_hold_the_others():
    # given: one site whose provider hangs until released, and one that answers at once
    with hanging_and_quick_sites(BATCH_SIZE=1, DELIVERY_CONCURRENCY=2) as sites:
        record_many(3)
        # when: one worker delivers both sites' events
        with draining_in_a_thread(sites.release) as report:
            # then: the other site's events are delivered while the first site's request hangs
            delivered = ConversionEvent.objects.filter(
                site=sites.other_site, status=EventStatus.DELIVERED
            )
            wait_until(lambda: delivered.count() == 3)
            assert len(sites.hanging.received) == 1  # its probe, still unanswered
            stuck = ConversionEvent.objects.filter(site=sites.stuck_site)
            assert not stuck.filter(status=EventStatus.DELIVERED).exists()
    assert report[0].delivered == 6
    assert len(sites.quick.event_id_counts()) == 3


@pytest.mark.django_db(transaction=True)
def test_a_site_with_a_long_backlog_keeps_claiming_while_another_site_hangs():
    # given: claims of 20 events shared between two sites (10 each), 60 events per site, and
    # one site whose provider hangs until released
    overrides = {"CLAIM_BATCH_SIZE": 20, "BATCH_SIZE": 5, "DELIVERY_CONCURRENCY": 2}
    with hanging_and_quick_sites(**overrides) as sites:
        record_many(60)
        with draining_in_a_thread(sites.release) as report:
            # then: the quick site's whole backlog goes out, claim after claim, while the
            # hanging site still waits for the answer to its first request
            delivered = ConversionEvent.objects.filter(
                site=sites.other_site, status=EventStatus.DELIVERED
            )
            wait_until(lambda: delivered.count() == 60)
            assert len(sites.hanging.received) == 1
            stuck = ConversionEvent.objects.filter(site=sites.stuck_site)
            assert not stuck.filter(status=EventStatus.DELIVERED).exists()
    assert report[0].delivered == 120
    assert set(sites.quick.event_id_counts().values()) == {1}


CONCURRENT_TRACK = """
import time, uuid
from decimal import Decimal
from django.db import transaction
from django_conversions import Conversion, track
start = {start}
with transaction.atomic():
    events = track(Conversion(event_name="purchase", order_id="RACE-1", value=Decimal("3"),
                              currency="EUR", scan_session_id="{scan}"))
    time.sleep(max(0, start - time.time()))  # hold the insert open so both overlap
print(",".join(sorted(str(e.event_id) for e in events)))
"""


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_saves_of_one_order_give_one_event_per_site(make_site):
    # given: two sites and two processes recording the same order at the same moment
    make_site("scanova")
    make_site("scanova", name="second scanova")
    code = CONCURRENT_TRACK.format(start=time.time() + 1.5, scan=uuid.uuid4())
    processes = [start_python(code, overrides={"TASK_BACKEND": None}) for _ in range(2)]
    outputs = [p.communicate(timeout=60) for p in processes]
    assert all(p.returncode == 0 for p in processes), outputs
    # then: one event per site, and both callers got the same events back
    assert ConversionEvent.objects.count() == 2
    assert outputs[0][0].strip() == outputs[1][0].strip() != ""


@pytest.mark.django_db(transaction=True)
def test_without_a_task_backend_the_sweep_delivers():
    with recording_server() as server, conversions():
        local_site(server.url)
        [event] = record_many(1)
        event.refresh_from_db()
        assert event.status == EventStatus.PENDING and server.received == []
        # when
        worker = start_command("conversions_deliver", overrides={"TASK_BACKEND": None})
        out, err = worker.communicate(timeout=60)
    assert worker.returncode == 0, err
    assert "delivered 1" in out
    event.refresh_from_db()
    assert event.status == EventStatus.DELIVERED


@pytest.mark.django_db(transaction=True)
def test_loop_mode_stops_cleanly_on_sigterm():
    with recording_server() as server, conversions():
        local_site(server.url)
        worker = start_command(
            "conversions_deliver", "--loop", "--interval", "0.2", overrides={"TASK_BACKEND": None}
        )
        [_event] = record_many(1)
        wait_until(lambda: len(server.received) == 1)
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=30)
    assert worker.returncode == 0, err
    assert "Total: delivered 1" in out


@pytest.mark.django_db(transaction=True)
def test_a_worker_keeps_several_requests_in_flight_after_a_first_probe():
    # given: a slow provider without a batch endpoint in use, and 9 events
    with slow_site_one_event_per_request() as server:
        events = record_many(9)
        # when
        report = deliver_due()
    # then: all delivered once, with up to four requests in flight at once
    assert report.delivered == 9
    assert set(server.event_id_counts().values()) == {1}
    assert len(server.event_id_counts()) == len(events)
    assert server.max_in_flight == 4


@pytest.mark.django_db(transaction=True)
def test_a_slow_request_does_not_hold_back_the_ones_behind_it():
    # given: a provider that takes 2 s over one event and answers the others at once
    answered_at: dict[str, float] = {}
    slow_started: list[float] = []

    def answer(received) -> Answer:
        [event_id] = received.event_ids()
        if event_id == str(events[1].event_id):  # the first one after the probe
            slow_started.append(time.monotonic())
            return Answer(delay=2.0)
        answered_at[event_id] = time.monotonic()
        return Answer()

    with slow_site_one_event_per_request(Answer()) as server:
        server.responder = answer
        events = record_many(12)
        # when
        report = deliver_due()
    # then: the other ten went out while the slow one was still waiting for its answer
    assert report.delivered == 12
    assert len(answered_at) == 11
    assert max(answered_at.values()) < slow_started[0] + 2.0


@pytest.mark.django_db(transaction=True)
def test_a_site_that_took_a_request_moments_ago_gets_a_full_window_at_once():
    # given: a slow provider that just took a request from this worker
    with slow_site_one_event_per_request() as server:
        record_many(1)
        assert deliver_due().delivered == 1
        server.max_in_flight = 0
        # when: four more are due
        record_many(4, start=1)
        report = deliver_due()
    # then: no lone probe first: all four were in flight together
    assert report.delivered == 4
    assert server.max_in_flight == 4


@pytest.mark.django_db(transaction=True)
def test_a_site_claims_its_next_round_while_its_requests_are_on_the_wire_and_no_more():
    # given: a provider that took a request from this worker moments ago and now holds every
    # request until released; two requests of one event at a time; ten events due
    release = threading.Event()

    def held(received) -> Answer:
        release.wait(timeout=60)
        return Answer()

    with recording_server() as server, conversions(BATCH_SIZE=1, DELIVERY_CONCURRENCY=2):
        site = local_site(server.url)
        record_many(1)
        assert deliver_due().delivered == 1
        server.responder = held
        record_many(10, start=1)
        sending = ConversionEvent.objects.filter(site=site, status=EventStatus.SENDING)
        # when: one worker delivers them
        with draining_in_a_thread(release) as report:
            wait_until(lambda: len(server.received) == 3)
            # then: beside the two requests on the wire, the next round is claimed (the slot
            # an answer frees is refilled without waiting for a claim), and nothing more
            wait_until(lambda: sending.count() == 4)
            assert ConversionEvent.objects.filter(status=EventStatus.PENDING).count() == 6
    # and: once the provider answers, everything goes out, each event once
    assert report[0].delivered == 10
    assert set(server.event_id_counts().values()) == {1}
    assert len(server.event_id_counts()) == 11


@pytest.mark.django_db(transaction=True)
def test_a_worker_new_to_a_site_probes_with_one_request_first():
    # given: four events for a slow provider this worker has not sent to yet
    with slow_site_one_event_per_request() as server:
        record_many(4)
        # when
        report = deliver_due()
    # then: the first went alone, the other three together after its answer
    assert report.delivered == 4
    assert server.max_in_flight == 3
