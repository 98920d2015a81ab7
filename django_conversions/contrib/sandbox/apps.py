from __future__ import annotations

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class SandboxConfig(AppConfig):
    name = "django_conversions.contrib.sandbox"
    label = "conversions_sandbox"
    verbose_name = _("Provider sandbox")
    default_auto_field = "django.db.models.BigAutoField"
