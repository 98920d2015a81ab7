"""The ``CONVERSIONS`` settings dict, read lazily with documented defaults.

``conversions_settings.LEASE_SECONDS`` reads ``settings.CONVERSIONS["LEASE_SECONDS"]`` or its
default. Values are cached and the cache is dropped on ``setting_changed`` so
``override_settings`` works in tests. Unknown keys are rejected with the list of valid ones;
dotted paths are imported on first use with an error that names the setting.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.utils.module_loading import import_string

SETTING_NAME = "CONVERSIONS"

# Every key is documented in README.md ("Settings reference"); keep the two in step.
DEFAULTS: dict[str, Any] = {
    # "app_label.ModelName" of the host's order model; None tracks nothing automatically.
    "ORDER_MODEL": None,
    # Dotted path to an OrderAdapter subclass.
    "ORDER_ADAPTER": "django_conversions.adapters.OrderAdapter",
    # Default adapter: the attribute that holds the order status, and the values that mean "paid".
    # With ORDER_STATUS_FIELD = None an order is tracked when it is created.
    "ORDER_STATUS_FIELD": "status",
    "ORDER_PAID_STATUSES": ("paid", "completed", "complete", "fulfilled", "shipped"),
    # Default adapter: the related manager holding the order lines (None: no items).
    "ORDER_ITEMS_RELATION": "items",
    # Event name given to tracked orders.
    "ORDER_EVENT_NAME": "purchase",
    # Allow http:// endpoints (local sandboxes); production endpoints must be https.
    "ALLOW_INSECURE_ENDPOINTS": False,
    # Allow endpoints on loopback, link-local and private addresses (local sandboxes, tests);
    # off, such a host is refused when a site is saved and again, resolved, before each request.
    "ALLOW_PRIVATE_ENDPOINTS": False,
    # Alias in TASKS used to enqueue delivery after commit; None = no task, the sweep delivers.
    "TASK_BACKEND": "default",
    # With a backend that runs tasks where they are enqueued (ImmediateBackend, Django's
    # default), deliver from one background thread per process after commit instead of inside
    # the saving request; False runs them inline (warning W020).
    "BACKGROUND_DELIVERY": True,
    # How long a claimed event may stay "sending" before another worker may take it.
    "LEASE_SECONDS": 300,
    # Seconds each process keeps its list of active sites (0: read it on every tracked save).
    "SITE_CACHE_SECONDS": 5,
    # How many events a worker claims at once.
    "CLAIM_BATCH_SIZE": 500,
    # Fernet keys (url-safe base64, 32 bytes) for API keys at rest; the first encrypts.
    "ENCRYPTION_KEYS": (),
    # Extra provider classes, as dotted paths.
    "PROVIDERS": (),
    # HTTP timeouts in seconds.
    "CONNECT_TIMEOUT": 5.0,
    "READ_TIMEOUT": 10.0,
    # Seconds to wait before each retry; the last value repeats until RETRY_MAX_AGE has passed.
    "RETRY_SCHEDULE": (1, 2, 4, 8, 30, 60, 300, 900, 1800, 3600),
    # Give up on an event this many seconds after it was created (default: 3 days).
    "RETRY_MAX_AGE": 3 * 24 * 3600,
    # How far back the sweep looks for orders that are conversions but have no event (a lost
    # outbox write), in seconds (default: 3 days).
    "RECONCILE_WINDOW": 3 * 24 * 3600,
    # Seconds one request may take in all, a slowly dripping answer included (the connect and
    # read timeouts bound each wait, not the whole).
    "REQUEST_DEADLINE": 30,
    # Random extra delay, as a fraction of each wait, so retries from many events spread out.
    "RETRY_JITTER": 0.2,
    # Requests a worker keeps in flight at once per site (HTTP waits overlap; each answer is
    # recorded by the worker's own thread as it comes).
    "DELIVERY_CONCURRENCY": 4,
    # Events per request on providers with a batch endpoint.
    "BATCH_SIZE": 100,
    # Response bodies stored on a delivery attempt are cut to this many characters.
    "RESPONSE_BODY_LIMIT": 2000,
    # Country calling code (digits, e.g. "40") for phone numbers written without one.
    "DEFAULT_PHONE_COUNTRY_CODE": None,
    # Per-provider consent policy overrides: {"vtmarketing": {"requires_consent": False}}.
    "CONSENT_POLICY": {},
    # Session key and lifetime of the scan session id kept by the middleware.
    "SCAN_SESSION_KEY": "conversions_scan_session",
    "SCAN_SESSION_MAX_AGE": 30 * 24 * 3600,
    "SCAN_SESSION_PARAM": "scnv",
    # Sessions one client address may start through the ?scnv= parameter (DRF rate syntax;
    # None: no limit). Changing the id of an existing session is not counted.
    "SCAN_SESSION_NEW_RATE": "30/minute",
    # Retention: delete finished events after this many days; scrub personal data after that many.
    "RETENTION_DAYS": 180,
    "SCRUB_AFTER_DAYS": 30,
    # REST API (django_conversions.api): DRF classes as dotted paths, and the rate limit of the
    # public scan-session endpoint per client IP ("30/minute"; None turns throttling off).
    # Token first: its WWW-Authenticate header makes anonymous requests a 401, not a 403.
    "API_AUTHENTICATION_CLASSES": (
        "django_conversions.api.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ),
    "API_PERMISSION_CLASSES": ("django_conversions.api.permissions.IsStaffWithModelPermissions",),
    "API_SCAN_SESSION_THROTTLE_RATE": "30/minute",
    "API_PAGE_SIZE": 50,
    # django_conversions.contrib.oscar: Oscar order statuses (matched case-insensitively) that
    # make an order a conversion when Order.set_status() reaches one; None: when it is placed.
    "OSCAR_PAID_STATUSES": None,
    # Product feed (docs/feed.md). "app_label.ModelName" of the host's product model; None: no
    # feed. Its ids come from ORDER_ADAPTER's get_item_id(), the same as the conversions' items.
    "PRODUCT_MODEL": None,
    # Dotted path to a ProductAdapter subclass: which products, and each feed field's value.
    "PRODUCT_ADAPTER": "django_conversions.products.ProductAdapter",
    # The feed's fields, in order (Google Merchant Center attribute names; an unknown name is
    # read from the product attribute of that name).
    "FEED_FIELDS": (
        "id",
        "title",
        "description",
        "link",
        "image_link",
        "price",
        "availability",
        "brand",
        "gtin",
        "mpn",
    ),
    # ISO 4217 code of prices for products without a currency attribute.
    "FEED_CURRENCY": None,
    # "https://shop.example" that relative product links and images are made absolute with;
    # None: the feed request's own host (the conversions_feed command then needs --base-url).
    "FEED_BASE_URL": None,
    # Products read from the database at once while the feed streams.
    "FEED_CHUNK_SIZE": 1000,
    # Health (manage.py conversions_status, the metrics): unhealthy when the oldest due event
    # has waited more than HEALTH_MAX_LAG seconds, or more than HEALTH_MAX_FAILED events failed
    # within the last HEALTH_FAILED_WINDOW seconds.
    "HEALTH_MAX_LAG": 600,
    "HEALTH_MAX_FAILED": 0,
    "HEALTH_FAILED_WINDOW": 3600,
}

# Settings holding dotted paths, imported on access.
IMPORT_STRINGS = frozenset({"ORDER_ADAPTER", "PRODUCT_ADAPTER"})
# Settings that must be a positive number (checked by the system checks, conversions.E010).
POSITIVE_NUMBERS = (
    "LEASE_SECONDS",
    "CLAIM_BATCH_SIZE",
    "BATCH_SIZE",
    "READ_TIMEOUT",
    "CONNECT_TIMEOUT",
    "RETRY_MAX_AGE",
    "RECONCILE_WINDOW",
    "REQUEST_DEADLINE",
    "FEED_CHUNK_SIZE",
    "HEALTH_MAX_LAG",
    "HEALTH_FAILED_WINDOW",
)


class ConversionsSettings:
    """Attribute access to ``settings.CONVERSIONS`` merged over ``DEFAULTS``.

    A setting read once is kept as an attribute of the instance until ``reload()``, which
    ``setting_changed`` triggers: a read never sees a value older than the last change.
    """

    @property
    def user_settings(self) -> dict[str, Any]:
        value = getattr(settings, SETTING_NAME, None) or {}
        if not isinstance(value, dict):
            raise ImproperlyConfigured(f"settings.{SETTING_NAME} must be a dict.")
        unknown = sorted(set(value) - set(DEFAULTS))
        if unknown:
            raise ImproperlyConfigured(
                f"Unknown key(s) in settings.{SETTING_NAME}: {', '.join(unknown)}. "
                f"Valid keys are: {', '.join(sorted(DEFAULTS))}."
            )
        return value

    def raw(self, name: str) -> Any:
        """The configured value without importing dotted paths."""
        if name not in DEFAULTS:
            raise AttributeError(f"{SETTING_NAME} has no setting {name!r}")
        return self.user_settings.get(name, DEFAULTS[name])

    def __getattr__(self, name: str) -> Any:
        # Only called for a setting not read since the last reload().
        if name.startswith("_") or name not in DEFAULTS:
            raise AttributeError(f"{SETTING_NAME} has no setting {name!r}")
        value = self.raw(name)
        if name in IMPORT_STRINGS and isinstance(value, str):
            value = import_setting(name, value)
        setattr(self, name, value)
        return value

    def reload(self) -> None:
        for name in DEFAULTS:
            self.__dict__.pop(name, None)


def import_setting(name: str, dotted_path: str) -> Any:
    try:
        return import_string(dotted_path)
    except ImportError as err:
        raise ImproperlyConfigured(
            f"{SETTING_NAME}[{name!r}] = {dotted_path!r} could not be imported: {err}"
        ) from err


conversions_settings = ConversionsSettings()


def _reload(*, setting: str, **kwargs: Any) -> None:
    # Each module caching something worked out from the settings clears it on its own
    # receiver (consent policies, the provider registry, the sites' providers).
    if setting == SETTING_NAME:
        conversions_settings.reload()


setting_changed.connect(_reload, dispatch_uid="conversions_settings")
