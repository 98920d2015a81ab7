"""The default adapter's read of the order lines: the same rows as the ORM, fewer steps."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import connection
from django.db.models import prefetch_related_objects
from django.db.models.signals import post_init
from django.test.utils import CaptureQueriesContext

from django_conversions.adapters import OrderAdapter, first_attr, related_rows
from tests.testapp.models import GiftLine, Order, OrderItem

pytestmark = pytest.mark.django_db


def order_with_lines(number: str, *lines: tuple[str, int, Decimal | None]) -> Order:
    order = Order.objects.create(number=number, status="paid", total=Decimal("10"))
    for sku, quantity, price in lines:
        OrderItem.objects.create(order=order, sku=sku, quantity=quantity, price=price)
    return order


def as_tuples(rows: object) -> list[tuple[object, ...]]:
    return [(r.pk, r.order_id, r.sku, r.quantity, r.price, r.name) for r in rows]  # type: ignore[attr-defined]


def test_lines_are_the_rows_the_orm_reads_in_one_query() -> None:
    # given
    order = order_with_lines("A-1", ("sku-1", 2, Decimal("19.95")), ("sku-2", 1, None))
    related_rows(order_with_lines("A-0", ("warm", 1, None)).items)  # the SQL is compiled once
    # when
    with CaptureQueriesContext(connection) as queries:
        rows = related_rows(order.items)
        orders_seen = [row.order for row in rows]  # type: ignore[attr-defined]
    # then: same rows and values (Decimal prices included), each line's order without a query
    assert as_tuples(rows) == as_tuples(order.items.all())
    assert [type(row.price) for row in rows] == [Decimal, type(None)]  # type: ignore[attr-defined]
    assert len(queries) == 1 and all(seen is order for seen in orders_seen)


def test_lines_read_without_the_orm_are_saved_as_the_existing_rows_they_are() -> None:
    order = order_with_lines("A-2", ("sku-1", 2, None))
    related_rows(order_with_lines("A-3", ("warm", 1, None)).items)  # compiled
    [line] = related_rows(order.items)
    line.quantity = 5  # type: ignore[attr-defined]
    line.save()  # an UPDATE of that row, not a second row
    assert list(OrderItem.objects.filter(order=order).values_list("sku", "quantity")) == [
        ("sku-1", 5)
    ]


def test_lines_are_built_by_the_orm_when_someone_watches_instances_being_made() -> None:
    # given: a receiver of post_init for the line model
    order = order_with_lines("A-4", ("a", 1, None), ("b", 1, None))
    related_rows(order_with_lines("A-5", ("warm", 1, None)).items)  # compiled
    seen: list[str] = []

    def made(sender: type, instance: OrderItem, **kwargs: object) -> None:
        seen.append(instance.sku)

    post_init.connect(made, sender=OrderItem)
    try:
        # when
        rows = related_rows(order.items)
    finally:
        post_init.disconnect(made, sender=OrderItem)
    # then: it heard every line
    assert seen == ["a", "b"] == [r.sku for r in rows]  # type: ignore[attr-defined]


def test_each_order_reads_its_own_lines_after_the_first() -> None:
    first = order_with_lines("B-1", ("a", 1, None))
    second = order_with_lines("B-2", ("b", 3, Decimal("1.50")), ("c", 1, None))
    empty = order_with_lines("B-3")
    assert [r.sku for r in related_rows(first.items)] == ["a"]  # type: ignore[attr-defined]
    assert [r.sku for r in related_rows(second.items)] == ["b", "c"]  # type: ignore[attr-defined]
    assert list(related_rows(empty.items)) == []


def test_prefetched_lines_are_not_read_again() -> None:
    order = order_with_lines("C-1", ("a", 1, None), ("b", 2, None))
    prefetch_related_objects([order], "items")
    with CaptureQueriesContext(connection) as queries:
        rows = list(related_rows(order.items))
    assert [r.sku for r in rows] == ["a", "b"] and len(queries) == 0


def test_a_manager_that_filters_is_read_through_the_orm() -> None:
    # given: a soft-delete manager on the lines
    order = order_with_lines("D-1")
    GiftLine.objects.create(order=order, sku="kept")
    GiftLine.objects.create(order=order, sku="gone", removed=True)
    # when / then: the filter applies, also on a second read
    for _ in range(2):
        assert [line.sku for line in related_rows(order.gift_lines)] == ["kept"]


def test_the_default_adapter_builds_items_from_the_lines() -> None:
    order = order_with_lines("E-1", ("sku-1", 2, Decimal("19.95")), ("sku-2", 1, None))
    items = OrderAdapter().get_items(order)
    assert [(i.id, i.quantity, i.price) for i in items] == [
        ("sku-1", 2, Decimal("19.95")),
        ("sku-2", 1, None),
    ]


def test_first_attr_takes_dotted_names_given_as_a_tuple_or_any_iterable() -> None:
    class Buyer:
        email = "b@example.com"

    class Sale:
        email = ""
        buyer = Buyer()

    names = ("email", "buyer.email")
    # the same names as a tuple (split once and kept), a list and a generator
    assert first_attr(Sale(), names) == "b@example.com"
    assert first_attr(Sale(), names) == "b@example.com"
    assert first_attr(Sale(), list(names)) == "b@example.com"
    assert first_attr(Sale(), (n for n in ("missing", "buyer.missing", "buyer.email"))) == (
        "b@example.com"
    )
    assert first_attr(Sale(), ("missing",)) is None
