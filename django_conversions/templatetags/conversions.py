"""Template filters for a shop's own pages: a conversion event's delivery state in the words
the admin uses (``{% load conversions %}``, then ``{{ event|delivery_state_label }}``)."""

from __future__ import annotations

from django import template

from django_conversions.models import ConversionEvent
from django_conversions.states import event_state, state_label

register = template.Library()


@register.filter
def delivery_state(event: ConversionEvent) -> str:
    """The state's name (``retrying``, ``delivered`` …), for a CSS class."""
    return event_state(event)


@register.filter
def delivery_state_label(event: ConversionEvent) -> str:
    """The state as people read it, the same word as in the admin."""
    return state_label(event)
