"""The normalisation rules a ``Conversion`` applies to its values, one function per kind of
value: event names, money, currencies, emails, phones, free text, JSON data, scan session ids.

Each function returns the normalised value or raises ``InvalidConversion`` naming the field.
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
import unicodedata
import uuid
from collections.abc import Mapping
from contextvars import ContextVar
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.core.validators import validate_email

from django_conversions import currencies
from django_conversions.conf import conversions_settings
from django_conversions.exceptions import InvalidConversion

EVENT_NAME_MAX = 64
# What a phone number may be written with: digits, spaces, brackets, dots, dashes, slashes, "+".
_PHONE_TEXT = re.compile(r"\+?[0-9\s().\-/]+")
_NOT_DIGIT = re.compile(r"[^0-9]")


def normalize_event_name(name: str) -> str:
    """``"Purchase Complete"`` -> ``"purchase_complete"`` (the rule Scanova applies on receipt).

    Letters of any script are kept (``"Achat Réussi"`` -> ``"achat_réussi"``): NFKC-normalised,
    lower-cased, and every run of characters that are not letters, marks or digits becomes one
    underscore. The result has 1 to 64 characters.
    """
    if not isinstance(name, str):
        raise InvalidConversion("event_name", "must be a string")
    return _normalized_event_name(name)


@functools.lru_cache(maxsize=256)
def _normalized_event_name(name: str) -> str:
    # A shop uses a handful of event names: each is worked out once.
    text = unicodedata.normalize("NFKC", name).lower()
    parts: list[str] = []
    gap = False
    for char in text:
        if unicodedata.category(char)[0] in "LMN":
            if gap and parts:
                parts.append("_")
            parts.append(char)
            gap = False
        else:
            gap = True
    normalized = "".join(parts)
    if not normalized:
        raise InvalidConversion("event_name", f"{name[:80]!r} has no letters or digits")
    if len(normalized) > EVENT_NAME_MAX:
        raise InvalidConversion(
            "event_name", f"{len(normalized)} characters, more than {EVENT_NAME_MAX}"
        )
    return normalized


def to_decimal(value: Any, field_name: str) -> Decimal:
    """A finite, non-negative Decimal from a Decimal, int, str or float (floats via their repr,
    so ``400.335`` is ``Decimal("400.335")``, not the binary float's long expansion)."""
    if isinstance(value, bool):
        raise InvalidConversion(field_name, "must be a number, not a boolean")
    try:
        amount = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    except (InvalidOperation, TypeError, ValueError):
        raise InvalidConversion(field_name, f"{str(value)[:40]!r} is not a number") from None
    if not amount.is_finite():
        raise InvalidConversion(field_name, f"{value!r} is not a finite number")
    if amount < 0:
        raise InvalidConversion(field_name, f"{value!r} is negative")
    return amount.copy_abs()  # no "-0"


def normalize_currency(code: str) -> str:
    if not isinstance(code, str):
        raise InvalidConversion("currency", "must be a 3-letter ISO 4217 code")
    normalized = code.strip().upper()
    if not currencies.is_known(normalized):
        raise InvalidConversion("currency", f"{code!r} is not an ISO 4217 currency code")
    return normalized


def round_money(amount: Decimal, currency: str | None, field_name: str = "value") -> Decimal:
    """Round half-up to the currency's minor unit (two digits when the currency is unknown).

    ``400.335`` USD -> ``400.34``; ``0.005`` -> ``0.01``; ``1500.5`` JPY -> ``1501``.
    """
    digits = currencies.minor_units(currency) if currency else 2
    try:
        return amount.quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP)
    except InvalidOperation:  # more digits than the decimal context holds
        raise InvalidConversion(field_name, f"{amount:.3E} is too large") from None


def normalize_email(email: str) -> str:
    """Trimmed, lower-cased and checked with Django's email validator."""
    normalized = email.strip().lower()
    try:
        validate_email(normalized)
    except ValidationError:
        raise InvalidConversion("customer.email", "is not a valid email address") from None
    return normalized


