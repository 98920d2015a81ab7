from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from shop.models import Order, OrderItem, Product


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    list_display = ("name", "sku", "price", "is_active")
    list_editable = ("price", "is_active")
    search_fields = ("name", "sku")


class OrderItemInline(admin.TabularInline):
    model = OrderItem
    extra = 0


SHOP_ADMIN_CSS = {"all": ("shop/admin.css",)}


@admin.register(Order)
class OrderAdmin(admin.ModelAdmin):
    list_display = (
        "number",
        "status",
        "total",
        "email",
        "scan_session_id",
        "tracking_consent",
        "created_at",
    )
    list_filter = ("status", "tracking_consent")
    search_fields = ("number", "email", "scan_session_id")
    readonly_fields = ("number", "created_at", "paid_at")
    inlines = (OrderItemInline,)
    actions = ("mark_paid",)

    class Media:
        css = SHOP_ADMIN_CSS

    @admin.action(description="Mark selected orders as paid (reports them as conversions)")
    def mark_paid(self, request: HttpRequest, queryset: QuerySet[Order]) -> None:
        # One save() per order, not queryset.update(): the save is what the app listens to.
        orders = [order for order in queryset if order.status != Order.Status.PAID]
        for order in orders:
            order.mark_paid()
        self.message_user(request, f"{len(orders)} order(s) marked paid.", messages.SUCCESS)
