"""The product feed: Merchant Center RSS 2.0 XML and CSV, read back by a real XML parser and by
the csv module; ids shared with the conversions; tokens; validators; streaming; the command."""

from __future__ import annotations

import csv
import io
import logging
import tracemalloc
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.http import StreamingHttpResponse
from django.test import Client, override_settings

from django_conversions.feed import check_feed_settings
from django_conversions.feed_views import feed_path
from django_conversions.models import ConversionEvent, TrackingSite
from django_conversions.products import ProductAdapter
from tests.testapp.models import CatalogueItem, Order, OrderItem, Product, ProductLine

pytestmark = pytest.mark.django_db

G = "{http://base.google.com/ns/1.0}"


def conversions(**extra: Any) -> Any:
    return override_settings(CONVERSIONS={**settings.CONVERSIONS, **extra})


CATALOGUE = conversions(PRODUCT_MODEL="testapp.CatalogueItem", TASK_BACKEND=None)


@pytest.fixture(autouse=True)
def _catalogue() -> Iterator[None]:
    with CATALOGUE:
        yield


def product(sku: str, **fields: Any) -> CatalogueItem:
    values: dict[str, Any] = {
        "name": f"Product {sku}",
        "price": Decimal("12.5"),
        "currency": "EUR",
    }
    values.update(fields)
    return CatalogueItem.objects.create(sku=sku, **values)


def xml_items(body: bytes) -> list[dict[str, str]]:
    root = ElementTree.fromstring(body)
    assert root.tag == "rss" and root.get("version") == "2.0"
    return [
        {child.tag.removeprefix(G): child.text or "" for child in item}
        for item in root.iter("item")
    ]


def csv_rows(body: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(body.decode("utf-8"), newline="")))


def content(response: Any) -> bytes:
    assert isinstance(response, StreamingHttpResponse)
    return b"".join(response.streaming_content)


# --- the two formats ---------------------------------------------------------------------------


def test_the_xml_feed_is_merchant_center_rss_with_the_g_namespace(vt_site: TrackingSite) -> None:
    # given: one complete product, one with only what is required, one not listed
    product(
        "sku-1",
        name="Mugs & <Cups>",
        description='A "fine" mug\x0b',
        image_url="/media/mug.png",
        brand="Acme",
        gtin="4006381333931",
        mpn="MUG-1",
        stock=0,
    )
    product("sku-2", currency="", price=Decimal("3"))
    product("hidden", is_active=False)
    # when
    with conversions(PRODUCT_MODEL="testapp.CatalogueItem", FEED_CURRENCY="RON"):
        response = Client().get(feed_path(vt_site))
        items = xml_items(content(response))
    # then
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/xml")
    assert items == [
        {
            "id": "sku-1",
            "title": "Mugs & <Cups>",
            "description": 'A "fine" mug',
            "link": "http://testserver/products/sku-1/",
            "image_link": "http://testserver/media/mug.png",
            "price": "12.50 EUR",
            "availability": "out_of_stock",
            "brand": "Acme",
            "gtin": "4006381333931",
            "mpn": "MUG-1",
        },
        {
            "id": "sku-2",
            "title": "Product sku-2",
            "link": "http://testserver/products/sku-2/",
            "price": "3.00 RON",
            "availability": "in_stock",
        },
    ]


def test_the_csv_feed_has_the_fields_as_header(vt_site: TrackingSite) -> None:
    product("sku-1", description="two\nlines, and a comma", brand="Acme")
    response = Client().get(feed_path(vt_site, "csv"))
    assert response["Content-Type"].startswith("text/csv")
    rows = csv_rows(content(response))
    assert list(rows[0]) == [
        "id",
        "title",
        "description",
        "link",
        "image_link",
        "price",
        "availability",
        "brand",
        "gtin",
        "mpn",
    ]
    assert rows[0]["description"] == "two\nlines, and a comma"
    assert rows[0]["price"] == "12.50 EUR"
    assert rows[0]["gtin"] == ""


