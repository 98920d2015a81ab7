"""``conversions_settings``: defaults, the project's values, and changes seen at once."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from django_conversions.adapters import OrderAdapter
from django_conversions.conf import DEFAULTS, conversions_settings
from django_conversions.consent import policy_for
from django_conversions.providers import registry
from django_conversions.providers.base import Provider


def test_a_setting_read_before_a_change_is_read_anew_after_it():
    # given: a setting already read (and so kept)
    before = conversions_settings.BATCH_SIZE
    # when / then: a changed CONVERSIONS is seen at once, and the old value comes back after
    with override_settings(CONVERSIONS={**settings.CONVERSIONS, "BATCH_SIZE": before + 7}):
        assert before + 7 == conversions_settings.BATCH_SIZE
    assert before == conversions_settings.BATCH_SIZE


def test_unset_keys_take_their_defaults_and_dotted_paths_are_imported():
    with override_settings(CONVERSIONS={}):
        assert DEFAULTS["LEASE_SECONDS"] == conversions_settings.LEASE_SECONDS
        assert conversions_settings.ORDER_ADAPTER is OrderAdapter


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no setting 'NOT_A_SETTING'"):
        conversions_settings.NOT_A_SETTING  # noqa: B018


def test_the_sweep_window_and_the_request_deadline_have_documented_defaults():
    with override_settings(CONVERSIONS={}):
        assert conversions_settings.RECONCILE_WINDOW == 3 * 24 * 3600
        assert conversions_settings.REQUEST_DEADLINE == 30


def test_an_unknown_key_is_refused_with_the_valid_ones():
    with (
        override_settings(CONVERSIONS={"REQUEST_DEADLINES": 5}),
        pytest.raises(ImproperlyConfigured, match="REQUEST_DEADLINES") as raised,
    ):
        conversions_settings.raw("REQUEST_DEADLINE")
    assert "RECONCILE_WINDOW" in str(raised.value) and "REQUEST_DEADLINE," in str(raised.value)


# --- each cache built from the settings drops itself when they change -------------------------


def test_a_cached_consent_policy_follows_a_settings_change():
    # given: the policy already worked out (and cached)
    assert not policy_for("scanova").requires_consent
    # when / then
    stricter = {"scanova": {"requires_consent": True}}
    with override_settings(CONVERSIONS={**settings.CONVERSIONS, "CONSENT_POLICY": stricter}):
        assert policy_for("scanova").requires_consent
    assert not policy_for("scanova").requires_consent


class SettingsProvider(Provider):
    """A provider that exists only while a test's settings name it."""

    id = "from-settings"
    name = "From settings"
    default_base_url = "https://provider.example.test"
    event_path = "/events"
    auth_header = "X-Key"


def test_the_provider_registry_follows_a_settings_change():
    # given: the registry already loaded
    assert "from-settings" not in registry.ids()
    extra = ["tests.test_conf.SettingsProvider"]
    # when / then
    with override_settings(CONVERSIONS={**settings.CONVERSIONS, "PROVIDERS": extra}):
        assert "from-settings" in registry.ids()
    assert "from-settings" not in registry.ids()


def test_a_sites_provider_follows_a_settings_change(make_site):
    # given: a provider built for a site, with the batch size then configured
    site = make_site("scanova")
    before = site.provider_instance().site.batch_size
    # when / then
    with override_settings(CONVERSIONS={**settings.CONVERSIONS, "BATCH_SIZE": before + 1}):
        assert site.provider_instance().site.batch_size == before + 1
