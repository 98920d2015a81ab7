"""The shopping cart: ``{sku: quantity}`` in the session."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from django.http import HttpRequest

from shop.models import Product

SESSION_KEY = "shop_cart"
FREE_SHIPPING_FROM = Decimal("50.00")
SHIPPING = Decimal("4.90")


@dataclass(frozen=True)
class Line:
    product: Product
    quantity: int

    @property
    def total(self) -> Decimal:
        return self.product.price * self.quantity


def contents(request: HttpRequest) -> dict[str, int]:
    return dict(request.session.get(SESSION_KEY, {}))


def add(request: HttpRequest, sku: str, quantity: int) -> None:
    cart = contents(request)
    cart[sku] = min(99, cart.get(sku, 0) + quantity)
    request.session[SESSION_KEY] = cart


def clear(request: HttpRequest) -> None:
    request.session.pop(SESSION_KEY, None)


def lines(request: HttpRequest) -> list[Line]:
    cart = contents(request)
    products = Product.objects.in_bulk(list(cart), field_name="sku")
    # In the order the visitor added them.
    return [
        Line(products[sku], quantity)
        for sku, quantity in cart.items()
        if sku in products and products[sku].is_active and quantity > 0
    ]


def subtotal(cart_lines: list[Line]) -> Decimal:
    return sum((line.total for line in cart_lines), Decimal("0"))


def shipping_for(amount: Decimal) -> Decimal:
    return Decimal("0") if amount >= FREE_SHIPPING_FROM else SHIPPING
