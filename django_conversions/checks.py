"""System checks: every misconfiguration that can be seen at startup, each with a fix."""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.conf import settings
from django.core.checks import Error, Tags, Warning, register
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, connections, router
from django.utils.module_loading import import_string

from django_conversions.adapters import OrderAdapter
from django_conversions.api.throttling import check_proxy_setting
from django_conversions.conf import POSITIVE_NUMBERS, SETTING_NAME, conversions_settings
from django_conversions.feed import check_feed_settings
from django_conversions.fields import get_fernet
from django_conversions.frontend import check_site_scripts
from django_conversions.models import ApiKey, TrackingSite
from django_conversions.order_checks import check_order_setup
from django_conversions.providers import registry
from django_conversions.scan_session import parse_rate
from django_conversions.tasks import check_task_backend

# Defined beside what they are about; registered here with the others.
register(check_task_backend, Tags.compatibility)
register(check_proxy_setting, Tags.security)
register(check_order_setup, Tags.compatibility)


def _setting_errors() -> tuple[Any, list[Error]]:

    try:
        conversions_settings.user_settings  # noqa: B018  (validates the keys)
    except ImproperlyConfigured as err:
        return None, [Error(str(err), hint="Fix or remove the listed keys.", id="conversions.E001")]
    return conversions_settings, []


@register(Tags.compatibility)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    conf, errors = _setting_errors()
    if conf is None:
        return errors
    messages: list[Any] = []
    messages += _check_order_model(conf)
    messages += _check_adapter(conf)
    messages += _check_encryption_keys(conf)
    messages += _check_providers(conf)
    messages += _check_task_backend(conf)
    messages += _check_numbers(conf)
    messages += _check_api(conf)
    messages += _check_database()
    return messages


#: Database backends the outbox is tested on (``connection.vendor``), each in CI: claims,
#: fenced writes and the due index's plans are proven there and nowhere else.
SUPPORTED_DATABASES = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}


def _check_database() -> list[Any]:
    """The app's models live on one database alias, on a backend the outbox is tested on."""
    app = apps.get_app_config("django_conversions")
    routes = {
        model._meta.label: (router.db_for_write(model), router.db_for_read(model))
        for model in app.get_models()
    }
    aliases = {alias for pair in routes.values() for alias in pair}
    if len(aliases) > 1:
        listed = ", ".join(
            f"{label} -> {write!r} (write) / {read!r} (read)"
            for label, (write, read) in sorted(routes.items())
        )
        return [
            Error(
                f"django_conversions' models are routed to several databases: {listed}.",
                hint="Route every model of the django_conversions app to one database alias "
                "(db_for_read and db_for_write): an event, its attempts and its site are "
                "written in one transaction.",
                id="conversions.E015",
            )
        ]
    [alias] = aliases
    connection = connections[alias]
    if connection.vendor in SUPPORTED_DATABASES:
        return []
    supported = " and ".join(SUPPORTED_DATABASES.values())
    return [
        Error(
            f"The database {alias!r} is {connection.display_name} "
            f"({connection.settings_dict['ENGINE']}), which django_conversions does not "
            f"support: its outbox is tested on {supported} only.",
            hint="Keep django_conversions' models on PostgreSQL or SQLite (a database router "
            "may send them there).",
            id="conversions.E014",
        )
    ]


def _check_order_model(conf: Any) -> list[Any]:
    label = conf.raw("ORDER_MODEL")
    if not label:
        if _adapter_tracks_a_model(conf):
            return []  # an integration tracks its model on its own signals (contrib.oscar)
        return [
            Warning(
                f"{SETTING_NAME}['ORDER_MODEL'] is not set, so no order is tracked automatically.",
                hint="Set it to your order model, e.g. 'shop.Order', or call track() yourself. "
                "A django-oscar shop adds 'django_conversions.contrib.oscar' to INSTALLED_APPS "
                "instead (with its adapter as ORDER_ADAPTER).",
                id="conversions.W002",
            )
        ]
    try:
        apps.get_model(label)
    except (LookupError, ValueError):
        return [
            Error(
                f"{SETTING_NAME}['ORDER_MODEL'] = {label!r} is not an installed model.",
                hint="Use 'app_label.ModelName' of a model in an app listed in INSTALLED_APPS.",
                id="conversions.E002",
            )
        ]
    return []


