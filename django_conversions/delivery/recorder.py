"""The recorder: writes what happened, fenced by the claim token.

One transaction per group of answers (the requests that came back together): one
``DeliveryAttempt`` per HTTP exchange, one ``EventResult`` per event it carried, the events'
new states, the key's last use, the site's pause or hold. Event rows are only changed while
the claim still holds them (the token): a worker whose lease was taken over overwrites
nothing of the new holder's, and says so in the log.

An answer a provider gave is never thrown away because the database failed: the write is
tried again (a dropped connection is reopened), and if the database stays away the results
are kept in memory and written before the next claim of this process. Only a process that
dies before then leaves its events to be sent again when their lease runs out.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import (
    DatabaseError,
    DataError,
    IntegrityError,
    close_old_connections,
    connections,
    transaction,
)
from django.db.models import Q
from django.utils import timezone

from django_conversions.delivery.attempts import Recorded, delivered_exchanges, write_attempts
from django_conversions.delivery.claims import STATEMENT_ROWS, Lease
from django_conversions.delivery.policy import Decision, Verdict
from django_conversions.delivery.report import DeliveryReport
from django_conversions.dispatch import event_delivered, event_failed
from django_conversions.models import (
    ApiKey,
    ConversionEvent,
    EventStatus,
    TrackingSite,
)
from django_conversions.normalize import storable_text
from django_conversions.privacy import (
    delivered_snapshot,
    delivered_snapshot_sql,
    redact_personal,
)

logger = logging.getLogger("django_conversions.delivery")

#: Seconds to wait before each new try of a write the database refused.
WRITE_RETRY_DELAYS: tuple[float, ...] = (0.1, 0.5, 1.0, 2.0, 5.0)
#: Later runs that try again to write results the database refused, before giving up.
KEPT_RUNS = 3
#: An API key's "last used" (shown in the admin) is written at most this often per claim.
KEY_USE_PRECISION = timedelta(minutes=1)

_STATUS = {
    Verdict.DELIVERED: EventStatus.DELIVERED,
    Verdict.RETRY: EventStatus.PENDING,
    Verdict.FAILED: EventStatus.FAILED,
    Verdict.SKIPPED: EventStatus.SKIPPED,
    Verdict.WAIT: EventStatus.PENDING,
}


@dataclass
class SiteResults:
    """Results to write for one site's claimed events."""

    lease: Lease
    site: TrackingSite
    key: ApiKey | None
    items: list[Recorded]
    #: Later runs that tried to write these results after a failed write (see ``write``).
    kept_runs: int = 0


# Results whose write failed for good, written before this process claims again.
_unwritten: list[SiteResults] = []
_unwritten_lock = threading.Lock()


def write(groups: Sequence[SiteResults]) -> DeliveryReport:
    """Write these results (one transaction), trying again while the database refuses."""
    groups = [group for group in groups if group.items]
    if not groups:
        return DeliveryReport()
    using = groups[0].lease.using
    refused = 0  # writes the database refused for what they held, not for being down
    for delay in (*WRITE_RETRY_DELAYS, None):
        try:
            return _write_once(using, groups, _Mode(recheck=refused > 0, plain=refused > 1))
        except (IntegrityError, DataError):
            # First an event deleted meanwhile (purged, forgotten): read what is still held;
            # then a value the database won't take: the attempt without the provider's texts.
            refused += 1
            if refused > 2:
                break
            logger.warning("The database refused delivery results; writing them again")
            continue
        except DatabaseError as err:
            connection = connections[using]
            if delay is None or connection.in_atomic_block:
                # Inside the caller's transaction nothing can be tried again here.
                break
            logger.warning(
                "Writing %d delivery result(s) failed (%s); trying again in %g s",
                sum(len(group.items) for group in groups),
                type(err).__name__,
                delay,
            )
            close_old_connections()  # a dropped connection is opened again
            time.sleep(delay)
    logger.error(
        "Could not write %d delivery result(s) (the providers' answers are kept and written "
        "before this process claims again; if it stops first, their events are sent again "
        "once their lease runs out)",
        sum(len(group.items) for group in groups),
        exc_info=True,
    )
    for group in groups:
        group.kept_runs += 1
        if group.kept_runs <= KEPT_RUNS:
            with _unwritten_lock:
                _unwritten.append(group)
        else:
            logger.error(
                "Site %s: giving up writing %d delivery result(s); their events are sent "
                "again once their lease runs out",
                group.site.pk,
                len(group.items),
            )
    report = DeliveryReport()
    report.deferred = sum(len(group.items) for group in groups)
    return report


