"""How a host's order becomes a ``Conversion``.

The default ``OrderAdapter`` reads common attribute names, so a typical Order model works with
settings alone; subclass it for anything else and point ``CONVERSIONS["ORDER_ADAPTER"]`` at the
subclass. Each ``*_ATTRS`` tuple lists the names tried in order; the first present and non-empty
wins. Override ``get_<field>()`` for one field, or ``to_conversion()`` for everything.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime
from typing import Any, ClassVar

from django.core.exceptions import FieldDoesNotExist
from django.db import models

from django_conversions.apps import order_model
from django_conversions.conf import conversions_settings
from django_conversions.conversion import Conversion, Customer, LineItem
from django_conversions.models import OrderAttribution

logger = logging.getLogger("django_conversions")


def first_attr(obj: Any, names: Iterable[str]) -> Any:
    """The first non-empty attribute among ``names`` (dotted paths such as ``customer.email``)."""
    for path in _paths(names):
        value: Any = obj
        for part in path:
            value = getattr(value, part, None)
            if value is None:
                break
        if callable(value) and not isinstance(value, models.Manager):
            value = value()
        if value not in (None, ""):
            return value
    return None


def _paths(names: Iterable[str]) -> Iterable[list[str]]:
    return (name.split(".") for name in names)


class OrderAdapter:
    """Default adapter: reads common attribute names; override any ``get_*`` or the two hooks."""

    ORDER_ID_ATTRS: ClassVar[tuple[str, ...]] = ("number", "order_number", "reference", "pk")
    VALUE_ATTRS: ClassVar[tuple[str, ...]] = (
        "total",
        "total_amount",
        "grand_total",
        "amount",
        "total_price",
    )
    CURRENCY_ATTRS: ClassVar[tuple[str, ...]] = ("currency", "currency_code")
    SHIPPING_ATTRS: ClassVar[tuple[str, ...]] = (
        "shipping",
        "shipping_total",
        "shipping_cost",
        "total_shipping",
    )
    COUPON_ATTRS: ClassVar[tuple[str, ...]] = (
        "coupons",
        "coupon_codes",
        "coupon",
        "coupon_code",
        "discount_code",
    )
    EMAIL_ATTRS: ClassVar[tuple[str, ...]] = (
        "email",
        "customer_email",
        "billing_email",
        "user.email",
    )
    PHONE_ATTRS: ClassVar[tuple[str, ...]] = (
        "phone",
        "customer_phone",
        "billing_phone",
        "telephone",
    )
    FIRST_NAME_ATTRS: ClassVar[tuple[str, ...]] = (
        "first_name",
        "billing_first_name",
        "user.first_name",
    )
    LAST_NAME_ATTRS: ClassVar[tuple[str, ...]] = (
        "last_name",
        "billing_last_name",
        "user.last_name",
    )
    CITY_ATTRS: ClassVar[tuple[str, ...]] = ("city", "billing_city", "shipping_city")
    COUNTRY_ATTRS: ClassVar[tuple[str, ...]] = ("country", "billing_country", "shipping_country")
    EXTERNAL_ID_ATTRS: ClassVar[tuple[str, ...]] = ("customer_id", "user_id")
    SCAN_SESSION_ATTRS: ClassVar[tuple[str, ...]] = ("scan_session_id", "scnv")
    CONSENT_ATTRS: ClassVar[tuple[str, ...]] = ("tracking_consent", "consent", "marketing_consent")
    OCCURRED_AT_ATTRS: ClassVar[tuple[str, ...]] = ("paid_at", "placed_at", "created_at", "created")
    # Read from an order line for the conversion and from a product for the product feed
    # (get_item_id): the product's own sku first, so a line naming its product by foreign key
    # and the product itself give the same id.
    ITEM_ID_ATTRS: ClassVar[tuple[str, ...]] = (
        "sku",
        "product.sku",
        "product_id",
        "product.pk",
        "pk",
    )
    ITEM_QUANTITY_ATTRS: ClassVar[tuple[str, ...]] = ("quantity", "qty")
    ITEM_PRICE_ATTRS: ClassVar[tuple[str, ...]] = ("price", "unit_price")
    ITEM_NAME_ATTRS: ClassVar[tuple[str, ...]] = ("name", "product_name", "product.name", "title")

    # --- the two hooks (contract) -------------------------------------------------------------

    def should_track(self, order: Any, *, created: bool) -> bool:
        """Is this save the moment the order became a conversion?

        With ``ORDER_STATUS_FIELD`` set: whenever the status is one of ``ORDER_PAID_STATUSES``,
        compared without regard to case (repeat saves are harmless: the outbox keeps one event
        per order and site). With ``ORDER_STATUS_FIELD = None``: when the order is created. A
        status field the order lacks tracks nothing (system check conversions.E030).
        """
        field = conversions_settings.ORDER_STATUS_FIELD
        if not field:
            return created
        return is_paid_status(getattr(order, field, None))

    def to_conversion(self, order: Any) -> Conversion:
        """The order's conversion. May raise: the order then gets a ``failed`` event per site
        with the error's message, and a later save of the fixed order replaces them."""
        return Conversion(
            event_name=self.get_event_name(order),
            order_id=self.get_order_id(order),
            value=self.get_value(order),
            currency=self.get_currency(order),
            shipping=self.get_shipping(order),
            coupons=self.get_coupons(order),
            status=self.get_status(order),
            customer=self.get_customer(order),
            items=self.get_items(order),
            scan_session_id=self.get_scan_session_id(order),
            consent=self.get_consent(order),
            occurred_at=first_attr(order, self.OCCURRED_AT_ATTRS),
        )

    # --- reconciliation ----------------------------------------------------------------------

    def conversions_since(self, since: datetime) -> models.QuerySet[Any] | Iterable[Any]:
        """The orders that should have a conversion recorded, among those from ``since`` on.

        The sweep's reconciliation records the conversion of each returned order that has no
        event (its outbox write was lost: a database error after the order committed, a crash
        between the two). Return them oldest first. A queryset of the order model on the app's
        database lets the sweep find those without an event in one bounded query; index the
        time field it filters on.

        The default: orders whose ``ORDER_STATUS_FIELD`` holds one of ``ORDER_PAID_STATUSES``
        (every order, without a status field), by the first of ``OCCURRED_AT_ATTRS`` that is a
        date-time field of the model, from ``since`` on.
        """
        model = self.get_order_model()
        if model is None:
            return []
        time_field = self.conversion_time_field(model)
        if time_field is None:
            logger.warning(
                "Lost conversions of %s can't be found: it has none of the date-time fields "
                "%s; override conversions_since() in CONVERSIONS['ORDER_ADAPTER']",
                model._meta.label,
                ", ".join(self.OCCURRED_AT_ATTRS),
            )
            return []
        orders = model._default_manager.filter(**{f"{time_field}__gte": since})
        orders = orders.order_by(time_field, "pk")
        status = conversions_settings.ORDER_STATUS_FIELD
        if not status:
            return orders  # should_track(): tracked when created
        if not hasattr(model, status):
            return []  # nothing is tracked (system check conversions.E030)
        if concrete_field(model, status) is None:  # a property: only Python can read it
            return (order for order in orders.iterator() if self.should_track(order, created=False))
        # The spellings of each paid status, not a case-folding lookup: a plain IN keeps the
        # query on the database's statistics and indexes (upper(status) hides both).
        return orders.filter(**{f"{status}__in": paid_status_spellings()})

    def get_order_model(self) -> type[models.Model] | None:
        """The model of the orders this adapter tracks, where reconciliation and "retry now"
        look them up: ``ORDER_MODEL``'s by default; None when no order is tracked on its own.
        An integration that tracks a model through its own signals (not ``ORDER_MODEL``'s
        ``post_save``) returns that model."""
        return order_model()

    def conversion_time_field(self, model: type[models.Model]) -> str | None:
        """The order model's field telling when an order became a conversion (see
        ``conversions_since``)."""
        for name in self.OCCURRED_AT_ATTRS:
            field = concrete_field(model, name)
            if isinstance(field, models.DateTimeField):
                return name
        return None

    # --- one method per field, for small overrides --------------------------------------------

    def get_event_name(self, order: Any) -> str:
        return conversions_settings.ORDER_EVENT_NAME

    def get_order_id(self, order: Any) -> str | None:
        value = first_attr(order, self.ORDER_ID_ATTRS)
        return None if value is None else str(value)

    def get_value(self, order: Any) -> Any:
        return first_attr(order, self.VALUE_ATTRS)

    def get_currency(self, order: Any) -> str | None:
        return first_attr(order, self.CURRENCY_ATTRS)

    def get_shipping(self, order: Any) -> Any:
        return first_attr(order, self.SHIPPING_ATTRS)

    def get_status(self, order: Any) -> str | None:
        field = conversions_settings.ORDER_STATUS_FIELD
        value = getattr(order, field, None) if field else None
        return None if value is None else str(value)

    def get_coupons(self, order: Any) -> tuple[str, ...]:
        value = first_attr(order, self.COUPON_ATTRS)
        if value is None:
            return ()
        if isinstance(value, str):
            return tuple(c.strip() for c in value.split(",") if c.strip())
        if isinstance(value, models.Manager):
            value = value.all()
        return tuple(str(c) for c in value)

    def get_customer(self, order: Any) -> Customer | None:
        customer = Customer(
            email=first_attr(order, self.EMAIL_ATTRS),
            phone=first_attr(order, self.PHONE_ATTRS),
            first_name=first_attr(order, self.FIRST_NAME_ATTRS),
            last_name=first_attr(order, self.LAST_NAME_ATTRS),
            city=first_attr(order, self.CITY_ATTRS),
            country=first_attr(order, self.COUNTRY_ATTRS),
            external_id=_text_or_none(first_attr(order, self.EXTERNAL_ID_ATTRS)),
        )
        return None if customer.is_empty() else customer

    def get_scan_session_id(self, order: Any) -> str | None:
        """The order's own scan session id, else the one of the visit it was created in."""
        value = first_attr(order, self.SCAN_SESSION_ATTRS)
        if value is None:
            attribution = self.get_attribution(order)
            value = attribution.scan_session_id if attribution is not None else None
        return _text_or_none(value or None)

    def get_consent(self, order: Any) -> str | None:
        """The order's own consent, else the one its visit held when it was created.

        What the shop stored on the order (a checkbox at checkout) is its decision for this
        order, so it wins over what the session held.
        """
        value = first_attr(order, self.CONSENT_ATTRS)
        if value is None:
            attribution = self.get_attribution(order)
            value = attribution.consent if attribution is not None else None
        return _text_or_none(value or None)

    def get_attribution(self, order: Any) -> OrderAttribution | None:
        """The visit the order was attributed to (``django_conversions.attribution``)."""
        if not isinstance(order, models.Model) or order.pk is None:
            return None
        return OrderAttribution.objects.for_order(order).first()

    def get_items(self, order: Any) -> tuple[LineItem, ...]:
        relation = conversions_settings.ORDER_ITEMS_RELATION
        manager = getattr(order, relation, None) if relation and order.pk else None
        if manager is None:
            return ()
        # The manager as it is: the host's prefetches and its manager's filters apply.
        rows = manager.all() if isinstance(manager, models.Manager) else manager
        return tuple(self.get_line_item(row) for row in rows)

    def get_line_item(self, row: Any) -> LineItem:
        return LineItem(
            id=self.get_item_id(row),
            quantity=first_attr(row, self.ITEM_QUANTITY_ATTRS) or 1,
            price=first_attr(row, self.ITEM_PRICE_ATTRS),
            name=first_attr(row, self.ITEM_NAME_ATTRS),
        )

    def get_item_id(self, line_or_product: Any) -> str:
        """The item id of an order line, and of a product in the product feed.

        The one rule for both (VTmarketing: "the same from product feed and other site
        events"): the feed calls this with each product, the conversion with each line, so
        a product and a line selling it must give the same id. Override it once for both.
        """
        return str(first_attr(line_or_product, self.ITEM_ID_ATTRS))


