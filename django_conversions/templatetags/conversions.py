"""``{% load conversions %}``: the providers' front-end scripts (docs/frontend.md), and a
conversion event's delivery state in the words the admin uses.

``{% conversions_scripts %}`` in the base template, before ``</body>``: the active sites'
scripts, when the visitor's consent allows them. On the thank-you page pass the order,
``{% conversions_scripts order=order %}``, so snippets get ``$order_id``, and
``{% conversions_order order %}`` gives the page's own scripts the same order id the server
sends, as a JSON data block. ``{{ event|delivery_state_label }}`` names an event's state as the
admin does (``{{ event|delivery_state }}`` for a CSS class).
"""

from __future__ import annotations

from typing import Any

from django import template
from django.utils.safestring import SafeString

from django_conversions.frontend import (
    allowed_scripts,
    csp_nonce,
    order_id_for_browser,
    render_order,
    render_scripts,
)
from django_conversions.models import ConversionEvent
from django_conversions.states import event_state, state_label

register = template.Library()


@register.simple_tag(takes_context=True)
def conversions_scripts(context: template.Context, order: Any = None) -> SafeString:
    scripts = allowed_scripts(context.get("request"))
    if not scripts:
        return SafeString("")
    order_id = order_id_for_browser(order) if order is not None else None
    return render_scripts(scripts, csp_nonce(context), order_id)


@register.simple_tag(takes_context=True)
def conversions_order(context: template.Context, order: Any) -> SafeString:
    return render_order(order, csp_nonce(context))


@register.filter
def delivery_state(event: ConversionEvent) -> str:
    """The state's name (``retrying``, ``delivered`` …), for a CSS class."""
    return event_state(event)


@register.filter
def delivery_state_label(event: ConversionEvent) -> str:
    """The state as people read it, the same word as in the admin."""
    return state_label(event)
