"""``OscarOrderAdapter``: django-oscar's ``Order`` as a conversion, from its documented fields.

Point ``CONVERSIONS["ORDER_ADAPTER"]`` at it (or at a subclass of it). It reads:

- ``number``, ``total_incl_tax``, ``currency``, ``shipping_incl_tax``, ``status`` and
  ``date_placed`` of the order;
- its ``lines``: ``partner_sku`` (else the product's id, else the ``upc``), ``quantity``,
  ``unit_price_incl_tax`` and ``title``; a product in the product feed gets its id by the same
  rule, from the stock record Oscar sells it from (``choose_item_id()``);
- the ``voucher_code`` of its ``discounts`` as coupons;
- ``guest_email``, else the user's ``email``; the billing address (else the shipping address)
  for first and last name, city (``line4``) and country (ISO 3166-1 alpha-2); the shipping
  address's ``phone_number``.

The scan session id and consent are read as the core adapter reads them (not overridden here):
from the visit the order was placed in (``django_conversions.attribution``; the contrib app's
``order_placed`` receiver attaches it).
When an order becomes a conversion is decided by ``CONVERSIONS["OSCAR_PAID_STATUSES"]``; the
receivers of ``django_conversions.contrib.oscar`` ask ``should_track()`` on Oscar's own signals.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, ClassVar

from django.apps import apps
from django.conf import settings
from django.db import models
from oscar.core.loading import get_model

from django_conversions.adapters import OrderAdapter
from django_conversions.conf import conversions_settings
from django_conversions.contrib.oscar.catalogue import oscar_product_model, purchase_info
from django_conversions.conversion import Customer, LineItem
from django_conversions.exceptions import InvalidConversion

APP_NAME = "django_conversions.contrib.oscar"


def oscar_order_model() -> type[models.Model]:
    """Oscar's ``Order`` model, or the shop's fork of it (Oscar's own model loading)."""
    model: type[models.Model] = get_model("order", "Order")
    return model


def configured_paid_statuses() -> list[str] | None:
    """``OSCAR_PAID_STATUSES`` as written, or None: orders are conversions when placed."""
    configured = conversions_settings.OSCAR_PAID_STATUSES
    if configured is None:
        return None
    if isinstance(configured, str):  # one status written without the list around it
        configured = (configured,)
    return [str(status).strip() for status in configured]


def oscar_paid_statuses() -> frozenset[str] | None:
    """``OSCAR_PAID_STATUSES`` case-folded, or None: orders are conversions when placed."""
    configured = configured_paid_statuses()
    if configured is None:
        return None
    return frozenset(status.casefold() for status in configured)


def pipeline_statuses() -> list[str]:
    """Every status ``OSCAR_ORDER_STATUS_PIPELINE`` names, as a source or as a target, once."""
    pipeline = getattr(settings, "OSCAR_ORDER_STATUS_PIPELINE", {})
    named = [*pipeline, *(target for targets in pipeline.values() for target in targets)]
    return list(dict.fromkeys(named))


def paid_status_spellings() -> list[str]:
    """How orders in ``OSCAR_PAID_STATUSES`` spell their status: as the pipeline writes it
    (``Order.set_status()`` takes only those), and as listed in lower, upper, capitalised and
    title case (a status written by hand). For queries: a plain IN, not a case-folding lookup
    that hides the column from the database's statistics."""
    configured = configured_paid_statuses() or []
    wanted = {status.casefold() for status in configured}
    spellings = {status for status in pipeline_statuses() if status.casefold() in wanted}
    spellings |= {
        variant
        for status in configured
        for variant in (status, status.lower(), status.upper(), status.capitalize(), status.title())
    }
    return sorted(spellings)


class OscarOrderAdapter(OrderAdapter):
    """django-oscar's ``Order``. Override any ``get_*`` in a subclass for your shop."""

    ORDER_ID_ATTRS: ClassVar[tuple[str, ...]] = ("number",)
    VALUE_ATTRS: ClassVar[tuple[str, ...]] = ("total_incl_tax",)
    CURRENCY_ATTRS: ClassVar[tuple[str, ...]] = ("currency",)
    SHIPPING_ATTRS: ClassVar[tuple[str, ...]] = ("shipping_incl_tax",)
    EXTERNAL_ID_ATTRS: ClassVar[tuple[str, ...]] = ("user_id",)
    OCCURRED_AT_ATTRS: ClassVar[tuple[str, ...]] = ("date_placed",)

    # --- when ---------------------------------------------------------------------------------

    def should_track(self, order: Any, *, created: bool) -> bool:
        """Is the order a conversion now?

        ``created`` is true when Oscar has just placed the order (``order_placed``: its lines,
        discounts and addresses are written). Without ``OSCAR_PAID_STATUSES``, that is the
        moment; with it, the order is a conversion once its status is one of them (compared
        case-insensitively), whether it was placed so or changed to it later.
        """
        statuses = oscar_paid_statuses()
        if statuses is None:
            return created
        return str(order.status).strip().casefold() in statuses

    def get_order_model(self) -> type[models.Model] | None:
        """Oscar's order, while the contrib app that tracks it is installed (without it no
        order is tracked, and ``check`` says so: conversions.W002)."""
        return oscar_order_model() if apps.is_installed(APP_NAME) else None

    def conversions_since(self, since: datetime) -> models.QuerySet[Any] | Iterable[Any]:
        """Orders placed from ``since`` on that are conversions by ``should_track()``: every
        one, or those in one of ``OSCAR_PAID_STATUSES``; oldest first."""
        model = self.get_order_model()
        if model is None:
            return []
        orders = model._default_manager.filter(date_placed__gte=since)
        if oscar_paid_statuses() is not None:
            orders = orders.filter(status__in=paid_status_spellings())
        return orders.order_by("date_placed", "pk")

    # --- what ---------------------------------------------------------------------------------

    def get_status(self, order: Any) -> str | None:
        return order.status or None

    def get_coupons(self, order: Any) -> tuple[str, ...]:
        """The voucher codes of the order's discounts, each once, in the order applied."""
        codes = order.discounts.exclude(voucher_code="").values_list("voucher_code", flat=True)
        return tuple(dict.fromkeys(codes))

    def get_customer(self, order: Any) -> Customer | None:
        address = self.get_customer_address(order)
        user = order.user
        customer = Customer(
            email=order.guest_email or (user.email if user is not None else None) or None,
            phone=self.get_phone(order),
            first_name=_field(address, "first_name") or _field(user, "first_name"),
            last_name=_field(address, "last_name") or _field(user, "last_name"),
            city=_field(address, "line4"),
            country=self.get_country(address),
            external_id=None if order.user_id is None else str(order.user_id),
        )
        return None if customer.is_empty() else customer

    def get_customer_address(self, order: Any) -> Any:
        """The address naming the buyer: the billing address, else the shipping address."""
        return order.billing_address or order.shipping_address

    def get_country(self, address: Any) -> str | None:
        """The address's country as its ISO 3166-1 alpha-2 code."""
        country = _field(address, "country")
        return None if country is None else country.iso_3166_1_a2

    def get_phone(self, order: Any) -> str | None:
        """The shipping address's phone number (the only Oscar address with one), in E.164."""
        phone = _field(order.shipping_address, "phone_number")
        if not phone:
            return None
        return getattr(phone, "as_e164", None) or str(phone)

    def get_items(self, order: Any) -> tuple[LineItem, ...]:
        # Oscar's relation, whatever ORDER_ITEMS_RELATION says (that setting is the default
        # adapter's); the lines in the order they were created, as the basket showed them.
        return tuple(self.get_line_item(line) for line in order.lines.order_by("pk"))

    def get_line_item(self, line: Any) -> LineItem:
        return LineItem(
            id=self.get_item_id(line),
            quantity=line.quantity,
            price=line.unit_price_incl_tax,
            name=line.title or None,
        )

    def get_item_id(self, line_or_product: Any) -> str:
        """The id of an order line, and of a product in the product feed: ``choose_item_id()``
        of the line's partner SKU, product and UPC, or of the product's, with the partner SKU
        of the stock record Oscar's strategy sells it from (the one a line copies)."""
        if isinstance(line_or_product, oscar_product_model()):
            product: Any = line_or_product
            record = purchase_info(product).stockrecord
            sku = None if record is None else record.partner_sku
            found = self.choose_item_id(sku, product.pk, product.upc)
            what = f"product {product.pk}"
        else:
            line = line_or_product
            found = self.choose_item_id(line.partner_sku, line.product_id, line.upc)
            what = f"order line {line.pk}"
        if found in (None, ""):
            raise InvalidConversion("items.id", f"{what} has no partner SKU, product or UPC")
        return str(found)

    def choose_item_id(self, partner_sku: str | None, product_id: Any, upc: str | None) -> Any:
        """The one rule for item ids: the partner SKU, else the product's id, else the UPC (a
        line of a deleted product keeps its SKU and UPC). Override this to key ids otherwise:
        the conversions and the feed both follow."""
        for value in (partner_sku, product_id, upc):
            if value not in (None, ""):
                return value
        return None


def _field(obj: Any, name: str) -> Any:
    """``obj.name`` when ``obj`` exists and the value is not blank."""
    value = getattr(obj, name, None) if obj is not None else None
    return None if value in (None, "") else value
