"""Oscar's catalogue as VTmarketing's product feed: the products a customer can buy, at the
price and stock Oscar's strategy gives, with the ids Oscar's order lines get in conversions."""

from __future__ import annotations

import csv
import io
from decimal import Decimal
from typing import Any
from urllib.parse import urljoin
from xml.etree import ElementTree

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from oscar.apps.partner.strategy import UK
from oscar.core.loading import get_model

from django_conversions.contrib.oscar.adapters import OscarOrderAdapter
from django_conversions.contrib.oscar.products import OscarProductAdapter, is_gtin
from django_conversions.conversion import Conversion
from django_conversions.models import ConversionEvent
from tests.oscar.conftest import Basket, Catalogue, Partner, Product, place_order

ProductImage = get_model("catalogue", "ProductImage")
G = "{http://base.google.com/ns/1.0}"

pytestmark = pytest.mark.django_db


def feed_items(client: Any, site: Any, **headers: Any) -> dict[str, dict[str, str]]:
    """The XML feed parsed: each item's g: fields by its id."""
    answer = client.get(f"/conversions/feed/{site.pk}/products.xml", **headers)
    assert answer.status_code == 200
    root = ElementTree.fromstring(b"".join(answer.streaming_content))
    items = {}
    for item in root.iter("item"):
        fields = {child.tag.removeprefix(G): child.text or "" for child in item}
        items[fields["id"]] = fields
    return items


def add_product(kind: Any, title: str, *, sku: str | None, price: str = "5.00", **fields: Any):
    """A product of ``kind``, with a stock record of 20 at ``price`` when ``sku`` is given."""
    product = Product.objects.create(product_class=kind, title=title, **fields)
    if sku is not None:
        product.stockrecords.create(
            partner=Partner.objects.get(), partner_sku=sku, price=Decimal(price), num_in_stock=20
        )
    return product


@pytest.fixture
def shirts(catalogue: Catalogue) -> Any:
    """A parent T-shirt with a small child (no title of its own, in stock) and a large one
    (no stock record: it can't be bought)."""
    kind = catalogue.mug.product_class
    parent = Product.objects.create(
        product_class=kind,
        title="T-shirt",
        structure=Product.PARENT,
        description="<p>Organic <b>cotton</b> &amp; dyes</p>",
    )
    small = add_product(kind, "", sku="TEE-S", price="15.00", structure="child", parent=parent)
    large = add_product(kind, "", sku=None, structure="child", parent=parent)
    ProductImage.objects.create(product=parent, original="images/tee.jpg", display_order=0)
    return parent, small, large


def test_the_feed_lists_what_a_customer_can_buy_at_oscars_price(client, vt_site, catalogue, shirts):
    parent, small, large = shirts
    kind = catalogue.mug.product_class
    hidden = add_product(kind, "Prototype", sku="PROTO", is_public=False)
    sold_out = add_product(kind, "Sold-out lamp", sku="LAMP")
    sold_out.stockrecords.update(num_in_stock=0)

    items = feed_items(client, vt_site)

    # the parent is only a grouping, the large shirt has no stock record, the prototype is
    # hidden: none of them is listed
    assert set(items) == {"MUG-BLUE", "POSTER-A2", "TEE-S", "LAMP"}
    assert "PROTO" not in items and hidden.pk
    mug, tee = items["MUG-BLUE"], items["TEE-S"]
    # the price is the stock record's, in its currency; the mug's UPC is a valid EAN-13
    assert mug["price"] == f"10.00 {settings.OSCAR_DEFAULT_CURRENCY}"
    assert mug["gtin"] == "5901234123457"
    assert mug["availability"] == "in_stock"
    assert items["LAMP"]["availability"] == "out_of_stock"
    # the child shows its parent's title, description (as text) and image
    assert tee["title"] == "T-shirt"
    assert tee["description"] == "Organic cotton & dyes"
    image = ProductImage.objects.get(product=parent).original.url
    assert tee["image_link"] == urljoin("http://testserver/", image)
    assert tee["link"] == f"http://testserver{small.get_absolute_url()}"
    assert "gtin" not in tee  # no UPC
    assert large.pk and parent.pk


def test_a_child_of_a_hidden_parent_is_not_listed(client, vt_site, catalogue, shirts):
    parent, _small, _large = shirts
    parent.is_public = False
    parent.save()

    assert set(feed_items(client, vt_site)) == {"MUG-BLUE", "POSTER-A2"}