def normalize_phone(phone: str, default_country_code: str | None = None) -> str:
    """E.164 (``+`` and 7-15 digits) where possible; national numbers need a country code.

    ``"+40 (775) 123-123"`` -> ``"+40775123123"``; ``"0040775123123"`` -> ``"+40775123123"``;
    ``"0775123123"`` with country code ``"40"`` -> ``"+40775123123"`` (one leading trunk ``0``
    dropped); without a country code it stays ``"0775123123"`` (digits only), since the
    country can't be guessed. Letters, extensions and stray ``+`` signs are refused.
    """
    text = phone.strip().lstrip("(").strip()
    if not _PHONE_TEXT.fullmatch(text):
        raise InvalidConversion("customer.phone", "is not a phone number")
    digits = _NOT_DIGIT.sub("", text)
    international = None
    if text.startswith("+"):
        international = digits
    elif digits.startswith("00"):
        international = digits[2:]
    elif default_country_code:
        national = digits[1:] if digits.startswith("0") else digits
        international = default_country_code + national
    if international is None:
        if not 4 <= len(digits) <= 15:
            raise InvalidConversion("customer.phone", "is not a phone number")
        return digits
    if not 7 <= len(international) <= 15 or international.startswith("0"):
        raise InvalidConversion("customer.phone", "is not a valid international number")
    return "+" + international


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def storable_text(text: str) -> str:
    """Storable text: no NUL characters and no lone surrogates, which PostgreSQL refuses."""
    if "\x00" in text:
        text = text.replace("\x00", "")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def clean_text(value: Any, field_name: str, max_length: int = 255) -> str | None:
    if value is None:
        return None
    text = storable_text(str(value)).strip()
    if len(text) > max_length:
        raise InvalidConversion(field_name, f"longer than {max_length} characters")
    return text or None


#: Set while values recorded earlier are read back: they were normalised when recorded, and
#: a country code configured since must not turn a national number into another one.
as_recorded: ContextVar[bool] = ContextVar("as_recorded", default=False)


def phone_country_code() -> str | None:
    if as_recorded.get():
        return None
    code = conversions_settings.DEFAULT_PHONE_COUNTRY_CODE
    if code in (None, ""):
        return None
    digits = str(code).strip().lstrip("+")
    if not (digits.isascii() and digits.isdigit() and 1 <= len(digits) <= 3):
        raise ImproperlyConfigured(
            f"CONVERSIONS['DEFAULT_PHONE_COUNTRY_CODE'] = {code!r} is not a country calling code "
            "(1-3 digits, e.g. '40')."
        )
    return digits


def json_value(value: Any, path: str) -> Any:
    """``value`` as plain JSON data (dict, list, str, int, float, bool, None).

    Custom properties are normalised once, here, so that the snapshot stored on the outbox row
    turns back into an equal ``Conversion`` and every provider body serialises.
    """
    if isinstance(value, str):
        return storable_text(value)
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidConversion(path, f"{value!r} is not a finite number")
        return value
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise InvalidConversion(path, f"{value!r} is not a finite number")
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Mapping):
        result = {}
        for key, item in value.items():
            if not isinstance(key, str | int) or isinstance(key, bool):
                raise InvalidConversion(path, f"key {key!r} is not a string")
            result[storable_text(str(key))] = json_value(item, f"{path}.{key}")
        return result
    if isinstance(value, list | tuple):
        return [json_value(item, f"{path}[{i}]") for i, item in enumerate(value)]
    raise InvalidConversion(path, f"a {type(value).__name__} is not JSON data")


def normalize_scan_session_id(value: Any) -> str | None:
    """The canonical text of a scan session UUID; other text is kept as given (trimmed).

    A malformed id is not an error of the conversion: only providers that need the id (Scanova)
    refuse it, each with its own reason, while the others still receive the event.
    """
    if value is None:
        return None
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, str) and is_uuid(value):  # already canonical
        return value
    text = storable_text(str(value)).strip()[:128]
    if not text:
        return None
    try:
        return str(uuid.UUID(text))
    except ValueError:
        return text


def is_uuid(text: str | None) -> bool:
    """Is ``text`` a UUID in its canonical form (lower-case hex, hyphenated)?"""
    return text is not None and _CANONICAL_UUID.fullmatch(text) is not None


# What str(uuid.UUID(...)) gives.
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
