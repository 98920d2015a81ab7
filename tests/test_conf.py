"""``conversions_settings``: defaults, the project's values, and changes seen at once."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.test import override_settings

from django_conversions.adapters import OrderAdapter
from django_conversions.conf import DEFAULTS, conversions_settings


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
