"""How a host's order becomes a ``Conversion``.

The default ``OrderAdapter`` reads common attribute names, so a typical Order model works with
settings alone; subclass it for anything else and point ``CONVERSIONS["ORDER_ADAPTER"]`` at the
subclass. Each ``*_ATTRS`` tuple lists the names tried in order; the first present and non-empty
wins. Override ``get_<field>()`` for one field, or ``to_conversion()`` for everything.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.db import connections, models
from django.db.models.fields.related_descriptors import ForeignKeyDeferredAttribute
from django.db.models.query_utils import DeferredAttribute

from django_conversions import bulk
from django_conversions.conf import conversions_settings
from django_conversions.conversion import Conversion, Customer, LineItem


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


_split_paths: dict[tuple[str, ...], tuple[tuple[str, ...], ...]] = {}


def _paths(names: Iterable[str]) -> Iterable[tuple[str, ...]]:
    # The adapter's name tuples are read some twenty times per tracked save: split them once.
    if type(names) is not tuple:
        return [tuple(name.split(".")) for name in names]
    paths = _split_paths.get(names)
    if paths is None:
        paths = _split_paths[names] = tuple(tuple(name.split(".")) for name in names)
    return paths


class OrderAdapter:
    """Default adapter: reads common attribute names; override any ``get_*`` or the two hooks."""

    ORDER_ID_ATTRS = ("number", "order_number", "reference", "pk")
    VALUE_ATTRS = ("total", "total_amount", "grand_total", "amount", "total_price")
    CURRENCY_ATTRS = ("currency", "currency_code")
    SHIPPING_ATTRS = ("shipping", "shipping_total", "shipping_cost", "total_shipping")
    COUPON_ATTRS = ("coupons", "coupon_codes", "coupon", "coupon_code", "discount_code")
    EMAIL_ATTRS = ("email", "customer_email", "billing_email", "user.email")
    PHONE_ATTRS = ("phone", "customer_phone", "billing_phone", "telephone")
    FIRST_NAME_ATTRS = ("first_name", "billing_first_name", "user.first_name")
    LAST_NAME_ATTRS = ("last_name", "billing_last_name", "user.last_name")
    CITY_ATTRS = ("city", "billing_city", "shipping_city")
    COUNTRY_ATTRS = ("country", "billing_country", "shipping_country")
    EXTERNAL_ID_ATTRS = ("customer_id", "user_id")
    SCAN_SESSION_ATTRS = ("scan_session_id", "scnv")
    CONSENT_ATTRS = ("tracking_consent", "consent", "marketing_consent")
    OCCURRED_AT_ATTRS = ("paid_at", "placed_at", "created_at", "created")
    ITEM_ID_ATTRS = ("product_id", "sku", "product.sku", "product.pk", "pk")
    ITEM_QUANTITY_ATTRS = ("quantity", "qty")
    ITEM_PRICE_ATTRS = ("price", "unit_price")
    ITEM_NAME_ATTRS = ("name", "product_name", "product.name", "title")

    # --- the two hooks (contract) -------------------------------------------------------------

    def should_track(self, order: Any, *, created: bool) -> bool:
        """Is this save the moment the order became a conversion?

        With ``ORDER_STATUS_FIELD`` set: whenever the status is one of ``ORDER_PAID_STATUSES``
        (repeat saves are harmless: the outbox keeps one event per order and site). Without a
        status field: when the order is created.
        """
        field = conversions_settings.ORDER_STATUS_FIELD
        if not field or not hasattr(order, field):
            return created
        return str(getattr(order, field)) in {
            str(s) for s in conversions_settings.ORDER_PAID_STATUSES
        }

    def to_conversion(self, order: Any) -> Conversion:
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
            scan_session_id=first_attr(order, self.SCAN_SESSION_ATTRS),
            consent=first_attr(order, self.CONSENT_ATTRS),
            occurred_at=first_attr(order, self.OCCURRED_AT_ATTRS),
        )

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

    def get_items(self, order: Any) -> tuple[LineItem, ...]:
        relation = conversions_settings.ORDER_ITEMS_RELATION
        manager = getattr(order, relation, None) if relation and order.pk else None
        if manager is None:
            return ()
        rows = related_rows(manager) if isinstance(manager, models.Manager) else manager
        return tuple(self.get_line_item(row) for row in rows)

    def get_line_item(self, row: Any) -> LineItem:
        return LineItem(
            id=str(first_attr(row, self.ITEM_ID_ATTRS)),
            quantity=first_attr(row, self.ITEM_QUANTITY_ATTRS) or 1,
            price=first_attr(row, self.ITEM_PRICE_ATTRS),
            name=first_attr(row, self.ITEM_NAME_ATTRS),
        )


@dataclass(frozen=True)
class _LinesQuery:
    """A reverse foreign key's ``all()``, compiled once: its SQL and how to read its rows."""

    sql: str
    attnames: list[str]
    converters: list[tuple[int, list[Any], Any]]  # (column, converter functions, expression)
    plain: bool  # rows may be built without from_db() (see _plainly_built)


