"""The delivery policy: what a provider's answer means for an event, as plain values.

No database here and no models: an event's attempts and creation time, the provider's
``Result`` and the time go in; the event's next state comes out (delivered, retried at a time,
failed with a reason, skipped, waiting for its paused site), with what happens to the site
(paused because its credentials were refused, held until a time because the provider asked us
to slow down). The sender asks, the recorder writes.

Every path ends in a decision that moves the event on: an error nobody expected (a bug, an
answer no parser survives, a Retry-After too large for a date) is an attempt like any other,
counted and backed off, and the event fails once ``RETRY_MAX_AGE`` has passed.
"""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from django_conversions.conf import conversions_settings
from django_conversions.outcomes import Outcome
from django_conversions.providers.base import Result

#: Longest wait a provider's Retry-After can impose, in seconds (one day): a larger value is
#: taken as this (providers document waits of seconds to minutes; a value beyond any date
#: must not stop the policy). Never more than ``RETRY_MAX_AGE``.
RETRY_AFTER_MAX = 24 * 3600.0
#: Longest reason kept on an event (``ConversionEvent.last_error`` is shown in the admin).
REASON_MAX = 2000


class Verdict(enum.StrEnum):
    """The event's next state."""

    DELIVERED = "delivered"
    RETRY = "retry"  # pending again, due at ``Decision.next_attempt_at``
    FAILED = "failed"
    SKIPPED = "skipped"
    WAIT = "wait"  # pending, attempts unchanged: its site is paused or held, not the event


@dataclass(frozen=True)
class Rules:
    """The retry settings the policy applies (``RETRY_SCHEDULE``, ``RETRY_JITTER``,
    ``RETRY_MAX_AGE``), as plain values."""

    schedule: Sequence[float] = (60.0,)
    jitter: float = 0.0
    max_age: float = 3 * 24 * 3600.0

    @classmethod
    def from_settings(cls) -> Rules:
        return cls(
            schedule=tuple(float(s) for s in conversions_settings.RETRY_SCHEDULE) or (60.0,),
            jitter=float(conversions_settings.RETRY_JITTER),
            max_age=float(conversions_settings.RETRY_MAX_AGE),
        )


@dataclass(frozen=True)
class Decision:
    """What a result means for one event, and for its site."""

    verdict: Verdict
    attempts: int  # the event's attempts after this result
    reason: str  # the event's last_error: "" when delivered
    next_attempt_at: datetime | None = None  # RETRY and WAIT: when it is due again
    pause_site: str | None = None  # the site's paused_reason, when the site must stop
    hold_site_until: datetime | None = None  # nothing goes to the site before this time

    @property
    def stops_site(self) -> bool:
        """Must the site's other events wait (it is paused or held)?"""
        return self.pause_site is not None or self.hold_site_until is not None


def cap_retry_after(seconds: float | None, rules: Rules) -> float | None:
    """A provider's Retry-After as a wait we can schedule: at most ``RETRY_AFTER_MAX`` (and
    ``RETRY_MAX_AGE``); not a number -> None (ignored)."""
    if seconds is None or math.isnan(seconds):
        return None
    return max(0.0, min(seconds, RETRY_AFTER_MAX, rules.max_age))


def retry_delay(
    attempts: int,
    retry_after: float | None = None,
    rand: Callable[[], float] = random.random,
    rules: Rules | None = None,
) -> float:
    """Seconds to wait after the ``attempts``-th failed attempt.

    The schedule gives the base wait, its last step repeating; jitter adds up to
    ``RETRY_JITTER`` of it so that events failing together don't retry together; a provider's
    Retry-After (capped, see ``cap_retry_after``) is a floor.
    """
    rules = rules or Rules.from_settings()
    schedule = list(rules.schedule) or [60.0]
    base = float(schedule[min(max(attempts, 1), len(schedule)) - 1])
    delay = base * (1 + rules.jitter * rand())
    capped = cap_retry_after(retry_after, rules)
    if capped is not None:
        delay = max(delay, capped)
    return delay


def gives_up(created_at: datetime, next_attempt_at: datetime, rules: Rules | None = None) -> bool:
    """Retry until ``RETRY_MAX_AGE`` after the event was recorded, then fail it."""
    rules = rules or Rules.from_settings()
    return next_attempt_at > created_at + timedelta(seconds=rules.max_age)


