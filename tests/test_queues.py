"""The queues shops run: RQ (django-tasks-rq) and Celery, each with real worker processes on the
local Redis, delivering after commit and deferring retries; and the outbox as the source of
truth: messages lost before any worker saw them, and a worker killed with a request on the
wire, delay delivery until the sweep and lose nothing, and nothing is sent twice except the
events of the request that was on the wire at the kill (which never got its answer)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import pytest
from django.conf import settings
from django.core.management import call_command
from django.test import override_settings
from django.utils import timezone

from django_conversions.models import ConversionEvent, EventStatus
from tests.conditions import wait_until
from tests.conftest import UNDER_CI
from tests.servers import Answer, RecordingServer, recording_server
from tests.test_workers import local_site, record_many
from tests.workers import ROOT, worker_env

redis = pytest.importorskip("redis")

#: The job class that runs Django tasks (django-tasks-rq's; RQ's own can't call them).
RQ_JOB_CLASS = "django_tasks_rq.backend.Job"

#: Settings of the test process and of the workers it starts: batches of 10 events, short
#: leases so a killed worker's events come back within the test (a request hanging on the wire
#: is killed with its worker well within its deadline), retries a second later.
OVERRIDES: dict[str, Any] = {
    "BATCH_SIZE": 10,
    "LEASE_SECONDS": 6,
    "REQUEST_DEADLINE": 3,
    "RETRY_SCHEDULE": [1],
}


def service_missing(reason: str) -> None:
    """Skip with the reason; under CI=true a missing service is a failure."""
    if UNDER_CI:
        pytest.fail(f"{reason} (CI=true: a missing service is a failure)")
    pytest.skip(reason)


def forget_test_keys(client: Any) -> None:
    """Delete what this run's queues keep in Redis (RQ's keys, the Celery test queue's), and
    nothing else: another process may use the same database."""
    for pattern in ("rq:*", f"*{settings.TEST_QUEUE}*"):
        keys = list(client.scan_iter(match=pattern))
        if keys:
            client.delete(*keys)


@pytest.fixture
def redis_client() -> Iterator[Any]:
    """The run's Redis database, without this run's queues' keys before and after the test."""
    client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as err:
        service_missing(f"Redis is not reachable at {settings.REDIS_URL}: {err}")
    forget_test_keys(client)
    yield client
    forget_test_keys(client)
    client.close()


def conversions(backend: str) -> Any:
    return override_settings(
        CONVERSIONS={**settings.CONVERSIONS, **OVERRIDES, "TASK_BACKEND": backend}
    )


@contextmanager
def running(process: subprocess.Popen[str]) -> Iterator[subprocess.Popen[str]]:
    """A worker process, stopped (and reaped) however the test ends."""
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
        try:
            _, errors = process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            errors = "(did not stop within 20 s after SIGTERM; killed)"
        with suppress(ProcessLookupError):  # whatever it forked and left behind
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        # Shown by pytest when the test fails: what the worker logged.
        print(f"worker {process.args[1:4]} exited {process.returncode}:\n{errors[-5000:]}")


