"""Reliable server-side conversion tracking for Django.

Public API::

    from django_conversions import Conversion, Customer, LineItem, track
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django_conversions.conversion import Conversion, Customer, LineItem

__version__ = "0.1.0"

__all__ = ["Conversion", "Customer", "LineItem", "__version__", "track"]

if TYPE_CHECKING:
    from django_conversions.outbox import track
else:

    def track(*args: Any, **kwargs: Any) -> Any:
        """Record a conversion for every matching site; see ``django_conversions.outbox.track``."""
        from django_conversions.outbox import track as _track

        return _track(*args, **kwargs)
