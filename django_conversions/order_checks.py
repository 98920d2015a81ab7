"""System checks of how the shop is wired to the app: the order model's attributes the default
adapter reads, the middleware order, and what the active sites need from each order.

Each of these, wrong, sends nothing or the wrong thing without an error anywhere: a status
field the order lacks, an items relation it lacks, no attribute holding its total, a scan-id
middleware that answers every QR visitor with a 500, a site that skips every order because
nothing can give it the consent or scan id it needs. Registered by ``checks``.

A check about one of the default adapter's readings applies only where the configured adapter
still uses that reading (a subclass that overrides ``get_value()`` is not asked for a total
attribute). Ids are ``conversions.E03x`` / ``W03x``.
"""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.conf import settings
from django.contrib.sessions.middleware import SessionMiddleware
from django.core.checks import Error, Warning
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, models
from django.utils.module_loading import import_string

from django_conversions.adapters import OrderAdapter
from django_conversions.conf import SETTING_NAME, conversions_settings
from django_conversions.consent import policy_for
from django_conversions.middleware import ScanSessionMiddleware
from django_conversions.models import TrackingSite

SCAN_MIDDLEWARE = "django_conversions.middleware.ScanSessionMiddleware"
SESSION_MIDDLEWARE = "django.contrib.sessions.middleware.SessionMiddleware"


