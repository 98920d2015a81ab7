"""Starting delivery right after commit, without a web request waiting for a provider.

``CONVERSIONS["TASK_BACKEND"]`` names the Django Tasks backend (an alias in ``TASKS``):

- ``None``: nothing is started; the sweep (``manage.py conversions_deliver``) delivers.
- a backend that runs tasks elsewhere (a database worker, RQ): ``deliver_task`` is enqueued,
  and retries are deferred tasks where the backend can defer.
- a backend that runs a task where it is enqueued (``ImmediateBackend``, which is what Django
  uses when ``TASKS`` is not set): the task would run inside the request that saved the order,
  so the events go to this process's background delivery thread instead, which also keeps
  their retries. ``BACKGROUND_DELIVERY = False`` runs them inline after all (scripts, tests),
  and system check ``conversions.W020`` says so.

The outbox does not depend on any of them: whatever is never started (a lost enqueue, a process
that exited with a retry pending, no backend at all) the sweep finds and sends.
"""

from __future__ import annotations

import heapq
import logging
import os
import threading
import time
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from django.core.checks import CheckMessage, Warning
from django.db import close_old_connections
from django.utils import timezone

from django_conversions.compat import (
    ImmediateBackend,
    InvalidTaskBackendError,
    task,
    task_backends,
)
from django_conversions.conf import SETTING_NAME, conversions_settings
from django_conversions.delivery import deliver_due, deliver_events

logger = logging.getLogger("django_conversions.tasks")


@task()
def deliver_task(
    event_ids: list[int] | None = None, rebuild_ids: list[int] | None = None
) -> dict[str, int]:
    """Deliver the given events (or everything due) and schedule the retries.

    ``rebuild_ids``: those of the events marked to be rebuilt from their orders first, as the
    caller knew them; None: they are looked up.
    """
    report = deliver_events(event_ids, rebuild_ids=rebuild_ids) if event_ids else deliver_due()
    schedule_retries(report.retry_at)
    return report.counts()


def _backend_alias() -> str | None:
    return conversions_settings.TASK_BACKEND


def runs_in_caller(backend: Any) -> bool:
    """Whether ``backend`` runs a task inside ``enqueue()``, in the caller's thread."""
    return isinstance(backend, ImmediateBackend)


def background_delivery_enabled() -> bool:
    """``CONVERSIONS["BACKGROUND_DELIVERY"]``: hand in-caller tasks to the delivery thread."""
    return bool(conversions_settings.BACKGROUND_DELIVERY)


def enqueue_delivery(
    event_ids: Sequence[int],
    run_after: datetime | None = None,
    *,
    rebuild_ids: Sequence[int] | None = None,
) -> Any:
    """Start delivery of ``event_ids`` (at ``run_after``, or now) without sending anything
    from the calling thread, unless ``BACKGROUND_DELIVERY`` is off. With no TASK_BACKEND, or
    a backend that can't defer a retry, this does nothing: the sweep delivers.

    ``rebuild_ids``: those of them marked ``rebuild_before_send``, when the caller knows (the
    outbox does); delivery then skips looking them up. None: delivery looks them up.
    """
    rebuild = None if rebuild_ids is None else list(rebuild_ids)
    alias = _backend_alias()
    if not alias:
        return None
    backend = task_backends[alias]
    if runs_in_caller(backend):
        if background_delivery_enabled():
            background.submit(event_ids, at=run_after, rebuild_ids=rebuild)
            return None
        if run_after is not None:
            return None  # the sweep retries it when it is due
        return deliver_task.using(backend=alias).enqueue(list(event_ids), rebuild)
    configured = deliver_task.using(backend=alias)
    if run_after is not None:
        if not backend.supports_defer:
            return None  # the sweep retries it when it is due
        configured = configured.using(run_after=run_after)
    return configured.enqueue(list(event_ids), rebuild)


def schedule_retries(retry_at: Sequence[tuple[int, datetime]]) -> None:
    """One deferred task per retry time, where the backend can defer; else the sweep does it."""
    alias = _backend_alias()
    if not alias or not retry_at or not task_backends[alias].supports_defer:
        return
    by_time: dict[datetime, list[int]] = {}
    for event_id, when in retry_at:
        by_time.setdefault(_whole_second_after(when), []).append(event_id)
    for when, ids in by_time.items():
        try:
            # Sent before: the sender rebuilt whatever was marked (an order attributed
            # since enqueues its own rebuild).
            enqueue_delivery(ids, run_after=when, rebuild_ids=())
        except Exception:
            logger.exception("Could not enqueue a retry; the sweep will pick it up")


