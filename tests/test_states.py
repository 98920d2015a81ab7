"""Delivery states: one rule for "retrying", the same in Python, in SQL and in filters."""

from __future__ import annotations

import pytest
from django.template import Context, Template

from django_conversions.models import ConversionEvent, EventStatus, TrackingSite
from django_conversions.states import (
    STATE_LABELS,
    event_state,
    in_state,
    state_expression,
    state_label,
)


@pytest.fixture
def events_in_every_state(scanova_site: TrackingSite) -> list[ConversionEvent]:
    return [
        ConversionEvent.objects.create(
            site=scanova_site,
            event_name="purchase",
            dedup_key=f"{status}:{attempts}",
            order_reference=f"{status}-{attempts}",
            snapshot={},
            status=status,
            attempts=attempts,
        )
        for status in EventStatus.values
        for attempts in (0, 2)
    ]


def test_a_pending_event_that_failed_before_is_retrying_and_nothing_else_is():
    # given
    states = {
        (status, attempts): event_state(ConversionEvent(status=status, attempts=attempts))
        for status in EventStatus.values
        for attempts in (0, 2)
    }
    # then
    assert states.pop((EventStatus.PENDING, 2)) == "retrying"
    assert all(state == status for (status, _), state in states.items())
    assert set(STATE_LABELS) == {*EventStatus.values, "retrying"}


def test_the_database_and_the_filters_agree_with_event_state(events_in_every_state):
    # when
    in_sql = dict(
        ConversionEvent.objects.annotate(state=state_expression()).values_list("pk", "state")
    )
    by_filter = {
        event.pk: state
        for state in STATE_LABELS
        for event in ConversionEvent.objects.filter(in_state(state))
    }
    # then
    expected = {event.pk: event_state(event) for event in events_in_every_state}
    assert in_sql == expected
    assert by_filter == expected


def test_a_shops_template_says_what_the_admin_says():
    # given
    event = ConversionEvent(status=EventStatus.PENDING, attempts=1)
    template = Template(
        "{% load conversions %}"
        '<td class="status-{{ event|delivery_state }}">{{ event|delivery_state_label }}</td>'
    )
    # when
    html = template.render(Context({"event": event}))
    # then
    assert html == '<td class="status-retrying">retrying</td>'
    assert state_label(event) == "retrying"