class ByUpc(OscarOrderAdapter):
    """A shop keying its item ids by UPC where a product has one."""

    def choose_item_id(self, partner_sku: Any, product_id: Any, upc: Any) -> Any:
        return upc or super().choose_item_id(partner_sku, product_id, upc)


@pytest.mark.parametrize("order_adapter", [OscarOrderAdapter, ByUpc])
def test_every_item_id_of_a_placed_order_is_in_the_feed(
    client, vt_site, catalogue, shirts, conversions, order_adapter
):
    # given an order of a mug, a poster and the small T-shirt, placed through OrderCreator
    _parent, small, _large = shirts
    basket = Basket.objects.create()
    basket.strategy = UK()
    for product in (catalogue.mug, catalogue.poster, small):
        basket.add_product(product, quantity=1)
    with conversions(ORDER_ADAPTER=f"{order_adapter.__module__}.{order_adapter.__qualname__}"):
        place_order(catalogue, basket=basket)
        items = feed_items(client, vt_site)

    # then each item id its conversion sends is an id of the feed (read before delivery: a
    # delivered event keeps only the order's totals)
    event = ConversionEvent.objects.get(site=vt_site)
    sent = [item.id for item in Conversion.from_snapshot(event.snapshot).items]
    assert len(sent) == 3
    assert set(sent) <= set(items)
    expected_mug_id = "5901234123457" if order_adapter is ByUpc else "MUG-BLUE"
    assert expected_mug_id in sent


def test_a_price_change_in_the_dashboard_gives_a_new_etag(client, vt_site, catalogue):
    url = f"/conversions/feed/{vt_site.pk}/products.xml"
    first = client.get(url)
    etag = first["ETag"]
    assert client.get(url, HTTP_IF_NONE_MATCH=etag).status_code == 304

    record = catalogue.mug.stockrecords.get()
    record.price = Decimal("11.00")
    record.save()

    again = client.get(url, HTTP_IF_NONE_MATCH=etag)
    assert again.status_code == 200
    assert again["ETag"] != etag
    assert feed_items(client, vt_site)["MUG-BLUE"]["price"] == f"11.00 {record.price_currency}"


def count_feed_queries(client: Any, site: Any) -> int:
    with CaptureQueriesContext(connection) as queries:
        answer = client.get(f"/conversions/feed/{site.pk}/products.csv")
        rows = list(csv.DictReader(io.StringIO(b"".join(answer.streaming_content).decode())))
    assert len(rows) == OscarProductAdapter().get_queryset().count()
    return len(queries)


def test_the_feed_reads_a_chunk_of_products_in_the_same_queries_however_many(
    client, vt_site, catalogue, shirts
):
    few = count_feed_queries(client, vt_site)
    kind = catalogue.mug.product_class
    for number in range(25):
        add_product(kind, f"Card {number}", sku=f"CARD-{number}")

    assert count_feed_queries(client, vt_site) == few


def test_the_feed_command_writes_oscars_catalogue(tmp_path, vt_site, catalogue):
    output = tmp_path / "products.csv"
    call_command("conversions_feed", output=str(output), base_url="https://shop.example")

    rows = list(csv.DictReader(output.open(encoding="utf-8")))
    currency = settings.OSCAR_DEFAULT_CURRENCY
    assert {row["id"]: row["price"] for row in rows} == {
        "MUG-BLUE": f"10.00 {currency}",
        "POSTER-A2": f"25.00 {currency}",
    }
    assert all(row["link"].startswith("https://shop.example/") for row in rows)


@pytest.mark.parametrize(
    ("code", "valid"),
    [
        ("5901234123457", True),  # EAN-13
        ("036000291452", True),  # UPC-A
        ("96385074", True),  # EAN-8
        ("10012345678902", True),  # GTIN-14
        ("5901234123458", False),  # wrong check digit
        ("MUG-BLUE", False),
        ("590123412345", False),  # 12 digits, not a UPC-A's check digit
        ("\uff15\uff19\uff10\uff11\uff12\uff13\uff14\uff11\uff12\uff13\uff14\uff15\uff17", False),
        ("", False),
        (None, False),
    ],
)
def test_only_a_upc_with_a_gtins_check_digit_is_a_gtin(code, valid):
    assert is_gtin(code) is valid
