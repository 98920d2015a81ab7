"""A small Oscar catalogue, baskets and orders placed through Oscar's own ``OrderCreator``.

Everything is made with Oscar's models and classes: a partner with stock records, products of
a product class, a 10 % voucher, shipping and billing addresses, a basket priced by a strategy
with 20 % tax (so incl. and excl. tax differ), totals from Oscar's ``OrderTotalCalculator``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
import responses
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.test import override_settings
from django.utils import timezone
from oscar.apps.checkout.calculators import OrderTotalCalculator
from oscar.apps.offer.applicator import Applicator
from oscar.apps.order.utils import OrderCreator
from oscar.apps.partner.strategy import UK
from oscar.apps.shipping.methods import FixedPrice
from oscar.core.loading import get_model

Basket = get_model("basket", "Basket")
Benefit = get_model("offer", "Benefit")
BillingAddress = get_model("order", "BillingAddress")
Condition = get_model("offer", "Condition")
ConditionalOffer = get_model("offer", "ConditionalOffer")
Country = get_model("address", "Country")
Order = get_model("order", "Order")
Partner = get_model("partner", "Partner")
Product = get_model("catalogue", "Product")
ProductClass = get_model("catalogue", "ProductClass")
Range = get_model("offer", "Range")
ShippingAddress = get_model("order", "ShippingAddress")
Voucher = get_model("voucher", "Voucher")

SCAN_ID = "7b1e4f0c-3d2a-4c5b-9e8f-0a1b2c3d4e5f"


@dataclass
class Catalogue:
    mug: Any  # product with a partner SKU
    poster: Any  # product whose stock record has a partner SKU too
    country: Any
    voucher: Any


@pytest.fixture
def catalogue(db: Any) -> Catalogue:
    partner = Partner.objects.create(name="Acme Supplies")
    kind = ProductClass.objects.create(name="Goods", requires_shipping=True, track_stock=True)
    mug = Product.objects.create(product_class=kind, title="Blue mug", upc="5901234123457")
    mug.stockrecords.create(
        partner=partner, partner_sku="MUG-BLUE", price=Decimal("10.00"), num_in_stock=50
    )
    poster = Product.objects.create(product_class=kind, title="Poster")
    poster.stockrecords.create(
        partner=partner, partner_sku="POSTER-A2", price=Decimal("25.00"), num_in_stock=50
    )
    everything = Range.objects.create(name="Everything", includes_all_products=True)
    offer = ConditionalOffer.objects.create(
        name="Ten percent off",
        offer_type=ConditionalOffer.VOUCHER,
        condition=Condition.objects.create(range=everything, type=Condition.COUNT, value=1),
        benefit=Benefit.objects.create(range=everything, type=Benefit.PERCENTAGE, value=10),
    )
    voucher = Voucher.objects.create(
        name="Welcome",
        code="WELCOME10",
        usage=Voucher.MULTI_USE,
        start_datetime=timezone.now() - timedelta(days=1),
        end_datetime=timezone.now() + timedelta(days=30),
    )
    voucher.offers.add(offer)
    country = Country.objects.create(
        iso_3166_1_a2="RO",
        iso_3166_1_a3="ROU",
        iso_3166_1_numeric="642",
        name="Romania",
        printable_name="Romania",
        is_shipping_country=True,
    )
    return Catalogue(mug=mug, poster=poster, country=country, voucher=voucher)


def make_basket(catalogue: Catalogue, *, voucher: bool = True, owner: Any = None) -> Any:
    """Two mugs and a poster, at 20 % tax, with the voucher applied."""
    basket = Basket.objects.create(owner=owner)
    basket.strategy = UK()
    basket.add_product(catalogue.mug, quantity=2)
    basket.add_product(catalogue.poster, quantity=1)
    if voucher:
        basket.vouchers.add(catalogue.voucher)
    Applicator().apply(basket, owner or AnonymousUser())
    return basket


def make_shipping_address(catalogue: Catalogue, **fields: Any) -> Any:
    values = {
        "first_name": "Ana",
        "last_name": "Pop",
        "line1": "Strada Lunga 1",
        "line4": "Cluj-Napoca",
        "postcode": "400000",
        "country": catalogue.country,
        "phone_number": "+40 775 123 123",
        **fields,
    }
    return ShippingAddress.objects.create(**values)


def place_order(
    catalogue: Catalogue,
    *,
    basket: Any = None,
    user: Any = None,
    guest_email: str = "ana@example.com",
    billing: dict[str, Any] | None = None,
    **kwargs: Any,
) -> Any:
    """An order placed as Oscar's checkout places it: ``OrderCreator.place_order()``."""
    basket = basket or make_basket(catalogue, owner=user)
    shipping = FixedPrice(charge_excl_tax=Decimal("4.00"), charge_incl_tax=Decimal("4.80"))
    charge = shipping.calculate(basket)
    total = OrderTotalCalculator().calculate(basket, charge)
    billing_address = (
        BillingAddress.objects.create(country=catalogue.country, **billing) if billing else None
    )
    if user is None:  # a guest, as Oscar's checkout passes one: the anonymous user
        user = AnonymousUser()
        kwargs["guest_email"] = guest_email
    order = OrderCreator().place_order(
        basket=basket,
        total=total,
        shipping_method=shipping,
        shipping_charge=charge,
        user=user,
        shipping_address=make_shipping_address(catalogue),
        billing_address=billing_address,
        **kwargs,
    )
    basket.submit()
    return order


@pytest.fixture
def conversions() -> Callable[..., Any]:
    """``override_settings`` of some ``CONVERSIONS`` keys over the test settings."""

    def override(**values: Any) -> Any:
        return override_settings(CONVERSIONS={**settings.CONVERSIONS, **values})

    return override


@pytest.fixture
def provider_http() -> Iterator[responses.RequestsMock]:
    """Both providers answer 200 to whatever they are sent."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.add(responses.POST, "https://track.example.test/server-events", json={}, status=200)
        mock.add(responses.POST, "https://vt.example.test/v1/event/", json={}, status=200)
        yield mock


def sent_bodies(mock: responses.RequestsMock, url: str) -> list[dict[str, Any]]:
    return [json.loads(call.request.body) for call in mock.calls if call.request.url == url]
