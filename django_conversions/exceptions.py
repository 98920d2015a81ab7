"""Errors raised by django-conversions.

Runtime problems with one conversion derive from ``ConversionsError``. Configuration mistakes
derive from Django's ``ImproperlyConfigured`` instead, deliberately outside that base, so code
that handles a bad event can never swallow a broken setup. No message carries an API key.
"""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured


class ConversionsError(Exception):
    """Base for runtime errors about a conversion or its delivery."""


class InvalidConversion(ConversionsError, ValueError):
    """A conversion (or a field of it) is malformed; the message names the field."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


class UnknownProvider(ImproperlyConfigured):
    """A tracking site names a provider id that no registered provider has."""


class SecretUnreadable(ConversionsError):
    """A stored secret was encrypted with a key that is not configured any more."""
