"""The contract suite run the way a host project runs it on a provider of its own (the recipe
in docs/providers/adding.md and django_conversions.testing): the suite imported into a test
module, the provider registered in the settings, ``provider_id`` narrowed to it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings
from django.test import override_settings

from django_conversions.providers.base import OutboundEvent, Provider
from django_conversions.testing import *  # noqa: F403


class AcmeProvider(Provider):
    """A provider written in a host project, outside this package."""

    id = "acme"
    name = "Acme"
    default_base_url = "https://acme.example.test"
    event_path = "/v2/conversions"
    auth_header = "X-Acme-Key"

    def build_body(self, event: OutboundEvent) -> dict[str, Any]:
        conversion = event.conversion
        return {"id": event.event_id, "event": conversion.event_name, "value": conversion.value}


@pytest.fixture(autouse=True)
def _acme_registered() -> Iterator[None]:
    path = f"{__name__}.AcmeProvider"
    with override_settings(CONVERSIONS={**settings.CONVERSIONS, "PROVIDERS": [path]}):
        yield


@pytest.fixture(params=["acme"])
def provider_id(request: pytest.FixtureRequest) -> str:
    param: str = request.param
    return param
