"""Tracking on Oscar's own signals instead of the order's ``post_save``.

``OrderCreator.place_order()`` saves the order once, before its lines, discounts and voucher
usage; ``post_save`` would see an order without items. Oscar sends ``order_placed`` when all of
it is written (after its transaction), and ``order_status_changed`` from ``Order.set_status()``
(the dashboard's way). Both receivers hand the order to the outbox's ``track_order()``, which
asks the adapter's ``should_track()``: the same dedup, savepoint and reconciliation as any order.

Like the core ``post_save`` receiver, these never raise: Oscar sends both signals with
``send()``, so an exception here would break the checkout after the order was placed.
"""

from __future__ import annotations

import logging
from typing import Any

from oscar.apps.order.signals import order_placed, order_status_changed

from django_conversions.outbox import track_order

logger = logging.getLogger("django_conversions")

_PLACED_UID = "django_conversions.contrib.oscar.order_placed"
_STATUS_UID = "django_conversions.contrib.oscar.order_status_changed"


def placed(sender: Any, order: Any, **kwargs: Any) -> None:
    """``order_placed``: the order, its lines and discounts are written."""
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


def disconnect() -> None:
    order_placed.disconnect(dispatch_uid=_PLACED_UID)
    order_status_changed.disconnect(dispatch_uid=_STATUS_UID)