def write_unwritten() -> DeliveryReport:
    """Write results kept from a failed write (see ``write``)."""
    with _unwritten_lock:  # the sweep and a background drain may share the process
        kept = list(_unwritten)
        _unwritten.clear()
    return write(kept) if kept else DeliveryReport()


def unwritten_count() -> int:
    return sum(len(group.items) for group in _unwritten)


@dataclass(frozen=True)
class _Mode:
    """How a write is tried again after the database refused what it held."""

    recheck: bool = False  # read which events are still held (some may have been deleted)
    plain: bool = False  # store attempts without the provider's texts


def _write_once(using: str, groups: Sequence[SiteResults], mode: _Mode) -> DeliveryReport:
    report = DeliveryReport()
    now = timezone.now()
    with transaction.atomic(using=using):
        for group in groups:
            _write_site(group, now, report, mode)
    return report


def _write_site(group: SiteResults, now: datetime, report: DeliveryReport, mode: _Mode) -> None:
    lease, site, using = group.lease, group.site, group.lease.using
    # Which events are still this claim's (a renewal, when the lease runs short or on a
    # recheck, also takes the rows' write locks before anything is read).
    ids = [item.event.pk for item in group.items]
    held = lease.renew(ids) if mode.recheck else lease.still_held(ids)
    lost = [item for item in group.items if item.event.pk not in held]
    if lost:
        logger.warning(
            "Site %s: %d event(s) were taken over by another worker (or deleted); nothing "
            "about them was written",
            site.pk,
            len(lost),
        )
    exchanges = write_attempts(using, site, group.items, held, now, mode.plain)
    # An event whose request delivered all it carried keeps only the order's totals
    # (``privacy.delivered_snapshot``): that request is stored without its body, nothing
    # failed that a person must look into, and no stored body is left holding the
    # customer's data where ``forget_customer`` could not find it.
    trimmed = delivered_exchanges(group.items)
    # Events written alike share a statement: the same new values, and whether their
    # snapshot is trimmed (by the database, each row from its own).
    updates: dict[tuple[bool, tuple[tuple[str, Any], ...]], list[int]] = defaultdict(list)
    for item in group.items:
        if item.event.pk in held:
            values = _event_values(item.decision, now)
            trim = item.event.pk in trimmed
            updates[(trim, tuple(sorted(values.items())))].append(item.event.pk)
            _count(report, item)
            _apply_in_memory(item.event, values)
            if trim and isinstance(item.event.snapshot, dict):
                item.event.snapshot = delivered_snapshot(item.event.snapshot)
            _announce(item, using)
    written = 0
    for (trim, shared), pks in updates.items():
        snapshot = {"snapshot": delivered_snapshot_sql()} if trim else {}
        for start in range(0, len(pks), STATEMENT_ROWS):
            chunk = pks[start : start + STATEMENT_ROWS]
            written += lease.held(chunk).update(**dict(shared), **snapshot)
    if written != sum(len(pks) for pks in updates.values()):
        # The token kept the new holder's rows; only a clock far ahead elsewhere gets here.
        logger.error(
            "Site %s: %d event(s) were taken over before their lease ran out by this "
            "process's clock; check the machines' clocks",
            site.pk,
            sum(len(pks) for pks in updates.values()) - written,
        )
    key = group.key
    if exchanges and key is not None:
        last = key.last_used_at
        if last is None or now - last >= KEY_USE_PRECISION:
            ApiKey.objects.using(using).filter(pk=key.pk).update(last_used_at=now)
            key.last_used_at = now
    _write_site_state(group, now)