def decide(
    result: Result,
    *,
    attempts: int,
    created_at: datetime,
    now: datetime,
    provider_name: str,
    rules: Rules,
    rand: Callable[[], float] = random.random,
) -> Decision:
    """The event's next state after ``result``. Never raises: an error while deciding is
    itself a failed attempt (see ``unexpected``)."""
    try:
        return _decide(result, attempts, created_at, now, provider_name, rules, rand)
    except Exception as err:  # a value no rule foresaw must not leave the event as it was
        problem = unexpected(err)
    try:
        return _retry(problem, attempts, created_at, now, rules, rand)
    except Exception:  # even the schedule fails (a broken creation time): the longest wait
        longest = max(rules.schedule, default=60.0)
        return Decision(
            Verdict.RETRY,
            attempts + 1,
            _short(f"attempt {attempts + 1} failed: {problem.reason}"),
            next_attempt_at=now + timedelta(seconds=longest),
        )


def _decide(
    result: Result,
    attempts: int,
    created_at: datetime,
    now: datetime,
    provider_name: str,
    rules: Rules,
    rand: Callable[[], float],
) -> Decision:
    if result.outcome == Outcome.AUTH_FAILED:
        # The key (or site id) is wrong, not the event: it keeps its attempts and goes once
        # a new key is saved or the site is resumed.
        return Decision(
            Verdict.WAIT,
            attempts,
            waiting_reason(f"site paused ({result.reason})"),
            next_attempt_at=now,
            pause_site=_pause_reason(result, provider_name),
        )
    if result.outcome == Outcome.RETRY:
        decision = _retry(result, attempts, created_at, now, rules, rand)
        if result.http_status == 429:  # the provider asked the whole site to slow down
            wait = cap_retry_after(result.retry_after, rules) or 0.0
            return _held(decision, now + timedelta(seconds=wait))
        return decision
    counted = attempts + (1 if result.exchange is not None else 0)
    if result.outcome == Outcome.DELIVERED:
        return Decision(Verdict.DELIVERED, counted, "")
    if result.outcome == Outcome.INELIGIBLE:
        return Decision(Verdict.SKIPPED, counted, _short(result.reason))
    return Decision(Verdict.FAILED, counted, _short(result.reason))


def _retry(
    result: Result,
    attempts: int,
    created_at: datetime,
    now: datetime,
    rules: Rules,
    rand: Callable[[], float],
) -> Decision:
    attempts += 1
    try:
        next_at = now + timedelta(seconds=retry_delay(attempts, result.retry_after, rand, rules))
    except (OverflowError, ValueError):  # a schedule beyond any date: nothing left to wait for
        next_at = None
    if next_at is None or gives_up(created_at, next_at, rules):
        return Decision(
            Verdict.FAILED, attempts, _short(f"gave up after {attempts} attempts: {result.reason}")
        )
    return Decision(
        Verdict.RETRY,
        attempts,
        _short(f"attempt {attempts} failed: {result.reason}"),
        next_attempt_at=next_at,
    )


def _held(decision: Decision, until: datetime) -> Decision:
    """``decision`` with its site held until ``until``; a retry is not due before it."""
    if decision.next_attempt_at is not None:
        decision = replace(decision, next_attempt_at=max(decision.next_attempt_at, until))
    return replace(decision, hold_site_until=until)


def unexpected(err: BaseException) -> Result:
    """A RETRY result for an error no part of delivery expected (a bug, a body no parser
    survives): the event's attempt counts and is backed off like any failed one."""
    text = " ".join(str(err).split())[:300]
    return Result(
        Outcome.RETRY, f"unexpected error: {type(err).__name__}" + (f": {text}" if text else "")
    )


def waiting_reason(why: str) -> str:
    """The reason shown on an event that waits for its site, not for itself."""
    return _short(f"waiting: {why}")


def _short(text: str) -> str:
    return text[:REASON_MAX]


def _pause_reason(result: Result, provider_name: str) -> str:
    """Why the site pauses: the provider refused its credentials, or (no answer at all) the
    request was refused before it left, e.g. an endpoint resolving to a private address."""
    if result.http_status is None:
        return result.reason
    return f"{provider_name} refused the site's credentials: {result.reason}"
