"""Shared fixtures. Provider HTTP is mocked with ``responses``; tests about the wire use real
local servers (see tests/servers.py)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
import responses
from django.conf import settings
from django.contrib.auth.models import Permission
from django.test import Client

from django_conversions.delivery import forget_sites
from django_conversions.models import ApiKey, TrackingSite
from django_conversions.sites import clear_cache

ON_POSTGRES = settings.DATABASES["default"]["ENGINE"].endswith("postgresql")
UNDER_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

SCANOVA_KEY = "scn_live_5f2a9c1e7b3d4e8f9a0b1c2d"
VT_KEY = "vtm-api-8c7d6e5f4a3b2c1d0e9f8a7b"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``postgres`` run in the PostgreSQL pass (CONVERSIONS_TEST_DB=postgres)."""
    if ON_POSTGRES:
        return
    skip = pytest.mark.skip(
        reason="needs PostgreSQL: runs in the CONVERSIONS_TEST_DB=postgres pass"
    )
    for item in items:
        if "postgres" in item.keywords:
            item.add_marker(skip)


def pytest_sessionstart(session: pytest.Session) -> None:
    if not ON_POSTGRES:
        return
    db = settings.DATABASES["default"]
    try:
        psycopg.connect(
            host=db["HOST"], port=db["PORT"], user=db["USER"], dbname=db["NAME"], connect_timeout=3
        ).close()
    except psycopg.OperationalError as err:
        message = f"PostgreSQL is not reachable at {db['HOST']}:{db['PORT']}: {err}"
        if UNDER_CI:
            pytest.exit(f"{message} (CI=true: a missing service is a failure)", returncode=1)
        session.config.stash[_PG_MISSING] = message


_PG_MISSING = pytest.StashKey[str]()


@pytest.fixture(autouse=True)
def _skip_without_postgres(request: pytest.FixtureRequest) -> None:
    missing = request.config.stash.get(_PG_MISSING, None)
    if missing:
        pytest.skip(missing)


@pytest.fixture(autouse=True)
def _fresh_site_cache() -> Iterator[None]:
    """Sites created by one test vanish with its rollback, which fires no signal."""
    clear_cache()
    forget_sites()
    yield
    clear_cache()
    forget_sites()


@pytest.fixture
def make_site(db: Any) -> Callable[..., TrackingSite]:
    def make(provider: str = "scanova", *, key: str | None = None, **fields: Any) -> TrackingSite:
        defaults: dict[str, Any] = {
            "name": f"{provider} site",
            "provider_site_id": "site_abc123" if provider == "scanova" else "",
            "endpoint_url": "https://track.example.test"
            if provider == "scanova"
            else "https://vt.example.test",
        }
        defaults.update(fields)
        site = TrackingSite.objects.create(provider=provider, **defaults)
        ApiKey.objects.create(
            site=site,
            label="primary",
            key=key or (SCANOVA_KEY if provider == "scanova" else VT_KEY),
        )
        return site

    return make


@pytest.fixture
def scanova_site(make_site: Callable[..., TrackingSite]) -> TrackingSite:
    return make_site("scanova")


@pytest.fixture
def vt_site(make_site: Callable[..., TrackingSite]) -> TrackingSite:
    return make_site("vtmarketing")


@pytest.fixture
def mocked_http() -> Iterator[Any]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield rsps


@pytest.fixture
def staff_client(django_user_model: Any) -> Callable[..., Client]:
    """A logged-in staff user holding exactly the given ``django_conversions`` permissions."""

    def make(*codenames: str) -> Client:
        user = django_user_model.objects.create_user(
            username=f"staff-{uuid.uuid4().hex[:6]}", password="x", is_staff=True
        )
        for codename in codenames:
            user.user_permissions.add(
                Permission.objects.get(
                    content_type__app_label="django_conversions", codename=codename
                )
            )
        client = Client()
        client.force_login(user)
        return client

    return make


# tests/oscar runs in a pytest process of its own, under its own settings (Oscar's apps):
# python -m pytest tests/oscar --ds=tests.oscar.settings (the Makefile's test targets do).
collect_ignore = [] if settings.SETTINGS_MODULE == "tests.oscar.settings" else ["oscar"]
