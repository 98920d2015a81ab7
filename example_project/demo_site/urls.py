from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    # The providers' APIs, emulated locally; the tracking sites point here.
    path("sandbox/", include("django_conversions.contrib.sandbox.urls")),
    # The product feeds of the tracking sites (conversions/feed/<site id>/products.xml).
    path("conversions/", include("django_conversions.urls")),
    path("", include("shop.urls")),
]
