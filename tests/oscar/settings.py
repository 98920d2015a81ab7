"""Settings of the django-oscar tests (tests/oscar/): a stock Oscar 4.2 shop with
django_conversions and its Oscar integration, configured by settings alone as docs/oscar.md
says. The database is chosen as for the main suite (tests/settings.py): SQLite, or PostgreSQL
with CONVERSIONS_TEST_DB=postgres.

Run them apart from the main suite, which has another ORDER_MODEL::

    .venv/bin/python -m pytest tests/oscar --ds=tests.oscar.settings
"""

from __future__ import annotations

import os
import tempfile

from oscar import INSTALLED_APPS as OSCAR_APPS
from oscar.defaults import *  # noqa: F403  (Oscar's documented way to take its settings)

from tests.settings import DATABASES, PASSWORD_HASHERS  # noqa: F401
from tests.settings import TASKS as MAIN_SUITE_TASKS

# Only the immediate backend: the main suite's RQ and Celery backends need settings (RQ_QUEUES,
# a broker) these tests don't have, and Django 6 checks every configured backend at startup.
TASKS = {"default": MAIN_SUITE_TASKS["default"]}

SECRET_KEY = "oscar-test-secret-key-not-for-production"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "tests.oscar.urls"
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
SITE_ID = 1

INSTALLED_APPS = [
    *OSCAR_APPS,
    "rest_framework",
    "django_conversions",
    "django_conversions.contrib.oscar",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django_conversions.middleware.ScanSessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "oscar.apps.basket.middleware.BasketMiddleware",
]

AUTHENTICATION_BACKENDS = [
    "oscar.apps.customer.auth_backends.EmailBackend",
    "django.contrib.auth.backends.ModelBackend",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "oscar.apps.search.context_processors.search_form",
                "oscar.apps.checkout.context_processors.checkout",
                "oscar.apps.communication.notifications.context_processors.notifications",
                "oscar.core.context_processors.metadata",
            ]
        },
    }
]

STATIC_URL = "/static/"
# Oscar copies its "image not found" picture there: outside the repository.
MEDIA_ROOT = os.path.join(tempfile.gettempdir(), f"django_conversions_oscar_media_{os.getpid()}")
HAYSTACK_CONNECTIONS = {"default": {"ENGINE": "haystack.backends.simple_backend.SimpleEngine"}}
# No search index to keep up to date.
HAYSTACK_SIGNAL_PROCESSOR = "haystack.signals.BaseSignalProcessor"
# No image library in the tests: pages link the original image.
OSCAR_THUMBNAILER = "tests.oscar.thumbnails.OriginalImage"

OSCAR_DEFAULT_CURRENCY = "EUR"
OSCAR_ALLOW_ANON_CHECKOUT = True
OSCAR_INITIAL_ORDER_STATUS = "Pending"
OSCAR_ORDER_STATUS_PIPELINE = {
    "Pending": ("Paid", "Cancelled"),
    "Paid": ("Complete", "Cancelled"),
    "Complete": (),
    "Cancelled": (),
}

# docs/oscar.md's settings: the adapter, no ORDER_MODEL.
CONVERSIONS = {
    "ORDER_ADAPTER": "django_conversions.contrib.oscar.adapters.OscarOrderAdapter",
    "PRODUCT_ADAPTER": "django_conversions.contrib.oscar.products.OscarProductAdapter",
    "ENCRYPTION_KEYS": ["FWy1bLl2Ou0H6dkejRys2oRrqzIuK56OTdRWaJHiJfE="],
    "RETRY_JITTER": 0,
    # The tests assert what delivery did right after the checkout request.
    "BACKGROUND_DELIVERY": False,
}

LOGGING_CONFIG = None
REST_FRAMEWORK = {"NUM_PROXIES": 0}
