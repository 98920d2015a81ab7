"""System checks of the Oscar integration: each setup that would send nothing, or the wrong
thing, without a word.

- E001 ``ORDER_MODEL`` names Oscar's order: its ``post_save`` would track each order when
  ``OrderCreator`` first saves it, before any line exists.
- E002 ``ORDER_ADAPTER`` is not an ``OscarOrderAdapter``: the default adapter finds no total,
  shipping, time or lines on Oscar's order.
- E003 ``OSCAR_PAID_STATUSES`` is not a list of status names.
- E004 a paid status is not one of ``OSCAR_ORDER_STATUS_PIPELINE``'s: no order ever has it.
- W001 a paid status no pipeline path leads to from ``OSCAR_INITIAL_ORDER_STATUS``.
- W002 settings of the default adapter that the Oscar adapter does not read.
- E005 Oscar's order app is not installed.
- W003 ``PRODUCT_MODEL`` is set beside ``OscarProductAdapter``, which lists Oscar's products and
  does not read it.
- W004 ``PRODUCT_MODEL`` names Oscar's product with another product adapter: Oscar keeps prices
  on stock records, where the default adapter does not look, so the feed would list nothing.

With the Oscar adapter and no ``ORDER_MODEL``, the core checks of what active sites need from
each order (conversions.W031 / W032: a scan id, consent) are run for Oscar's order here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from django.apps import apps
from django.conf import settings
from django.core.checks import Error, Tags, Warning, register
from django.core.exceptions import ImproperlyConfigured

from django_conversions.conf import DEFAULTS, SETTING_NAME, conversions_settings
from django_conversions.contrib.oscar.adapters import (
    OscarOrderAdapter,
    oscar_order_model,
    pipeline_statuses,
)
from django_conversions.contrib.oscar.catalogue import oscar_product_model
from django_conversions.contrib.oscar.products import OscarProductAdapter
from django_conversions.order_checks import check_sites_can_be_served

ADAPTER_PATH = "django_conversions.contrib.oscar.adapters.OscarOrderAdapter"
# Settings of the default adapter that OscarOrderAdapter does not read.
DEFAULT_ADAPTER_SETTINGS = ("ORDER_STATUS_FIELD", "ORDER_PAID_STATUSES", "ORDER_ITEMS_RELATION")


@register(Tags.compatibility)
def check_oscar_setup(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    try:
        user_settings = conversions_settings.user_settings
    except ImproperlyConfigured:
        return []  # conversions.E001 reports the broken CONVERSIONS setting
    try:
        apps.get_app_config("order")
    except LookupError:
        return [
            Error(
                "django_conversions.contrib.oscar is installed, but Oscar's order app is not.",
                hint="Add Oscar's apps to INSTALLED_APPS (oscar.INSTALLED_APPS), or remove "
                "django_conversions.contrib.oscar.",
                id="conversions_oscar.E005",
            )
        ]
    return [
        *_check_order_model(),
        *_check_adapter(),
        *_check_paid_statuses(),
        *_check_unread_settings(user_settings),
        *_check_sites(),
        *_check_product_feed(),
    ]


PRODUCT_ADAPTER_PATH = "django_conversions.contrib.oscar.products.OscarProductAdapter"


def _check_product_feed() -> list[Any]:
    label = conversions_settings.raw("PRODUCT_MODEL")
    try:
        adapter = conversions_settings.PRODUCT_ADAPTER
    except ImproperlyConfigured:
        return []  # conversions.E050 reports it
    is_oscars = isinstance(adapter, type) and issubclass(adapter, OscarProductAdapter)
    if label and is_oscars:
        return [
            Warning(
                f"{SETTING_NAME}['PRODUCT_MODEL'] = {label!r} is not read: PRODUCT_ADAPTER "
                "lists Oscar's products.",
                hint="Remove PRODUCT_MODEL; to list other products, subclass "
                "OscarProductAdapter and override get_queryset().",
                id="conversions_oscar.W003",
            )
        ]
    try:
        model = apps.get_model(label) if label else None
    except (LookupError, ValueError):
        return []  # conversions.E050 reports it
    if model is not None and issubclass(model, oscar_product_model()) and not is_oscars:
        return [
            Warning(
                f"{SETTING_NAME}['PRODUCT_MODEL'] is Oscar's product, but PRODUCT_ADAPTER is "
                "not an OscarProductAdapter: Oscar keeps prices on stock records, so the feed "
                "would leave out every product.",
                hint=f"Set {SETTING_NAME}['PRODUCT_ADAPTER'] = {PRODUCT_ADAPTER_PATH!r} and "
                "remove PRODUCT_MODEL.",
                id="conversions_oscar.W004",
            )
        ]
    return []


def _check_order_model() -> list[Any]:
    label = conversions_settings.raw("ORDER_MODEL")
    if not label:
        return []
    try:
        model = apps.get_model(label)
    except (LookupError, ValueError):
        return []  # conversions.E002 reports it
    if not issubclass(model, oscar_order_model()):
        return []
    return [
        Error(
            f"{SETTING_NAME}['ORDER_MODEL'] = {label!r} is Oscar's order, which "
            "django_conversions.contrib.oscar tracks on Oscar's order_placed signal. Its "
            "post_save would track each order when it is first saved, before its lines exist.",
            hint=f"Remove ORDER_MODEL from {SETTING_NAME}; keep ORDER_ADAPTER = {ADAPTER_PATH!r}.",
            id="conversions_oscar.E001",
        )
    ]


def _check_adapter() -> list[Any]:
    try:
        adapter = conversions_settings.ORDER_ADAPTER
    except ImproperlyConfigured:
        return []  # conversions.E003 reports it
    if isinstance(adapter, type) and issubclass(adapter, OscarOrderAdapter):
        return []
    path = conversions_settings.raw("ORDER_ADAPTER")
    return [
        Error(
            f"{SETTING_NAME}['ORDER_ADAPTER'] = {path!r} is not an OscarOrderAdapter: it finds "
            "no total, shipping, time or lines on Oscar's orders, and orders are not tracked.",
            hint=f"Set {SETTING_NAME}['ORDER_ADAPTER'] = {ADAPTER_PATH!r}, or a subclass of it.",
            id="conversions_oscar.E002",
        )
    ]


def _check_sites() -> list[Any]:
    """Sites needing a scan id or consent nothing gives Oscar's orders (the core check, which
    looks at ORDER_MODEL's, has no model to look at)."""
    try:
        adapter = conversions_settings.ORDER_ADAPTER
    except ImproperlyConfigured:
        return []
    if conversions_settings.raw("ORDER_MODEL") or not (
        isinstance(adapter, type) and issubclass(adapter, OscarOrderAdapter)
    ):
        return []  # the core check runs for ORDER_MODEL, or E001 / E002 come first
    return check_sites_can_be_served(adapter, oscar_order_model())