def _whole_second_after(when: datetime) -> datetime:
    """``when`` rounded up to the second: retries due within one second share a task, and a
    task never runs before its events are due (it would find nothing and be spent)."""
    whole = when.replace(microsecond=0)
    return whole if whole == when else whole + timedelta(seconds=1)


#: How long the background thread gathers events handed over after the first before it sends
#: them: a burst of checkouts goes out in one run (one claim, full batches) instead of one run
#: per checkout, each taking the interpreter from the requests still being answered.
GATHER_SECONDS = 0.5


class BackgroundDelivery:
    """This process's delivery thread: events handed over after commit are sent from here, so
    the request that saved them answers without waiting for a provider.

    One daemon thread per process, started on first use (and again in a forked child). It
    sends what is due, keeps the retry times of what it sent, and releases its database
    connection between runs as Django does between requests. Work it never finishes (the
    process exits) is the sweep's: the events stay in the outbox, pending or leased.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Start empty. Also run in a forked child: the parent's thread did not come along,
        and its lock may have been held at the fork."""
        self._lock = threading.Condition()
        self._due: set[int] = set()
        self._later: list[tuple[datetime, int]] = []  # (when, event pk), a heap
        self._rebuild: set[int] = set()  # of those, the ones to rebuild first (if marked)
        self._running = False
        self._thread: threading.Thread | None = None

    def submit(
        self,
        event_ids: Iterable[int],
        *,
        at: datetime | None = None,
        rebuild_ids: Iterable[int] | None = None,
    ) -> None:
        """Deliver these events (at ``at``); ``rebuild_ids`` as ``enqueue_delivery`` takes it."""
        event_ids = list(event_ids)
        with self._lock:
            self._rebuild.update(event_ids if rebuild_ids is None else rebuild_ids)
            if at is None or at <= timezone.now():
                self._due.update(event_ids)
            else:
                for event_id in event_ids:
                    heapq.heappush(self._later, (at, event_id))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="conversions-delivery", daemon=True
                )
                self._thread.start()
            self._lock.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until nothing is due now and no run is going; False if ``timeout`` passed."""
        with self._lock:
            return self._lock.wait_for(lambda: not self._due and not self._running, timeout)

    def _run(self) -> None:
        while True:
            ids, rebuild = self._next_due()
            try:
                close_old_connections()
                report = deliver_events(ids, rebuild_ids=rebuild)
                with self._lock:
                    for event_id, when in report.retry_at:
                        heapq.heappush(self._later, (when, event_id))
            except Exception:
                # The events stay in the outbox; the sweep (or the next run) sends them.
                logger.exception("Background delivery of %d event(s) failed", len(ids))
            finally:
                close_old_connections()
                with self._lock:
                    self._running = False
                    self._lock.notify_all()

    def _next_due(self) -> tuple[list[int], list[int]]:
        """Wait until some events are due, then ``GATHER_SECONDS`` for more (a claim's worth at
        most), take them (and which of them to rebuild first), and mark a run as going."""
        with self._lock:
            gathering_since: float | None = None
            while True:
                now = timezone.now()
                while self._later and self._later[0][0] <= now:
                    self._due.add(heapq.heappop(self._later)[1])
                if self._due:
                    if gathering_since is None:
                        gathering_since = time.monotonic()
                    left = GATHER_SECONDS - (time.monotonic() - gathering_since)
                    if left > 0 and len(self._due) < conversions_settings.CLAIM_BATCH_SIZE:
                        self._lock.wait(left)
                        continue
                    ids = sorted(self._due)
                    rebuild = sorted(self._rebuild.intersection(ids))
                    self._rebuild.difference_update(ids)
                    self._due.clear()
                    self._running = True
                    return ids, rebuild
                wait = (self._later[0][0] - now).total_seconds() if self._later else None
                self._lock.wait(wait)


background = BackgroundDelivery()
os.register_at_fork(after_in_child=background.reset)


def check_task_backend(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Warn when delivery would run inside the web request that saves an order."""
    alias = conversions_settings.raw("TASK_BACKEND")
    if not alias or background_delivery_enabled():
        return []
    try:
        backend = task_backends[alias]
    except InvalidTaskBackendError:
        return []  # another check reports an unknown alias
    if not runs_in_caller(backend):
        return []
    return [
        Warning(
            f"TASKS[{alias!r}] ({type(backend).__name__}) runs tasks where they are enqueued "
            f"and {SETTING_NAME}['BACKGROUND_DELIVERY'] is False: the request that saves an "
            "order waits for every provider.",
            hint=(
                f"Remove {SETTING_NAME}['BACKGROUND_DELIVERY'] (delivery then runs in a "
                "background thread), point TASK_BACKEND at a backend with workers, or set it "
                "to None and run `manage.py conversions_deliver --loop`."
            ),
            id="conversions.W020",
        )
    ]
