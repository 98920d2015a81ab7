"""``manage.py conversions_feed --output FILE``: the product feed as a file, for static hosting.

The file is written next to its destination under a temporary name and moved into place when
complete (``os.replace``), so a web server serving it never hands out half a feed, and a
failed run leaves the previous feed as it was.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_conversions.feed import (
    Channel,
    configured_base_url,
    csv_chunks,
    feed_fields,
    product_rows,
    xml_chunks,
)
from django_conversions.products import get_product_adapter


class Command(BaseCommand):
    help = "Write the product feed (Merchant Center RSS 2.0 XML or CSV) to a file, atomically."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--output", required=True, help="The file to write.")
        parser.add_argument(
            "--format",
            choices=("xml", "csv"),
            help="Default: from the file's suffix (.csv is CSV, anything else XML).",
        )
        parser.add_argument(
            "--base-url",
            help="The shop's address for relative product links and images "
            "(default: CONVERSIONS['FEED_BASE_URL']).",
        )
        parser.add_argument("--title", default="Products", help="The XML feed's channel title.")

    def handle(self, *args: Any, **options: Any) -> None:
        output = Path(options["output"])
        fmt = options["format"] or ("csv" if output.suffix.lower() == ".csv" else "xml")
        base_url = options["base_url"] or configured_base_url()
        if not base_url:
            raise CommandError(
                "Give --base-url https://your.shop/ or set CONVERSIONS['FEED_BASE_URL']: "
                "the feed's links must be absolute."
            )
        base_url = base_url.rstrip("/") + "/"
        try:
            adapter = get_product_adapter()
            adapter.get_queryset()
        except ImproperlyConfigured as err:
            raise CommandError(str(err)) from err
        counter = _Counter()
        rows = counter.count(product_rows(adapter, base_url, feed_fields()))
        if fmt == "csv":
            chunks = csv_chunks(rows, feed_fields())
        else:
            chunks = xml_chunks(rows, Channel(title=options["title"], base_url=base_url))
        write_atomically(output, chunks)
        self.stdout.write(f"Wrote {counter.rows} products to {output} ({fmt}).")


class _Counter:
    def __init__(self) -> None:
        self.rows = 0

    def count(self, rows: Iterator[dict[str, str]]) -> Iterator[dict[str, str]]:
        for row in rows:
            self.rows += 1
            yield row


def write_atomically(path: Path, chunks: Iterator[bytes]) -> None:
    """Write ``chunks`` to a temporary file beside ``path``, then move it over ``path``."""
    directory = path.resolve().parent
    if not directory.is_dir():
        raise CommandError(f"{directory} is not a directory.")
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    try:
        with os.fdopen(handle, "wb") as file:
            for chunk in chunks:
                file.write(chunk)
            file.flush()
            os.fsync(file.fileno())
        # mkstemp makes the file private; a feed is served to the world.
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current
