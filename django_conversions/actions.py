"""What staff may do to events and sites, shared by the admin and the REST API.

Both ask for a delivery; neither delivers. An operation changes the outbox rows in one
transaction and, once it has committed, hands the events to the task queue
(``tasks.enqueue_delivery``), so a web request that asked for it answers at once. Whatever the
queue never runs, ``manage.py conversions_deliver`` finds: the events are due now.

The rules of what may be sent again are the model's (``ConversionEvent.objects.resendable()``):
a delivered event never (not every provider removes duplicates), an event a worker holds not
while it holds it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from itertools import islice

from django.db import router, transaction
from django.db.models import QuerySet
from django.utils import timezone
from django.utils.translation import gettext, ngettext

from django_conversions.conversion import Conversion
from django_conversions.exceptions import InvalidConversion
from django_conversions.models import ConversionEvent, EventStatus, TrackingSite
from django_conversions.outbox import rebuild_snapshot
from django_conversions.tasks import enqueue_delivery

logger = logging.getLogger("django_conversions")

#: Events read, changed and committed together: a bounded transaction whatever is selected.
CHUNK_SIZE = 500


@dataclass
class RetryOutcome:
    """What a retry request did to each event it was given."""

    #: Primary keys of the events now pending and due, handed to the queue after commit.
    queued: list[int] = field(default_factory=list)
    #: Refused: delivered events are never sent again.
    delivered: int = 0
    #: Refused: a worker holds them right now (its lease runs).
    in_flight: int = 0
    #: The conversion could not be rebuilt from its order: the event failed with that reason.
    rebuild_failed: int = 0
    #: Rebuilt, and its provider still can't take it: skipped with the reason.
    still_ineligible: int = 0

    def summary(self) -> str:
        """One sentence for a person, e.g. "3 events queued for delivery; 1 already
        delivered (never resent); 1 being sent right now"."""
        parts = [
            ngettext(
                "%(count)d event queued for delivery",
                "%(count)d events queued for delivery",
                len(self.queued),
            )
            % {"count": len(self.queued)}
        ]
        if self.delivered:
            parts.append(
                gettext("%(count)d already delivered (never resent)") % {"count": self.delivered}
            )
        if self.in_flight:
            parts.append(gettext("%(count)d being sent right now") % {"count": self.in_flight})
        if self.rebuild_failed:
            parts.append(
                ngettext(
                    "%(count)d could not be rebuilt from its order (marked failed)",
                    "%(count)d could not be rebuilt from their orders (marked failed)",
                    self.rebuild_failed,
                )
                % {"count": self.rebuild_failed}
            )
        if self.still_ineligible:
            parts.append(
                ngettext(
                    "%(count)d still not eligible (skipped with the reason)",
                    "%(count)d still not eligible (skipped with their reasons)",
                    self.still_ineligible,
                )
                % {"count": self.still_ineligible}
            )
        return "; ".join(parts)


def retry_events(events: Iterable[ConversionEvent] | QuerySet[ConversionEvent]) -> RetryOutcome:
    """Make these events due now (rebuilt from their orders) and queue them after commit.

    Never sends anything itself. Each event is changed only if it is still resendable when it
    is written (a compare-and-set on the model's rule), so a worker claiming it meanwhile wins
    and the event counts as in flight.
    """
    using = router.db_for_write(ConversionEvent)
    outcome = RetryOutcome()
    for chunk in in_chunks(_event_ids(events)):
        with transaction.atomic(using=using):
            queued = _retry_chunk(chunk, using, outcome)
            outcome.queued.extend(queued)
            _enqueue_on_commit(queued, using)
    return outcome


def skip_events(
    events: Iterable[ConversionEvent] | QuerySet[ConversionEvent], reason: str
) -> list[int]:
    """Stop sending these events: each becomes skipped with ``reason``, unless it was
    delivered, is skipped already, or a worker holds it. Returns the primary keys skipped."""
    using = router.db_for_write(ConversionEvent)
    skipped: list[int] = []
    for chunk in in_chunks(_event_ids(events)):
        with transaction.atomic(using=using):
            now = timezone.now()
            skippable = (
                ConversionEvent.objects.using(using)
                .filter(pk__in=chunk)
                .resendable(now)
                .exclude(status=EventStatus.SKIPPED)
            )
            # Locked where the database can: a worker's claim (SKIP LOCKED) passes them by.
            ids = list(skippable.select_for_update().values_list("pk", flat=True))
            # The same conditions again in the UPDATE, for databases that can't lock rows.
            skippable.filter(pk__in=ids).update(
                status=EventStatus.SKIPPED,
                last_error=reason,
                claim_token=None,
                lease_expires_at=None,
                updated_at=now,
            )
            changed = ConversionEvent.objects.using(using).filter(
                pk__in=ids, status=EventStatus.SKIPPED, updated_at=now
            )
            skipped.extend(changed.values_list("pk", flat=True))
    return skipped


