"""Setting the sandbox up and flipping its faults, from tests, demos and management commands.

::

    from django_conversions.contrib.sandbox import control

    accounts = control.ensure_accounts()                 # sites + keys, created once
    control.connect_tracking_sites("http://127.0.0.1:8000/sandbox", accounts)
    control.set_fault("scanova", "server_error", status_code=503, times=1)
    control.clear_faults()
    control.requests_for_event(event.event_id)           # what the sandbox received
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from uuid import UUID

from django.db import transaction

from django_conversions.contrib.sandbox.models import (
    FaultMode,
    Provider,
    SandboxEvent,
    SandboxFault,
    SandboxKey,
    SandboxRequest,
    SandboxSite,
)
from django_conversions.models import ApiKey, TrackingSite

DEFAULT_SCANOVA_SITE_ID = "site_sandbox"
TRACKING_SITE_NAMES = {
    Provider.SCANOVA: "Scanova (sandbox)",
    Provider.VTMARKETING: "VTmarketing (sandbox)",
}
PROVIDER_PATHS = {Provider.SCANOVA: "scanova", Provider.VTMARKETING: "vtmarketing"}


@dataclass(frozen=True)
class Account:
    """One sandbox account and the key a shop uses for it."""

    provider: str
    site: SandboxSite
    key: str

    @property
    def site_id(self) -> str:
        return self.site.site_id


def new_key(provider: str) -> str:
    prefix = "scn_sandbox_" if provider == Provider.SCANOVA else "vtm_sandbox_"
    return prefix + secrets.token_hex(16)


def ensure_account(provider: str, *, site_id: str = "", name: str = "") -> Account:
    """The sandbox account for ``provider`` (and ``site_id``), active, with a working key.

    Created on first use; later calls return the same key, re-activating the site and adding
    a key only when every existing one was revoked.
    """
    provider = Provider(provider)
    if provider == Provider.SCANOVA and not site_id:
        site_id = DEFAULT_SCANOVA_SITE_ID
    with transaction.atomic():
        site, _ = SandboxSite.objects.get_or_create(
            provider=provider,
            site_id=site_id,
            defaults={"name": name or f"{provider.label} sandbox"},
        )
        if not site.is_active:
            site.is_active = True
            site.save(update_fields=["is_active"])
        key = site.keys.filter(is_revoked=False).order_by("-created_at", "-pk").first()
        if key is None:
            key = SandboxKey.objects.create(site=site, key=new_key(provider))
    return Account(provider, site, key.key)


def ensure_accounts(scanova_site_id: str = DEFAULT_SCANOVA_SITE_ID) -> dict[str, Account]:
    """One account per provider: ``{"scanova": Account, "vtmarketing": Account}``."""
    return {
        Provider.SCANOVA.value: ensure_account(Provider.SCANOVA, site_id=scanova_site_id),
        Provider.VTMARKETING.value: ensure_account(Provider.VTMARKETING),
    }


def revoke_keys(provider: str) -> int:
    """Revoke every key of ``provider`` (the next request with one is answered 403)."""
    return SandboxKey.objects.filter(site__provider=provider, is_revoked=False).update(
        is_revoked=True
    )


def connect_tracking_sites(
    base_url: str, accounts: dict[str, Account] | None = None
) -> list[TrackingSite]:
    """Create or update one ``TrackingSite`` per provider pointing at the sandbox.

    ``base_url`` is where the sandbox URLs are mounted, e.g. ``http://127.0.0.1:8000/sandbox``.
    The sites are named "Scanova (sandbox)" and "VTmarketing (sandbox)"; each gets the sandbox
    key as its active API key (added only if it is not the current key already), is activated
    and un-paused.
    """
    accounts = accounts or ensure_accounts()
    sites = []
    for provider, account in accounts.items():
        site, _ = TrackingSite.objects.get_or_create(
            name=TRACKING_SITE_NAMES[Provider(provider)], defaults={"provider": provider}
        )
        site.provider = provider
        site.provider_site_id = account.site_id
        site.endpoint_url = f"{base_url.rstrip('/')}/{PROVIDER_PATHS[Provider(provider)]}"
        if provider == Provider.VTMARKETING:
            # VTmarketing's third integration step: its front-end script, the stand-in here.
            site.script_url = f"{base_url.rstrip('/')}/vtmarketing/tracker.js"
            site.script_account_id = site.script_account_id or "sandbox-account"
        site.is_active = True
        site.save()
        current = site.current_key()
        if current is None or current.key != account.key:
            ApiKey.objects.create(site=site, label="sandbox", key=account.key)
        if site.is_paused:
            site.resume()
        sites.append(site)
    return sites


def set_fault(
    provider: str,
    mode: str,
    *,
    status_code: int | None = None,
    retry_after: int | None = None,
    delay: float | None = None,
    times: int | None = None,
) -> SandboxFault:
    """Switch ``provider``'s fault to ``mode`` for the next ``times`` requests (None: until off).

    Modes: ``off``, ``server_error`` (``status_code``, default 503), ``rate_limit`` (429 with
    ``Retry-After: retry_after``), ``slow`` (answer after ``delay`` seconds), ``revoked_key``
    (403 for every key), ``reject`` (``status_code`` 4xx, default 422, for every event).
    """
    mode = FaultMode(mode)
    if status_code is None:
        status_code = 422 if mode == FaultMode.REJECT else 503
    valid = range(400, 500) if mode == FaultMode.REJECT else range(500, 600)
    if mode in (FaultMode.REJECT, FaultMode.SERVER_ERROR) and status_code not in valid:
        raise ValueError(f"status code {status_code} does not fit fault {mode.value!r}")
    fault, _ = SandboxFault.objects.get_or_create(provider=Provider(provider))
    fault.mode = mode
    fault.status_code = status_code
    if retry_after is not None:
        fault.retry_after = retry_after
    if delay is not None:
        fault.delay = delay
    fault.remaining = times
    fault.save()
    return fault


def clear_faults(provider: str | None = None) -> None:
    """Every provider (or one) answers normally again."""
    faults = SandboxFault.objects.all()
    if provider is not None:
        faults = faults.filter(provider=provider)
    faults.update(mode=FaultMode.OFF, remaining=None)


def requests_for_event(event_id: UUID | str) -> list[SandboxRequest]:
    """Every request that carried ``event_id`` (in a single or a batch body), oldest first."""
    wanted = str(event_id)
    return [
        request
        for request in SandboxRequest.objects.order_by("received_at", "pk")
        if wanted in request.event_ids
    ]


def accepted_events(provider: str | None = None) -> list[SandboxEvent]:
    events = SandboxEvent.objects.order_by("received_at", "pk")
    if provider is not None:
        events = events.filter(provider=provider)
    return list(events)


def reset() -> None:
    """Forget every request and event received (accounts and keys stay)."""
    SandboxRequest.objects.all().delete()
    SandboxEvent.objects.all().delete()
    clear_faults()
