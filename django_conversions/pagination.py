"""Counting a list of events without reading the whole outbox.

A ``COUNT(*)`` of a table of tens of millions of rows takes seconds to minutes, and both the
admin's event list and the API's answer one on every page: they count at most
``COUNT_LIMIT`` rows and say when more match.
"""

from __future__ import annotations

from typing import Any

from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.utils.functional import cached_property

#: Most rows a list of events counts; past it, the list says "more than" this many.
COUNT_LIMIT = 10_000


class CappedPaginator(Paginator):
    """Counts at most ``COUNT_LIMIT`` rows: ``SELECT COUNT(*)`` over a ``LIMIT`` subquery."""

    @cached_property
    def counted(self) -> int:
        """Rows found, up to one more than ``COUNT_LIMIT`` (that one says "more")."""
        return count_past_limit(self.object_list)  # type: ignore[arg-type]

    @cached_property
    def count(self) -> int:
        return min(self.counted, COUNT_LIMIT)

    @property
    def capped(self) -> bool:
        """More rows match than were counted."""
        return self.counted > COUNT_LIMIT


def count_past_limit(rows: QuerySet[Any]) -> int:
    """How many rows match, reading no further than one past ``COUNT_LIMIT``."""
    return rows.order_by()[: COUNT_LIMIT + 1].count()


def over_count_limit(rows: QuerySet[Any]) -> bool:
    """Do more than ``COUNT_LIMIT`` rows match?"""
    return count_past_limit(rows) > COUNT_LIMIT
