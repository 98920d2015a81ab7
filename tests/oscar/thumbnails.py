"""A thumbnailer for Oscar's templates that needs no image library: the image as it is."""

from __future__ import annotations

from typing import Any

from oscar.core.thumbnails import AbstractThumbnailer


class OriginalImage(AbstractThumbnailer):
    def generate_thumbnail(self, source: Any, **opts: Any) -> Any:
        return source

    def delete_thumbnails(self, source: Any) -> None:
        return None
