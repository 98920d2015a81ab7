"""What a conversion is, independent of any provider: ``Conversion``, ``Customer``, ``LineItem``.

The dataclasses normalise and validate on construction, so every provider receives the same
clean values: event names in ``lowercase_underscore``, money as ``Decimal`` rounded to the
currency's minor unit, upper-case ISO 4217 currencies, trimmed lower-case emails, phones in
E.164 where the number allows it. A bad value raises ``InvalidConversion`` naming the field.

``Conversion.to_snapshot()`` gives the JSON stored on each outbox row and
``Conversion.from_snapshot()`` turns it back into an equal ``Conversion``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import re
import unicodedata
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, TypeVar

from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.core.validators import validate_email
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from django_conversions import currencies
from django_conversions.conf import conversions_settings
from django_conversions.exceptions import InvalidConversion

CONSENT_VALUES = ("granted", "denied", "pending")
EVENT_NAME_MAX = 64
#: The most ``Conversion.properties`` may take, as ``properties_size()`` counts it. The source
#: is Scanova's documented limit ("at most 10 KB serialised", docs/providers/scanova.md), the
#: only one any provider states; it is read the strictest way we can think of (10,000 bytes,
#: counted as below), so any counting on their side fits. The REST API refuses larger
#: properties with this same rule, and the sandbox enforces it.
PROPERTIES_MAX_BYTES = 10_000
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
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
    # A shop uses a handful of event names, normalised on every tracked save: keep the results.
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


def properties_size(properties: Mapping[str, Any]) -> int:
    """The serialised size ``PROPERTIES_MAX_BYTES`` limits: the properties as Python's
    ``json.dumps`` writes them by default (ASCII escapes, ``", "`` and ``": "`` separators),
    the largest common serialisation; being ASCII, its length is its size in bytes."""
    return len(json.dumps(properties))


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


def _no_nul(text: str) -> str:
    """Storable text: no NUL characters and no lone surrogates, which PostgreSQL refuses."""
    if "\x00" in text:
        text = text.replace("\x00", "")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def _clean_text(value: Any, field_name: str, max_length: int = 255) -> str | None:
    if value is None:
        return None
    text = _no_nul(str(value)).strip()
    if len(text) > max_length:
        raise InvalidConversion(field_name, f"longer than {max_length} characters")
    return text or None


def _phone_country_code() -> str | None:
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


def _json_value(value: Any, path: str) -> Any:
    """``value`` as plain JSON data (dict, list, str, int, float, bool, None).

    Custom properties are normalised once, here, so that the snapshot stored on the outbox row
    turns back into an equal ``Conversion`` and every provider body serialises.
    """
    if isinstance(value, str):
        return _no_nul(value)
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
            result[_no_nul(str(key))] = _json_value(item, f"{path}.{key}")
        return result
    if isinstance(value, list | tuple):
        return [_json_value(item, f"{path}[{i}]") for i, item in enumerate(value)]
    raise InvalidConversion(path, f"a {type(value).__name__} is not JSON data")


@dataclass(frozen=True)
class Customer:
    """The buyer. Everything is optional; providers take what they need (see privacy docs)."""

    email: str | None = None
    phone: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    city: str | None = None
    country: str | None = None
    external_id: str | None = None
    # SHA-256 hex of the normalised email / phone, kept instead of the raw value for providers
    # that only need the hash (see Provider.minimize); computed from the raw value when present.
    email_sha256: str | None = None
    phone_sha256: str | None = None

    def __post_init__(self) -> None:
        for name in ("first_name", "last_name", "city", "country", "external_id"):
            object.__setattr__(self, name, _clean_text(getattr(self, name), f"customer.{name}"))
        for name in ("email_sha256", "phone_sha256"):
            digest = getattr(self, name)
            if digest is not None:
                digest = str(digest).strip().lower()
                if not _SHA256_HEX.fullmatch(digest):
                    raise InvalidConversion(f"customer.{name}", "must be 64 hex digits (SHA-256)")
                object.__setattr__(self, name, digest)
        email = _clean_text(self.email, "customer.email", 254)
        object.__setattr__(self, "email", normalize_email(email) if email else None)
        phone = _clean_text(self.phone, "customer.phone", 32)
        phone = normalize_phone(phone, _phone_country_code()) if phone else None
        object.__setattr__(self, "phone", phone)

    @property
    def email_hash(self) -> str | None:
        return sha256_hex(self.email) if self.email else self.email_sha256

    @property
    def phone_hash(self) -> str | None:
        """SHA-256 of the E.164 phone; None for a phone without a country code."""
        if self.phone:
            return sha256_hex(self.phone) if self.phone.startswith("+") else None
        return self.phone_sha256

    def kept(self, personal: Iterable[str], hashed: Iterable[str]) -> Customer | None:
        """A copy with the ``personal`` fields as they are and the ``hashed`` ones (``email``,
        ``phone``) as their SHA-256 only; None when nothing is left.

        For the outbox's per-provider minimisation, on every tracked save: the values are
        this customer's, already validated, so the copy is not validated again.
        """
        values = {name: getattr(self, name) for name in personal}
        for name in hashed:
            if name not in values:
                values[f"{name}_sha256"] = getattr(self, f"{name}_hash")
        present = {k: v for k, v in values.items() if v}
        return _as_stored(Customer, present) if present else None

    def is_empty(self) -> bool:
        # Plain attribute reads: dataclasses.asdict() deep-copies, on every tracked save.
        return not any(getattr(self, name) for name in _shape(Customer).ordered)


@dataclass(frozen=True)
class LineItem:
    """One order line: the product id as in the provider's product feed, and the quantity."""

    id: str
    quantity: int = 1
    price: Decimal | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        item_id = _clean_text(self.id, "items.id", 128)
        if not item_id:
            raise InvalidConversion("items.id", "is required")
        object.__setattr__(self, "id", item_id)
        if isinstance(self.quantity, bool) or not isinstance(self.quantity, int):
            try:
                quantity = Decimal(str(self.quantity).strip())
                if quantity != quantity.to_integral_value():
                    raise ValueError
            except (ArithmeticError, ValueError):
                raise InvalidConversion("items.quantity", "must be a whole number") from None
            object.__setattr__(self, "quantity", int(quantity))
        if self.quantity < 1:
            raise InvalidConversion("items.quantity", "must be at least 1")
        if self.price is not None:
            object.__setattr__(self, "price", to_decimal(self.price, "items.price"))
        object.__setattr__(self, "name", _clean_text(self.name, "items.name"))


