"""What a provider's answer means for an event: shared by the models (stored on attempts and
event results) and the providers (returned on results), so neither imports the other."""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _


class Outcome(models.TextChoices):
    """What one delivery attempt means for one event."""

    DELIVERED = "delivered", _("delivered")
    RETRY = "retry", _("will retry")
    FAILED = "failed", _("failed permanently")
    AUTH_FAILED = "auth_failed", _("site credentials refused")
    INELIGIBLE = "ineligible", _("not eligible")
