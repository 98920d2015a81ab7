from __future__ import annotations

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class OscarConversionsConfig(AppConfig):
    name = "django_conversions.contrib.oscar"
    label = "conversions_oscar"
    verbose_name = _("Conversion tracking for django-oscar")

    def ready(self) -> None:
        # Imported once the app registry is ready: these modules import the models.
        from django_conversions.contrib.oscar import checks  # noqa: F401  (registers them)
        from django_conversions.contrib.oscar.receivers import connect

        connect()
