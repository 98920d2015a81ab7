"""Settings of the example shop. A demo on a laptop: DEBUG on, SQLite, the sandbox mounted.

What a real shop copies from here is the CONVERSIONS block, the middleware line and the
installed app; the rest is ordinary Django.
"""

from __future__ import annotations

import os
import tempfile
from importlib.util import find_spec
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

# Demo only: a real site reads its secret from the environment and never commits it.
SECRET_KEY = os.environ.get("DEMO_SECRET_KEY", "demo-only-not-secret-6f1d0c2b9e8a7d5c4b3a")
DEBUG = True
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_conversions",
    # The local stand-in for the providers' APIs; never install it on a production site.
    "django_conversions.contrib.sandbox",
    "shop",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    # Keeps ?scnv=<uuid> from a QR-scan landing in the session, for the checkout.
    "django_conversions.middleware.ScanSessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "demo_site.urls"
WSGI_APPLICATION = "demo_site.wsgi.application"

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
            ]
        },
    }
]

# SQLite next to this file (git-ignored). The demo serves the shop and the sandbox from one
# process with several threads, and delivers from a background thread: WAL and IMMEDIATE
# transactions make their writes wait for each other (up to `timeout`) instead of failing.
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("DEMO_DATABASE", str(BASE_DIR / "demo.sqlite3")),
        "OPTIONS": {
            "timeout": 20,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL;",
        },
        # The shop's tests use a file too, not Django's in-memory default: an in-memory test
        # database is one connection that the live server's threads borrow from the test, and
        # beside the delivery thread's own connection SQLite's shared cache answers "table is
        # locked" at once instead of waiting.
        "TEST": {
            "NAME": os.environ.get(
                "DEMO_TEST_DATABASE",
                str(Path(tempfile.gettempdir()) / f"demo_shop_test_{os.getpid()}.sqlite3"),
            )
        },
    }
}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"
LANGUAGE_CODE = "en"
STATIC_URL = "/static/"
LOGIN_URL = "/admin/login/"

# No task worker to run: Django's ImmediateBackend, what a project gets without a TASKS
# setting. django-conversions does not run delivery inside the request that saved the order
# (BACKGROUND_DELIVERY, on by default): after commit the events go to this process's background
# delivery thread, which also keeps their retries, and checkout answers at once. Next to it runs
# the sweep, which sends whatever that thread never did (a restart, a crash): `manage.py demo`
# runs it every few seconds while it serves; a real shop runs `manage.py conversions_deliver
# --loop` as a service, or uses a worker backend (django-tasks-db, RQ, ...) in TASKS.
_TASKS_MODULE = "django.tasks" if find_spec("django.tasks") else "django_tasks"
TASKS = {"default": {"BACKEND": f"{_TASKS_MODULE}.backends.immediate.ImmediateBackend"}}

CONVERSIONS = {
    # The shop's Order has the attribute names the default adapter reads (number, status,
    # total, currency, email, scan_session_id, tracking_consent, items, ...).
    "ORDER_MODEL": "shop.Order",
    # Only because the sandbox is local (http://127.0.0.1); real providers are https, on
    # public addresses.
    "ALLOW_INSECURE_ENDPOINTS": True,
    "ALLOW_PRIVATE_ENDPOINTS": True,
    # Demo only: generate your own with `Fernet.generate_key()` and keep it out of git.
    "ENCRYPTION_KEYS": [
        os.environ.get("DEMO_ENCRYPTION_KEY", "q0Jk3Wf1c2pG8m5X7v9sT4yR6uN0bE2hL8aD5zC1xQo=")
    ],
    "DEFAULT_PHONE_COUNTRY_CODE": "40",
    "TASK_BACKEND": "default",
    # The product feed VTmarketing reads (docs/feed.md): the catalogue, prices in euros. Its
    # ids are the skus, as on the order lines the conversions report.
    "PRODUCT_MODEL": "shop.Product",
    "FEED_CURRENCY": "EUR",
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"short": {"format": "[%(name)s] %(message)s"}},
    # The sandbox answers 5xx on purpose when a fault is switched on: no tracebacks for those.
    "filters": {"no_sandbox_faults": {"()": "demo_site.log_filters.HideSandboxFaults"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "short"},
        "requests": {"class": "logging.StreamHandler", "filters": ["no_sandbox_faults"]},
    },
    "loggers": {
        "django_conversions": {"handlers": ["console"], "level": "WARNING", "propagate": False},
        "django.request": {"handlers": ["requests"], "level": "ERROR", "propagate": False},
    },
}

# The demo server has no proxy in front of it: clients are known by REMOTE_ADDR (check W004).
REST_FRAMEWORK = {"NUM_PROXIES": 0}
