"""What a delivery run did, counted by what happened to each event."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

_COUNTS = ("delivered", "retrying", "failed", "skipped", "deferred")


@dataclass
class DeliveryReport:
    """Counts of what a delivery run did, by what happened to each event."""

    delivered: int = 0
    retrying: int = 0
    failed: int = 0
    skipped: int = 0
    deferred: int = 0  # not sent: site paused or held back, or the worker stopping; pending
    #: (event pk, when it is due again) for each event scheduled for a retry.
    retry_at: list[tuple[int, datetime]] = field(default_factory=list)

    def add(self, other: DeliveryReport) -> None:
        for name in _COUNTS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.retry_at.extend(other.retry_at)

    def counts(self) -> dict[str, int]:
        """The counts by name (a task's return value, a log line's fields)."""
        return {name: getattr(self, name) for name in _COUNTS}

    @property
    def handled(self) -> int:
        return self.delivered + self.retrying + self.failed + self.skipped + self.deferred

    def __str__(self) -> str:
        return (
            f"delivered {self.delivered}, retrying {self.retrying}, failed {self.failed}, "
            f"skipped {self.skipped}, deferred {self.deferred}"
        )
