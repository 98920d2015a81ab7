"""API keys at rest: only ciphertext in the database, rotation, unreadable values, masking."""

from __future__ import annotations

import io
import json

import pytest
from cryptography.fernet import Fernet, InvalidToken
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.db import connection
from django.test import override_settings

from django_conversions.fields import (
    UnreadableSecret,
    decrypt,
    encrypt,
    get_fernet,
    looks_like_ciphertext,
    mask_secret,
    redact,
    rotate,
    uses_primary_key,
)
from django_conversions.models import ApiKey, TrackingSite
from tests.conftest import SCANOVA_KEY

KEY_A = Fernet.generate_key().decode()
KEY_B = Fernet.generate_key().decode()
KEY_C = Fernet.generate_key().decode()


def conversions(**values: object) -> dict[str, object]:
    return {"ORDER_MODEL": "testapp.Order", "ALLOW_INSECURE_ENDPOINTS": True, **values}


def raw_key(api_key: ApiKey) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT key FROM django_conversions_apikey WHERE id = %s", [api_key.pk])
        return cursor.fetchone()[0]


@pytest.fixture
def site(db: object) -> TrackingSite:
    return TrackingSite.objects.create(
        name="shop", provider="scanova", provider_site_id="s1", endpoint_url="https://x.test"
    )


def test_the_database_holds_only_ciphertext(site):
    # given
    api_key = ApiKey.objects.create(site=site, label="primary", key=SCANOVA_KEY)
    # when
    stored = raw_key(api_key)
    # then
    assert SCANOVA_KEY not in stored
    assert stored.startswith("gAAAA")  # a Fernet token
    assert ApiKey.objects.get(pk=api_key.pk).key == SCANOVA_KEY


def test_the_same_key_saved_twice_gives_different_ciphertexts(site):
    # given / when
    first = ApiKey.objects.create(site=site, key=SCANOVA_KEY)
    second = ApiKey.objects.create(site=site, key=SCANOVA_KEY)
    # then: a random IV per value, so equal keys can't be spotted in the table
    assert raw_key(first) != raw_key(second)


def test_keys_are_readable_after_a_new_encryption_key_is_put_first(site):
    # given: a key stored with A
    with override_settings(CONVERSIONS=conversions(ENCRYPTION_KEYS=[KEY_A])):
        api_key = ApiKey.objects.create(site=site, key=SCANOVA_KEY)
        stored_with_a = raw_key(api_key)
    # when: B is the new first key, A kept for reading
    with override_settings(CONVERSIONS=conversions(ENCRYPTION_KEYS=[KEY_B, KEY_A])):
        value = ApiKey.objects.get(pk=api_key.pk).key
        rotated = rotate(stored_with_a)
        is_primary = uses_primary_key(rotated), uses_primary_key(stored_with_a)
    # then
    assert value == SCANOVA_KEY
    assert is_primary == (True, False)
    assert Fernet(KEY_B).decrypt(rotated.encode()).decode() == SCANOVA_KEY
    with override_settings(CONVERSIONS=conversions(ENCRYPTION_KEYS=[KEY_B])):
        assert decrypt(rotated) == SCANOVA_KEY


def test_a_value_no_configured_key_can_read_loads_as_unreadable_secret(site):
    # given
    with override_settings(CONVERSIONS=conversions(ENCRYPTION_KEYS=[KEY_A])):
        api_key = ApiKey.objects.create(site=site, label="primary", key=SCANOVA_KEY)
    # when
    with override_settings(CONVERSIONS=conversions(ENCRYPTION_KEYS=[KEY_C])):
        loaded = ApiKey.objects.get(pk=api_key.pk)
    # then
    assert isinstance(loaded.key, UnreadableSecret)
    assert not loaded.is_readable
    assert "missing from CONVERSIONS['ENCRYPTION_KEYS']" in str(loaded.key)
    assert loaded.masked == "unreadable (encryption key missing)"
    assert SCANOVA_KEY[-4:] not in str(loaded) + repr(loaded.key)


