"""The OpenAPI schema: served by the app, committed as docs/openapi.yaml, and a schemathesis run
against it that must find no server error.

After changing the API, refresh the committed file with
``CONVERSIONS_UPDATE_OPENAPI=1 .venv/bin/python -m pytest tests/test_api_schema.py``.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
import yaml
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from rest_framework.authtoken.models import Token
from schemathesis.checks import not_a_server_error

from django_conversions import Conversion, track
from tests.test_api_support import SCHEMA, clear_throttles, make_user

COMMITTED = Path(__file__).resolve().parent.parent / "docs" / "openapi.yaml"
CSRF_TOKEN = "k" * 32  # any 32 letters/digits serve as the secret of Django's CSRF cookie


def test_the_schema_is_served_and_public(client, db):
    # when
    response = client.get(SCHEMA)
    json_response = client.get(SCHEMA, {"format": "json"})
    # then
    assert response.status_code == 200
    schema = yaml.safe_load(response.content)
    assert schema["info"]["title"] == "django-conversions API"
    assert json_response.json() == schema
    assert set(schema["paths"]) == {
        "/api/conversions/events/",
        "/api/conversions/events/{event_id}/",
        "/api/conversions/events/{event_id}/retry/",
        "/api/conversions/scan-session/",
    }


def test_the_committed_schema_matches_the_generated_one(client, db):
    # given
    generated = client.get(SCHEMA).content.decode()
    if os.environ.get("CONVERSIONS_UPDATE_OPENAPI"):
        COMMITTED.write_text(generated, encoding="utf-8")
    # when
    committed = COMMITTED.read_text(encoding="utf-8")
    # then
    assert yaml.safe_load(committed) == yaml.safe_load(generated), (
        "docs/openapi.yaml is out of date: regenerate it with "
        "CONVERSIONS_UPDATE_OPENAPI=1 .venv/bin/python -m pytest tests/test_api_schema.py"
    )


# --- schema-driven fuzzing -------------------------------------------------------------------


# Loaded at collection through the app itself (in-process WSGI; no database needed for it).
fuzzed = schemathesis.openapi.from_wsgi(SCHEMA, WSGIHandler())


@pytest.fixture
def fuzz_context(
    db: Any, make_site: Any, mocked_http: Any, settings: Any
) -> Iterator[dict[str, Any]]:
    """Sites and an event to act on, and headers that get a request past the front door:
    a superuser's token and the CSRF header matching the cookie sent with each call."""
    settings.CONVERSIONS = {**settings.CONVERSIONS, "API_SCAN_SESSION_THROTTLE_RATE": "10000/hour"}
    make_site("scanova")
    make_site("vtmarketing")
    (event, *_) = track(
        Conversion(
            event_name="purchase",
            order_id="fuzz-1",
            value="10",
            currency="EUR",
            consent="granted",
            customer={"email": "fuzz@example.com"},
        )
    )
    token = Token.objects.create(user=make_user("fuzzer", superuser=True))
    clear_throttles()
    # As Django's test client does: a request must not close the test's database connection.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield {
            "headers": {"Authorization": f"Token {token.key}", "X-CSRFToken": CSRF_TOKEN},
            "event_id": str(event.event_id),
        }
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)
        clear_throttles()


@fuzzed.parametrize()
@hypothesis_settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_no_generated_request_causes_a_server_error(
    case: Any, fuzz_context: dict[str, Any]
) -> None:
    # given: half the event ids name a stored event, so the code past the lookup is fuzzed too
    path_parameters = case.path_parameters or {}
    if "event_id" in path_parameters and zlib.crc32(str(path_parameters["event_id"]).encode()) % 2:
        path_parameters["event_id"] = fuzz_context["event_id"]
    # when
    response = case.call(headers=fuzz_context["headers"], cookies={"csrftoken": CSRF_TOKEN})
    # then
    case.validate_response(response, checks=[not_a_server_error])