def test_the_fields_are_configurable_and_unknown_ones_read_the_product(
    vt_site: TrackingSite,
) -> None:
    product("sku-1", mpn="M-1")
    with conversions(PRODUCT_MODEL="testapp.CatalogueItem", FEED_FIELDS=("id", "price", "sku")):
        xml = xml_items(content(Client().get(feed_path(vt_site))))
        rows = csv_rows(content(Client().get(feed_path(vt_site, "csv"))))
    assert xml == [{"id": "sku-1", "price": "12.50 EUR", "sku": "sku-1"}]
    assert rows == [{"id": "sku-1", "price": "12.50 EUR", "sku": "sku-1"}]


def test_a_product_without_a_price_is_left_out_with_a_log_line(
    vt_site: TrackingSite, caplog: pytest.LogCaptureFixture
) -> None:
    product("sku-1")
    broken = product("no-price", price=None)
    with caplog.at_level(logging.WARNING, logger="django_conversions"):
        items = xml_items(content(Client().get(feed_path(vt_site))))
    assert [item["id"] for item in items] == ["sku-1"]
    assert f"Product {broken.pk} left out of the feed: no price" in caplog.text


def test_a_configured_base_url_makes_the_links_absolute() -> None:
    product("sku-1", image_url="https://cdn.example/img.png")
    site = TrackingSite.objects.create(name="VT", provider="vtmarketing")
    with conversions(
        PRODUCT_MODEL="testapp.CatalogueItem", FEED_BASE_URL="https://shop.example/store"
    ):
        items = xml_items(content(Client().get(feed_path(site))))
    assert items[0]["link"] == "https://shop.example/products/sku-1/"
    assert items[0]["image_link"] == "https://cdn.example/img.png"


# --- the same ids as the conversions -----------------------------------------------------------


@pytest.mark.usefixtures("mocked_http")
def test_every_sold_item_id_is_in_the_feed(vt_site: TrackingSite) -> None:
    # given: a catalogue, and paid orders whose lines sell from it
    for n in range(5):
        product(f"sku-{n}")
    for number, skus in (("A-1", ["sku-0", "sku-3"]), ("A-2", ["sku-4"])):
        order = Order.objects.create(
            number=number, status="new", email="buyer@example.com", total=Decimal("25")
        )
        for sku in skus:
            OrderItem.objects.create(order=order, sku=sku, quantity=2)
        order.status = "paid"
        order.tracking_consent = "granted"
        order.save()
    # when
    sold = {
        item["id"]
        for event in ConversionEvent.objects.filter(site=vt_site)
        for item in event.snapshot["items"]
    }
    feed_ids = {item["id"] for item in xml_items(content(Client().get(feed_path(vt_site))))}
    # then
    assert sold == {"sku-0", "sku-3", "sku-4"}
    assert sold <= feed_ids


@pytest.mark.usefixtures("mocked_http")
def test_lines_naming_their_product_by_foreign_key_get_the_feed_ids(
    vt_site: TrackingSite,
) -> None:
    # given: lines that only point at their product; the product model is the feed's
    products = [Product.objects.create(sku=f"fk-{n}", name=f"FK {n}") for n in range(3)]
    order = Order.objects.create(
        number="F-1", status="new", email="buyer@example.com", total=Decimal("9")
    )
    for item in products[:2]:
        ProductLine.objects.create(order=order, product=item)
    with conversions(
        PRODUCT_MODEL="testapp.Product",
        ORDER_ITEMS_RELATION="product_lines",
        FEED_FIELDS=("id", "title"),
        TASK_BACKEND=None,
    ):
        order.status = "paid"
        order.tracking_consent = "granted"
        order.save()
        feed_ids = [item["id"] for item in xml_items(content(Client().get(feed_path(vt_site))))]
    sold = [item["id"] for item in ConversionEvent.objects.get(site=vt_site).snapshot["items"]]
    assert sold == ["fk-0", "fk-1"]
    assert feed_ids == ["fk-0", "fk-1", "fk-2"]


# --- who may read it ---------------------------------------------------------------------------


def test_a_site_with_a_token_answers_404_without_it(make_site: Callable[..., TrackingSite]) -> None:
    product("sku-1")
    site = make_site("vtmarketing", feed_token="s3cret-Token_1")
    client = Client()
    with_token = feed_path(site)
    assert with_token is not None and "s3cret-Token_1" in with_token
    assert client.get(with_token).status_code == 200
    assert client.get(f"/conversions/feed/{site.pk}/products.xml").status_code == 404
    assert client.get(f"/conversions/feed/{site.pk}/s3cret-Token_2/products.xml").status_code == 404
    assert client.get(f"/conversions/feed/{site.pk}/s3cret/products.csv").status_code == 404


