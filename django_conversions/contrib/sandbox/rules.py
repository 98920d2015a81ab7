"""The providers' documented request rules, as the sandbox enforces them.

Every check here follows the providers' documentation (digests in docs/providers/). Where
the docs are silent the sandbox has to pick something; those choices are the ``ASSUMED_*``
constants, listed in docs/sandbox.md ("Sandbox assumptions").
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from django_conversions.conversion import PROPERTIES_MAX_BYTES, properties_size
from django_conversions.masking import EMAIL_PATTERN, contains_email

# --- Scanova -------------------------------------------------------------------------------
SCANOVA_REQUIRED = ("site_id", "event_name", "scan_session_id")
SCANOVA_FIELDS = frozenset(
    {*SCANOVA_REQUIRED, "event_id", "event_time", "conversion_value", "user_identifiers"}
    | {"properties", "consent"}
)
SCANOVA_IDENTIFIERS = frozenset({"email_hash", "phone_hash", "external_id"})
SCANOVA_CONSENT = ("granted", "denied", "pending")
SCANOVA_RATE_LIMIT_PER_MINUTE = 1000
# Assumptions (the docs mention a "small burst grace" and 413 without numbers):
ASSUMED_RATE_BURST_GRACE = 50
ASSUMED_EVENT_MAX_BYTES = 32 * 1024
ASSUMED_BATCH_MAX_BYTES = 1024 * 1024
ASSUMED_BATCH_MAX_EVENTS = 100
ASSUMED_BATCH_KEY = "events"
# Assumption: fields outside the documented list are refused (422), so a misspelt field name
# fails in the sandbox instead of being silently dropped by the real API.
ASSUMED_REJECT_UNKNOWN_FIELDS = True

# --- VTmarketing ---------------------------------------------------------------------------
VT_USER_FIELDS = {
    "email": str,
    "tel": str,
    "firstname": str,
    "lastname": str,
    "country": str,
    "city": str,
}
VT_GENERIC_FIELDS = ("orderId", "total", "status", "coupons", "currency", "total_shipping", "phone")
VT_ITEM_FIELDS = ("id", "quantity")
# Assumptions: status codes for errors (the docs only say "not 200"), a body size limit, and
# what counts as an email address (local@domain.tld: the address must be deliverable).
ASSUMED_VT_BAD_REQUEST = 400
ASSUMED_VT_MAX_BYTES = 1024 * 1024

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_CURRENCY = re.compile(r"[A-Z]{3}")
_NON_WORD = re.compile(r"[^0-9a-z]+")


def is_number(value: Any) -> bool:
    """A JSON number: int or float, not a boolean, finite."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return math.isfinite(value)


def is_uuid(value: Any) -> bool:
    return isinstance(value, str) and _UUID.fullmatch(value) is not None


def normalize_event_name(name: str) -> str:
    """What Scanova stores: ``Purchase Complete`` -> ``purchase_complete``."""
    return _NON_WORD.sub("_", name.strip().lower()).strip("_")


# --- Scanova event validation (422 bodies in the documented pydantic-like shape) ----------


def _error(loc: list[Any], msg: str, kind: str) -> dict[str, Any]:
    return {"loc": loc, "msg": msg, "type": kind}


def scanova_event_errors(event: Any, loc: list[Any]) -> list[dict[str, Any]]:
    """Every problem with one Scanova event, as ``{"loc", "msg", "type"}`` items."""
    if not isinstance(event, Mapping):
        return [_error(loc, "value is not a valid object", "type_error.dict")]
    errors: list[dict[str, Any]] = []
    for name in SCANOVA_REQUIRED:
        if name not in event or event[name] is None:
            errors.append(_error([*loc, name], "field required", "value_error.missing"))
    if ASSUMED_REJECT_UNKNOWN_FIELDS:
        for name in sorted(set(event) - SCANOVA_FIELDS):
            errors.append(_error([*loc, name], "extra fields not permitted", "value_error.extra"))
    for name in ("site_id", "event_name"):
        value = event.get(name)
        if value is None:
            continue
        if not isinstance(value, str):
            errors.append(_error([*loc, name], "str type expected", "type_error.str"))
        elif not 1 <= len(value) <= 64:
            errors.append(
                _error([*loc, name], "length must be 1 to 64 characters", "value_error.length")
            )
        elif name == "event_name" and not normalize_event_name(value):
            errors.append(_error([*loc, name], "no letters or digits", "value_error"))
    for name in ("scan_session_id", "event_id"):
        value = event.get(name)
        if value is not None and not is_uuid(value):
            errors.append(_error([*loc, name], "value is not a valid uuid", "type_error.uuid"))
    errors += _event_time_errors(event.get("event_time"), [*loc, "event_time"])
    errors += _value_errors(event.get("conversion_value"), [*loc, "conversion_value"])
    errors += _identifier_errors(event.get("user_identifiers"), [*loc, "user_identifiers"])
    errors += _properties_errors(event.get("properties"), [*loc, "properties"])
    consent = event.get("consent")
    if consent is not None and consent not in SCANOVA_CONSENT:
        errors.append(
            _error(
                [*loc, "consent"],
                f"value is not a valid enumeration member; permitted: {', '.join(SCANOVA_CONSENT)}",
                "type_error.enum",
            )
        )
    return errors


