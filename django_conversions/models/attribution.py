"""``OrderAttribution``: the visit (scan session, consent) an order came from."""

from __future__ import annotations

from django.contrib.contenttypes.fields import GenericForeignKey
from django.contrib.contenttypes.models import ContentType
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class OrderAttributionQuerySet(models.QuerySet["OrderAttribution"]):
    def for_order(self, order: models.Model) -> OrderAttributionQuerySet:
        """The attribution of this order (at most one row)."""
        if order.pk is None:
            return self.none()
        types = ContentType.objects.db_manager(self.db)
        return self.filter(
            order_content_type=types.get_for_model(order, for_concrete_model=False),
            order_object_id=str(order.pk),
        )


class OrderAttribution(models.Model):
    """The visit an order came from: the scan session id and the tracking consent the
    visitor's session held when the order was created (``django_conversions.attribution``).

    Linked to the order generically, like ``ConversionEvent.source``, so any order model works
    without a field of ours on it. The default adapter reads it when the order itself carries
    neither value.
    """

    order_content_type = models.ForeignKey(
        ContentType, on_delete=models.CASCADE, related_name="+", verbose_name=_("order type")
    )
    order_object_id = models.CharField(_("order id"), max_length=64)
    order = GenericForeignKey("order_content_type", "order_object_id")
    scan_session_id = models.CharField(_("scan session id"), max_length=36, blank=True)
    consent = models.CharField(_("consent"), max_length=16, blank=True)
    created_at = models.DateTimeField(_("created"), default=timezone.now, db_index=True)

    objects = OrderAttributionQuerySet.as_manager()

    class Meta:
        verbose_name = _("order attribution")
        verbose_name_plural = _("order attributions")
        constraints = [
            models.UniqueConstraint(
                fields=("order_content_type", "order_object_id"),
                name="conversions_attribution_order",
            )
        ]

    def __str__(self) -> str:
        return f"order {self.order_object_id}: scan {self.scan_session_id or '-'}"