def _check_paid_statuses() -> list[Any]:
    configured = conversions_settings.OSCAR_PAID_STATUSES
    if configured is None:
        return []
    if isinstance(configured, str):
        configured = [configured]
    if (
        not isinstance(configured, Iterable)
        or not (statuses := list(configured))
        or not all(isinstance(status, str) and status.strip() for status in statuses)
    ):
        return [
            Error(
                f"{SETTING_NAME}['OSCAR_PAID_STATUSES'] = {configured!r} is not a list of "
                "order status names, so no order would ever be tracked.",
                hint="List statuses of OSCAR_ORDER_STATUS_PIPELINE, e.g. ['Paid'], or set it "
                "to None to track orders when they are placed.",
                id="conversions_oscar.E003",
            )
        ]
    pipeline: Mapping[str, Iterable[str]] = getattr(settings, "OSCAR_ORDER_STATUS_PIPELINE", {})
    known = {status.casefold() for status in pipeline_statuses()}
    unknown = [status for status in statuses if status.casefold() not in known]
    if unknown:
        return [_unknown_statuses(unknown, pipeline)]
    unreachable = [status for status in statuses if status.casefold() not in _reachable(pipeline)]
    if unreachable:
        initial = getattr(settings, "OSCAR_INITIAL_ORDER_STATUS", None)
        return [
            Warning(
                f"{SETTING_NAME}['OSCAR_PAID_STATUSES'] lists {_listed(unreachable)}, which no "
                f"path of OSCAR_ORDER_STATUS_PIPELINE leads to from OSCAR_INITIAL_ORDER_STATUS "
                f"({initial!r}): Order.set_status() can't reach it, so those orders are "
                "tracked only if something else sets the status (and then late, by the sweep).",
                hint="Add a transition to it in OSCAR_ORDER_STATUS_PIPELINE, or list the "
                "statuses your orders do reach.",
                id="conversions_oscar.W001",
            )
        ]
    return []


def _unknown_statuses(unknown: list[str], pipeline: Mapping[str, Any]) -> Error:
    if not pipeline:
        detail = (
            "OSCAR_ORDER_STATUS_PIPELINE is empty, so Order.set_status() accepts no status "
            "and order_status_changed is never sent"
        )
    else:
        detail = f"the pipeline's statuses are {_listed(pipeline_statuses())}"
    return Error(
        f"{SETTING_NAME}['OSCAR_PAID_STATUSES'] lists {_listed(unknown)}, not a status of "
        f"OSCAR_ORDER_STATUS_PIPELINE ({detail}): no order would be tracked in it.",
        hint="List statuses of OSCAR_ORDER_STATUS_PIPELINE (compared case-insensitively), or "
        "set OSCAR_PAID_STATUSES to None to track orders when they are placed.",
        id="conversions_oscar.E004",
    )


def _reachable(pipeline: Mapping[str, Iterable[str]]) -> set[str]:
    """The statuses, case-folded, that orders can reach through ``Order.set_status()``: from
    ``OSCAR_INITIAL_ORDER_STATUS`` when it is set, else from any status of the pipeline."""
    initial = getattr(settings, "OSCAR_INITIAL_ORDER_STATUS", None)
    todo = [initial] if initial else list(pipeline)
    seen = {str(status) for status in todo}
    while todo:
        for following in pipeline.get(todo.pop(), ()):
            if following not in seen:
                seen.add(following)
                todo.append(following)
    return {status.casefold() for status in seen}


def _check_unread_settings(user_settings: Mapping[str, Any]) -> list[Any]:
    unread = [
        name
        for name in DEFAULT_ADAPTER_SETTINGS
        if name in user_settings and user_settings[name] != DEFAULTS[name]
    ]
    if not unread:
        return []
    return [
        Warning(
            f"{SETTING_NAME} sets {', '.join(unread)}, which the Oscar adapter does not read: "
            "it tracks orders when they are placed, or by OSCAR_PAID_STATUSES, and reads "
            "Oscar's order lines.",
            hint="To track orders once they reach given statuses, list them in "
            f"{SETTING_NAME}['OSCAR_PAID_STATUSES'] (e.g. ['Paid']); remove the others.",
            id="conversions_oscar.W002",
        )
    ]


def _listed(statuses: Iterable[str]) -> str:
    return ", ".join(repr(status) for status in statuses)
