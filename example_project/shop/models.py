"""A small shop's catalogue and orders.

The Order's field names are the ones django-conversions' default adapter reads, so the shop
needs no adapter code: ``CONVERSIONS = {"ORDER_MODEL": "shop.Order"}`` is all it takes. An
order becomes a conversion when it is saved with status ``paid``.
"""

from __future__ import annotations

import secrets
from decimal import Decimal
from typing import Any

from django.db import models
from django.urls import reverse
from django.utils import timezone


class Product(models.Model):
    sku = models.CharField("SKU", max_length=64, unique=True)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    price = models.DecimalField(max_digits=10, decimal_places=2)
    emoji = models.CharField(max_length=8, blank=True, help_text="The demo's product photo.")
    is_active = models.BooleanField(default=True)

    class Meta:
        ordering = ("name",)

    def __str__(self) -> str:
        return f"{self.name} ({self.sku})"

    def get_absolute_url(self) -> str:
        # The product feed's link: the demo has no product pages, so its card on the shop.
        return reverse("shop:storefront") + f"#{self.sku}"


class Order(models.Model):
    class Status(models.TextChoices):
        NEW = "new", "new (awaiting payment)"
        PAID = "paid", "paid"
        CANCELLED = "cancelled", "cancelled"

    class Consent(models.TextChoices):
        UNKNOWN = "", "not asked"
        GRANTED = "granted", "granted"
        DENIED = "denied", "denied"

    number = models.CharField(max_length=32, unique=True, editable=False)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.NEW)
    currency = models.CharField(max_length=3, default="EUR")
    shipping = models.DecimalField(max_digits=10, decimal_places=2, default=Decimal("0"))
    total = models.DecimalField(
        max_digits=10, decimal_places=2, default=Decimal("0"), help_text="Including shipping."
    )
    coupon_code = models.CharField(max_length=40, blank=True)
    email = models.EmailField()
    phone = models.CharField(max_length=32, blank=True)
    first_name = models.CharField(max_length=100)
    last_name = models.CharField(max_length=100)
    city = models.CharField(max_length=100, blank=True)
    country = models.CharField(max_length=100, blank=True)
    # Copied from the visitor's session at checkout (the QR scan that brought them here).
    scan_session_id = models.CharField(max_length=64, blank=True)
    tracking_consent = models.CharField(
        max_length=16, choices=Consent.choices, blank=True, default=Consent.UNKNOWN
    )
    created_at = models.DateTimeField(default=timezone.now)
    paid_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-created_at", "-pk")

    def __str__(self) -> str:
        return self.number

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self.number:
            self.number = "WEB-" + secrets.token_hex(3).upper()
        super().save(*args, **kwargs)

    def recalculate(self) -> None:
        subtotal = sum((item.line_total for item in self.items.all()), Decimal("0"))
        self.total = subtotal + self.shipping

    def mark_paid(self) -> None:
        """What the payment provider's callback would do. Saving it paid is the conversion."""
        self.status = self.Status.PAID
        self.paid_at = timezone.now()
        self.save()


class OrderItem(models.Model):
    # The line keeps what was sold (sku, name, price) even if the catalogue changes later;
    # the sku is the product id the providers' product feeds use.
    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="items")
    sku = models.CharField("SKU", max_length=64)
    name = models.CharField(max_length=200)
    price = models.DecimalField(max_digits=10, decimal_places=2)
    quantity = models.PositiveIntegerField(default=1)

    class Meta:
        ordering = ("pk",)

    def __str__(self) -> str:
        return f"{self.quantity} x {self.name}"

    @property
    def line_total(self) -> Decimal:
        return self.price * self.quantity