def _event_time_errors(value: Any, loc: list[Any]) -> list[dict[str, Any]]:
    if value is None:
        return []
    if isinstance(value, str):
        try:
            datetime.fromisoformat(value)
            return []
        except ValueError:
            pass
    return [_error(loc, "invalid datetime format (ISO 8601 expected)", "value_error.datetime")]


def _value_errors(value: Any, loc: list[Any]) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, Mapping):
        return [_error(loc, "value is not a valid object", "type_error.dict")]
    errors = []
    extra = sorted(set(value) - {"amount", "currency"})
    errors += [_error([*loc, k], "extra fields not permitted", "value_error.extra") for k in extra]
    if "amount" not in value:
        errors.append(_error([*loc, "amount"], "field required", "value_error.missing"))
    elif not is_number(value["amount"]):
        errors.append(_error([*loc, "amount"], "value is not a valid number", "type_error.number"))
    if "currency" not in value:
        errors.append(_error([*loc, "currency"], "field required", "value_error.missing"))
    elif not isinstance(value["currency"], str) or not _CURRENCY.fullmatch(value["currency"]):
        errors.append(
            _error(
                [*loc, "currency"],
                "currency must be a 3-letter ISO 4217 code",
                "value_error.currency",
            )
        )
    return errors


def _identifier_errors(value: Any, loc: list[Any]) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, Mapping):
        return [_error(loc, "value is not a valid object", "type_error.dict")]
    errors = []
    for name in sorted(set(value) - SCANOVA_IDENTIFIERS):
        errors.append(
            _error(
                [*loc, name],
                "extra fields not permitted: only hashed identifiers (email_hash, phone_hash) "
                "and external_id",
                "value_error.extra",
            )
        )
    for name in ("email_hash", "phone_hash"):
        digest = value.get(name)
        if digest is not None and not (isinstance(digest, str) and _SHA256.fullmatch(digest)):
            errors.append(
                _error(
                    [*loc, name],
                    "must be a lowercase hex SHA-256 digest; never send a raw email or phone",
                    "value_error.hash",
                )
            )
    external = value.get("external_id")
    if external is not None and not (isinstance(external, str) and 1 <= len(external) <= 255):
        errors.append(
            _error([*loc, "external_id"], "str of 1 to 255 characters expected", "type_error.str")
        )
    return errors


def _properties_errors(value: Any, loc: list[Any]) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, Mapping):
        return [_error(loc, "value is not a valid object", "type_error.dict")]
    # The 10 KB rule the app applies before sending (one rule for both sides).
    size = properties_size(value)
    if size > PROPERTIES_MAX_BYTES:
        return [
            _error(
                loc,
                f"properties are {size} bytes serialised; the limit is 10 KB",
                "value_error.too_large",
            )
        ]
    return [
        _error(
            [*loc, *path], "raw email addresses are not allowed in properties", "value_error.pii"
        )
        for path in _email_paths(value, [])
    ]


def _email_paths(value: Any, path: list[Any]) -> list[list[Any]]:
    """Where in ``value`` (keys or strings, at any depth) an email address appears."""
    if isinstance(value, str):
        return [path] if contains_email(value) else []
    found: list[list[Any]] = []
    if isinstance(value, Mapping):
        for key, item in value.items():
            if contains_email(str(key)):
                found.append([*path, key])
            else:
                found += _email_paths(item, [*path, key])
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _email_paths(item, [*path, index])
    return found


# --- VTmarketing confirmation validation (errors[] items) ----------------------------------


def _vt(message: str, description: str) -> dict[str, str]:
    return {"message": message, "description": description}


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    return "object"


def _unknown(path: str, names: set[str], known: tuple[str, ...] | set[str]) -> list[dict[str, str]]:
    errors = []
    for name in sorted(names - set(known)):
        hint = next((k for k in known if k.lower() == name.lower()), None)
        text = f"{path}.{name} is not a known field; field names are case-sensitive"
        errors.append(
            _vt("Invalid field", text + (f" (did you mean {path}.{hint}?)" if hint else ""))
        )
    return errors


