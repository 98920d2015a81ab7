from __future__ import annotations

from importlib.util import find_spec

from django.apps import AppConfig, apps
from django.core.exceptions import ImproperlyConfigured
from django.db import models
from django.utils.translation import gettext_lazy as _

from django_conversions.conf import conversions_settings


def order_model() -> type[models.Model] | None:
    """The model named by CONVERSIONS["ORDER_MODEL"], or None (unset or not installed)."""
    label = conversions_settings.ORDER_MODEL
    if not label:
        return None
    try:
        return apps.get_model(label)
    except (LookupError, ValueError):
        return None


class ConversionsConfig(AppConfig):
    name = "django_conversions"
    label = "django_conversions"
    verbose_name = _("Conversion tracking")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Imported once the app registry is ready: these modules import the models.
        from django_conversions import checks  # noqa: F401  (registers the system checks)
        from django_conversions.signals import connect_order_model

        if find_spec("prometheus_client") is not None:  # the optional [prometheus] extra
            from django_conversions.metrics import connect_metrics

            connect_metrics()

        try:
            model = order_model()
        except ImproperlyConfigured:
            return  # system checks report the broken setting
        if model is not None:
            connect_order_model(model)
