"""The product feed: the host's products as Google Merchant Center RSS 2.0 XML or CSV.

**Assumption** (VTmarketing's integration page asks for "a product feed" and names no format):
the feed follows Google Merchant Center's product data specification, the format product
feeds are most often read in: RSS 2.0 with the ``g:`` namespace, or a CSV file with the same
attribute names as its header. The fields are ``CONVERSIONS["FEED_FIELDS"]``; each value comes
from the ``ProductAdapter`` (``PRODUCT_ADAPTER``). See docs/feed.md.

Both formats are produced as a stream of small byte chunks over
``QuerySet.iterator(chunk_size=FEED_CHUNK_SIZE)``: memory stays flat however many products
there are, and the first bytes leave before the last product is read.
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin
from xml.sax.saxutils import escape, quoteattr

from django.core.checks import Error
from django.core.exceptions import ImproperlyConfigured

from django_conversions.conf import SETTING_NAME, conversions_settings
from django_conversions.currencies import is_known
from django_conversions.products import ProductAdapter, product_model

logger = logging.getLogger("django_conversions")

GOOGLE_NAMESPACE = "http://base.google.com/ns/1.0"
# Without these a row is of no use to the provider: it is left out, with a log line.
REQUIRED_FIELDS = ("id", "title", "link", "price")
# Fields holding URLs, made absolute with the feed's base URL.
URL_FIELDS = frozenset({"link", "image_link", "mobile_link", "additional_image_link"})
# Feed field names become XML element names (g:<name>) and CSV headers.
_FIELD_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
# Characters XML 1.0 does not allow, even escaped (most control characters).
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")

FORMATS = {"xml": "application/xml; charset=utf-8", "csv": "text/csv; charset=utf-8"}


@dataclass(frozen=True)
class Channel:
    """The feed as a whole: its title and the shop's base URL."""

    title: str
    base_url: str


def feed_fields() -> tuple[str, ...]:
    return tuple(conversions_settings.FEED_FIELDS)


def product_rows(
    adapter: ProductAdapter, base_url: str, fields: Iterable[str] | None = None
) -> Iterator[dict[str, str]]:
    """One dict per listed product, its values as text, read in chunks from the database.

    A product the adapter can't read, or without one of ``REQUIRED_FIELDS``, is left out and
    logged: one bad product never ends the feed of all the others.
    """
    names = tuple(fields or feed_fields())
    chunk_size = int(conversions_settings.FEED_CHUNK_SIZE)
    for product in adapter.get_queryset().iterator(chunk_size=chunk_size):
        try:
            row = {name: _text(adapter.get_value(product, name)) for name in names}
        except Exception as err:  # the host's adapter code: report it, keep going
            logger.warning("Product %s left out of the feed: %s", product.pk, err)
            continue
        missing = [name for name in REQUIRED_FIELDS if name in row and not row[name]]
        if missing:
            logger.warning("Product %s left out of the feed: no %s", product.pk, ", ".join(missing))
            continue
        for name in URL_FIELDS.intersection(row):
            if row[name]:
                row[name] = urljoin(base_url, row[name])
        yield row


def _text(value: Any) -> str:
    if value is None:
        return ""
    return _NOT_XML.sub("", str(value)).strip()


def xml_chunks(rows: Iterable[dict[str, str]], channel: Channel) -> Iterator[bytes]:
    """RSS 2.0 with the ``g:`` namespace, one chunk per product (empty fields left out)."""
    yield (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<rss version="2.0" xmlns:g={quoteattr(GOOGLE_NAMESPACE)}>\n<channel>\n'
        f"<title>{escape(_text(channel.title))}</title>\n"
        f"<link>{escape(channel.base_url)}</link>\n"
        "<description>Product feed</description>\n"
    ).encode()
    for row in rows:
        fields = "".join(
            f"<g:{name}>{escape(value)}</g:{name}>" for name, value in row.items() if value
        )
        yield f"<item>{fields}</item>\n".encode()
    yield b"</channel>\n</rss>\n"


