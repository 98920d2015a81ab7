"""Delivery states as people read them: the stored status, with "retrying" told apart.

A pending event that already failed an attempt is waiting for its next try, which is news to
whoever looks at it. The admin, its overview and the example shop's thank-you page all say so
with the words below, so a shop and its admin never call one event two names.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Case, CharField, F, Q, Value, When
from django.utils.translation import gettext_lazy as _

from django_conversions.models import ConversionEvent, EventStatus

RETRYING = "retrying"

# Every state, in the order a delivery goes through them (lists, charts and legends use it).
STATE_LABELS: dict[str, Any] = {
    "delivered": _("delivered"),
    "pending": _("pending"),
    RETRYING: _("retrying"),
    "sending": _("sending"),
    "failed": _("failed"),
    "skipped": _("skipped"),
}


def event_state(event: ConversionEvent) -> str:
    """The state of ``event``: its stored status, or ``retrying``."""
    if event.status == EventStatus.PENDING and event.attempts > 0:
        return RETRYING
    return str(event.status)


def state_label(event: ConversionEvent) -> str:
    return str(STATE_LABELS[event_state(event)])


def state_expression() -> Case:
    """``event_state`` in SQL, for grouping and counting in the database."""
    return Case(
        When(status=EventStatus.PENDING, attempts__gt=0, then=Value(RETRYING)),
        default=F("status"),
        output_field=CharField(),
    )


def in_state(state: str) -> Q:
    """A filter for the events in ``state`` (``pending`` means not tried yet)."""
    if state == RETRYING:
        return Q(status=EventStatus.PENDING, attempts__gt=0)
    if state == EventStatus.PENDING:
        return Q(status=EventStatus.PENDING, attempts=0)
    return Q(status=state)