def vtmarketing_errors(body: Any) -> list[dict[str, str]]:
    """Every problem with a VTmarketing confirmation request, as ``errors[]`` items."""
    if not isinstance(body, Mapping):
        return [_vt("Invalid request", "The body must be a JSON object with user and event")]
    errors: list[dict[str, str]] = []
    errors += _unknown("body", set(body), ("user", "event"))
    user = body.get("user")
    if user is None:
        errors.append(
            _vt("Missing user information", "Please send user information along with event")
        )
    else:
        errors += _vt_user_errors(user)
    event = body.get("event")
    if event is None:
        errors.append(
            _vt("Missing event information", "Please send event information along with user")
        )
    else:
        errors += _vt_event_errors(event)
    return errors


def _vt_user_errors(user: Any) -> list[dict[str, str]]:
    if not isinstance(user, Mapping):
        return [_vt("Invalid field type", f"user must be an object, got {_type_name(user)}")]
    errors = _unknown("user", set(user), set(VT_USER_FIELDS))
    email = user.get("email")
    if email is None:
        errors.append(_vt("Missing user email", "user.email is required"))
    elif not isinstance(email, str):
        errors.append(
            _vt("Invalid field type", f"user.email must be a string, got {_type_name(email)}")
        )
    elif not EMAIL_PATTERN.fullmatch(email):
        errors.append(_vt("Invalid user email", "user.email is not a valid email address"))
    for name in ("tel", "firstname", "lastname", "country", "city"):
        if name in user and not isinstance(user[name], str):
            errors.append(
                _vt(
                    "Invalid field type",
                    f"user.{name} must be a string, got {_type_name(user[name])}",
                )
            )
    return errors


def _vt_event_errors(event: Any) -> list[dict[str, str]]:
    if not isinstance(event, Mapping):
        return [_vt("Invalid field type", f"event must be an object, got {_type_name(event)}")]
    errors = []
    for name in sorted(set(event) - {"confirmation"}):
        errors.append(
            _vt("Unknown event type", f"event.{name}: this API only takes 'confirmation' events")
        )
    confirmation = event.get("confirmation")
    if confirmation is None:
        errors.append(_vt("Missing event information", "event.confirmation is required"))
        return errors
    if not isinstance(confirmation, Mapping):
        return [
            *errors,
            _vt(
                "Invalid field type",
                f"event.confirmation must be an object, got {_type_name(confirmation)}",
            ),
        ]
    errors += _unknown("event.confirmation", set(confirmation), ("generic", "items"))
    generic = confirmation.get("generic")
    if generic is None:
        errors.append(_vt("Missing event information", "event.confirmation.generic is required"))
    else:
        errors += _vt_generic_errors(generic)
    if "items" in confirmation:
        errors += _vt_items_errors(confirmation["items"])
    return errors


def _vt_generic_errors(generic: Any) -> list[dict[str, str]]:
    path = "event.confirmation.generic"
    if not isinstance(generic, Mapping):
        return [_vt("Invalid field type", f"{path} must be an object, got {_type_name(generic)}")]
    errors = _unknown(path, set(generic), VT_GENERIC_FIELDS)
    if "total" not in generic:
        errors.append(_vt("Missing order total", f"{path}.total is required"))
    for name in ("total", "total_shipping"):
        if name in generic and not is_number(generic[name]):
            errors.append(
                _vt(
                    "Invalid field type",
                    f"{path}.{name} must be a float, got {_type_name(generic[name])}",
                )
            )
    for name in ("orderId", "status", "currency", "phone"):
        if name in generic and not isinstance(generic[name], str):
            errors.append(
                _vt(
                    "Invalid field type",
                    f"{path}.{name} must be a string, got {_type_name(generic[name])}",
                )
            )
    currency = generic.get("currency")
    if isinstance(currency, str) and not _CURRENCY.fullmatch(currency):
        errors.append(_vt("Invalid currency", f"{path}.currency must be a 3-letter ISO code"))
    coupons = generic.get("coupons")
    if "coupons" in generic and not (
        isinstance(coupons, list) and all(isinstance(c, str) for c in coupons)
    ):
        errors.append(_vt("Invalid field type", f"{path}.coupons must be a list of strings"))
    return errors


def _vt_items_errors(items: Any) -> list[dict[str, str]]:
    path = "event.confirmation.items"
    if not isinstance(items, list):
        return [_vt("Invalid field type", f"{path} must be a list, got {_type_name(items)}")]
    errors = []
    for index, item in enumerate(items):
        where = f"{path}[{index}]"
        if not isinstance(item, Mapping):
            errors.append(_vt("Invalid field type", f"{where} must be an object"))
            continue
        errors += _unknown(where, set(item), VT_ITEM_FIELDS)
        if not isinstance(item.get("id"), str) or not item.get("id"):
            errors.append(_vt("Invalid item", f"{where}.id must be a non-empty string"))
        quantity = item.get("quantity")
        if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity < 1:
            errors.append(_vt("Invalid item", f"{where}.quantity must be a whole number above 0"))
    return errors
