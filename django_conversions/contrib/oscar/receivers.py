"""Tracking on Oscar's own signals instead of the order's ``post_save``.

``OrderCreator.place_order()`` saves the order once, before its lines, discounts and voucher
usage; ``post_save`` would see an order without items. Oscar sends ``order_placed`` when all of
it is written (after its transaction), and ``order_status_changed`` from ``Order.set_status()``
(the dashboard's way). Both receivers hand the order to the outbox's ``track_order()``, which
asks the adapter's ``should_track()``: the same dedup, savepoint and reconciliation as any order.

Like the core ``post_save`` receiver, these never raise: Oscar sends both signals with
``send()``, so an exception here would break the checkout after the order was placed.

Oscar places the order inside the visitor's checkout request, so ``placed`` first attributes it
to the current visit (the scan session id and consent ``ScanSessionMiddleware`` found in the
session, ``django_conversions.attribution``), as the core receiver does for a created order;
the adapter reads them from there. A later status change (the dashboard's request) attributes
nothing: that request is not the buyer's visit.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db.models.signals import post_delete
from oscar.apps.order.signals import order_placed, order_status_changed

from django_conversions.attribution import attribute_order, current_visit
from django_conversions.contrib.oscar.adapters import oscar_order_model
from django_conversions.outbox import track_order
from django_conversions.signals import order_deleted

logger = logging.getLogger("django_conversions")

_PLACED_UID = "django_conversions.contrib.oscar.order_placed"
_STATUS_UID = "django_conversions.contrib.oscar.order_status_changed"
_DELETED_UID = "django_conversions.contrib.oscar.order_deleted"


def placed(sender: Any, order: Any, **kwargs: Any) -> None:
    """``order_placed``: the order, its lines and discounts are written."""
    try:
        visit = current_visit()
        if visit is not None and not visit.is_empty():
            # attribute_order(), not attach_current_visit(): OrderCreator commits the order
            # before this signal, so the sweep may have recorded it already, without the
            # visit; those unsent events are then rebuilt with it.
            attribute_order(visit, order)
    except Exception:  # the order is tracked without its visit
        logger.exception(
            "Could not attribute Oscar order %s to the visit it was placed in",
            getattr(order, "number", order.pk),
        )
    _track(order, placed=True)


def status_changed(sender: Any, order: Any, **kwargs: Any) -> None:
    """``order_status_changed``: ``Order.set_status()`` saved a new status."""
    _track(order, placed=False)


def _track(order: Any, *, placed: bool) -> None:
    try:
        track_order(order, created=placed)
    except Exception:  # Oscar's checkout must go on whatever happens here
        logger.exception(
            "Could not record the conversion of Oscar order %s; the sweep's reconciliation "
            "will record it",
            getattr(order, "number", order.pk),
        )


def connect() -> None:
    order_placed.connect(placed, dispatch_uid=_PLACED_UID)
    order_status_changed.connect(status_changed, dispatch_uid=_STATUS_UID)
    try:
        model = oscar_order_model()
    except LookupError:
        return  # Oscar's order app is missing: check conversions_oscar.E005 says so
    # A deleted order's attribution (personal data) goes with it, as for ORDER_MODEL's.
    post_delete.connect(order_deleted, sender=model, dispatch_uid=_DELETED_UID)


def disconnect() -> None:
    order_placed.disconnect(dispatch_uid=_PLACED_UID)
    order_status_changed.disconnect(dispatch_uid=_STATUS_UID)
    post_delete.disconnect(sender=oscar_order_model(), dispatch_uid=_DELETED_UID)