def paid_statuses() -> list[str]:
    """``ORDER_PAID_STATUSES`` as text."""
    return [str(status) for status in conversions_settings.ORDER_PAID_STATUSES]


def paid_status_spellings() -> list[str]:
    """Each of ``ORDER_PAID_STATUSES`` as written, in lower and upper case, capitalised and in
    title case ('paid', 'PAID', 'Paid'; 'Partly Paid'): what a status column holds in practice,
    for queries that must match them as ``is_paid_status`` does."""
    spellings = {
        variant
        for status in paid_statuses()
        for variant in (status, status.lower(), status.upper(), status.capitalize(), status.title())
    }
    return sorted(spellings)


def is_paid_status(value: Any) -> bool:
    """Is ``value`` one of ``ORDER_PAID_STATUSES``, whatever its case ('Paid', 'COMPLETE')?"""
    if value is None:
        return False
    return str(value).strip().casefold() in {status.casefold() for status in paid_statuses()}


def concrete_field(model: type[models.Model], name: str) -> models.Field[Any, Any] | None:
    try:
        field = model._meta.get_field(name)
    except FieldDoesNotExist:
        return None
    return field if isinstance(field, models.Field) and field.concrete else None


def _text_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def get_adapter() -> OrderAdapter:
    adapter_class = conversions_settings.ORDER_ADAPTER
    return adapter_class()