@dataclass(frozen=True)
class Conversion:
    """A conversion to report: a purchase, signup, lead or any backend action."""

    event_name: str
    order_id: str | None = None
    value: Decimal | None = None
    currency: str | None = None
    shipping: Decimal | None = None
    coupons: tuple[str, ...] = ()
    status: str | None = None
    customer: Customer | None = None
    items: tuple[LineItem, ...] = ()
    scan_session_id: str | None = None
    consent: str | None = None
    properties: Mapping[str, Any] | None = None
    occurred_at: datetime | None = field(default=None)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "event_name", normalize_event_name(self.event_name))
        set_(self, "order_id", _clean_text(self.order_id, "order_id", 128))
        set_(self, "status", _clean_text(self.status, "status", 64))
        if self.currency is not None:
            set_(self, "currency", normalize_currency(self.currency))
        for name in ("value", "shipping"):
            amount = getattr(self, name)
            if amount is not None:
                set_(self, name, round_money(to_decimal(amount, name), self.currency, name))
        if isinstance(self.coupons, str):
            set_(self, "coupons", (self.coupons,))
        set_(
            self,
            "coupons",
            tuple(c for c in (_clean_text(c, "coupons") for c in self.coupons) if c),
        )
        set_(self, "items", tuple(self._line_item(item) for item in self.items))
        # Customer first: a Mapping check is an ABC check, slow (on every tracked save).
        if self.customer is not None and not isinstance(self.customer, Customer):
            if not isinstance(self.customer, Mapping):
                raise InvalidConversion("customer", f"expected Customer, got {type(self.customer)}")
            set_(self, "customer", Customer(**self.customer))
        if self.scan_session_id is not None:
            set_(self, "scan_session_id", normalize_scan_session_id(self.scan_session_id))
        if self.consent is not None:
            consent = str(self.consent).strip().lower() or None
            if consent is not None and consent not in CONSENT_VALUES:
                raise InvalidConversion("consent", f"must be one of {', '.join(CONSENT_VALUES)}")
            set_(self, "consent", consent)
        if self.properties is not None:
            if not isinstance(self.properties, Mapping):
                raise InvalidConversion("properties", "must be a mapping")
            set_(self, "properties", _json_value(self.properties, "properties"))
        if self.occurred_at is not None:
            if not isinstance(self.occurred_at, datetime):
                raise InvalidConversion("occurred_at", "must be a datetime")
            if timezone.is_naive(self.occurred_at):
                set_(self, "occurred_at", timezone.make_aware(self.occurred_at))

    def _line_item(self, item: LineItem | Mapping[str, Any]) -> LineItem:
        if not isinstance(item, LineItem):  # LineItem first, as for the customer
            if not isinstance(item, Mapping):
                raise InvalidConversion("items", f"expected LineItem, got {type(item).__name__}")
            item = LineItem(**item)
        if item.price is not None:  # unit prices follow the order's currency like the total
            price = round_money(item.price, self.currency, "items.price")
            if price.as_tuple() != item.price.as_tuple():
                item = dataclasses.replace(item, price=price)
        return item

    def to_snapshot(self) -> dict[str, Any]:
        """JSON-serialisable dict; ``from_snapshot`` reverses it exactly."""
        data: dict[str, Any] = {"event_name": self.event_name}
        for name in ("order_id", "status", "currency", "scan_session_id", "consent"):
            if getattr(self, name) is not None:
                data[name] = getattr(self, name)
        for name in ("value", "shipping"):
            if getattr(self, name) is not None:
                data[name] = str(getattr(self, name))
        if self.coupons:
            data["coupons"] = list(self.coupons)
        if self.customer is not None and not self.customer.is_empty():
            # Plain reads: dataclasses.asdict() deep-copies, on every tracked save.
            customer = self.customer
            values = {name: getattr(customer, name) for name in _shape(Customer).ordered}
            data["customer"] = {name: value for name, value in values.items() if value}
        if self.items:
            data["items"] = [_item_snapshot(item) for item in self.items]
        if self.properties is not None:
            data["properties"] = self.properties
        if self.occurred_at is not None:
            data["occurred_at"] = self.occurred_at.isoformat()
        return data

    @classmethod
    def from_snapshot(cls, data: Mapping[str, Any]) -> Conversion:
        """The conversion a snapshot was made from.

        Snapshots are written only by ``to_snapshot()`` of a conversion that was validated
        and normalised then, so one is read back as stored instead of being normalised field
        by field again (delivery reads one per event sent). What is not such a snapshot
        (unknown or missing fields, an amount that is not a number) raises
        ``InvalidConversion``.
        """
        if not _is_mapping(data):
            raise InvalidConversion("snapshot", "Conversion is not a mapping")
        values = dict(data)
        try:
            if "customer" in values:
                values["customer"] = _as_stored(Customer, values["customer"])
            values["items"] = tuple(
                _as_stored(LineItem, item, "price") for item in values.get("items", ())
            )
            values["coupons"] = tuple(values.get("coupons", ()))
            conversion = _as_stored(cls, values, "value", "shipping")
            if conversion.occurred_at is not None:
                object.__setattr__(conversion, "occurred_at", parse_datetime(values["occurred_at"]))
        except (TypeError, ValueError, ArithmeticError) as err:
            raise InvalidConversion("snapshot", str(err)) from None
        return conversion

    def replace(self, **changes: Any) -> Conversion:
        return dataclasses.replace(self, **changes)

    def narrowed(self, **changes: Any) -> Conversion:
        """A copy with some fields dropped or reduced to already-valid values, not re-validated.

        For the outbox's per-provider minimisation, which runs on every tracked save: the
        changes only remove data (``customer=`` a validated ``Customer`` or None,
        ``properties=`` a subset or None), so nothing can become invalid.
        """
        narrowed = object.__new__(Conversion)
        narrowed.__dict__.update(self.__dict__)
        for name, value in changes.items():
            if name not in ("customer", "properties"):
                raise ValueError(f"narrowed() only changes customer and properties, not {name}")
            object.__setattr__(narrowed, name, value)
        return narrowed


