"""Delivery: claim due events, send them through their provider, record, schedule.

One job per module (see docs/architecture.md):

- ``policy``: a provider's answer -> the event's next state (pure, no database);
- ``claims``: due events taken site by site under a lease fenced by a claim token;
- ``sender``: requests per site, per-site concurrency on a shared pool, the rate budget;
- ``recorder``: the events' new states, written under the token, with their ``attempts`` rows;
- ``ratelimit``: the per-minute budget every worker shares.

``deliver_due()`` is the sweep (``conversions_deliver``) and ``deliver_events()`` the fast path
after commit (``tasks``). Neither is ever called inside a web request by this package.
"""

from __future__ import annotations

from collections.abc import Iterable

from django_conversions.conf import conversions_settings
from django_conversions.delivery import recorder, sender
from django_conversions.delivery.claims import claim
from django_conversions.delivery.policy import gives_up, retry_delay
from django_conversions.delivery.ratelimit import forget_budgets, reserve_requests
from django_conversions.delivery.report import DeliveryReport
from django_conversions.delivery.sender import StopCheck
from django_conversions.refresh import refresh_marked

__all__ = [
    "DeliveryReport",
    "claim",
    "deliver_due",
    "deliver_events",
    "forget_sites",
    "gives_up",
    "reserve_requests",
    "retry_delay",
]


def deliver_due(
    max_events: int | None = None, *, should_stop: StopCheck | None = None
) -> DeliveryReport:
    """Deliver everything due now (optionally at most ``max_events``) and return the counts.

    ``should_stop`` is asked before each new request: once it returns True, nothing more is
    sent, the answers in flight are recorded and the rest is handed back.
    """
    report = recorder.write_unwritten()
    batch = max(1, conversions_settings.CLAIM_BATCH_SIZE)
    while max_events is None or report.handled < max_events:
        if should_stop is not None and should_stop():
            break
        limit = batch if max_events is None else min(batch, max_events - report.handled)
        lease = claim(limit)
        if len(lease):
            # With a cap on events, each site stays within this claim's share of it.
            report.add(sender.send(lease, should_stop, take_more=max_events is None))
        if not lease.more_due:  # that was everything due (or not held by other workers)
            break
    return report


def deliver_events(
    event_ids: Iterable[int],
    *,
    rebuild_ids: Iterable[int] | None = None,
    should_stop: StopCheck | None = None,
) -> DeliveryReport:
    """Deliver these events now if they are due (after commit; a scheduled retry).

    Those marked to be rebuilt from their committed order are rebuilt first (a skipped one
    that turns out eligible is then sent too): ``rebuild_ids`` when the caller knows which
    may be marked (none: no query), else all of them are looked up. A marked event left out
    is still rebuilt by the sender before it is sent.
    """
    report = recorder.write_unwritten()
    ids = list(event_ids)
    marked = ids if rebuild_ids is None else list(rebuild_ids)
    if marked:
        refresh_marked(marked)
    batch = max(1, conversions_settings.CLAIM_BATCH_SIZE)
    for start in range(0, len(ids), batch):
        more_due = True
        while more_due:
            if should_stop is not None and should_stop():
                return report
            chunk = ids[start : start + batch]
            lease = claim(batch, chunk)
            if len(lease):
                report.add(sender.send(lease, should_stop, ids=chunk))
            more_due = lease.more_due
    return report


def forget_sites() -> None:
    """Drop what this process remembers of the sites: its unused request budgets and which
    sites took a request lately (tests; a site's limit or key changing)."""
    forget_budgets()
    sender.forget_accepted()