class _Line:
    """A file-like object whose write() hands back what it was given (csv.writer writes one
    row per call): each row becomes a chunk of the stream instead of a line in a buffer."""

    def write(self, text: str) -> str:
        return text


def csv_chunks(rows: Iterable[dict[str, str]], fields: Iterable[str]) -> Iterator[bytes]:
    """A header with the field names, then one line per product."""
    names = list(fields)
    writer = csv.writer(_Line())
    yield writer.writerow(names).encode()
    for row in rows:
        yield writer.writerow([row.get(name, "") for name in names]).encode()


def feed_chunks(fmt: str, adapter: ProductAdapter, channel: Channel) -> Iterator[bytes]:
    fields = feed_fields()
    rows = product_rows(adapter, channel.base_url, fields)
    if fmt == "csv":
        return csv_chunks(rows, fields)
    return xml_chunks(rows, channel)


def configured_base_url() -> str | None:
    value = conversions_settings.FEED_BASE_URL
    return None if not value else str(value).rstrip("/") + "/"


# --- system checks ---------------------------------------------------------------------------


def check_feed_settings(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """PRODUCT_MODEL installed, PRODUCT_ADAPTER a ProductAdapter, FEED_FIELDS usable names with
    ``id`` among them, FEED_CURRENCY a currency code, FEED_BASE_URL an http(s) URL."""
    try:
        conf = conversions_settings
        conf.user_settings  # noqa: B018  (unknown keys: E001 reports them)
    except ImproperlyConfigured:
        return []
    errors: list[Error] = []
    errors += _check_product_model(conf)
    fields = conf.raw("FEED_FIELDS")
    if (
        isinstance(fields, str)
        or not all(isinstance(f, str) and _FIELD_NAME.match(f) for f in fields or ())
        or "id" not in fields
    ):
        errors.append(
            Error(
                f"{SETTING_NAME}['FEED_FIELDS'] = {fields!r} is not a list of field names "
                "including 'id'.",
                hint="Lower-case Merchant Center attribute names, e.g. ('id', 'title', 'link', "
                "'price').",
                id="conversions.E051",
            )
        )
    currency = conf.raw("FEED_CURRENCY")
    if currency is not None and not (isinstance(currency, str) and is_known(currency.upper())):
        errors.append(
            Error(
                f"{SETTING_NAME}['FEED_CURRENCY'] = {currency!r} is not an ISO 4217 code.",
                hint="A 3-letter code such as 'EUR', or None.",
                id="conversions.E052",
            )
        )
    base = conf.raw("FEED_BASE_URL")
    if base is not None and not (
        isinstance(base, str) and re.match(r"^https?://[^/\s]+", base, re.IGNORECASE)
    ):
        errors.append(
            Error(
                f"{SETTING_NAME}['FEED_BASE_URL'] = {base!r} is not an http(s) URL.",
                hint="The shop's address, e.g. 'https://shop.example', or None.",
                id="conversions.E053",
            )
        )
    return errors


def _check_product_model(conf: Any) -> list[Error]:
    try:
        adapter = conf.PRODUCT_ADAPTER
    except ImproperlyConfigured as err:
        return [
            Error(
                str(err),
                hint="Give the dotted path of a ProductAdapter subclass.",
                id="conversions.E050",
            )
        ]
    if not (isinstance(adapter, type) and issubclass(adapter, ProductAdapter)):
        return [
            Error(
                f"{SETTING_NAME}['PRODUCT_ADAPTER'] is not a subclass of "
                "django_conversions.products.ProductAdapter.",
                hint="Subclass ProductAdapter and override its get_* methods.",
                id="conversions.E050",
            )
        ]
    if not conf.raw("PRODUCT_MODEL"):
        return []
    try:
        product_model()
    except ImproperlyConfigured as err:
        return [
            Error(
                str(err),
                hint="Use 'app_label.ModelName' of an installed model.",
                id="conversions.E050",
            )
        ]
    return []