_Stored = TypeVar("_Stored")


@dataclasses.dataclass(frozen=True)
class _Shape:
    """What snapshots and copies need to know about one of the dataclasses, worked out once
    (``dataclasses.fields()`` builds its tuple on each call, several times per tracked save)."""

    ordered: tuple[str, ...]  # the field names, in declaration order
    names: frozenset[str]
    defaults: dict[str, Any]  # fields with a plain default
    required: frozenset[str]  # fields without one


_SHAPES: dict[type, _Shape] = {}


def _shape(klass: type) -> _Shape:
    shape = _SHAPES.get(klass)
    if shape is None:
        fields = dataclasses.fields(klass)
        defaults = {f.name: f.default for f in fields if f.default is not dataclasses.MISSING}
        shape = _SHAPES[klass] = _Shape(
            ordered=tuple(f.name for f in fields),
            names=frozenset(f.name for f in fields),
            defaults=defaults,
            required=frozenset(f.name for f in fields if f.name not in defaults),
        )
    return shape


def _as_stored(klass: type[_Stored], values: Any, *money: str) -> _Stored:
    """An instance of one of the frozen dataclasses here from a snapshot's values, taken as
    they are (they were checked when the snapshot was written); the ``money`` fields, stored
    as exact text, become Decimals."""
    if not _is_mapping(values):
        raise InvalidConversion("snapshot", f"{klass.__name__} is not a mapping")
    shape = _shape(klass)
    if not shape.names.issuperset(values):
        raise InvalidConversion("snapshot", f"unknown fields {sorted(set(values) - shape.names)}")
    if not values.keys() >= shape.required:  # (issubset() would copy the keys into a set)
        missing = sorted(shape.required - set(values))
        raise InvalidConversion("snapshot", f"{klass.__name__} without {', '.join(missing)}")
    instance = object.__new__(klass)
    # Frozen: fill the instance's dict directly, as dataclasses' own __init__ in effect does.
    fields = instance.__dict__
    fields.update(shape.defaults)
    fields.update(values)
    for name in money:
        if fields[name] is not None:
            fields[name] = Decimal(fields[name])
    return instance