def _adapter_tracks_a_model(conf: Any) -> bool:
    """Does ORDER_ADAPTER name an order model of its own (``get_order_model()``)?"""
    try:
        adapter = conf.ORDER_ADAPTER
        return isinstance(adapter, type) and adapter().get_order_model() is not None
    except Exception:
        return False  # a broken adapter setting is reported by _check_adapter


def _check_adapter(conf: Any) -> list[Any]:

    path = conf.raw("ORDER_ADAPTER")
    try:
        adapter = conf.ORDER_ADAPTER
    except ImproperlyConfigured as err:
        return [
            Error(
                str(err),
                hint="Give the dotted path of an OrderAdapter subclass.",
                id="conversions.E003",
            )
        ]
    if not (isinstance(adapter, type) and issubclass(adapter, OrderAdapter)):
        return [
            Error(
                f"{SETTING_NAME}['ORDER_ADAPTER'] = {path!r} is not a subclass of "
                "django_conversions.adapters.OrderAdapter.",
                hint="Subclass OrderAdapter and override should_track() and to_conversion().",
                id="conversions.E004",
            )
        ]
    return []


def _check_encryption_keys(conf: Any) -> list[Any]:

    if not conf.raw("ENCRYPTION_KEYS"):
        return [
            Warning(
                "API keys are encrypted with a key derived from SECRET_KEY: changing SECRET_KEY "
                "without keeping the old one in SECRET_KEY_FALLBACKS makes the stored API keys "
                "unreadable.",
                hint=f"Set {SETTING_NAME}['ENCRYPTION_KEYS'] = [<Fernet.generate_key()>] and run "
                "manage.py conversions_rotate_keys.",
                id="conversions.W001",
            )
        ]
    try:
        get_fernet()
    except ImproperlyConfigured as err:
        return [
            Error(str(err), hint="Generate keys with Fernet.generate_key().", id="conversions.E005")
        ]
    return _check_stored_keys()


def _check_stored_keys() -> list[Any]:
    """API keys no configured encryption key can read (skipped before migrate)."""

    try:
        keys = list(ApiKey.objects.filter(is_active=True).select_related("site"))
    except DatabaseError:
        return []
    unreadable = [key for key in keys if not key.is_readable]
    if not unreadable:
        return []
    listed = ", ".join(
        f"{key.pk} {key.label or '(no label)'!r} of site {key.site.name!r}" for key in unreadable
    )
    return [
        Warning(
            f"{len(unreadable)} active API key(s) can't be decrypted with "
            f"{SETTING_NAME}['ENCRYPTION_KEYS']: {listed}. "
            "Their sites are paused when they next deliver.",
            hint=f"Add the encryption key they were stored with to {SETTING_NAME}"
            "['ENCRYPTION_KEYS'] (after the first) and run manage.py conversions_rotate_keys, "
            "or paste the API keys again in the admin.",
            id="conversions.W003",
        )
    ]


def _check_providers(conf: Any) -> list[Any]:

    registry.reset()
    try:
        known = set(registry.ids())
    except ImproperlyConfigured as err:
        return [
            Error(
                str(err),
                hint="List Provider subclasses in CONVERSIONS['PROVIDERS'].",
                id="conversions.E006",
            )
        ]
    return _check_sites(conf, known)


def _check_sites(conf: Any, known: set[str]) -> list[Any]:
    """Stored sites: unknown providers and insecure endpoints (skipped before migrate)."""

    messages: list[Any] = []
    try:
        sites = list(TrackingSite.objects.all())
    except DatabaseError:
        return []
    for site in sites:
        if site.provider not in known:
            messages.append(
                Error(
                    f"Tracking site {site.name!r} uses provider {site.provider!r}, "
                    "which is not registered.",
                    hint=f"Known providers: {', '.join(sorted(known))}; register others in "
                    f"{SETTING_NAME}['PROVIDERS'].",
                    obj=site,
                    id="conversions.E007",
                )
            )
        problem = site.endpoint_problem()
        if problem:
            messages.append(
                Error(
                    f"Tracking site {site.name!r}: {problem}.",
                    hint="Edit the site's endpoint URL in the admin.",
                    obj=site,
                    id="conversions.E008",
                )
            )
    return messages


