"""Reliable server-side conversion tracking for Django.

Public API::

    from django_conversions import Conversion, Customer, LineItem, attribute_order, track
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django_conversions.conversion import Conversion, Customer, LineItem

__version__ = "0.1.0"

__all__ = ["Conversion", "Customer", "LineItem", "__version__", "attribute_order", "track"]

if TYPE_CHECKING:
    from django_conversions.attribution import attribute_order
    from django_conversions.outbox import track
else:

    def track(*args: Any, **kwargs: Any) -> Any:
        """Record a conversion for every matching site; see ``django_conversions.outbox.track``."""
        from django_conversions.outbox import track as _track

        return _track(*args, **kwargs)

    def attribute_order(*args: Any, **kwargs: Any) -> Any:
        """Attribute an order to the visit it came from; see
        ``django_conversions.attribution.attribute_order``."""
        from django_conversions.attribution import attribute_order as _attribute_order

        return _attribute_order(*args, **kwargs)
