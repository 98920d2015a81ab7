"""The delivery policy on its own: plain values in, the event's next state out. No database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from django_conversions.delivery.policy import (
    RETRY_AFTER_MAX,
    Decision,
    Rules,
    Verdict,
    decide,
    gives_up,
    retry_delay,
    unexpected,
)
from django_conversions.outcomes import Outcome
from django_conversions.providers.base import Exchange, Result, parse_retry_after

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
RULES = Rules(schedule=(1, 2, 4), jitter=0.0, max_age=3600)


def exchange(status: int | None) -> Exchange:
    return Exchange(
        url="https://x.test/e",
        request_headers={},
        request_body="{}",
        status=status,
        response_headers={},
        response_body="",
        error="",
        duration_ms=5,
        batch_size=1,
    )


def answer(outcome: Outcome, status: int | None, reason: str = "", retry_after=None) -> Result:
    return Result(outcome, reason, retry_after, exchange(status))


def decided(result: Result, attempts: int = 0, created_at: datetime = NOW, **kw) -> Decision:
    return decide(
        result,
        attempts=attempts,
        created_at=created_at,
        now=kw.pop("now", NOW),
        provider_name="Scanova",
        rules=kw.pop("rules", RULES),
        rand=lambda: 0.0,
    )


def test_an_accepted_event_is_delivered_and_its_attempt_counted():
    decision = decided(answer(Outcome.DELIVERED, 200, "accepted (HTTP 200)"), attempts=2)
    assert (decision.verdict, decision.attempts, decision.reason) == (Verdict.DELIVERED, 3, "")
    assert not decision.stops_site


def test_a_transient_error_is_retried_on_the_schedule():
    decision = decided(answer(Outcome.RETRY, 503, "HTTP 503"), attempts=1)
    assert decision.verdict == Verdict.RETRY and decision.attempts == 2
    assert decision.next_attempt_at == NOW + timedelta(seconds=2)
    assert decision.reason == "attempt 2 failed: HTTP 503"


def test_backoff_adds_jitter_and_the_last_step_repeats():
    rules = Rules(schedule=(1, 2, 4), jitter=0.5)
    assert retry_delay(1, rand=lambda: 0.0, rules=rules) == 1
    assert retry_delay(2, rand=lambda: 1.0, rules=rules) == 3
    assert retry_delay(9, rand=lambda: 0.0, rules=rules) == 4
    assert retry_delay(1, retry_after=30, rand=lambda: 0.0, rules=rules) == 30


def test_a_retry_past_the_max_age_fails_the_event():
    created = NOW - timedelta(seconds=3599)
    decision = decided(answer(Outcome.RETRY, 500, "HTTP 500"), attempts=4, created_at=created)
    assert decision.verdict == Verdict.FAILED
    assert decision.reason == "gave up after 5 attempts: HTTP 500"
    assert gives_up(created, NOW + timedelta(seconds=2), RULES)


@pytest.mark.parametrize("header", ["300000000000", "9" * 400])
def test_a_huge_retry_after_is_capped_not_an_overflow(header):
    # given: Retry-After values no date can hold (the second parses to infinity)
    seconds = parse_retry_after(header)
    assert seconds is not None
    rules = Rules(schedule=(1,), max_age=10 * 24 * 3600)
    # when
    retry = decided(answer(Outcome.RETRY, 503, "HTTP 503", seconds), rules=rules)
    held = decided(answer(Outcome.RETRY, 429, "HTTP 429", seconds), rules=rules)
    # then: the wait is the cap, the event is still retried, and a 429 holds the site that long
    cap = NOW + timedelta(seconds=RETRY_AFTER_MAX)
    assert retry.verdict == Verdict.RETRY and retry.next_attempt_at == cap
    assert held.verdict == Verdict.RETRY and held.hold_site_until == cap
    assert retry_delay(1, seconds, rand=lambda: 0.0, rules=rules) == RETRY_AFTER_MAX


def test_retry_after_is_capped_at_the_max_age_then_the_event_gives_up():
    # given: RETRY_MAX_AGE of an hour, and a provider asking for far longer
    first = decided(answer(Outcome.RETRY, 503, "HTTP 503", 1e12))
    assert first.verdict == Verdict.RETRY
    assert first.next_attempt_at == NOW + timedelta(seconds=RULES.max_age)
    # when: it asks again at that time
    again = decided(
        answer(Outcome.RETRY, 503, "HTTP 503", 1e12), attempts=1, now=first.next_attempt_at
    )
    # then
    assert again.verdict == Verdict.FAILED and again.reason.startswith("gave up after 2")


def test_429_holds_the_site_and_the_event_waits_at_least_as_long():
    decision = decided(answer(Outcome.RETRY, 429, "HTTP 429: slow down", 120.0))
    assert decision.hold_site_until == NOW + timedelta(seconds=120)
    assert decision.next_attempt_at == NOW + timedelta(seconds=120)
    assert decision.stops_site and decision.pause_site is None


def test_refused_credentials_pause_the_site_and_cost_the_event_nothing():
    decision = decided(answer(Outcome.AUTH_FAILED, 401, "HTTP 401: bad key"), attempts=3)
    assert decision.verdict == Verdict.WAIT and decision.attempts == 3
    assert decision.pause_site == "Scanova refused the site's credentials: HTTP 401: bad key"
    assert decision.reason == "waiting: site paused (HTTP 401: bad key)"
    assert decision.next_attempt_at == NOW


def test_permanent_errors_fail_and_ineligible_events_are_skipped():
    failed = decided(answer(Outcome.FAILED, 422, "HTTP 422: currency"))
    skipped = decided(Result(Outcome.INELIGIBLE, "no consent"))
    assert (failed.verdict, failed.attempts, failed.reason) == (
        Verdict.FAILED,
        1,
        "HTTP 422: currency",
    )
    # nothing was sent for the skipped one: no attempt counted
    assert (skipped.verdict, skipped.attempts) == (Verdict.SKIPPED, 0)


def test_an_unexpected_error_is_an_attempt_backed_off_until_the_max_age():
    # given: a provider that raised something nobody expected, again and again
    problem = unexpected(RecursionError("maximum recursion depth exceeded"))
    created, now, attempts = NOW, NOW, 0
    seen: list[Decision] = []
    # when: each retry runs when it is due
    while True:
        decision = decided(problem, attempts=attempts, created_at=created, now=now)
        seen.append(decision)
        if decision.verdict != Verdict.RETRY:
            break
        assert decision.next_attempt_at is not None and decision.next_attempt_at > now
        attempts, now = decision.attempts, decision.next_attempt_at
    # then: every try counted and waited longer, and the event failed at RETRY_MAX_AGE
    assert [d.attempts for d in seen] == list(range(1, len(seen) + 1))
    assert seen[-1].verdict == Verdict.FAILED
    assert "unexpected error: RecursionError" in seen[-1].reason
    assert now <= created + timedelta(seconds=RULES.max_age)


def test_an_error_while_deciding_is_itself_a_counted_attempt():
    # given: a result whose Retry-After is not a number at all
    broken = Result(Outcome.RETRY, "HTTP 503", "soon", exchange(503))  # type: ignore[arg-type]
    # when
    decision = decided(broken, attempts=1)
    # then: not "pending, due now, attempts unchanged"
    assert decision.verdict == Verdict.RETRY and decision.attempts == 2
    assert decision.next_attempt_at is not None and decision.next_attempt_at > NOW
    assert "unexpected error: TypeError" in decision.reason


def test_a_request_refused_before_it_left_pauses_the_site_with_its_own_reason():
    reason = "not sent: api.example resolves to 127.0.0.1, a private address"
    decision = decided(answer(Outcome.AUTH_FAILED, None, reason))
    assert decision.pause_site == reason
