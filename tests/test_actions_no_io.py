"""The admin's retry and resume and the API's retry answer while a provider holds the delivery
they asked for, with README's install settings (Django's ImmediateBackend): a real server
holding each request, a real commit, the process's background delivery thread."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import Permission, User
from django.test import Client, override_settings
from django.urls import reverse

from django_conversions import Conversion
from django_conversions.models import ApiKey, ConversionEvent, EventStatus, TrackingSite
from django_conversions.tasks import background
from tests.servers import held_provider

# Django's own default when a project sets no TASKS (README's install doesn't).
_TASKS_MODULE = settings.TASKS["default"]["BACKEND"].rsplit(".backends.", 1)[0]
README_TASKS = {"default": {"BACKEND": f"{_TASKS_MODULE}.backends.immediate.ImmediateBackend"}}


def operator(*codenames: str) -> Client:
    user = User.objects.create_user("ops", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(
            content_type__app_label="django_conversions", codename__in=codenames
        )
    )
    client = Client()
    client.force_login(user)
    return client


def failed_event(url: str) -> ConversionEvent:
    site = TrackingSite.objects.create(
        name="slow", provider="scanova", provider_site_id="site_local", endpoint_url=url
    )
    ApiKey.objects.create(site=site, key="scn_local_key_0123456789abcdef")
    return ConversionEvent.objects.create(
        site=site,
        event_name="purchase",
        dedup_key="purchase:order:1",
        order_reference="1",
        status=EventStatus.FAILED,
        attempts=1,
        snapshot=Conversion(
            event_name="purchase",
            order_id="1",
            value="10.00",
            currency="EUR",
            scan_session_id=str(uuid.uuid4()),
        ).to_snapshot(),
    )


def by_api(event: ConversionEvent) -> Any:
    client = operator("change_conversionevent")
    return client.post(f"/api/conversions/events/{event.event_id}/retry/")


def by_admin_retry(event: ConversionEvent) -> Any:
    client = operator("view_conversionevent", "change_conversionevent")
    return client.post(
        reverse("admin:django_conversions_conversionevent_changelist"),
        {"action": "retry_selected", "_selected_action": [event.pk]},
    )


def by_admin_resume(event: ConversionEvent) -> Any:
    event.site.pause("Scanova refused the API key: HTTP 403")
    ConversionEvent.objects.filter(pk=event.pk).update(status=EventStatus.PENDING)
    client = operator("view_trackingsite", "change_trackingsite")
    return client.post(
        reverse("admin:django_conversions_trackingsite_resume", args=[event.site.pk])
    )


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("ask", "answered"), [(by_api, 202), (by_admin_retry, 302), (by_admin_resume, 302)]
)
def test_the_request_answers_while_the_provider_holds_what_it_queued(
    ask: Callable[[ConversionEvent], Any], answered: int
) -> None:
    conversions = {
        key: value for key, value in settings.CONVERSIONS.items() if key != "BACKGROUND_DELIVERY"
    }  # README's settings leave it at its default
    with (
        held_provider() as (url, provider),
        override_settings(TASKS=README_TASKS, CONVERSIONS=conversions),
    ):
        event = failed_event(url)
        # when
        response = ask(event)
        # then: answered while the provider still held the delivery (had the request waited
        # for the provider, the provider would have given up holding it first)
        assert response.status_code == answered
        assert not provider.gave_up.is_set()
        assert provider.arrived.wait(20)  # the delivery is under way from elsewhere
        provider.release.set()
        assert background.wait_idle(timeout=20)  # the run that holds the request has ended
        assert ConversionEvent.objects.get().status == EventStatus.DELIVERED
