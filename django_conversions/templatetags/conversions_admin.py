"""Template filters of the app's admin pages (``{% load conversions_admin %}``)."""

from __future__ import annotations

from datetime import datetime

from django import template
from django.utils.safestring import SafeString

from django_conversions.admin.display import local_time as show_local_time

register = template.Library()


@register.filter
def local_time(value: datetime | None) -> SafeString:
    """A time to the second, as every column and field of the app's admin shows it."""
    return show_local_time(value)
