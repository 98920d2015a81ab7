"""Storefront, cart, checkout and thank-you page.

The django-conversions calls: ``get_scan_session()`` at checkout (the middleware kept the QR
scan's id when the visitor landed, and the checkout copies it onto the order), and
``remember_consent()`` for the consent banner and the checkout's box, which the tracking
scripts of the templates' ``{% conversions_scripts %}`` follow.
"""

from __future__ import annotations

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from django_conversions.models import ConversionEvent, EventStatus
from django_conversions.scan_session import get_consent, get_scan_session, remember_consent
from shop import cart
from shop.checkout import place_order
from shop.forms import CheckoutForm
from shop.models import Order, Product

ORDERS_SESSION_KEY = "shop_orders"
# Events not settled yet: waiting for the delivery thread, or on the wire.
IN_PROGRESS = (EventStatus.PENDING, EventStatus.SENDING)


def _cart_context(request: HttpRequest) -> dict[str, object]:
    lines = cart.lines(request)
    amount = cart.subtotal(lines)
    shipping = cart.shipping_for(amount) if lines else 0
    return {
        "lines": lines,
        "subtotal": amount,
        "shipping": shipping,
        "total": amount + shipping,
        "scan_session_id": get_scan_session(request),
        "consent": get_consent(request),
    }


def storefront(request: HttpRequest) -> HttpResponse:
    products = Product.objects.filter(is_active=True)
    return render(request, "shop/storefront.html", {"products": products, **_cart_context(request)})


@require_POST
def cart_add(request: HttpRequest) -> HttpResponse:
    product = get_object_or_404(Product, sku=request.POST.get("sku", ""), is_active=True)
    try:
        quantity = max(1, min(99, int(request.POST.get("quantity", "1"))))
    except ValueError:
        quantity = 1
    cart.add(request, product.sku, quantity)
    messages.success(request, f"Added {quantity} x {product.name} to your cart.")
    return redirect("shop:storefront")


@require_POST
def cart_clear(request: HttpRequest) -> HttpResponse:
    cart.clear(request)
    return redirect("shop:storefront")


def checkout(request: HttpRequest) -> HttpResponse:
    context = _cart_context(request)
    if not context["lines"]:
        messages.info(request, "Your cart is empty.")
        return redirect("shop:storefront")
    # The consent banner's answer (handed over through the app's API) ticks the box.
    initial = {"tracking_consent": get_consent(request) == "granted"}
    form = CheckoutForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        order = place_order(
            context["lines"],  # type: ignore[arg-type]
            customer=form.customer(),
            scan_session_id=get_scan_session(request),
            consent=form.consent(),
        )
        cart.clear(request)
        # The box ticked or not is the visitor's answer for the browser scripts too.
        remember_consent(request, form.consent())
        request.session[ORDERS_SESSION_KEY] = [
            *request.session.get(ORDERS_SESSION_KEY, []),
            order.number,
        ]
        return redirect("shop:thanks", number=order.number)
    return render(request, "shop/checkout.html", {"form": form, **context})


def thanks(request: HttpRequest, number: str) -> HttpResponse:
    mine = number in request.session.get(ORDERS_SESSION_KEY, [])
    if not (mine or request.user.is_staff):
        raise Http404("No such order in this session.")
    order = get_object_or_404(Order, number=number)
    # Demo only: where the order's conversion events are now. They are delivered in the
    # background after the order commits, so this page may come before the providers answer.
    events = list(
        ConversionEvent.objects.filter(
            order_reference=order.number, source_object_id=str(order.pk)
        ).select_related("site")
    )
    in_progress = any(e.status in IN_PROGRESS for e in events)
    return render(
        request,
        "shop/thanks.html",
        {
            "order": order,
            "events": events,
            "in_progress": in_progress,
            "consent": get_consent(request),
        },
    )


@require_POST
def consent(request: HttpRequest) -> HttpResponse:
    """The consent banner's answer, kept in the session: the tracking scripts on the pages
    ({% conversions_scripts %}) and the order's conversion both follow it."""
    answer = request.POST.get("consent", "")
    if answer in ("granted", "denied"):
        remember_consent(request, answer)
    back = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(back, {request.get_host()}, request.is_secure()):
        back = reverse("shop:storefront")
    return redirect(back)
