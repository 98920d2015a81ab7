"""The consent policy, in one place.

A conversion carries ``consent``: ``"granted"``, ``"denied"``, ``"pending"`` or ``None``
(unknown). Each provider has a policy, overridable per provider id in
``CONVERSIONS["CONSENT_POLICY"]``:

``requires_consent``
    Send nothing unless consent is ``"granted"`` (the event is skipped with a reason).
``identifiers_with``
    The consent values under which customer identifiers (hashed or raw) may be sent. For any
    other value the event goes out without them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed

from django_conversions.conf import SETTING_NAME, conversions_settings
from django_conversions.conversion import CONSENT_VALUES

UNKNOWN = None


@dataclass(frozen=True)
class ConsentPolicy:
    requires_consent: bool = False
    identifiers_with: frozenset[str | None] = frozenset({"granted", UNKNOWN})

    def skip_reason(self, consent: str | None) -> str | None:
        if self.requires_consent and consent != "granted":
            return f"consent {consent or 'unknown'}: this provider needs consent 'granted'"
        return None

    def allows_identifiers(self, consent: str | None) -> bool:
        return consent in self.identifiers_with

    def allows_browser_script(self, consent: str | None) -> bool:
        """May the provider's front-end script run for a visitor with this consent?

        A tracking script recognises the visitor (cookies, the provider's own ids), so it runs
        exactly when the server would send this visitor's event with identifiers: the same
        consent, the same policy, one rule for both sides.
        """
        return self.skip_reason(consent) is None and self.allows_identifiers(consent)


# Defaults per provider id: Scanova takes hashes unless consent is denied or pending;
# VTmarketing receives the raw email, so it needs explicit consent.
DEFAULT_POLICIES: dict[str, ConsentPolicy] = {
    "scanova": ConsentPolicy(requires_consent=False),
    "vtmarketing": ConsentPolicy(requires_consent=True, identifiers_with=frozenset({"granted"})),
}


def policy_for(provider_id: str) -> ConsentPolicy:
    """The provider's policy: its default with ``CONSENT_POLICY``'s overrides.

    Worked out once per provider (it is asked for every event on the checkout and in delivery);
    a change of ``settings.CONVERSIONS`` clears the cache.
    """
    policy = _policies.get(provider_id)
    if policy is None:
        policy = _policies[provider_id] = _configured_policy(provider_id)
    return policy


def clear_cache() -> None:
    _policies.clear()


def _clear_on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting == SETTING_NAME:
        clear_cache()


setting_changed.connect(_clear_on_setting_changed, dispatch_uid="conversions_consent_policies")


_policies: dict[str, ConsentPolicy] = {}


def _configured_policy(provider_id: str) -> ConsentPolicy:
    policy = DEFAULT_POLICIES.get(provider_id, ConsentPolicy())
    overrides: dict[str, Any] = dict(conversions_settings.CONSENT_POLICY.get(provider_id, {}))
    if not overrides:
        return policy
    unknown = set(overrides) - {"requires_consent", "identifiers_with"}
    if unknown:
        raise ImproperlyConfigured(
            f"CONVERSIONS['CONSENT_POLICY'][{provider_id!r}] has unknown keys {sorted(unknown)}; "
            "use 'requires_consent' and 'identifiers_with'."
        )
    if "identifiers_with" in overrides:
        values = overrides["identifiers_with"]
        if isinstance(values, str):
            values = [values]
        bad = [v for v in values if v not in (*CONSENT_VALUES, UNKNOWN)]
        if bad:
            raise ImproperlyConfigured(
                f"CONVERSIONS['CONSENT_POLICY'][{provider_id!r}]['identifiers_with'] has "
                f"{bad!r}; use {', '.join(CONSENT_VALUES)} and None (consent unknown)."
            )
        overrides["identifiers_with"] = frozenset(values)
    if overrides.get("requires_consent") is False and "identifiers_with" not in overrides:
        # Not requiring consent means identifiers may go out unless consent was refused.
        overrides["identifiers_with"] = frozenset({"granted", UNKNOWN})
    return replace(policy, **overrides)
