"""``manage.py conversions_rotate_keys``: re-encrypt with the first key, report the unreadable."""

from __future__ import annotations

from io import StringIO
from typing import Any

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.db import connection
from django.test import override_settings

from django_conversions.models import ApiKey, TrackingSite

OLD = Fernet.generate_key().decode()
NEW = Fernet.generate_key().decode()
LOST = Fernet.generate_key().decode()
PLAINTEXTS = ["scn_live_aaaa1111bbbb2222", "scn_live_cccc3333dddd4444"]


def conversions(*keys: str) -> dict[str, Any]:
    return {"ORDER_MODEL": "testapp.Order", "ENCRYPTION_KEYS": list(keys)}


def raw_keys() -> dict[int, str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT id, key FROM django_conversions_apikey")
        return dict(cursor.fetchall())


def rotate_keys(*args: str) -> tuple[str, str]:
    stdout, stderr = StringIO(), StringIO()
    call_command("conversions_rotate_keys", *args, stdout=stdout, stderr=stderr)
    return stdout.getvalue(), stderr.getvalue()


@pytest.fixture
def site(db: Any) -> TrackingSite:
    return TrackingSite.objects.create(
        name="Shop EU", provider="scanova", provider_site_id="s1", endpoint_url="https://x.test"
    )


@pytest.fixture
def keys_under_old(site: TrackingSite) -> list[ApiKey]:
    with override_settings(CONVERSIONS=conversions(OLD)):
        return [
            ApiKey.objects.create(site=site, label=f"key {n}", key=value)
            for n, value in enumerate(PLAINTEXTS)
        ]


def test_rotation_re_encrypts_every_key_with_the_first_key(keys_under_old):
    # given: NEW put first, OLD kept for reading
    with override_settings(CONVERSIONS=conversions(NEW, OLD)):
        # when
        out, err = rotate_keys()
    # then: every stored value reads with NEW alone
    assert "Re-encrypted 2 API key(s) with the first encryption key (0 already used it)" in out
    assert err == ""
    decrypted = [Fernet(NEW).decrypt(token.encode()).decode() for token in raw_keys().values()]
    assert sorted(decrypted) == sorted(PLAINTEXTS)
    with override_settings(CONVERSIONS=conversions(NEW)):
        assert sorted(k.key for k in ApiKey.objects.all()) == sorted(PLAINTEXTS)


def test_a_second_run_finds_everything_current(keys_under_old):
    # given
    with override_settings(CONVERSIONS=conversions(NEW, OLD)):
        rotate_keys()
        # when
        out, _ = rotate_keys()
    # then
    assert "Re-encrypted 2 API key(s) with the first encryption key (2 already used it)" in out


def test_dry_run_writes_nothing(keys_under_old):
    # given
    before = raw_keys()
    with override_settings(CONVERSIONS=conversions(NEW, OLD)):
        # when
        out, _ = rotate_keys("--dry-run")
    # then
    assert "Would re-encrypt 2 API key(s)" in out
    assert raw_keys() == before


def test_unreadable_keys_are_listed_and_the_rest_still_rotated(site, keys_under_old):
    # given: one more key stored with a key that is then lost
    with override_settings(CONVERSIONS=conversions(LOST)):
        lost = ApiKey.objects.create(site=site, label="from staging", key="scn_live_lost00000000")
    lost_token = raw_keys()[lost.pk]
    with override_settings(CONVERSIONS=conversions(NEW, OLD)):
        # when
        out, err = rotate_keys()
    # then
    assert "Re-encrypted 2 API key(s)" in out
    assert f"API key {lost.pk} 'from staging' of site {site.pk} 'Shop EU' (scanova)" in err
    assert "can't be decrypted with any configured key" in err
    assert raw_keys()[lost.pk] == lost_token  # left as it was
    assert "scn_live_lost" not in out + err


def test_without_configured_keys_the_derived_key_is_used(site):
    # given
    with override_settings(CONVERSIONS=conversions()):
        ApiKey.objects.create(site=site, key=PLAINTEXTS[0])
        # when
        out, err = rotate_keys()
    # then
    assert "ENCRYPTION_KEYS'] is not set" in out
    assert "Re-encrypted 1 API key(s) with the first encryption key (1 already used it)" in out
    assert err == ""


def test_moving_from_the_derived_key_to_configured_keys(site):
    # given: stored before ENCRYPTION_KEYS existed
    with override_settings(CONVERSIONS=conversions()):
        api_key = ApiKey.objects.create(site=site, key=PLAINTEXTS[0])
    with override_settings(CONVERSIONS=conversions(NEW)):
        # when
        out, _ = rotate_keys()
    # then
    assert "(0 already used it)" in out
    assert Fernet(NEW).decrypt(raw_keys()[api_key.pk].encode()).decode() == PLAINTEXTS[0]
