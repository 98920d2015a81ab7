"""The per-minute request budget of each site, shared by every worker on every machine.

The budget is a fixed one-minute window kept on the site row (``rate_window_start``,
``rate_window_count``) and changed with compare-and-set updates. A process takes at least
``RESERVE_BLOCK`` requests at a time and keeps what it didn't use for the rest of the same
minute, so a busy worker touches the row rarely.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

from django.db import router
from django.utils import timezone

from django_conversions.models import TrackingSite

RATE_WINDOW = timedelta(minutes=1)
#: Fewest requests a process reserves from the row at a time.
RESERVE_BLOCK = 20
#: Compare-and-set tries before giving up for now under heavy contention.
RESERVE_TRIES = 10

_leftover: dict[int, tuple[datetime, int]] = {}
_leftover_lock = threading.Lock()


def reserve_requests(site: TrackingSite, per_minute: int | None, wanted: int) -> tuple[int, float]:
    """Take up to ``wanted`` requests from the site's per-minute budget.

    Returns ``(granted, seconds_to_wait)``; ``seconds_to_wait`` matters when nothing was
    granted.
    """
    if not per_minute:
        return wanted, 0.0
    window = timezone.now().replace(second=0, microsecond=0)
    with _leftover_lock:
        kept_window, kept = _leftover.get(site.pk, (window, 0))
        kept = kept if kept_window == window else 0
        if kept >= wanted:
            _leftover[site.pk] = (window, kept - wanted)
            return wanted, 0.0
        granted, wait, window = _reserve_from_row(
            site, per_minute, max(wanted - kept, min(RESERVE_BLOCK, per_minute))
        )
        total = kept + granted
        _leftover[site.pk] = (window, max(0, total - wanted))
    if total == 0:
        return 0, wait
    return min(total, wanted), 0.0


def forget_budgets() -> None:
    with _leftover_lock:
        _leftover.clear()


def _reserve_from_row(
    site: TrackingSite, per_minute: int, wanted: int
) -> tuple[int, float, datetime]:
    rows = TrackingSite.objects.using(router.db_for_write(TrackingSite)).filter(pk=site.pk)
    window = timezone.now().replace(second=0, microsecond=0)
    for _ in range(RESERVE_TRIES):
        now = timezone.now()
        window = now.replace(second=0, microsecond=0)
        start, count = rows.values_list("rate_window_start", "rate_window_count").get()
        used = count if start == window else 0
        granted = min(wanted, per_minute - used)
        if granted <= 0:
            return 0, max(0.5, (window + RATE_WINDOW - now).total_seconds()), window
        same = rows.filter(rate_window_start=start, rate_window_count=count)
        if same.update(rate_window_start=window, rate_window_count=used + granted):
            return granted, 0.0, window
    return 0, 1.0, window  # heavy contention: try again shortly
