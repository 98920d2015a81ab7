"""The default adapter: order lines through the host's related manager as it is, attribute
names tried in order, and the orders reconciliation looks at."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.conf import settings
from django.db import models
from django.db.models import Prefetch
from django.test import override_settings
from django.utils import timezone

from django_conversions.adapters import OrderAdapter, first_attr
from tests.testapp.models import GiftLine, Order, OrderItem, Product, ProductLine

pytestmark = pytest.mark.django_db


def order_with_lines(number: str, *lines: tuple[str, int, Decimal | None]) -> Order:
    order = Order.objects.create(number=number, status="paid", total=Decimal("10"))
    for sku, quantity, price in lines:
        OrderItem.objects.create(order=order, sku=sku, quantity=quantity, price=price)
    return order


class ProductLineAdapter(OrderAdapter):
    """Lines that name their product through a foreign key."""

    ITEM_ID_ATTRS = ("product.sku",)


def test_the_default_adapter_builds_items_from_the_lines() -> None:
    order = order_with_lines("E-1", ("sku-1", 2, Decimal("19.95")), ("sku-2", 1, None))
    items = OrderAdapter().get_items(order)
    assert [(i.id, i.quantity, i.price) for i in items] == [
        ("sku-1", 2, Decimal("19.95")),
        ("sku-2", 1, None),
    ]


def test_each_order_reads_its_own_lines() -> None:
    first = order_with_lines("B-1", ("a", 1, None))
    second = order_with_lines("B-2", ("b", 3, Decimal("1.50")), ("c", 1, None))
    empty = order_with_lines("B-3")
    adapter = OrderAdapter()
    assert [i.id for i in adapter.get_items(first)] == ["a"]
    assert [i.id for i in adapter.get_items(second)] == ["b", "c"]
    assert adapter.get_items(empty) == ()


def test_lines_prefetched_by_the_host_are_not_read_again(django_assert_num_queries: Any) -> None:
    order_with_lines("C-1", ("a", 1, None), ("b", 2, None))
    order = Order.objects.prefetch_related("items").get(number="C-1")
    with django_assert_num_queries(0):
        items = OrderAdapter().get_items(order)
    assert [i.id for i in items] == ["a", "b"]


def test_prefetched_lines_with_their_products_make_no_query_per_line(
    django_assert_num_queries: Any,
) -> None:
    # given: lines naming their product across a foreign key, prefetched with the products
    order = Order.objects.create(number="P-1", status="paid")
    for n in range(3):
        product = Product.objects.create(sku=f"sku-{n}", name=f"Product {n}")
        ProductLine.objects.create(order=order, product=product, quantity=n + 1)
    lines = ProductLine.objects.select_related("product").order_by("pk")
    order = Order.objects.prefetch_related(Prefetch("product_lines", queryset=lines)).get(
        pk=order.pk
    )
    # when / then: line.product.sku and line.product.name are read from what was prefetched
    with lines_from("product_lines"), django_assert_num_queries(0):
        items = ProductLineAdapter().get_items(order)
    assert [(i.id, i.quantity, i.name) for i in items] == [
        ("sku-0", 1, "Product 0"),
        ("sku-1", 2, "Product 1"),
        ("sku-2", 3, "Product 2"),
    ]


@pytest.mark.skipif(not hasattr(models, "FETCH_PEERS"), reason="fetch modes are new in Django 6.1")
def test_an_order_read_with_fetch_peers_reads_all_its_lines_products_at_once(
    django_assert_num_queries: Any,
) -> None:
    # given: an order read in the FETCH_PEERS mode, which its related managers pass on
    order = Order.objects.create(number="P-2", status="paid")
    for n in range(3):
        product = Product.objects.create(sku=f"peer-{n}", name=f"Peer {n}")
        ProductLine.objects.create(order=order, product=product)
    order = Order.objects.fetch_mode(models.FETCH_PEERS).get(pk=order.pk)
    # when / then: the lines, then every line's product in one query
    with lines_from("product_lines"), django_assert_num_queries(2):
        items = ProductLineAdapter().get_items(order)
    assert [i.id for i in items] == ["peer-0", "peer-1", "peer-2"]


def test_a_manager_that_filters_keeps_filtering() -> None:
    # given: a soft-delete manager on the lines
    order = order_with_lines("D-1")
    GiftLine.objects.create(order=order, sku="kept")
    GiftLine.objects.create(order=order, sku="gone", removed=True)
    # when / then: the filter applies, also on a second read
    adapter = OrderAdapter()
    with lines_from("gift_lines"):
        for _ in range(2):
            assert [i.id for i in adapter.get_items(order)] == ["kept"]


def lines_from(relation: str) -> Any:
    return override_settings(CONVERSIONS={**settings.CONVERSIONS, "ORDER_ITEMS_RELATION": relation})


def test_first_attr_takes_dotted_names_given_as_a_tuple_or_any_iterable() -> None:
    class Buyer:
        email = "b@example.com"

    class Sale:
        email = ""
        buyer = Buyer()

    names = ("email", "buyer.email")
    assert first_attr(Sale(), names) == "b@example.com"
    assert first_attr(Sale(), list(names)) == "b@example.com"
    assert first_attr(Sale(), (n for n in ("missing", "buyer.missing", "buyer.email"))) == (
        "b@example.com"
    )
    assert first_attr(Sale(), ("missing",)) is None


def test_conversions_since_are_the_paid_orders_of_the_window_oldest_first() -> None:
    # given
    paid = Order.objects.create(number="R-1", status="paid")
    shipped = Order.objects.create(number="R-2", status="shipped")
    Order.objects.create(number="R-3", status="new")
    old = Order.objects.create(number="R-4", status="paid")
    Order.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=3))
    # when
    found = OrderAdapter().conversions_since(timezone.now() - timedelta(days=1))
    # then
    assert list(found) == [paid, shipped]


def test_conversions_since_without_a_status_field_are_the_orders_created() -> None:
    Order.objects.create(number="S-1", status="new")
    with override_settings(CONVERSIONS={**settings.CONVERSIONS, "ORDER_STATUS_FIELD": None}):
        found = OrderAdapter().conversions_since(timezone.now() - timedelta(hours=1))
    assert [o.number for o in found] == ["S-1"]


def test_the_time_field_is_the_first_date_time_field_among_the_names() -> None:
    assert OrderAdapter().conversion_time_field(Order) == "created_at"

    class PlacedAdapter(OrderAdapter):
        OCCURRED_AT_ATTRS = ("total", "missing", "created_at")

    assert PlacedAdapter().conversion_time_field(Order) == "created_at"

    class NoTimeAdapter(OrderAdapter):
        OCCURRED_AT_ATTRS = ("total", "number")

    assert NoTimeAdapter().conversion_time_field(Order) is None
    assert list(NoTimeAdapter().conversions_since(timezone.now())) == []
