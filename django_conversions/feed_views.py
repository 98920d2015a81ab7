"""The product feed over HTTP: one URL per tracking site whose provider reads a feed.

``feed/<site id>/products.xml`` (or ``.csv``), or with the site's feed token
``feed/<site id>/<token>/products.xml``. A site with a token answers 404 without it, so its
feed can't be found by counting site ids. Answers carry ``ETag`` and ``Last-Modified`` when the
product model has a modification time, and a conditional GET that matches gets a 304.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime

from django.http import Http404, HttpRequest, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.urls import NoReverseMatch, reverse
from django.views.decorators.http import condition, require_safe

from django_conversions.conf import conversions_settings
from django_conversions.exceptions import UnknownProvider
from django_conversions.feed import FORMATS, Channel, configured_base_url, feed_chunks, feed_fields
from django_conversions.models import TrackingSite
from django_conversions.products import (
    FeedState,
    get_product_adapter,
    listed_product_model,
)
from django_conversions.providers import registry

URL_NAME = "django_conversions:product-feed"
TOKEN_URL_NAME = "django_conversions:product-feed-token"


def takes_feed(site: TrackingSite) -> bool:
    try:
        return registry.get_class(site.provider).takes_product_feed
    except UnknownProvider:
        return False


def feed_site(site_id: int, token: str) -> TrackingSite:
    """The active site with this id whose provider reads a feed and whose token is ``token``
    (compared in constant time); otherwise 404, the same answer whatever was wrong."""
    site = TrackingSite.objects.filter(pk=site_id, is_active=True).first()
    if site is None or not takes_feed(site) or listed_product_model() is None:
        raise Http404("No product feed here.")
    if not hmac.compare_digest(site.feed_token.encode(), token.encode()):
        raise Http404("No product feed here.")
    return site


def feed_path(site: TrackingSite, fmt: str = "xml") -> str | None:
    """The feed's path on this shop, or None when the shop has not included the app's URLs."""
    try:
        if site.feed_token:
            return reverse(
                TOKEN_URL_NAME, kwargs={"site_id": site.pk, "token": site.feed_token, "fmt": fmt}
            )
        return reverse(URL_NAME, kwargs={"site_id": site.pk, "fmt": fmt})
    except NoReverseMatch:
        return None


def entity_tag(site: TrackingSite, fmt: str, base_url: str, state: FeedState) -> str:
    """Changes with the products (count, newest change) and with what shapes the feed."""
    parts = [
        str(site.pk),
        site.name,
        fmt,
        base_url,
        ",".join(feed_fields()),
        str(conversions_settings.FEED_CURRENCY),
        str(state.count),
        state.last_modified.isoformat() if state.last_modified else "",
    ]
    return '"' + hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32] + '"'


@require_safe
def product_feed(request: HttpRequest, site_id: str, fmt: str, token: str = "") -> HttpResponseBase:
    site = feed_site(int(site_id), token)
    adapter = get_product_adapter()
    base_url = configured_base_url() or request.build_absolute_uri("/")
    state = adapter.state()
    etag = None if state is None else entity_tag(site, fmt, base_url, state)
    last_modified = None if state is None else state.last_modified

    def stream(request: HttpRequest) -> HttpResponseBase:
        channel = Channel(title=site.name, base_url=base_url)
        response = StreamingHttpResponse(
            feed_chunks(fmt, adapter, channel), content_type=FORMATS[fmt]
        )
        if fmt == "csv":
            response["Content-Disposition"] = 'inline; filename="products.csv"'
        return response

    def etag_of(request: HttpRequest) -> str | None:
        return etag

    def modified_at(request: HttpRequest) -> datetime | None:
        return last_modified

    # Django's documented conditional-view decorator, given the values worked out above.
    answer: HttpResponseBase = condition(etag_func=etag_of, last_modified_func=modified_at)(stream)(
        request
    )
    return answer
