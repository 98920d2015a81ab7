"""Settings for the test suite. DATABASE=postgres (or CONVERSIONS_TEST_DB=postgres) uses the
local PostgreSQL server; the default is SQLite."""

from __future__ import annotations

import json
import os
import tempfile
from importlib.util import find_spec

SECRET_KEY = "test-secret-key-not-for-production"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "tests.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_tasks_db",
    "django_conversions",
    "django_conversions.contrib.sandbox",
    "tests.testapp",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
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
            ]
        },
    }
]

STATIC_URL = "/static/"

# Tests only: the default hasher is slow on purpose, and the admin tests log users in by the
# hundred. Never use MD5 for real passwords.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

if os.environ.get("CONVERSIONS_TEST_DB", "sqlite") == "postgres":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": os.environ.get("PGDATABASE", "test"),
            "USER": os.environ.get("PGUSER", "postgres"),
            "HOST": os.environ.get("PGHOST", "127.0.0.1"),
            "PORT": os.environ.get("PGPORT", "5432"),
            # One test database per pytest process, so concurrent runs don't drop each other's.
            "TEST": {"NAME": f"test_django_conversions_{os.getpid()}"},
        }
    }
else:
    # A file, not :memory:, so that worker subprocesses started by tests share the database.
    _SQLITE_TEST_FILE = os.environ.get("CONVERSIONS_TEST_SQLITE") or os.path.join(
        tempfile.gettempdir(), f"django_conversions_test_{os.getpid()}.sqlite3"
    )
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": _SQLITE_TEST_FILE,
            "TEST": {"NAME": _SQLITE_TEST_FILE},
            "OPTIONS": {"timeout": 20},
        }
    }

# Django 6 ships django.tasks; Django 5.2 uses the django-tasks backport.
_TASKS_MODULE = "django.tasks" if find_spec("django.tasks") else "django_tasks"
TASKS: dict[str, dict[str, object]] = {
    "default": {"BACKEND": f"{_TASKS_MODULE}.backends.immediate.ImmediateBackend"}
}

CONVERSIONS = {
    "ORDER_MODEL": "testapp.Order",
    "ENCRYPTION_KEYS": ["FWy1bLl2Ou0H6dkejRys2oRrqzIuK56OTdRWaJHiJfE="],
    # Tests talk to local servers over http.
    "ALLOW_INSECURE_ENDPOINTS": True,
    # ... on 127.0.0.1 (tests/test_security.py turns it off to test the refusal).
    "ALLOW_PRIVATE_ENDPOINTS": True,
    "RETRY_JITTER": 0,
    # Most tests assert what delivery did right after a save; tests of the background thread
    # turn it on (tests/test_tasks.py, tests/test_no_io_in_requests.py).
    "BACKGROUND_DELIVERY": False,
}

# Worker subprocesses started by tests receive their overrides as JSON in the environment.
CONVERSIONS.update(json.loads(os.environ.get("CONVERSIONS_TEST_OVERRIDES", "{}")))

LOGGING_CONFIG = None

# No proxy in front of the test server: clients are known by REMOTE_ADDR (check W004).
REST_FRAMEWORK = {"NUM_PROXIES": 0}

# Queues on the local Redis (tests/test_queues.py): a database and queue names of this run's
# own, handed to the worker processes it starts through the environment.
REDIS_URL = os.environ.setdefault(
    "CONVERSIONS_TEST_REDIS_URL", f"redis://127.0.0.1:6379/{os.getpid() % 15 + 1}"
)
TEST_QUEUE = os.environ.setdefault("CONVERSIONS_TEST_QUEUE", f"conversions-test-{os.getpid()}")
if find_spec("django_tasks_rq") and find_spec("django_rq"):
    INSTALLED_APPS.append("django_rq")
    RQ_QUEUES = {"default": {"URL": REDIS_URL}}
    TASKS["rq"] = {"BACKEND": "django_tasks_rq.RQBackend", "QUEUES": ["default"]}
if find_spec("celery"):
    CELERY_BROKER_URL = REDIS_URL
    CELERY_TASK_DEFAULT_QUEUE = TEST_QUEUE
    TASKS["celery"] = {
        "BACKEND": "django_conversions.contrib.celery.CeleryBackend",
        "OPTIONS": {"queue": TEST_QUEUE},
    }