def check_order_setup(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    messages: list[Any] = check_middleware()
    try:
        conversions_settings.user_settings  # noqa: B018  (E001 reports broken settings)
        adapter = conversions_settings.ORDER_ADAPTER
        model = apps.get_model(conversions_settings.ORDER_MODEL or "")
    except (ImproperlyConfigured, LookupError, ValueError):
        return messages  # no order model, or E001-E004 say what is wrong
    if not (isinstance(adapter, type) and issubclass(adapter, OrderAdapter)):
        return messages
    messages += check_order_model(adapter, model)
    messages += check_sites_can_be_served(adapter, model)
    return messages


def _uses_stock(adapter: type[OrderAdapter], *methods: str) -> bool:
    """Does ``adapter`` still run the default adapter's code for all of ``methods``?"""
    return all(getattr(adapter, name) is getattr(OrderAdapter, name) for name in methods)


def _has_attribute(model: type[models.Model], names: tuple[str, ...]) -> bool:
    """Does the model class have any of these attributes (the first part of a dotted name:
    fields, relations and properties all live on the class)?"""
    return any(hasattr(model, name.split(".")[0]) for name in names)


def check_order_model(adapter: type[OrderAdapter], model: type[models.Model]) -> list[Any]:
    label = model._meta.label
    messages: list[Any] = []
    status = conversions_settings.ORDER_STATUS_FIELD
    if status and _uses_stock(adapter, "should_track") and not hasattr(model, status):
        messages.append(
            Error(
                f"{SETTING_NAME}['ORDER_STATUS_FIELD'] = {status!r}, but {label} has no such "
                "attribute: no order would ever be tracked.",
                hint="Name the field holding the order's status, or set it to None to track "
                "every order when it is created.",
                obj=model,
                id="conversions.E030",
            )
        )
    relation = conversions_settings.ORDER_ITEMS_RELATION
    reads_items = _uses_stock(adapter, "to_conversion", "get_items")
    if relation and reads_items and not hasattr(model, relation):
        messages.append(
            Error(
                f"{SETTING_NAME}['ORDER_ITEMS_RELATION'] = {relation!r}, but {label} has no "
                "such relation: every order would be sent without its items.",
                hint="Give the related name of the order lines (e.g. 'lines'), or None if "
                "orders have no lines.",
                obj=model,
                id="conversions.E031",
            )
        )
    if _uses_stock(adapter, "to_conversion", "get_value") and not _has_attribute(
        model, adapter.VALUE_ATTRS
    ):
        messages.append(
            Warning(
                f"{label} has none of the attributes the order adapter reads its total from "
                f"({', '.join(adapter.VALUE_ATTRS)}): orders are sent without a value, and "
                "VTmarketing skips every one.",
                hint=f"Subclass OrderAdapter with VALUE_ATTRS = ('<your total field>',) and "
                f"point {SETTING_NAME}['ORDER_ADAPTER'] at it.",
                obj=model,
                id="conversions.W030",
            )
        )
    return messages


def check_middleware() -> list[Any]:
    """``ScanSessionMiddleware`` keeps the scan id in the session: it must come after Django's
    ``SessionMiddleware``, or every QR landing is answered with a 500."""
    classes = [_middleware_class(path) for path in getattr(settings, "MIDDLEWARE", None) or ()]
    scan = _first(classes, ScanSessionMiddleware)
    if scan is None:
        return []
    session = _first(classes, SessionMiddleware)
    if session is not None and session < scan:
        return []
    where = "without" if session is None else "before"
    return [
        Error(
            f"'{SCAN_MIDDLEWARE}' is in MIDDLEWARE {where} '{SESSION_MIDDLEWARE}': every "
            "visitor landing from a QR scan (?scnv=) gets a server error.",
            hint=f"Put '{SCAN_MIDDLEWARE}' after '{SESSION_MIDDLEWARE}' in MIDDLEWARE.",
            id="conversions.E032",
        )
    ]


def _middleware_class(path: str) -> type | None:
    try:
        found = import_string(path)
    except ImportError:
        return None  # Django reports a middleware it can't import itself
    return found if isinstance(found, type) else None


def _first(classes: list[type | None], base: type) -> int | None:
    return next(
        (i for i, klass in enumerate(classes) if klass is not None and issubclass(klass, base)),
        None,
    )


def check_sites_can_be_served(adapter: type[OrderAdapter], model: type[models.Model]) -> list[Any]:
    """Active sites whose provider needs a scan id or consent that nothing can give an order:
    every order would be skipped."""
    try:
        sites = list(TrackingSite.objects.filter(is_active=True))
    except DatabaseError:
        return []  # before migrate
    attributed = _first(
        [_middleware_class(p) for p in getattr(settings, "MIDDLEWARE", None) or ()],
        ScanSessionMiddleware,
    )
    can_scan = (
        attributed is not None
        or _has_attribute(model, adapter.SCAN_SESSION_ATTRS)
        or not _uses_stock(adapter, "to_conversion", "get_scan_session_id")
    )
    can_consent = (
        attributed is not None
        or _has_attribute(model, adapter.CONSENT_ATTRS)
        or not _uses_stock(adapter, "to_conversion", "get_consent")
    )
    messages: list[Any] = []
    for site in sites:
        try:
            provider = site.provider_instance()
        except Exception:
            continue  # E007 names an unknown provider
        if provider.requires_scan_session and not can_scan:
            messages.append(_unserved(site, "a scan session id", "W031", model))
        if policy_for(provider.id).requires_consent and not can_consent:
            messages.append(_unserved(site, "the visitor's consent 'granted'", "W032", model))
    return messages


def _unserved(site: TrackingSite, needed: str, code: str, model: type[models.Model]) -> Warning:
    return Warning(
        f"Tracking site {site.name!r} ({site.provider}) needs {needed} on each order, and "
        f"nothing gives {model._meta.label} one: every order will be skipped for it.",
        hint=f"Add '{SCAN_MIDDLEWARE}' to MIDDLEWARE (after '{SESSION_MIDDLEWARE}'): an order "
        "created in the visitor's request is attributed to the visit's scan id and consent "
        "(record consent with scan_session.remember_consent()); or attribute orders created "
        "elsewhere with django_conversions.attribute_order(); or store the value on the order. "
        f"For consent, {SETTING_NAME}['CONSENT_POLICY'] may waive it.",
        obj=site,
        id=f"conversions.{code}",
    )