def start(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    """A worker in a process group of its own: killing the group also kills what the worker
    forked (RQ's scheduler), as a machine going down would."""
    return subprocess.Popen(
        [sys.executable, *args],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def kill(process: subprocess.Popen[str]) -> None:
    """SIGKILL to the worker and everything it forked."""
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


def statuses() -> dict[str, int]:
    counts: dict[str, int] = {}
    for status in ConversionEvent.objects.values_list("status", flat=True):
        counts[status] = counts.get(status, 0) + 1
    return counts


def all_delivered(count: int) -> bool:
    return ConversionEvent.objects.filter(status=EventStatus.DELIVERED).count() == count


def assert_sent_once_but_the_killed_request(
    server: RecordingServer, events: list[ConversionEvent], killed: list[str]
) -> None:
    """Every event reached the provider; only those of the request on the wire when its worker
    was killed (never answered) went twice, with the same event_id."""
    counts = server.event_id_counts()
    assert sorted(counts) == sorted(str(event.event_id) for event in events)
    assert {event_id for event_id, n in counts.items() if n > 1} == set(killed)
    assert set(counts.values()) <= {1, 2}


def assert_refused_once_then_sent_once(
    server: RecordingServer, events: list[ConversionEvent]
) -> None:
    """The events of the first request (answered 503) went twice, every other event once."""
    refused = set(server.received[0].event_ids())
    expected = {str(e.event_id): 2 if str(e.event_id) in refused else 1 for e in events}
    assert refused and server.event_id_counts() == expected


def record_committed(count: int, start: int = 0) -> list[ConversionEvent]:
    """``count`` conversions, each saved in its own transaction: one task enqueued on each
    commit."""
    return record_many(count, start)


# --- RQ -------------------------------------------------------------------------------------


def start_rq_worker() -> subprocess.Popen[str]:
    """``manage.py rqworker`` with its scheduler (deferred retries), jobs run in the worker's
    own process so that a SIGKILL kills the job with it."""
    args = ["-m", "django", "rqworker", "default", "--with-scheduler"]
    args += ["--worker-class", "rq.worker.SimpleWorker", "--job-class", RQ_JOB_CLASS]
    return start(args, worker_env({**OVERRIDES, "TASK_BACKEND": "rq"}))


def rq_queue() -> Any:
    django_rq = pytest.importorskip("django_rq")
    return django_rq.get_queue("default")


@pytest.fixture
def rq_backend(redis_client: Any) -> Iterator[None]:
    if "rq" not in settings.TASKS:
        service_missing("django-tasks-rq is not installed (pip install -e '.[rq]')")
    with conversions("rq"):
        yield


@pytest.mark.django_db(transaction=True)
def test_rq_worker_delivers_after_commit_and_runs_the_deferred_retry(rq_backend):
    # given: an RQ worker; the provider refuses the first request once (503)
    with recording_server() as server, running(start_rq_worker()):
        server.script.append(Answer(status=503))
        local_site(server.url)
        # when: conversions are saved; the enqueue happens on commit
        events = record_committed(5)
        # then: the worker delivers them: the 503'd request comes back by the deferred
        # retry job one second later, with no sweep running
        wait_until(lambda: all_delivered(5), timeout=60)
    assert_refused_once_then_sent_once(server, events)


@pytest.mark.django_db(transaction=True)
def test_rq_lost_jobs_and_a_killed_worker_lose_nothing_and_send_nothing_twice(rq_backend):
    with recording_server() as server:
        local_site(server.url)
        # given: jobs lost before any worker ran them (the queue emptied)
        lost = record_committed(15)
        assert rq_queue().count == 15
        rq_queue().empty()
        # and a worker killed while its first request is on the wire
        server.script.append(Answer(delay=30))
        with running(start_rq_worker()) as worker:
            on_the_wire = record_committed(15, start=15)
            wait_until(lambda: len(server.received) == 1, timeout=60)
            kill(worker)
        killed = server.received[0].event_ids()
        assert killed and statuses()[EventStatus.SENDING] == len(killed)
        # when: the leases run out and the sweep runs
        wait_until(lambda: not ConversionEvent.objects.held(timezone.now()).exists(), timeout=30)
        call_command("conversions_deliver", verbosity=0)
    # then: everything delivered, each event sent once but those of the killed request
    assert statuses() == {EventStatus.DELIVERED: 30}
    assert_sent_once_but_the_killed_request(server, lost + on_the_wire, killed)


# --- Celery ---------------------------------------------------------------------------------


def start_celery_worker(*, sweep_every: float | None = None) -> subprocess.Popen[str]:
    """A Celery worker on the test queue (one job at a time, in its own process), with beat
    running the sweep every ``sweep_every`` seconds when given."""
    env = worker_env({**OVERRIDES, "TASK_BACKEND": "celery"})
    args = ["worker", "--pool=solo", "-Q", settings.TEST_QUEUE, "-l", "WARNING"]
    args += ["--without-mingle", "--without-gossip", "--without-heartbeat"]
    if sweep_every is not None:
        env["CONVERSIONS_TEST_SWEEP_EVERY"] = str(sweep_every)
        # Beat's schedule in memory: its default shelve file (SQLite's dbm on Python 3.13) once
        # failed with "locking protocol" on a loaded machine and took beat down with it.
        args += ["-B", "--scheduler", "celery.beat:Scheduler"]
    return start(["-m", "celery", "-A", "tests.celery_app", *args], env)


@pytest.fixture
def celery_backend(redis_client: Any) -> Iterator[Any]:
    if "celery" not in settings.TASKS:
        service_missing("Celery is not installed (pip install -e '.[celery]')")
    celery_app = pytest.importorskip("tests.celery_app")
    with conversions("celery"):
        yield celery_app.app


@pytest.mark.django_db(transaction=True)
def test_celery_worker_delivers_after_commit_and_runs_the_deferred_retry(celery_backend):
    # given: a Celery worker; the provider refuses the first request once (503)
    with recording_server() as server, running(start_celery_worker()):
        server.script.append(Answer(status=503))
        local_site(server.url)
        # when: conversions are saved; the message is sent on commit
        events = record_committed(5)
        # then: the worker delivers them: the retry is a message with an eta, no sweep
        wait_until(lambda: all_delivered(5), timeout=60)
    assert_refused_once_then_sent_once(server, events)


@pytest.mark.django_db(transaction=True)
def test_celery_lost_messages_and_a_killed_worker_lose_nothing_and_send_nothing_twice(
    celery_backend, redis_client
):
    with recording_server() as server:
        local_site(server.url)
        # given: messages lost before any worker took them (the queue deleted)
        lost = record_committed(15)
        assert redis_client.llen(settings.TEST_QUEUE) == 15
        redis_client.delete(settings.TEST_QUEUE)
        # and a worker killed while its first request is on the wire
        server.script.append(Answer(delay=30))
        with running(start_celery_worker()) as worker:
            on_the_wire = record_committed(15, start=15)
            wait_until(lambda: len(server.received) == 1, timeout=60)
            kill(worker)
        killed = server.received[0].event_ids()
        assert killed and statuses()[EventStatus.SENDING] == len(killed)
        # when: a worker with beat running the sweep every second starts
        with running(start_celery_worker(sweep_every=1.0)):
            # then: the sweep delivers the lost events, and the killed worker's once their
            # leases run out
            wait_until(lambda: all_delivered(30), timeout=90)
    assert statuses() == {EventStatus.DELIVERED: 30}
    assert_sent_once_but_the_killed_request(server, lost + on_the_wire, killed)
