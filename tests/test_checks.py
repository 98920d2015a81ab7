"""System checks: each fires with its id and a message saying what to fix; silent when correct."""

from __future__ import annotations

from io import StringIO
from typing import Any

import pytest
from cryptography.fernet import Fernet
from django.core.checks import Error, Warning, run_checks
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from django_conversions.adapters import OrderAdapter
from django_conversions.checks import _check_database, check_settings
from django_conversions.models import ApiKey, TrackingSite

GOOD_KEY = "FWy1bLl2Ou0H6dkejRys2oRrqzIuK56OTdRWaJHiJfE="
TASKS_DEFAULT = "default"
_REMOVE = object()  # drop the key from the configuration


class NotAnAdapter:
    """Has the methods but is not an OrderAdapter subclass."""


class GoodAdapter(OrderAdapter):
    pass


class NotAProvider:
    id = "fake"


def conversions(**values: Any) -> dict[str, Any]:
    """A correct configuration, with ``values`` changed."""
    base: dict[str, Any] = {"ORDER_MODEL": "testapp.Order", "ENCRYPTION_KEYS": [GOOD_KEY]}
    base.update(values)
    return {key: value for key, value in base.items() if value is not _REMOVE}


def run(**values: Any) -> list[Any]:
    with override_settings(CONVERSIONS=conversions(**values)):
        return check_settings()


def only(messages: list[Any], check_id: str) -> Any:
    found = [m for m in messages if m.id == check_id]
    assert len(found) == 1, [f"{m.id}: {m.msg}" for m in messages]
    return found[0]


@pytest.fixture
def https_site(db: Any) -> TrackingSite:
    site = TrackingSite.objects.create(
        name="Shop", provider="scanova", provider_site_id="s1", endpoint_url="https://x.test"
    )
    with override_settings(CONVERSIONS=conversions()):
        ApiKey.objects.create(site=site, label="primary", key="scn_live_5f2a9c1e7b3d4e8f")
    return site


def test_a_correct_configuration_is_silent(https_site):
    # when
    messages = run(ORDER_ADAPTER="tests.test_checks.GoodAdapter")
    # then
    assert messages == []


def test_e001_unknown_keys_are_named_with_the_valid_ones(db):
    # when
    message = only(run(ORDER_MODLE="testapp.Order"), "conversions.E001")
    # then
    assert isinstance(message, Error)
    assert "ORDER_MODLE" in message.msg and "ORDER_MODEL" in message.msg


def test_w002_no_order_model(db):
    # when
    message = only(run(ORDER_MODEL=_REMOVE), "conversions.W002")
    # then
    assert isinstance(message, Warning)
    assert "ORDER_MODEL" in message.msg and "shop.Order" in message.hint


@pytest.mark.parametrize("label", ["shop.Order", "testapp.Invoice", "not-a-label"])
def test_e002_order_model_not_installed(db, label):
    # when
    message = only(run(ORDER_MODEL=label), "conversions.E002")
    # then
    assert repr(label) in message.msg and "INSTALLED_APPS" in message.hint


def test_e003_adapter_not_importable(db):
    # when
    message = only(run(ORDER_ADAPTER="shop.adapters.Missing"), "conversions.E003")
    # then
    assert "ORDER_ADAPTER" in message.msg and "shop.adapters.Missing" in message.msg


def test_e004_adapter_not_an_order_adapter(db):
    # when
    message = only(run(ORDER_ADAPTER="tests.test_checks.NotAnAdapter"), "conversions.E004")
    # then
    assert "OrderAdapter" in message.msg and "should_track" in message.hint


def test_w001_no_encryption_keys(db):
    # when
    message = only(run(ENCRYPTION_KEYS=_REMOVE), "conversions.W001")
    # then
    assert "SECRET_KEY" in message.msg
    assert "ENCRYPTION_KEYS" in message.hint and "conversions_rotate_keys" in message.hint


@pytest.mark.parametrize(
    "keys",
    [["not-a-key"], [GOOD_KEY, "x" * 44], 42],
    ids=["garbage", "second-malformed", "not-a-list"],
)
def test_e005_malformed_encryption_keys(db, keys):
    # when
    message = only(run(ENCRYPTION_KEYS=keys), "conversions.E005")
    # then
    assert "ENCRYPTION_KEYS" in message.msg
    assert "not-a-key" not in message.msg and GOOD_KEY not in message.msg


def test_w003_stored_keys_no_configured_key_can_read(https_site):
    # given: the keys were stored with GOOD_KEY, which is no longer configured
    other = Fernet.generate_key().decode()
    # when
    message = only(run(ENCRYPTION_KEYS=[other]), "conversions.W003")
    # then
    key = https_site.api_keys.get()
    assert f"{key.pk} 'primary' of site 'Shop'" in message.msg
    assert "conversions_rotate_keys" in message.hint
    assert run(ENCRYPTION_KEYS=[other, GOOD_KEY]) == []


@pytest.mark.parametrize(
    "providers",
    [["tests.test_checks.NotAProvider"], ["shop.providers.Missing"]],
    ids=["not-a-provider", "not-importable"],
)
def test_e006_bad_provider_entries(db, providers):
    # when
    message = only(run(PROVIDERS=providers), "conversions.E006")
    # then
    assert "PROVIDERS" in message.msg


def test_e007_site_with_an_unknown_provider(https_site):
    # given
    TrackingSite.objects.filter(pk=https_site.pk).update(provider="gone")
    # when
    message = only(run(), "conversions.E007")
    # then
    assert "'Shop'" in message.msg and "'gone'" in message.msg
    assert "scanova" in message.hint and "PROVIDERS" in message.hint
    assert message.obj.pk == https_site.pk


