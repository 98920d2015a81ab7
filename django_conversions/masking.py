"""Masking personal data for display: the admin and the REST API share these rules.

People see ``b•••@example.com`` instead of ``buyer@example.com`` unless they hold the
``django_conversions.view_personal_data`` permission. Masking is for display only: what is
stored and sent does not change (the privacy settings decide that).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from django.http import HttpRequest

PERSONAL_DATA_PERMISSION = "django_conversions.view_personal_data"
MASK = "•••"

# An email address anywhere in a text, the one rule for finding one: masking it for display,
# scrubbing it from stored text (privacy), keeping it out of what Scanova receives (which
# refuses one in properties), and the sandbox's check of that. Internationalised addresses
# count: the local part and the domain may be in any script (``josé@exämple.de``,
# ``用户@例子.中国``), the top-level domain is letters of any script or an ``xn--`` label.
# Group 1 is the local part, group 2 the domain.
EMAIL_PATTERN = re.compile(
    r"([^@\s\"'<>(),;:\[\]]+)@([^@\s\"'<>(),;:\[\]]+\.(?:xn--[a-z0-9-]+|[^\W\d_]{2,}))",
    re.IGNORECASE,
)
# Customer fields shown as they are: not enough to identify anyone on their own.
_SAFE_CUSTOMER_FIELDS = frozenset({"country"})


def contains_email(text: str) -> bool:
    """Does ``text`` hold an email address anywhere?"""
    return "@" in text and EMAIL_PATTERN.search(text) is not None


def may_see_personal_data(user: Any) -> bool:
    return bool(
        user is not None and user.is_authenticated and user.has_perm(PERSONAL_DATA_PERMISSION)
    )


def can_see_personal_data(request: HttpRequest) -> bool:
    return may_see_personal_data(getattr(request, "user", None))


def mask_email(value: str) -> str:
    """``buyer@example.com`` -> ``b•••@example.com`` (the domain helps tell typos apart)."""
    local, at, domain = value.partition("@")
    if not at:
        return mask_name(value)
    return f"{local[:1]}{MASK}@{domain}"


def mask_phone(value: str) -> str:
    """``+40775123123`` -> ``+•••23``: the country prefix sign and the last two digits."""
    digits = re.sub(r"\D", "", value)
    prefix = "+" if value.strip().startswith("+") else ""
    return f"{prefix}{MASK}{digits[-2:]}" if len(digits) > 4 else MASK


def mask_name(value: str) -> str:
    """``Maria`` -> ``M•••``."""
    text = value.strip()
    return f"{text[:1]}{MASK}" if text else ""


def mask_digest(value: str) -> str:
    """A hash is pseudonymous personal data: show enough to compare, not to look it up."""
    return f"{value[:8]}…" if len(value) > 8 else MASK


def mask_text(text: str) -> str:
    """Free text (reasons, response bodies) with every email address masked."""
    return EMAIL_PATTERN.sub(lambda m: f"{m.group(1)[:1]}{MASK}@{m.group(2)}", text)


def mask_known(text: str, snapshot: Any) -> str:
    """``text`` with the event's own customer values masked (a provider may echo them back),
    then any other email address."""
    customer = snapshot.get("customer") if isinstance(snapshot, Mapping) else None
    if isinstance(customer, Mapping):
        values = [
            (name, value)
            for name, value in customer.items()
            if isinstance(value, str) and len(value) >= 3 and name not in _SAFE_CUSTOMER_FIELDS
        ]
        for name, value in sorted(values, key=lambda pair: -len(pair[1])):
            text = text.replace(value, _mask_customer_field(name, value))
    return mask_text(text)


def _mask_customer_field(name: str, value: Any) -> Any:
    if not isinstance(value, str) or name in _SAFE_CUSTOMER_FIELDS:
        return value
    if name == "email":
        return mask_email(value)
    if name == "phone":
        return mask_phone(value)
    if name.endswith(("_sha256", "_hash")):
        return mask_digest(value)
    return mask_name(value)


def _mask_strings(value: Any) -> Any:
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, Mapping):
        return {key: _mask_strings(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_mask_strings(item) for item in value]
    return value


def mask_snapshot(snapshot: Any) -> Any:
    """A copy of a conversion snapshot with the customer's fields and any email masked."""
    if not isinstance(snapshot, Mapping):
        return _mask_strings(snapshot)
    masked = dict(snapshot)
    customer = masked.get("customer")
    if isinstance(customer, Mapping):
        masked["customer"] = {
            name: _mask_customer_field(name, value) for name, value in customer.items()
        }
    return {
        key: value if key == "customer" else _mask_strings(value) for key, value in masked.items()
    }
