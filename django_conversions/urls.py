"""The app's pages for the shop's visitors and providers; include them under a prefix::

    path("conversions/", include("django_conversions.urls")),

The product feeds (docs/feed.md) are then at ``conversions/feed/<site id>/products.xml``.
"""

from __future__ import annotations

from django.urls import re_path

from django_conversions import feed_views

app_name = "django_conversions"

urlpatterns = [
    re_path(
        r"^feed/(?P<site_id>[0-9]+)/products\.(?P<fmt>xml|csv)$",
        feed_views.product_feed,
        name="product-feed",
    ),
    re_path(
        r"^feed/(?P<site_id>[0-9]+)/(?P<token>[^/]+)/products\.(?P<fmt>xml|csv)$",
        feed_views.product_feed,
        name="product-feed-token",
    ),
]