def test_e008_http_endpoint_without_allow_insecure_endpoints(https_site):
    # given
    TrackingSite.objects.filter(pk=https_site.pk).update(endpoint_url="http://x.test")
    # when
    message = only(run(), "conversions.E008")
    allowed = run(ALLOW_INSECURE_ENDPOINTS=True)
    # then
    assert "'Shop'" in message.msg and "https://" in message.msg
    assert "ALLOW_INSECURE_ENDPOINTS" in message.msg
    assert allowed == []


def test_e009_task_backend_not_in_tasks(db):
    # when
    message = only(run(TASK_BACKEND="workers"), "conversions.E009")
    # then
    assert "'workers'" in message.msg and TASKS_DEFAULT in message.hint
    assert run(TASK_BACKEND=None) == []


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("LEASE_SECONDS", 0),
        ("CLAIM_BATCH_SIZE", -1),
        ("BATCH_SIZE", "100"),
        ("READ_TIMEOUT", True),
        ("RETRY_MAX_AGE", None),
    ],
)
def test_e010_settings_that_must_be_positive_numbers(db, name, value):
    # when
    message = only(run(**{name: value}), "conversions.E010")
    # then
    assert name in message.msg and repr(value) in message.msg


@pytest.mark.parametrize("schedule", [[], [1, -5], ["1"]])
def test_e011_retry_schedule(db, schedule):
    # when
    message = only(run(RETRY_SCHEDULE=schedule), "conversions.E011")
    # then
    assert "RETRY_SCHEDULE" in message.msg


def test_manage_py_check_reports_the_checks(db):
    # given
    stderr = StringIO()
    # when
    with (
        override_settings(CONVERSIONS=conversions(ORDER_MODEL="shop.Order")),
        pytest.raises(SystemCheckError) as caught,
    ):
        call_command("check", stderr=stderr)
    # then
    assert "conversions.E002" in str(caught.value)


def test_manage_py_check_is_clean_with_a_correct_configuration(https_site):
    # given
    stdout = StringIO()
    # when
    with override_settings(CONVERSIONS=conversions()):
        call_command("check", stdout=stdout)
    # then
    assert "no issues" in stdout.getvalue()


def test_api_class_paths_and_throttle_rate_are_checked(db, settings):
    from django.core.checks import run_checks

    # given: a typo in a class path and a rate DRF can't read
    settings.CONVERSIONS = {
        **settings.CONVERSIONS,
        "API_PERMISSION_CLASSES": ("rest_framework.permissions.IsAdminUsr",),
        "API_SCAN_SESSION_THROTTLE_RATE": "thirty a minute",
    }
    # when
    ids = {message.id for message in run_checks()}
    # then
    assert {"conversions.E012", "conversions.E013"} <= ids


def test_the_scan_session_rate_is_checked(db, settings):
    # given: the ?scnv= session limit in a form nobody can read
    settings.CONVERSIONS = {**settings.CONVERSIONS, "SCAN_SESSION_NEW_RATE": "lots"}
    # when
    errors = [m for m in run_checks() if m.id == "conversions.E013"]
    [error] = errors
    # then
    assert "SCAN_SESSION_NEW_RATE" in error.msg


def test_the_proxy_warning_is_among_the_checks(db, settings):
    # given: a deployment that never said how many proxies are in front of it
    settings.REST_FRAMEWORK = {}
    # then
    assert "conversions.W004" in {m.id for m in run_checks()}


def test_default_api_settings_pass_the_checks(db, settings):
    from django.core.checks import run_checks

    ids = {message.id for message in run_checks()}
    assert not {"conversions.E012", "conversions.E013"} & ids


def test_the_tested_databases_pass(db: Any) -> None:
    # runs in the SQLite pass and in the PostgreSQL pass
    assert not [m for m in run() if m.id in ("conversions.E014", "conversions.E015")]


@pytest.mark.parametrize(
    ("vendor", "display_name"), [("oracle", "Oracle"), ("cockroachdb", "CockroachDB")]
)
def test_e014_an_untested_database_is_refused_by_name(
    db: Any, monkeypatch: Any, vendor: str, display_name: str
) -> None:
    from django.db import connection

    # given: the app's models on a backend the outbox is not tested on
    monkeypatch.setattr(connection, "vendor", vendor)
    monkeypatch.setattr(connection, "display_name", display_name)
    # then (only the database check: the others would query through that backend)
    message = only(_check_database(), "conversions.E014")
    assert f"'default' is {display_name}" in message.msg
    assert "tested on SQLite and PostgreSQL only" in message.msg


class SplitRouter:
    """Sends the attempts to another database than the events."""

    def db_for_write(self, model: Any, **hints: Any) -> str | None:
        return "archive" if model._meta.model_name == "deliveryattempt" else None

    db_for_read = db_for_write


def test_e015_the_apps_models_routed_to_several_databases(db: Any) -> None:
    with override_settings(DATABASE_ROUTERS=[f"{__name__}.SplitRouter"]):
        message = only(run(), "conversions.E015")
    assert "django_conversions.DeliveryAttempt -> 'archive' (write)" in message.msg
    assert "django_conversions.ConversionEvent -> 'default' (write)" in message.msg


@pytest.mark.parametrize(("lease", "deadline"), [(30, 20), (10, 30)])
def test_e016_a_request_deadline_that_does_not_fit_in_the_lease(
    db: Any, lease: int, deadline: int
) -> None:
    message = only(run(LEASE_SECONDS=lease, REQUEST_DEADLINE=deadline), "conversions.E016")
    assert f"({deadline} s) must be at most half" in message.msg
    assert not [m for m in run(LEASE_SECONDS=60, REQUEST_DEADLINE=30) if m.id == "conversions.E016"]