def resume_site(site: TrackingSite) -> int:
    """Un-pause ``site``, make its pending events due now and queue them after commit.

    Returns how many events were queued.
    """
    using = router.db_for_write(ConversionEvent)
    with transaction.atomic(using=using):
        site.resume()
        pending = ConversionEvent.objects.using(using).filter(site=site, status=EventStatus.PENDING)
        pending.update(next_attempt_at=timezone.now())
        queued = list(pending.order_by("pk").values_list("pk", flat=True))
        _enqueue_on_commit(queued, using)
    return len(queued)


def _event_ids(events: Iterable[ConversionEvent] | QuerySet[ConversionEvent]) -> list[int]:
    if isinstance(events, QuerySet):
        return list(events.order_by("pk").values_list("pk", flat=True))
    return sorted({event.pk for event in events})


def in_chunks(ids: Sequence[int]) -> Iterator[list[int]]:
    """``ids`` CHUNK_SIZE at a time: bounded transactions, statements and task arguments."""
    iterator = iter(ids)
    while chunk := list(islice(iterator, CHUNK_SIZE)):
        yield chunk


def _retry_chunk(ids: list[int], using: str, outcome: RetryOutcome) -> list[int]:
    now = timezone.now()
    events = ConversionEvent.objects.using(using).filter(pk__in=ids)
    queued: list[int] = []
    for event in events.select_related("site").order_by("pk"):
        if not event.is_resendable(now):
            _count_refusal(event, now, outcome)
            continue
        changes = retry_changes(event, now)
        written = _write_if_resendable(event.pk, now, using, changes)
        if not written:
            # A worker claimed or delivered it between the read and the write.
            event.refresh_from_db(using=using, fields=["status", "lease_expires_at"])
            _count_refusal(event, now, outcome)
        elif changes["status"] == EventStatus.FAILED:
            outcome.rebuild_failed += 1
        elif changes["status"] == EventStatus.SKIPPED:
            outcome.still_ineligible += 1
        else:
            queued.append(event.pk)
    return queued


def retry_changes(event: ConversionEvent, now: datetime) -> dict[str, object]:
    """What a retry makes of a resendable event, with the configuration and adapter as they are
    now: its conversion rebuilt from its order (``rebuild_snapshot``); a skipped one judged
    again by its provider. Pending and due now; failed when the rebuild fails; still skipped,
    with the reason, when the provider still can't take it (others are judged when they are
    sent). Changes ``event`` in memory only (``conversions_retry --dry-run`` reads it).
    """
    error = rebuild_snapshot(event)
    if error:
        return {"status": EventStatus.FAILED, "last_error": error}
    rebuilt = {
        "snapshot": event.snapshot,
        "order_reference": event.order_reference,
        "rebuild_before_send": False,
    }
    reason = _ineligible_reason(event) if event.status == EventStatus.SKIPPED else None
    if reason:
        return {"status": EventStatus.SKIPPED, "last_error": reason, **rebuilt}
    pending = {"status": EventStatus.PENDING, "next_attempt_at": now, **rebuilt}
    if event.status == EventStatus.SKIPPED:
        pending["last_error"] = ""  # the reason it was skipped no longer holds
    return pending


def _ineligible_reason(event: ConversionEvent) -> str | None:
    try:
        conversion = Conversion.from_snapshot(event.snapshot)
    except InvalidConversion:
        return None  # the worker fails it with the reason when it reads it
    return event.site.provider_instance().ineligible_reason(conversion)


def _write_if_resendable(pk: int, now: datetime, using: str, changes: dict[str, object]) -> bool:
    resendable = ConversionEvent.objects.using(using).filter(pk=pk).resendable(now)
    return bool(
        resendable.update(**changes, claim_token=None, lease_expires_at=None, updated_at=now)
    )


def _count_refusal(event: ConversionEvent, now: datetime, outcome: RetryOutcome) -> None:
    if event.status == EventStatus.DELIVERED:
        outcome.delivered += 1
    elif event.is_held(now):
        outcome.in_flight += 1


def _enqueue_on_commit(ids: list[int], using: str) -> None:
    # One task per chunk: a resumed site's backlog is not one task argument of 100k ids.
    # robust: a queue that is down must not turn a committed change into an error page; the
    # events are due now, so the sweep sends them.
    for chunk in in_chunks(ids):
        transaction.on_commit(partial(enqueue_delivery, chunk), using=using, robust=True)
