from __future__ import annotations

from django.urls import path

from shop import views

app_name = "shop"

urlpatterns = [
    # The landing page of QR campaigns: /?scnv=<uuid> (the middleware keeps the id).
    path("", views.storefront, name="storefront"),
    path("cart/add/", views.cart_add, name="cart-add"),
    path("cart/clear/", views.cart_clear, name="cart-clear"),
    path("checkout/", views.checkout, name="checkout"),
    path("thanks/<str:number>/", views.thanks, name="thanks"),
    path("consent/", views.consent, name="consent"),
]
