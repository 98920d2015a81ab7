"""The provider registry, the consent policy per provider, and the base's answer helpers."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from django_conversions.consent import policy_for
from django_conversions.conversion import Conversion
from django_conversions.exceptions import UnknownProvider
from django_conversions.models import TrackingSite
from django_conversions.providers import registry
from django_conversions.providers.base import (
    OutboundEvent,
    Provider,
    SiteConfig,
    parse_retry_after,
)
from django_conversions.providers.scanova import ScanovaProvider
from django_conversions.providers.vtmarketing import VTMarketingProvider

# The contract suite (django_conversions.testing) runs here, once per registered provider.
from django_conversions.testing import *  # noqa: F403


class EchoProvider(Provider):
    """A third-party provider registered from settings."""

    id = "echo"
    name = "Echo"
    default_base_url = "https://echo.example.test"
    event_path = "/events"
    auth_header = "X-Echo-Key"

    def build_body(self, event: OutboundEvent) -> dict[str, Any]:
        return {"id": str(event.event_id), "name": event.conversion.event_name}


class BetterScanova(ScanovaProvider):
    name = "Scanova (customised)"


class Nameless(Provider):
    id = "nameless"
    default_base_url = "https://x.test"
    event_path = "/e"
    auth_header = "X-Key"


class NotAProvider:
    id = "nope"


def providers(*paths: str) -> Any:
    return override_settings(CONVERSIONS={**settings.CONVERSIONS, "PROVIDERS": list(paths)})


@pytest.fixture(autouse=True)
def _fresh_registry() -> Iterator[None]:
    registry.reset()
    yield
    registry.reset()


def test_the_built_in_providers() -> None:
    assert registry.ids() == ["scanova", "vtmarketing"]
    assert registry.get_class("scanova") is ScanovaProvider
    assert registry.get_class("vtmarketing") is VTMarketingProvider
    assert registry.as_choices() == [
        ("scanova", "Scanova (QR scan attribution)"),
        ("vtmarketing", "VTmarketing (order confirmations)"),
    ]


def test_an_unknown_id_names_the_known_ones_and_the_setting() -> None:
    with pytest.raises(UnknownProvider) as raised:
        registry.get_class("facebook")
    assert "scanova, vtmarketing" in str(raised.value)
    assert "CONVERSIONS['PROVIDERS']" in str(raised.value)
    assert isinstance(raised.value, ImproperlyConfigured)


def test_extra_providers_come_from_settings() -> None:
    with providers("tests.test_provider_registry.EchoProvider"):
        assert registry.ids() == ["echo", "scanova", "vtmarketing"]
        assert registry.get_class("echo") is EchoProvider
        assert ("echo", "Echo") in registry.as_choices()
    # and the setting change is seen at once (the registry resets on setting_changed)
    assert "echo" not in registry.ids()


def test_a_site_gets_its_providers_class_set_up_for_it(make_site: Any) -> None:
    # given: a site of a provider registered from settings, and the model's choices
    with providers("tests.test_provider_registry.EchoProvider"):
        site = make_site("echo", provider_site_id="echo-7", endpoint_url="https://echo.test/x")
        choices = list(TrackingSite._meta.get_field("provider").choices or ())
        # when
        provider = site.provider_instance()
    # then
    assert type(provider) is EchoProvider
    assert provider.site == SiteConfig("echo-7", "https://echo.test/x", provider.site.batch_size)
    assert provider.url(provider.event_path) == "https://echo.test/x/events"
    assert ("echo", "Echo") in choices  # read from the registry when asked, not at import


def test_a_single_dotted_path_is_accepted() -> None:
    conversions = {**settings.CONVERSIONS, "PROVIDERS": "tests.test_provider_registry.EchoProvider"}
    with override_settings(CONVERSIONS=conversions):
        assert "echo" in registry.ids()


def test_a_settings_provider_may_replace_a_built_in() -> None:
    with providers("tests.test_provider_registry.BetterScanova"):
        assert registry.get_class("scanova") is BetterScanova


@pytest.mark.parametrize(
    ("paths", "words"),
    [
        (["tests.test_provider_registry.NotAProvider"], "is not a Provider subclass"),
        (["tests.test_provider_registry.Nameless"], "has no 'name'"),
        (["tests.nowhere.Provider"], "could not be imported"),
        (
            ["tests.test_provider_registry.EchoProvider"] * 2,
            "two providers with id 'echo'",
        ),
    ],
)
def test_bad_provider_settings_are_configuration_errors(paths: list[str], words: str) -> None:
    with providers(*paths), pytest.raises(ImproperlyConfigured, match=words):
        registry.ids()


# --- consent policies --------------------------------------------------------------------


def test_default_consent_policies() -> None:
    scanova, vt = policy_for("scanova"), policy_for("vtmarketing")
    assert [scanova.allows_identifiers(c) for c in ("granted", None, "denied", "pending")] == [
        True,
        True,
        False,
        False,
    ]
    assert scanova.skip_reason("denied") is None
    assert vt.skip_reason("granted") is None
    assert vt.skip_reason(None) is not None and vt.allows_identifiers(None) is False


@pytest.mark.parametrize(
    ("policy", "words"),
    [
        ({"scanova": {"require": True}}, "unknown keys"),
        ({"scanova": {"identifiers_with": ["yes"]}}, "identifiers_with"),
    ],
)
def test_bad_consent_policies_are_configuration_errors(policy: Any, words: str) -> None:
    conversions = {**settings.CONVERSIONS, "CONSENT_POLICY": policy}
    with (
        override_settings(CONVERSIONS=conversions),
        pytest.raises(ImproperlyConfigured, match=words),
    ):
        policy_for("scanova")


# --- Retry-After -------------------------------------------------------------------------------

NOW = datetime(2015, 10, 21, 7, 20, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("120", 120.0),
        (" 0 ", 0.0),
        ("1.5", 1.5),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 480.0),
        ("Wed, 21 Oct 2015 07:28:00 -0000", 480.0),
        ("Wed, 21 Oct 2015 07:00:00 GMT", 0.0),  # already past
        ("", None),
        (None, None),
        ("soon", None),
        ("-5", None),
        ("inf", None),
        ("nan", None),
    ],
)
def test_retry_after_as_seconds_or_http_date(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header, now=NOW) == seconds


def test_an_http_date_without_zone_is_gmt_whatever_the_local_zone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given: a server process running in New York
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        # when
        seconds = parse_retry_after("Wed, 21 Oct 2015 07:28:00 -0000", now=NOW)
    finally:
        monkeypatch.undo()
        time.tzset()
    # then
    assert seconds == 480.0


class ListBatchProvider(EchoProvider):
    """A batch endpoint whose body is not ``{key: [bodies]}``: it builds its own."""

    id = "list-batch"
    batch_path = "/events/many"

    def build_batch_body(self, events: Any) -> Any:
        return [{"n": i, **self.build_body(e)} for i, e in enumerate(events)]


def test_a_batch_body_the_provider_builds_itself_is_sent_as_built() -> None:
    events = [
        OutboundEvent(uuid.UUID(int=i + 1), Conversion("purchase"), datetime.now(UTC))
        for i in range(2)
    ]
    [request] = ListBatchProvider().requests_for(events)
    assert request.url == "https://echo.example.test/events/many"
    assert json.loads(request.data) == [
        {"n": 0, "id": str(events[0].event_id), "name": "purchase"},
        {"n": 1, "id": str(events[1].event_id), "name": "purchase"},
    ]
