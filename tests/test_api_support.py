"""Helpers shared by the API tests (this module holds no tests)."""

from __future__ import annotations

import json
from typing import Any

from django.contrib.auth.models import Permission, User
from django.core.cache import cache
from django.test import Client

from django_conversions.models import ConversionEvent

API = "/api/conversions/"
EVENTS = API + "events/"
SCAN_SESSION = API + "scan-session/"
SCHEMA = API + "schema/"


def event_url(event: ConversionEvent | str, action: str = "") -> str:
    event_id = event.event_id if isinstance(event, ConversionEvent) else event
    return f"{EVENTS}{event_id}/" + (f"{action}/" if action else "")


def make_user(
    name: str = "ops",
    *,
    staff: bool = True,
    superuser: bool = False,
    perms: tuple[str, ...] = (),
) -> User:
    """A user with the named ``django_conversions`` permissions (codenames)."""
    if superuser:
        return User.objects.create_superuser(name, f"{name}@shop.test", None)
    # No password: tests log in with force_login, and hashing one is slow.
    user = User.objects.create_user(name, f"{name}@shop.test", None, is_staff=staff)
    if perms:
        user.user_permissions.set(
            Permission.objects.filter(
                content_type__app_label="django_conversions", codename__in=perms
            )
        )
    return User.objects.get(pk=user.pk)  # fresh: no stale permission cache


def logged_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def post_json(client: Client, path: str, data: Any, **extra: Any) -> Any:
    return client.post(path, json.dumps(data), content_type="application/json", **extra)


def purchase(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event_name": "purchase",
        "order_id": "1001",
        "value": "99.99",
        "currency": "EUR",
        "consent": "granted",
        "scan_session_id": "5b0e6c3e-7c1a-4c57-9a53-7f4f3f1f9a10",
        "customer": {"email": "Buyer@Example.com", "first_name": "Ana", "phone": "+40 775 123 123"},
        "items": [{"id": "sku-1", "quantity": 2, "price": "49.99"}],
    }
    body.update(fields)
    return body


def clear_throttles() -> None:
    cache.clear()
