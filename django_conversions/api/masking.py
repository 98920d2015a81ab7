"""Personal data in API answers: masked unless the caller may see it.

A stored conversion keeps what a provider needs, which for some providers is the buyer's raw
email and name. API callers without ``django_conversions.view_personal_data`` see those values
masked, in the conversion and wherever a provider's answer repeats them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

PERSONAL_DATA_PERMISSION = "django_conversions.view_personal_data"
# Customer fields shown as they are: a country alone does not identify anyone.
_NOT_PERSONAL = frozenset({"country"})
_MASK = "•••"


def may_see_personal_data(user: Any) -> bool:
    return bool(user and user.is_authenticated and user.has_perm(PERSONAL_DATA_PERMISSION))


def mask_value(name: str, value: Any) -> str:
    """``b•••@•••.com`` for an email, ``•••23`` for a phone, ``J•••`` for a name, ``•••`` else."""
    text = str(value)
    if name == "email" and "@" in text:
        tld = text.rsplit(".", 1)[-1] if "." in text.split("@", 1)[1] else ""
        return f"{text[:1]}{_MASK}@{_MASK}" + (f".{tld}" if tld else "")
    if name == "phone":
        return _MASK + text[-2:]
    if name.endswith("_sha256") or len(text) < 2:
        return _MASK
    return text[:1] + _MASK


def mask_snapshot(snapshot: Mapping[str, Any]) -> dict[str, Any]:
    """The stored conversion with the customer's personal fields masked."""
    data = dict(snapshot)
    customer = data.get("customer")
    if isinstance(customer, Mapping):
        data["customer"] = {
            name: value if name in _NOT_PERSONAL or not value else mask_value(name, value)
            for name, value in customer.items()
        }
    return data


def personal_values(snapshot: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(field, raw value) pairs of the customer's personal data, longest first."""
    customer = snapshot.get("customer")
    if not isinstance(customer, Mapping):
        return []
    pairs = [
        (name, str(value))
        for name, value in customer.items()
        if name not in _NOT_PERSONAL and value and len(str(value)) >= 3
    ]
    return sorted(pairs, key=lambda pair: -len(pair[1]))


def scrub(text: str, values: Iterable[tuple[str, str]]) -> str:
    """``text`` with each known personal value replaced by its mask (a provider may echo it)."""
    for name, value in values:
        if value in text:
            text = text.replace(value, mask_value(name, value))
    return text
