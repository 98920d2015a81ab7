"""Settings of the browser tests: the test suite's settings plus the example shop.

The browser tests buy through the example shop's storefront, so the shop (example_project/shop)
is installed, its ``Order`` is the tracked ORDER_MODEL and the scan-session middleware runs.
The rest of the suite relies on ``tests.testapp.Order`` being the ORDER_MODEL, so these settings
are only ever used by the separate pytest process that tests/browser/test_browser.py starts
(see docs/browser-tests.md). The database (SQLite file or PostgreSQL) is chosen as in
tests/settings.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tests.settings import *  # noqa: F403
from tests.settings import CONVERSIONS as _BASE_CONVERSIONS
from tests.settings import INSTALLED_APPS as _BASE_APPS
from tests.settings import MIDDLEWARE as _BASE_MIDDLEWARE

# The example shop is a top-level package of example_project/, as in its own project.
EXAMPLE_PROJECT = Path(__file__).resolve().parents[2] / "example_project"
if str(EXAMPLE_PROJECT) not in sys.path:
    sys.path.insert(0, str(EXAMPLE_PROJECT))

INSTALLED_APPS = [*_BASE_APPS, "shop"]

_SESSIONS = "django.contrib.sessions.middleware.SessionMiddleware"
MIDDLEWARE = list(_BASE_MIDDLEWARE)
MIDDLEWARE.insert(
    MIDDLEWARE.index(_SESSIONS) + 1, "django_conversions.middleware.ScanSessionMiddleware"
)

ROOT_URLCONF = "tests.browser.urls"

CONVERSIONS = {
    **_BASE_CONVERSIONS,
    "ORDER_MODEL": "shop.Order",
    # As in the example shop: its customers type Romanian national phone numbers.
    "DEFAULT_PHONE_COUNTRY_CODE": "40",
    # As in the example shop: its catalogue is the product feed.
    "PRODUCT_MODEL": "shop.Product",
    "FEED_CURRENCY": "EUR",
}

# Logging in is part of every scenario: a fast hasher keeps that out of the timings.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
