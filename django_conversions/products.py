"""How a host's product becomes a row of the product feed.

The default ``ProductAdapter`` reads common attribute names, like the ``OrderAdapter``: each
``*_ATTRS`` tuple lists the names tried in order, the first present and non-empty wins. Override
``get_<field>()`` for one field (``get_title``, ``get_price``, ...), ``get_queryset()`` for
which products are listed, and point ``CONVERSIONS["PRODUCT_ADAPTER"]`` at the subclass.

The item id is not the product adapter's to decide: it comes from the order adapter's
``get_item_id()``, the function that gives the conversions' line items their ids, so the feed and
the conversions always name a product the same way (see docs/feed.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar

from django.apps import apps
from django.core.exceptions import ImproperlyConfigured
from django.db import models
from django.db.models import Count, Max

from django_conversions.adapters import OrderAdapter, concrete_field, first_attr, get_adapter
from django_conversions.conf import SETTING_NAME, conversions_settings
from django_conversions.normalize import normalize_currency, round_money

# Google Merchant Center's availability values; other texts are passed on as written.
IN_STOCK = "in_stock"
OUT_OF_STOCK = "out_of_stock"


def product_model() -> type[models.Model] | None:
    """The model named by CONVERSIONS["PRODUCT_MODEL"], or None when unset.

    A label naming no installed model is an error (system check E050 reports it at startup).
    """
    label = conversions_settings.PRODUCT_MODEL
    if not label:
        return None
    try:
        return apps.get_model(label)
    except (LookupError, ValueError) as err:
        raise ImproperlyConfigured(
            f"{SETTING_NAME}['PRODUCT_MODEL'] = {label!r} is not an installed model."
        ) from err


def feed_price(amount: Any, currency: Any) -> str | None:
    """``"12.50 EUR"``: an amount rounded to its currency's minor unit, then the currency
    (``FEED_CURRENCY`` when none is given); None when either is missing or unreadable."""
    currency = currency or conversions_settings.FEED_CURRENCY
    if amount is None or not currency:
        return None
    code = normalize_currency(str(currency))
    try:
        value = round_money(Decimal(str(amount)), code, "price")
    except (InvalidOperation, ValueError):
        return None
    return f"{value} {code}"


@dataclass(frozen=True)
class FeedState:
    """What the feed's validators are made from: a change to any product changes one of these
    (an edit moves the newest modification time, a deletion the count)."""

    count: int
    last_modified: datetime | None


class ProductAdapter:
    """Default adapter: reads common attribute names; override any ``get_*``."""

    TITLE_ATTRS: ClassVar[tuple[str, ...]] = ("title", "name")
    DESCRIPTION_ATTRS: ClassVar[tuple[str, ...]] = ("description", "short_description", "summary")
    LINK_ATTRS: ClassVar[tuple[str, ...]] = ("get_absolute_url", "url", "link")
    IMAGE_ATTRS: ClassVar[tuple[str, ...]] = ("image_link", "image_url", "image")
    PRICE_ATTRS: ClassVar[tuple[str, ...]] = ("price", "unit_price", "price_incl_tax")
    CURRENCY_ATTRS: ClassVar[tuple[str, ...]] = ("currency", "price_currency", "currency_code")
    AVAILABILITY_ATTRS: ClassVar[tuple[str, ...]] = ("availability",)
    STOCK_ATTRS: ClassVar[tuple[str, ...]] = ("stock", "num_in_stock", "stock_quantity")
    BRAND_ATTRS: ClassVar[tuple[str, ...]] = ("brand.name", "brand", "manufacturer")
    GTIN_ATTRS: ClassVar[tuple[str, ...]] = ("gtin", "ean", "upc", "isbn")
    MPN_ATTRS: ClassVar[tuple[str, ...]] = ("mpn",)
    # Boolean fields of the model that must be true for a product to be listed.
    LISTED_FIELDS: ClassVar[tuple[str, ...]] = ("is_active", "is_public", "is_published")
    # Date-time fields telling when a product last changed (the feed's Last-Modified / ETag).
    MODIFIED_FIELDS: ClassVar[tuple[str, ...]] = (
        "updated_at",
        "modified",
        "updated",
        "date_updated",
        "last_modified",
    )

    def __init__(self, order_adapter: OrderAdapter | None = None) -> None:
        self.order_adapter = order_adapter or get_adapter()

    # --- which products ------------------------------------------------------------------------

    def get_model(self) -> type[models.Model] | None:
        return product_model()

    def get_queryset(self) -> models.QuerySet[Any]:
        """The listed products, by primary key. The default filters on each ``LISTED_FIELDS``
        boolean field the model has."""
        model = self.get_model()
        if model is None:
            raise ImproperlyConfigured(f"{SETTING_NAME}['PRODUCT_MODEL'] is not set.")
        products = model._default_manager.all()
        for name in self.LISTED_FIELDS:
            if isinstance(concrete_field(model, name), models.BooleanField):
                products = products.filter(**{name: True})
        return products.order_by("pk")

    def modified_field(self) -> str | None:
        model = self.get_model()
        for name in self.MODIFIED_FIELDS:
            if model is not None and isinstance(concrete_field(model, name), models.DateTimeField):
                return name
        return None

    def state(self) -> FeedState | None:
        """The products' count and newest modification time, in one query; None when the model
        has no modification time (the feed then has no validators: an edit could not be seen)."""
        field = self.modified_field()
        if field is None:
            return None
        found = self.get_queryset().order_by().aggregate(count=Count("pk"), last=Max(field))
        return FeedState(count=found["count"], last_modified=found["last"])

    # --- one row ---------------------------------------------------------------------------------

    def get_value(self, product: Any, field: str) -> Any:
        """The value of one feed field: ``get_<field>()`` when the adapter has one, else the
        product's attribute of that name (so an extra field in FEED_FIELDS needs no code)."""
        getter: Callable[[Any], Any] | None = getattr(self, f"get_{field}", None)
        if getter is not None:
            return getter(product)
        return first_attr(product, (field,))

    def get_id(self, product: Any) -> str:
        return self.order_adapter.get_item_id(product)

    def get_title(self, product: Any) -> Any:
        return first_attr(product, self.TITLE_ATTRS)

    def get_description(self, product: Any) -> Any:
        return first_attr(product, self.DESCRIPTION_ATTRS)

    def get_link(self, product: Any) -> Any:
        return first_attr(product, self.LINK_ATTRS)

    def get_image_link(self, product: Any) -> Any:
        value = first_attr(product, self.IMAGE_ATTRS)
        if isinstance(value, models.fields.files.FieldFile):
            return value.url if value.name else None
        return value

    def get_price(self, product: Any) -> str | None:
        """``"12.50 EUR"``: Merchant Center's price, with its currency."""
        amount = first_attr(product, self.PRICE_ATTRS)
        return feed_price(amount, first_attr(product, self.CURRENCY_ATTRS))

    def get_availability(self, product: Any) -> str:
        stated = first_attr(product, self.AVAILABILITY_ATTRS)
        if stated is not None:
            return str(stated)
        stock = first_attr(product, self.STOCK_ATTRS)
        if stock is None:
            return IN_STOCK  # nothing says otherwise: a listed product can be bought
        return IN_STOCK if stock > 0 else OUT_OF_STOCK

    def get_brand(self, product: Any) -> Any:
        return first_attr(product, self.BRAND_ATTRS)

    def get_gtin(self, product: Any) -> Any:
        return first_attr(product, self.GTIN_ATTRS)

    def get_mpn(self, product: Any) -> Any:
        return first_attr(product, self.MPN_ATTRS)


def get_product_adapter() -> ProductAdapter:
    adapter_class = conversions_settings.PRODUCT_ADAPTER
    return adapter_class()


def listed_product_model() -> type[models.Model] | None:
    """The model the product adapter lists (``PRODUCT_MODEL`` for the default one, Oscar's
    product for Oscar's), or None: then no site has a feed."""
    return get_product_adapter().get_model()