def test_a_site_without_a_token_refuses_one(vt_site: TrackingSite) -> None:
    assert Client().get(f"/conversions/feed/{vt_site.pk}/anything/products.xml").status_code == 404


def test_only_active_sites_of_a_provider_that_reads_a_feed_have_one(
    vt_site: TrackingSite, scanova_site: TrackingSite
) -> None:
    client = Client()
    assert client.get(f"/conversions/feed/{scanova_site.pk}/products.xml").status_code == 404
    assert client.get("/conversions/feed/999999/products.xml").status_code == 404
    vt_site.is_active = False
    vt_site.save()
    assert client.get(f"/conversions/feed/{vt_site.pk}/products.xml").status_code == 404


def test_no_product_model_no_feed(vt_site: TrackingSite) -> None:
    with conversions(PRODUCT_MODEL=None):
        assert Client().get(f"/conversions/feed/{vt_site.pk}/products.xml").status_code == 404


def test_the_feed_is_read_only(vt_site: TrackingSite) -> None:
    assert Client().post(feed_path(vt_site)).status_code == 405


# --- conditional GET ---------------------------------------------------------------------------


def test_a_conditional_get_of_an_unchanged_feed_is_a_304(vt_site: TrackingSite) -> None:
    item = product("sku-1")
    client = Client()
    first = client.get(feed_path(vt_site))
    etag, modified = first["ETag"], first["Last-Modified"]
    content(first)
    # unchanged: both validators answer 304 with no body
    again = client.get(feed_path(vt_site), headers={"if-none-match": etag})
    assert again.status_code == 304 and again.content == b""
    since = client.get(feed_path(vt_site), headers={"if-modified-since": modified})
    assert since.status_code == 304
    # the CSV is another representation: its own tag
    assert client.get(feed_path(vt_site, "csv"))["ETag"] != etag
    # an edit changes the tag
    item.price = Decimal("13")
    item.save()
    changed = client.get(feed_path(vt_site), headers={"if-none-match": etag})
    assert changed.status_code == 200 and changed["ETag"] != etag
    # so does a deletion
    product("sku-2")
    tag = client.get(feed_path(vt_site))["ETag"]
    CatalogueItem.objects.filter(sku="sku-1").delete()
    assert client.get(feed_path(vt_site), headers={"if-none-match": tag}).status_code == 200


def test_a_model_without_a_modification_time_gets_no_validators(vt_site: TrackingSite) -> None:
    Product.objects.create(sku="p-1", name="P")
    with conversions(PRODUCT_MODEL="testapp.Product", FEED_FIELDS=("id", "title")):
        response = Client().get(feed_path(vt_site))
        content(response)
    assert response.status_code == 200
    assert not response.has_header("ETag") and not response.has_header("Last-Modified")


# --- streaming in constant memory -------------------------------------------------------------


class CountingAdapter(ProductAdapter):
    """Counts the products whose fields were read."""

    read: set[int] = set()

    def get_id(self, product: Any) -> str:
        CountingAdapter.read.add(product.pk)
        return super().get_id(product)


def test_the_feed_streams_one_product_at_a_time(vt_site: TrackingSite) -> None:
    # given: more products than one database chunk
    CatalogueItem.objects.bulk_create(
        CatalogueItem(sku=f"s-{n:04d}", name="P", price=Decimal("1"), currency="EUR")
        for n in range(250)
    )
    CountingAdapter.read = set()
    with conversions(
        PRODUCT_MODEL="testapp.CatalogueItem",
        PRODUCT_ADAPTER="tests.test_feed.CountingAdapter",
        FEED_CHUNK_SIZE=100,
    ):
        response = Client().get(feed_path(vt_site))
        chunks = iter(response.streaming_content)
        # when: the header and the first product have been sent
        next(chunks), next(chunks)
        # then: only that product has been read
        assert len(CountingAdapter.read) == 1
        rest = list(chunks)
    assert len(rest) == 249 + 1  # one chunk per product, then the closing tags
    assert len(CountingAdapter.read) == 250


