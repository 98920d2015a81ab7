"""A typical shop order, read by the default adapter through settings alone."""

from __future__ import annotations

from decimal import Decimal

from django.db import models


class Order(models.Model):
    number = models.CharField(max_length=32, unique=True)
    status = models.CharField(max_length=16, default="new")
    total = models.DecimalField(max_digits=12, decimal_places=2, default=Decimal("0"))
    currency = models.CharField(max_length=3, default="EUR")
    shipping = models.DecimalField(max_digits=12, decimal_places=2, null=True, blank=True)
    coupon_code = models.CharField(max_length=100, blank=True)
    email = models.CharField(max_length=254, blank=True)
    phone = models.CharField(max_length=32, blank=True)
    first_name = models.CharField(max_length=100, blank=True)
    last_name = models.CharField(max_length=100, blank=True)
    city = models.CharField(max_length=100, blank=True)
    country = models.CharField(max_length=100, blank=True)
    scan_session_id = models.CharField(max_length=64, blank=True)
    tracking_consent = models.CharField(max_length=16, blank=True)
    # Indexed: reconciliation looks up the paid orders of a recent window by it.
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    def __str__(self) -> str:
        return self.number


class OrderItem(models.Model):
    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="items")
    sku = models.CharField(max_length=64)
    quantity = models.PositiveIntegerField(default=1)
    price = models.DecimalField(max_digits=12, decimal_places=2, null=True, blank=True)
    name = models.CharField(max_length=200, blank=True)

    def __str__(self) -> str:
        return f"{self.quantity} x {self.sku}"


class LiveLines(models.Manager["GiftLine"]):
    """A manager that filters (soft delete): its lines are not a plain foreign key read."""

    def get_queryset(self) -> models.QuerySet[GiftLine]:
        return super().get_queryset().filter(removed=False)


class GiftLine(models.Model):
    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="gift_lines")
    sku = models.CharField(max_length=64)
    removed = models.BooleanField(default=False)

    objects = LiveLines()

    def __str__(self) -> str:
        return self.sku


class Product(models.Model):
    sku = models.CharField(max_length=64, unique=True)
    name = models.CharField(max_length=200)

    def __str__(self) -> str:
        return self.sku


class ProductLine(models.Model):
    """An order line that names its product through a foreign key (``line.product.sku``)."""

    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="product_lines")
    product = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="+")
    quantity = models.PositiveIntegerField(default=1)

    def __str__(self) -> str:
        return f"{self.quantity} x {self.product_id}"


class CatalogueItem(models.Model):
    """A product with every field the product feed reads (tests/test_feed.py)."""

    sku = models.CharField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    price = models.DecimalField(max_digits=12, decimal_places=2, null=True, blank=True)
    currency = models.CharField(max_length=3, blank=True)
    image_url = models.CharField(max_length=200, blank=True)
    brand = models.CharField(max_length=100, blank=True)
    gtin = models.CharField(max_length=14, blank=True)
    mpn = models.CharField(max_length=64, blank=True)
    stock = models.IntegerField(null=True, blank=True)
    is_active = models.BooleanField(default=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return self.sku

    def get_absolute_url(self) -> str:
        return f"/products/{self.sku}/"