def _is_mapping(value: Any) -> bool:
    # A stored snapshot is made of plain dicts: the ABC check costs more, on every event sent.
    return type(value) is dict or isinstance(value, Mapping)


def _item_snapshot(item: LineItem) -> dict[str, Any]:
    data: dict[str, Any] = {"id": item.id, "quantity": item.quantity}
    if item.price is not None:
        data["price"] = str(item.price)
    if item.name is not None:
        data["name"] = item.name
    return data


def normalize_scan_session_id(value: Any) -> str | None:
    """The canonical text of a scan session UUID; other text is kept as given (trimmed).

    A malformed id is not an error of the conversion: only providers that need the id (Scanova)
    refuse it, each with its own reason, while the others still receive the event.
    """
    if value is None:
        return None
    if isinstance(value, uuid.UUID):
        return str(value)
    if type(value) is str and is_uuid(value):  # the usual case: already canonical
        return value
    text = _no_nul(str(value)).strip()[:128]
    if not text:
        return None
    try:
        return str(uuid.UUID(text))
    except ValueError:
        return text


def is_uuid(text: str | None) -> bool:
    """Is ``text`` a UUID in its canonical form (lower-case hex, hyphenated)?"""
    return text is not None and _CANONICAL_UUID.fullmatch(text) is not None


# What str(uuid.UUID(...)) gives; a regular expression is several times cheaper than parsing.
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
