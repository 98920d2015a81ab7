"""Authentication classes used by default by the API."""

from __future__ import annotations

from typing import Any

from django.apps import apps
from rest_framework import authentication
from rest_framework.request import Request


class TokenAuthentication(authentication.TokenAuthentication):
    """DRF token auth that stands aside when ``rest_framework.authtoken`` is not installed.

    It is in the default classes, and DRF's own class would fail with a server error on the
    first ``Authorization: Token …`` header in a project without the token app.
    """

    def authenticate(self, request: Request) -> Any:
        if not apps.is_installed("rest_framework.authtoken"):
            return None
        return super().authenticate(request)