def _check_task_backend(conf: Any) -> list[Any]:
    alias = conf.raw("TASK_BACKEND")
    if not alias:
        return []
    tasks_setting = getattr(settings, "TASKS", None)
    if tasks_setting is not None and alias not in tasks_setting:
        return [
            Error(
                f"{SETTING_NAME}['TASK_BACKEND'] = {alias!r} is not a backend alias in TASKS.",
                hint=f"Use one of {sorted(tasks_setting)}, or None to deliver with the "
                "conversions_deliver command only.",
                id="conversions.E009",
            )
        ]
    return []


def _check_numbers(conf: Any) -> list[Any]:
    messages: list[Any] = []
    for name in POSITIVE_NUMBERS:
        value = conf.raw(name)
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            messages.append(
                Error(
                    f"{SETTING_NAME}[{name!r}] must be a positive number, not {value!r}.",
                    hint="See the settings reference in README.md.",
                    id="conversions.E010",
                )
            )
    schedule = conf.raw("RETRY_SCHEDULE")
    if not schedule or any(
        isinstance(v, bool) or not isinstance(v, int | float) or v < 0 for v in schedule
    ):
        messages.append(
            Error(
                f"{SETTING_NAME}['RETRY_SCHEDULE'] must be a non-empty list of seconds.",
                hint="For example (1, 2, 4, 8, 30, 60, 300, 900, 1800, 3600).",
                id="conversions.E011",
            )
        )
    max_failed = conf.raw("HEALTH_MAX_FAILED")
    if isinstance(max_failed, bool) or not isinstance(max_failed, int) or max_failed < 0:
        messages.append(
            Error(
                f"{SETTING_NAME}['HEALTH_MAX_FAILED'] must be a whole number of events, 0 or "
                f"more, not {max_failed!r}.",
                hint="0: any failure within HEALTH_FAILED_WINDOW makes conversions_status fail.",
                id="conversions.E040",
            )
        )
    if not messages:
        messages += _check_lease(conf)
    return messages


def _check_lease(conf: Any) -> list[Any]:
    """A request must end well inside the lease of its events: a request still on the wire
    when the lease runs out may be sent again by another worker."""
    lease, deadline = conf.raw("LEASE_SECONDS"), conf.raw("REQUEST_DEADLINE")
    if deadline * 2 <= lease:
        return []
    return [
        Error(
            f"{SETTING_NAME}['REQUEST_DEADLINE'] ({deadline:g} s) must be at most half of "
            f"{SETTING_NAME}['LEASE_SECONDS'] ({lease:g} s): a request still running when its "
            "events' lease runs out may be sent again by another worker.",
            hint="Lower REQUEST_DEADLINE or raise LEASE_SECONDS.",
            id="conversions.E016",
        )
    ]


def _check_api(conf: Any) -> list[Any]:
    """The REST API's class paths and throttle rate, checked before the first request."""

    messages: list[Any] = []
    for name in ("API_AUTHENTICATION_CLASSES", "API_PERMISSION_CLASSES"):
        for path in conf.raw(name):
            try:
                import_string(path)
            except ImportError as err:
                messages.append(
                    Error(
                        f"{SETTING_NAME}[{name!r}] lists {path!r}, which can't be imported: {err}",
                        hint="Give dotted paths of DRF authentication / permission classes.",
                        id="conversions.E012",
                    )
                )
    rate = conf.raw("API_SCAN_SESSION_THROTTLE_RATE")
    if rate is not None:
        count, _, period = str(rate).partition("/")
        if not count.isdigit() or not period or period[0] not in "smhd":
            messages.append(
                Error(
                    f"{SETTING_NAME}['API_SCAN_SESSION_THROTTLE_RATE'] = {rate!r} is not a rate.",
                    hint="Use DRF's rate syntax, e.g. '30/minute' or '100/hour', or None.",
                    id="conversions.E013",
                )
            )
    new_rate = conf.raw("SCAN_SESSION_NEW_RATE")
    if new_rate is not None:
        try:
            parse_rate(new_rate)
        except ImproperlyConfigured as err:
            messages.append(
                Error(
                    str(err),
                    hint="Use DRF's rate syntax, e.g. '30/minute', or None for no limit.",
                    id="conversions.E013",
                )
            )
    return messages


# The product feed's settings (feed.py) and the stored sites' front-end script URLs (frontend.py).
register(check_feed_settings, Tags.compatibility)
register(check_site_scripts, Tags.security)
