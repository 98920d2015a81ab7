"""Placing an order: used by the checkout view and by `manage.py demo`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db import transaction

from shop.cart import Line, shipping_for, subtotal
from shop.models import Order, OrderItem


def place_order(
    cart_lines: Iterable[Line],
    *,
    customer: dict[str, Any],
    scan_session_id: str | None,
    consent: str,
    number: str = "",
    pay: bool = True,
) -> Order:
    """Create the order and its lines, then (``pay``) mark it paid, in one transaction.

    Saving it paid is what django-conversions listens for: the conversion events are written
    in this same transaction, and delivery starts once it commits.
    """
    cart_lines = list(cart_lines)
    amount = subtotal(cart_lines)
    with transaction.atomic():
        order = Order.objects.create(
            number=number,
            shipping=shipping_for(amount),
            scan_session_id=scan_session_id or "",
            tracking_consent=consent,
            **customer,
        )
        OrderItem.objects.bulk_create(
            OrderItem(
                order=order,
                sku=line.product.sku,
                name=line.product.name,
                price=line.product.price,
                quantity=line.quantity,
            )
            for line in cart_lines
        )
        order.recalculate()
        order.save(update_fields=["total"])
        if pay:
            # A real shop does this in its payment provider's callback.
            order.mark_paid()
    return order