def test_saving_an_unreadable_key_keeps_its_ciphertext(site):
    # given
    with override_settings(CONVERSIONS=conversions(ENCRYPTION_KEYS=[KEY_A])):
        api_key = ApiKey.objects.create(site=site, label="primary", key=SCANOVA_KEY)
    before = raw_key(api_key)
    # when: edited (label) while the right key is missing
    with override_settings(CONVERSIONS=conversions(ENCRYPTION_KEYS=[KEY_C])):
        loaded = ApiKey.objects.get(pk=api_key.pk)
        loaded.label = "renamed"
        loaded.save()
    # then: the value survives and reads again once A is back
    assert raw_key(api_key) == before
    with override_settings(CONVERSIONS=conversions(ENCRYPTION_KEYS=[KEY_C, KEY_A])):
        assert ApiKey.objects.get(pk=api_key.pk).key == SCANOVA_KEY


def test_a_key_stored_with_the_secret_key_derived_key_stays_readable_with_configured_keys(site):
    # given: no ENCRYPTION_KEYS, so the key derived from SECRET_KEY encrypts
    with override_settings(CONVERSIONS=conversions()):
        api_key = ApiKey.objects.create(site=site, key=SCANOVA_KEY)
    # when: keys get configured (the migration W001 asks for)
    with override_settings(CONVERSIONS=conversions(ENCRYPTION_KEYS=[KEY_A])):
        value = ApiKey.objects.get(pk=api_key.pk).key
        rotated = rotate(raw_key(api_key))
    # then
    assert value == SCANOVA_KEY
    assert Fernet(KEY_A).decrypt(rotated.encode()).decode() == SCANOVA_KEY


def test_a_rotated_secret_key_listed_in_fallbacks_keeps_keys_readable(site):
    # given
    with override_settings(SECRET_KEY="old-secret-key-value", CONVERSIONS=conversions()):
        api_key = ApiKey.objects.create(site=site, key=SCANOVA_KEY)
    # when / then
    with override_settings(
        SECRET_KEY="new-secret-key-value",
        SECRET_KEY_FALLBACKS=["old-secret-key-value"],
        CONVERSIONS=conversions(),
    ):
        assert ApiKey.objects.get(pk=api_key.pk).key == SCANOVA_KEY
    with override_settings(SECRET_KEY="new-secret-key-value", CONVERSIONS=conversions()):
        assert isinstance(ApiKey.objects.get(pk=api_key.pk).key, UnreadableSecret)


@pytest.mark.parametrize(
    "keys",
    [["not-a-fernet-key"], [KEY_A, "short"], "too-short", 12345],
    ids=["garbage", "second-malformed", "short-string", "not-a-list"],
)
def test_malformed_encryption_keys_give_a_clear_error_without_the_key(keys):
    # when
    with (
        override_settings(CONVERSIONS=conversions(ENCRYPTION_KEYS=keys)),
        pytest.raises(ImproperlyConfigured) as caught,
    ):
        encrypt("value")
    # then
    message = str(caught.value)
    assert "ENCRYPTION_KEYS" in message
    assert KEY_A not in message and "not-a-fernet-key" not in message and "short" not in message


def test_a_single_key_may_be_given_as_a_string():
    # when
    with override_settings(CONVERSIONS=conversions(ENCRYPTION_KEYS=KEY_A)):
        token = encrypt("value")
    # then
    assert Fernet(KEY_A).decrypt(token.encode()) == b"value"


def test_rotate_refuses_what_no_key_can_read():
    # given
    with override_settings(CONVERSIONS=conversions(ENCRYPTION_KEYS=[KEY_A])):
        token = encrypt("value")
    # when / then
    with override_settings(CONVERSIONS=conversions(ENCRYPTION_KEYS=[KEY_B])):
        with pytest.raises(InvalidToken):
            rotate(token)
        assert isinstance(decrypt(token), UnreadableSecret)
        assert isinstance(decrypt("not a token at all é"), UnreadableSecret)


def test_the_fernet_is_built_once_per_configuration():
    # when
    with override_settings(CONVERSIONS=conversions(ENCRYPTION_KEYS=[KEY_A])):
        first, again = get_fernet(), get_fernet()
    with override_settings(CONVERSIONS=conversions(ENCRYPTION_KEYS=[KEY_B])):
        other = get_fernet()
    # then
    assert first is again
    assert other is not first