def _event_values(decision: Decision, now: datetime) -> dict[str, Any]:
    status = _STATUS[decision.verdict]
    values: dict[str, Any] = {
        "status": status,
        "attempts": decision.attempts,
        "last_error": storable_text(decision.reason),
        "claim_token": None,  # the lease ends
        "lease_expires_at": None,
        "updated_at": now,
    }
    if status == EventStatus.DELIVERED:
        values["delivered_at"] = now
    if decision.next_attempt_at is not None:
        values["next_attempt_at"] = decision.next_attempt_at
    return values


def _apply_in_memory(event: ConversionEvent, values: dict[str, Any]) -> None:
    """The instance as written, for the signals' receivers."""
    for name, value in values.items():
        setattr(event, name, value)


def _count(report: DeliveryReport, item: Recorded) -> None:
    verdict = item.decision.verdict
    if verdict == Verdict.DELIVERED:
        report.delivered += 1
    elif verdict == Verdict.RETRY:
        report.retrying += 1
        assert item.decision.next_attempt_at is not None
        report.retry_at.append((item.event.pk, item.decision.next_attempt_at))
    elif verdict == Verdict.FAILED:
        report.failed += 1
    elif verdict == Verdict.SKIPPED:
        report.skipped += 1
    else:
        report.deferred += 1


def _announce(item: Recorded, using: str) -> None:
    """Log a failure; send the public signals once the transaction commits."""
    event, decision = item.event, item.decision
    if decision.verdict == Verdict.FAILED:
        logger.warning(
            "Event %s to site %s failed: %s",
            event.event_id,
            event.site_id,
            redact_personal(decision.reason),
        )
        if event_failed.has_listeners(ConversionEvent):
            send = functools.partial(
                event_failed.send_robust,
                sender=ConversionEvent,
                event=event,
                reason=decision.reason,
            )
            transaction.on_commit(send, using=using)
    elif decision.verdict == Verdict.DELIVERED and event_delivered.has_listeners(ConversionEvent):
        send = functools.partial(event_delivered.send_robust, sender=ConversionEvent, event=event)
        transaction.on_commit(send, using=using)


def _write_site_state(group: SiteResults, now: datetime) -> None:
    """Pause or hold the site when a result says so."""
    site, using = group.site, group.lease.using
    pause = next((i.decision.pause_site for i in group.items if i.decision.pause_site), None)
    if pause is not None:
        pause_site(site, pause, now, using)
    holds = [i.decision.hold_site_until for i in group.items if i.decision.hold_site_until]
    if holds:
        hold_site(site, max(holds), using)


def hold_site(site: TrackingSite, until: datetime, using: str) -> None:
    """Send nothing to the site before ``until`` (a later hold already set stays)."""
    TrackingSite.objects.using(using).filter(pk=site.pk).filter(
        Q(held_until__isnull=True) | Q(held_until__lt=until)
    ).update(held_until=until)
    if site.held_until is None or site.held_until < until:
        site.held_until = until
    logger.info("Holding site %s until %s", site.pk, until.isoformat())


def pause_site(site: TrackingSite, reason: str, now: datetime, using: str) -> None:
    """Pause the site unless it is paused already (the first reason stays)."""
    reason = storable_text(reason[:500])
    paused = (
        TrackingSite.objects.using(using)
        .filter(pk=site.pk, paused_at__isnull=True)
        .update(paused_at=now, paused_reason=reason)
    )
    if paused:
        site.paused_at, site.paused_reason = now, reason
        logger.warning("Paused site %s: %s", site.pk, redact_personal(reason))
