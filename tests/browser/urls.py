"""URLs of the browser tests: the admin, the provider sandbox and the example shop, as in
example_project/demo_site/urls.py."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("sandbox/", include("django_conversions.contrib.sandbox.urls")),
    path("conversions/", include("django_conversions.urls")),
    path("", include("shop.urls")),
]
