"""Oscar's catalogue as the feed and the item ids see it: its product model and the stock
record Oscar would sell a product from, chosen by the shop's own pricing strategy."""

from __future__ import annotations

from typing import Any

from django.db import models
from oscar.core.loading import get_class, get_model


def oscar_product_model() -> type[models.Model]:
    """Oscar's ``Product`` model, or the shop's fork of it (Oscar's own model loading)."""
    model: type[models.Model] = get_model("catalogue", "Product")
    return model


def default_strategy() -> Any:
    """The strategy of the shop's ``partner.strategy.Selector`` (a fork's, when it has one)
    without a request or user: the prices and stock anyone visiting sees."""
    return get_class("partner.strategy", "Selector")().strategy()


def purchase_info(product: Any, strategy: Any = None) -> Any:
    """Oscar's ``PurchaseInfo`` of a product (price, availability, the stock record chosen).

    Oscar's strategies pick the stock record from ``product.stockrecords.all()``: with the
    stock records prefetched, this makes no query.
    """
    return (strategy or default_strategy()).fetch_for_product(product)
