"""The API's OpenAPI schema (drf-spectacular), limited to this app's endpoints.

Served at ``schema/`` (YAML; ``?format=json`` for JSON) and committed as docs/openapi.yaml.
The settings here are applied only while this view builds the schema, so a project's own
``SPECTACULAR_SETTINGS`` and schema are left alone.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.views import SpectacularAPIView
from rest_framework.permissions import AllowAny

import django_conversions

API_MODULE = "django_conversions.api."

SCHEMA_SETTINGS: dict[str, Any] = {
    "TITLE": "django-conversions API",
    "DESCRIPTION": (
        "Record conversions, watch and retry their delivery to conversion-tracking providers, "
        "and hand over QR scan sessions from a storefront. Paths are shown under the prefix "
        "where the project includes `django_conversions.api.urls`."
    ),
    "VERSION": django_conversions.__version__,
    "PREPROCESSING_HOOKS": ["django_conversions.api.schema.only_this_api"],
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "EventStatusEnum": "django_conversions.models.EventStatus",
        "ConsentEnum": "django_conversions.conversion.CONSENT_VALUES",
    },
    "SCHEMA_PATH_PREFIX": None,
}


def only_this_api(endpoints: list[tuple[Any, ...]], **kwargs: Any) -> list[tuple[Any, ...]]:
    """Keep this app's endpoints (the project may serve other DRF views), not the schema's."""
    kept = []
    for path, path_regex, method, callback in endpoints:
        module = getattr(getattr(callback, "cls", None), "__module__", "")
        if module.startswith(API_MODULE) and module != __name__:
            kept.append((path, path_regex, method, callback))
    return kept


class SchemaView(SpectacularAPIView):
    authentication_classes = ()
    permission_classes = (AllowAny,)
    custom_settings = SCHEMA_SETTINGS