@pytest.mark.parametrize(
    ("secret", "expected"),
    [
        ("scn_live_5f2a9c1e7b3d4e8f9a0b1c2d", "••••••••1c2d"),
        ("short-key", "••••••••"),  # under 12 characters: nothing revealed
        ("", "••••••••"),
        (None, "••••••••"),
        (UnreadableSecret("gAAAA"), "unreadable (encryption key missing)"),
    ],
)
def test_mask_shows_at_most_the_last_four_characters(secret, expected):
    assert mask_secret(secret) == expected


def test_redact_masks_a_key_echoed_in_text():
    # when
    text = redact(f"key {SCANOVA_KEY} revoked", SCANOVA_KEY)
    # then
    assert text == "key ••••••••1c2d revoked"
    assert redact("nothing here", SCANOVA_KEY) == "nothing here"


# --- dumpdata / loaddata ---------------------------------------------------------------------


def test_dumpdata_writes_keys_as_ciphertext_only(site):
    # given
    ApiKey.objects.create(site=site, label="primary", key=SCANOVA_KEY)
    # when
    out = io.StringIO()
    call_command("dumpdata", "django_conversions.apikey", format="json", stdout=out)
    dumped = out.getvalue()
    # then
    assert SCANOVA_KEY not in dumped
    [row] = json.loads(dumped)
    assert row["fields"]["key"].startswith("gAAAA")
    assert decrypt(row["fields"]["key"]) == SCANOVA_KEY


@pytest.mark.parametrize("fmt", ["json", "xml", "yaml"])
def test_a_loaddata_round_trip_gives_the_same_keys(site, tmp_path, fmt):
    # given: a dump of the site and its key, then the rows gone
    api_key = ApiKey.objects.create(site=site, label="primary", key=SCANOVA_KEY)
    fixture = tmp_path / f"keys.{fmt}"
    call_command(
        "dumpdata",
        "django_conversions.trackingsite",
        "django_conversions.apikey",
        format=fmt,
        output=str(fixture),
    )
    assert SCANOVA_KEY not in fixture.read_text()
    ApiKey.objects.all().delete()
    TrackingSite.objects.all().delete()
    # when
    call_command("loaddata", str(fixture), verbosity=0)
    # then: the plaintext once encrypted, not the ciphertext encrypted a second time
    loaded = ApiKey.objects.get(pk=api_key.pk)
    assert loaded.key == SCANOVA_KEY
    assert decrypt(raw_key(loaded)) == SCANOVA_KEY


def test_loaddata_keeps_a_key_no_configured_key_can_read_as_unreadable(site, tmp_path):
    # given: a dump made under another encryption key
    with override_settings(CONVERSIONS=conversions(ENCRYPTION_KEYS=[KEY_A])):
        api_key = ApiKey.objects.create(site=site, label="primary", key=SCANOVA_KEY)
        fixture = tmp_path / "keys.json"
        call_command("dumpdata", "django_conversions.apikey", output=str(fixture))
    ApiKey.objects.all().delete()
    # when: loaded where only KEY_B is configured
    with override_settings(CONVERSIONS=conversions(ENCRYPTION_KEYS=[KEY_B])):
        call_command("loaddata", str(fixture), verbosity=0)
        loaded = ApiKey.objects.get(pk=api_key.pk)
    # then: kept as the ciphertext it is (readable again once KEY_A is configured)
    assert isinstance(loaded.key, UnreadableSecret)
    with override_settings(CONVERSIONS=conversions(ENCRYPTION_KEYS=[KEY_B, KEY_A])):
        assert ApiKey.objects.get(pk=api_key.pk).key == SCANOVA_KEY


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Fernet(KEY_A).encrypt(b"k").decode(), True),
        (SCANOVA_KEY, False),
        ("gAAAAAnot-a-token", False),
        ("", False),
    ],
)
def test_ciphertext_is_told_from_a_key(value, expected):
    assert looks_like_ciphertext(value) is expected