def peak_while_reading(site: TrackingSite) -> int:
    """Peak Python memory allocated while the feed is read and thrown away, chunk by chunk."""
    with conversions(PRODUCT_MODEL="testapp.CatalogueItem", FEED_CHUNK_SIZE=500):
        response = Client().get(feed_path(site))
        tracemalloc.start()
        try:
            size = sum(len(chunk) for chunk in response.streaming_content)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert size > 0
    return peak


def add_products(start: int, count: int) -> None:
    CatalogueItem.objects.bulk_create(
        (
            CatalogueItem(
                sku=f"m-{n:06d}",
                name=f"Product number {n}",
                description="A product description of some length. " * 4,
                price=Decimal("19.99"),
                currency="EUR",
            )
            for n in range(start, start + count)
        ),
        batch_size=2000,
    )


def test_memory_stays_flat_as_the_catalogue_grows_tenfold(vt_site: TrackingSite) -> None:
    # given: 2,000 products, then 20,000
    add_products(0, 2_000)
    small = peak_while_reading(vt_site)
    add_products(2_000, 18_000)
    # when
    large = peak_while_reading(vt_site)
    # then: ten times the products, not ten times the memory (the feed of 20,000 is ~7 MB;
    # a feed held in memory would peak above that)
    assert large < small * 2, (small, large)
    assert large < 3_000_000, large


# --- the command -------------------------------------------------------------------------------


def test_the_command_writes_the_feed_to_a_file(tmp_path: Path) -> None:
    product("sku-1")
    out = tmp_path / "feed.xml"
    stdout = io.StringIO()
    call_command(
        "conversions_feed",
        "--output",
        str(out),
        "--base-url",
        "https://shop.example",
        stdout=stdout,
    )
    assert [i["link"] for i in xml_items(out.read_bytes())] == [
        "https://shop.example/products/sku-1/"
    ]
    assert "Wrote 1 products" in stdout.getvalue()
    call_command("conversions_feed", "--output", str(tmp_path / "feed.csv"), "--base-url",
                 "https://shop.example", stdout=io.StringIO())  # fmt: skip
    assert [r["id"] for r in csv_rows((tmp_path / "feed.csv").read_bytes())] == ["sku-1"]
    assert out.stat().st_mode & 0o004  # readable by the web server


def test_a_failed_run_leaves_the_previous_feed_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given: a feed written earlier, and products whose reading breaks half-way
    out = tmp_path / "feed.xml"
    out.write_bytes(b"previous feed")
    product("sku-1")
    product("sku-2")

    def breaks(*args: Any, **kwargs: Any) -> Iterator[dict[str, str]]:
        yield {"id": "sku-1"}
        raise RuntimeError("database went away")

    monkeypatch.setattr("django_conversions.management.commands.conversions_feed.product_rows",
                        breaks)  # fmt: skip
    # when
    with pytest.raises(RuntimeError):
        call_command("conversions_feed", "--output", str(out), "--base-url", "https://s.example")
    # then: the old file as it was, no temporary file left beside it
    assert out.read_bytes() == b"previous feed"
    assert [p.name for p in tmp_path.iterdir()] == ["feed.xml"]


def test_the_command_needs_a_base_url(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="--base-url"):
        call_command("conversions_feed", "--output", str(tmp_path / "f.xml"))


# --- configuration -----------------------------------------------------------------------------


def check_ids(**extra: Any) -> list[str]:
    with conversions(**extra):
        return [message.id or "" for message in check_feed_settings()]


def test_the_feed_settings_are_checked() -> None:
    assert check_ids() == []
    assert check_ids(PRODUCT_MODEL="testapp.Nothing") == ["conversions.E050"]
    assert check_ids(PRODUCT_ADAPTER="django_conversions.adapters.OrderAdapter") == [
        "conversions.E050"
    ]
    assert check_ids(FEED_FIELDS=("title", "price")) == ["conversions.E051"]
    assert check_ids(FEED_FIELDS=("id", "g:title")) == ["conversions.E051"]
    assert check_ids(FEED_CURRENCY="EURO") == ["conversions.E052"]
    assert check_ids(FEED_BASE_URL="shop.example") == ["conversions.E053"]
