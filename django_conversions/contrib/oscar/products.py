"""``OscarProductAdapter``: Oscar's catalogue as the product feed, priced by Oscar's strategy.

Point ``CONVERSIONS["PRODUCT_ADAPTER"]`` at it (``PRODUCT_MODEL`` stays unset: the model is
Oscar's ``catalogue.Product``, or the shop's fork of it). It lists the products a customer can
buy: public standalone and child products with a stock record (a parent is only a grouping),
whose parent, if any, is public too. Each row takes:

- ``id``: the order adapter's ``get_item_id(product)`` (with ``OscarOrderAdapter``, the partner
  SKU of the stock record Oscar sells it from: the id its order lines get);
- ``title`` and ``description``: the product's, else its parent's; the description as text;
- ``link``: ``get_absolute_url()``; ``image_link``: the primary image (a child without images
  shows its parent's);
- ``price`` and ``availability``: what the shop's ``partner.strategy.Selector`` gives a
  visitor who is not signed in (incl. tax when the strategy knows the tax);
- ``gtin``: the UPC when it is a valid GTIN (8, 12, 13 or 14 digits with their check digit).
"""

from __future__ import annotations

import html
from functools import cached_property
from typing import Any

from django.apps import apps
from django.db import models
from django.db.models import Count, Exists, Max, OuterRef, Q
from django.utils.html import strip_tags
from oscar.core.loading import get_model

from django_conversions.contrib.oscar.adapters import APP_NAME
from django_conversions.contrib.oscar.catalogue import (
    default_strategy,
    oscar_product_model,
    purchase_info,
)
from django_conversions.products import (
    IN_STOCK,
    OUT_OF_STOCK,
    FeedState,
    ProductAdapter,
    feed_price,
)


class OscarProductAdapter(ProductAdapter):
    """Oscar's products. Override any ``get_*`` in a subclass for your shop."""

    def __init__(self, order_adapter: Any = None) -> None:
        super().__init__(order_adapter)
        # The product whose purchase info was worked out last, and that info.
        self._last_purchase: tuple[Any, Any] | None = None

    def get_model(self) -> type[models.Model] | None:
        """Oscar's product, while the contrib app is installed."""
        return oscar_product_model() if apps.is_installed(APP_NAME) else None

    def get_queryset(self) -> models.QuerySet[Any]:
        model: Any = oscar_product_model()  # Oscar's class attributes (PARENT) aren't typed
        stock_records = get_model("partner", "StockRecord")._default_manager
        return (
            model._default_manager.filter(is_public=True)
            .exclude(structure=model.PARENT)
            .filter(Q(parent__isnull=True) | Q(parent__is_public=True))
            # Without a stock record nothing sells it: not listed, rather than left out with a
            # warning on every fetch.
            .filter(Exists(stock_records.filter(product=OuterRef("pk"))))
            # What each row reads, fetched per chunk rather than per product.
            .select_related("product_class", "parent__product_class")
            .prefetch_related("stockrecords", "images", "parent__images")
            .order_by("pk")
        )

    def state(self) -> FeedState:
        """The count and the newest change of the listed products, their parents (titles and
        descriptions a child shows) and their stock records (prices and stock)."""
        found = (
            self.get_queryset()
            .order_by()
            .aggregate(
                count=Count("pk", distinct=True),
                own=Max("date_updated"),
                parent=Max("parent__date_updated"),
                stock=Max("stockrecords__date_updated"),
            )
        )
        changes = [found[name] for name in ("own", "parent", "stock") if found[name] is not None]
        return FeedState(count=found["count"], last_modified=max(changes, default=None))

    @cached_property
    def strategy(self) -> Any:
        return default_strategy()

    def purchase_info(self, product: Any) -> Any:
        """Oscar's price and availability of the product; worked out once per product."""
        cached = self._last_purchase
        if cached is None or cached[0] is not product:
            cached = (product, purchase_info(product, self.strategy))
            self._last_purchase = cached
        return cached[1]

    def get_title(self, product: Any) -> Any:
        return product.get_title()

    def get_description(self, product: Any) -> str | None:
        text = product.description or (product.parent.description if product.parent_id else "")
        plain = " ".join(html.unescape(strip_tags(text)).split())
        return plain or None

    def get_link(self, product: Any) -> str:
        url: str = product.get_absolute_url()
        return url

    def get_image_link(self, product: Any) -> str | None:
        image = product.primary_image()
        if isinstance(image, dict):  # Oscar's stand-in when the product has no image
            return None
        return image.original.url if image.original else None

    def get_price(self, product: Any) -> str | None:
        price = self.purchase_info(product).price
        if not price.exists:
            return None
        amount = price.incl_tax if price.is_tax_known else price.excl_tax
        return feed_price(amount, price.currency)

    def get_availability(self, product: Any) -> str:
        available = self.purchase_info(product).availability.is_available_to_buy
        return IN_STOCK if available else OUT_OF_STOCK

    def get_gtin(self, product: Any) -> str | None:
        return product.upc if is_gtin(product.upc) else None


def is_gtin(code: str | None) -> bool:
    """Is ``code`` a GTIN-8, -12 (UPC-A), -13 (EAN) or -14 with a correct check digit?"""
    if not code or not (code.isascii() and code.isdigit()) or len(code) not in (8, 12, 13, 14):
        return False
    digits = [int(d) for d in code]
    # Weights 3 and 1 alternate from the digit left of the check digit leftwards.
    total = sum(d * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(digits[:-1])))
    return (10 - total % 10) % 10 == digits[-1]