# By (line model, relation, database).
_lines_queries: dict[tuple[type[models.Model], str, str], _LinesQuery | None] = {}


def related_rows(manager: models.Manager[Any]) -> Iterable[models.Model]:
    """``manager.all()``, read without building a queryset on every call.

    The order lines are read on every tracked checkout, and building and compiling the same
    queryset cost several times what running it does. For a reverse foreign key whose
    queryset is plain (its only parameter is the order's key: no manager filters, no joins,
    no deferred fields), the query compiled the first time is run again and its rows built as
    the ORM builds them; anything else (or lines already prefetched) goes through ``all()``.
    """
    field = getattr(manager, "field", None)  # set on reverse foreign key managers only
    instance = getattr(manager, "instance", None)
    if field is None or instance is None:
        return manager.all()
    cache_name = field.remote_field.cache_name
    if cache_name in getattr(instance, "_prefetched_objects_cache", {}):
        return manager.all()
    using = manager.db
    key_value = getattr(instance, field.target_field.attname)
    cache_key = (manager.model, cache_name, using)
    if cache_key not in _lines_queries:
        _lines_queries[cache_key] = _compile_lines(manager.all(), key_value, using)
    lines = _lines_queries[cache_key]
    if lines is None:
        return manager.all()
    connection = connections[using]
    with connection.cursor() as cursor:
        cursor.execute(lines.sql, [key_value])
        rows = [list(row) for row in cursor.fetchall()]
    for row in rows:
        for position, functions, expression in lines.converters:
            for convert in functions:
                row[position] = convert(row[position], expression, connection)
    model = manager.model
    if lines.plain and not bulk.init_watched(model):
        names = lines.attnames
        built = [
            bulk.bare_instance(model, dict(zip(names, row, strict=True)), db=using) for row in rows
        ]
    else:
        built = [model.from_db(using, lines.attnames, row) for row in rows]
    for row in built:  # as the related manager does: row.<fk> is the order, no query
        field.set_cached_value(row, instance)
    return built


def _compile_lines(
    queryset: models.QuerySet[Any], key_value: Any, using: str
) -> _LinesQuery | None:
    query = queryset.query
    if (
        query.select_related
        or query.annotations
        or query.extra
        or query.deferred_loading != (frozenset(), True)
        or queryset._prefetch_related_lookups
    ):
        return None
    compiler = query.get_compiler(using)
    sql, params = compiler.as_sql()
    columns = [expression for expression, _, _ in compiler.select]
    if list(params) != [key_value] or not all(hasattr(c, "target") for c in columns):
        return None
    converters = compiler.get_converters(columns)
    attnames = [column.target.attname for column in columns]
    return _LinesQuery(
        sql=sql,
        attnames=attnames,
        converters=[(i, functions, expr) for i, (functions, expr) in converters.items()],
        plain=_plainly_built(queryset.model, attnames),
    )


def _plainly_built(model: type[models.Model], attnames: list[str]) -> bool:
    """Would ``from_db()`` do no more than store these values (every field's) on a new
    instance? Then ``bulk.bare_instance()`` builds it for a fraction of the cost."""
    return (
        model.from_db.__func__ is models.Model.from_db.__func__  # type: ignore[attr-defined]
        and model.__init__ is models.Model.__init__
        and sorted(attnames) == sorted(f.attname for f in model._meta.concrete_fields)
        and all(
            type(inspect.getattr_static(model, attname, None)) in _STORING_DESCRIPTORS
            for attname in attnames
        )
    )


# Field descriptors whose setting a value on a new instance only stores it.
_STORING_DESCRIPTORS = (DeferredAttribute, ForeignKeyDeferredAttribute)


def _text_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def get_adapter() -> OrderAdapter:
    adapter_class = conversions_settings.ORDER_ADAPTER
    return adapter_class()
