"""What a conversion is, independent of any provider: ``Conversion``, ``Customer``, ``LineItem``.

The dataclasses normalise and validate on construction, so every provider receives the same
clean values: event names in ``lowercase_underscore``, money as ``Decimal`` rounded to the
currency's minor unit, upper-case ISO 4217 currencies, trimmed lower-case emails, phones in
E.164 where the number allows it. A bad value raises ``InvalidConversion`` naming the field.

``Conversion.to_snapshot()`` gives the JSON stored on each outbox row and
``Conversion.from_snapshot()`` turns it back into an equal ``Conversion``. The rules for each
kind of value are in ``django_conversions.normalize``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

from django.utils import timezone
from django.utils.dateparse import parse_datetime

from django_conversions.exceptions import InvalidConversion
from django_conversions.normalize import (
    EVENT_NAME_MAX,
    as_recorded,
    clean_text,
    is_uuid,
    json_value,
    normalize_currency,
    normalize_email,
    normalize_event_name,
    normalize_phone,
    normalize_scan_session_id,
    phone_country_code,
    round_money,
    sha256_hex,
    to_decimal,
)

# The normalisation rules are imported from here by name too (the public API's home).
__all__ = [
    "CONSENT_VALUES",
    "EVENT_NAME_MAX",
    "PROPERTIES_MAX_BYTES",
    "Conversion",
    "Customer",
    "LineItem",
    "is_uuid",
    "normalize_currency",
    "normalize_email",
    "normalize_event_name",
    "normalize_phone",
    "normalize_scan_session_id",
    "properties_size",
    "round_money",
    "sha256_hex",
    "to_decimal",
]

CONSENT_VALUES = ("granted", "denied", "pending")
#: The most ``Conversion.properties`` may take, as ``properties_size()`` counts it. The source
#: is Scanova's documented limit ("at most 10 KB serialised", docs/providers/scanova.md), the
#: only one any provider states; it is read the strictest way we can think of (10,000 bytes,
#: counted as below), so any counting on their side fits. The REST API refuses larger
#: properties with this same rule, and the sandbox enforces it.
PROPERTIES_MAX_BYTES = 10_000
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")

# The window an event time must fall in when a conversion is recorded (Conversion.check_time):
# providers attribute conversions to scans of the last weeks at most; a clock may run a little
# ahead. A year 1900 or 2999 is a bug in the caller, refused with the field named.
OCCURRED_AT_MAX_AGE = timedelta(days=90)
OCCURRED_AT_MAX_AHEAD = timedelta(minutes=15)


def properties_size(properties: Mapping[str, Any]) -> int:
    """The serialised size ``PROPERTIES_MAX_BYTES`` limits: the properties as Python's
    ``json.dumps`` writes them by default (ASCII escapes, ``", "`` and ``": "`` separators),
    the largest common serialisation; being ASCII, its length is its size in bytes."""
    return len(json.dumps(properties))


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
            object.__setattr__(self, name, clean_text(getattr(self, name), f"customer.{name}"))
        for name in ("email_sha256", "phone_sha256"):
            digest = getattr(self, name)
            if digest is not None:
                digest = str(digest).strip().lower()
                if not _SHA256_HEX.fullmatch(digest):
                    raise InvalidConversion(f"customer.{name}", "must be 64 hex digits (SHA-256)")
                object.__setattr__(self, name, digest)
        email = clean_text(self.email, "customer.email", 254)
        object.__setattr__(self, "email", normalize_email(email) if email else None)
        phone = clean_text(self.phone, "customer.phone", 32)
        phone = normalize_phone(phone, phone_country_code()) if phone else None
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

        The values are this customer's, already validated and normalised, so the copy is not
        normalised again (it could only come out the same, or differ by a setting changed
        since).
        """
        values = {name: getattr(self, name) for name in personal}
        for name in hashed:
            if name not in values:
                values[f"{name}_sha256"] = getattr(self, f"{name}_hash")
        present = {k: v for k, v in values.items() if v}
        return _as_stored(Customer, present) if present else None

    def is_empty(self) -> bool:
        return not any(getattr(self, name) for name in _shape(Customer).ordered)


@dataclass(frozen=True)
class LineItem:
    """One order line: the product id as in the provider's product feed, and the quantity."""

    id: str
    quantity: int = 1
    price: Decimal | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        item_id = clean_text(self.id, "items.id", 128)
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
        object.__setattr__(self, "name", clean_text(self.name, "items.name"))


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
        set_(self, "order_id", clean_text(self.order_id, "order_id", 128))
        set_(self, "status", clean_text(self.status, "status", 64))
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
            tuple(c for c in (clean_text(c, "coupons") for c in self.coupons) if c),
        )
        set_(self, "items", tuple(self._line_item(item) for item in self.items))
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
            set_(self, "properties", json_value(self.properties, "properties"))
        if self.occurred_at is not None:
            if not isinstance(self.occurred_at, datetime):
                raise InvalidConversion("occurred_at", "must be a datetime")
            if timezone.is_naive(self.occurred_at):
                set_(self, "occurred_at", timezone.make_aware(self.occurred_at))

    def _line_item(self, item: LineItem | Mapping[str, Any]) -> LineItem:
        if not isinstance(item, LineItem):
            if not isinstance(item, Mapping):
                raise InvalidConversion("items", f"expected LineItem, got {type(item).__name__}")
            item = LineItem(**item)
        if item.price is not None:  # unit prices follow the order's currency like the total
            price = round_money(item.price, self.currency, "items.price")
            if price.as_tuple() != item.price.as_tuple():
                item = dataclasses.replace(item, price=price)
        return item

    def check_time(self, now: datetime | None = None) -> None:
        """Raise ``InvalidConversion`` for an ``occurred_at`` outside the window a conversion
        may be recorded with: at most ``OCCURRED_AT_MAX_AGE`` ago (no provider attributes an
        older one) and at most ``OCCURRED_AT_MAX_AHEAD`` ahead (clocks drift; years do not).

        Checked when a conversion is recorded (``track()``, the order hook, the API), not when
        one is built: a snapshot read back, or a fixture with fixed times, is not recorded now.
        """
        if self.occurred_at is None:
            return
        now = now or timezone.now()
        if self.occurred_at < now - OCCURRED_AT_MAX_AGE:
            raise InvalidConversion(
                "occurred_at",
                f"{self.occurred_at.isoformat()} is more than "
                f"{OCCURRED_AT_MAX_AGE.days} days ago; providers do not attribute it",
            )
        if self.occurred_at > now + OCCURRED_AT_MAX_AHEAD:
            raise InvalidConversion(
                "occurred_at",
                f"{self.occurred_at.isoformat()} is in the future (more than "
                f"{int(OCCURRED_AT_MAX_AHEAD.total_seconds() // 60)} minutes ahead)",
            )

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
        and normalised then, so one is read back as stored, not normalised again: what was
        recorded is what is sent, even if a setting normalisation reads
        (``DEFAULT_PHONE_COUNTRY_CODE``) changed since. What is not such a snapshot (unknown
        or missing fields, an amount that is not a number) raises ``InvalidConversion``.
        """
        if not isinstance(data, Mapping):
            raise InvalidConversion("snapshot", "Conversion is not a mapping")
        values = dict(data)
        try:
            if "customer" in values:
                values["customer"] = _as_stored(Customer, values["customer"])
            values["items"] = tuple(
                _as_stored(LineItem, item, "price") for item in values.get("items", ())
            )
            values["coupons"] = tuple(values.get("coupons", ()))
            if values.get("occurred_at") is not None:
                values["occurred_at"] = parse_datetime(values["occurred_at"])
            conversion = _as_stored(cls, values, "value", "shipping")
        except (TypeError, ValueError, ArithmeticError) as err:
            raise InvalidConversion("snapshot", str(err)) from None
        return conversion

    def replace(self, **changes: Any) -> Conversion:
        return dataclasses.replace(self, **changes)

    def narrowed(self, **changes: Any) -> Conversion:
        """A copy with some fields dropped or reduced to already-valid values, not re-validated.

        For the outbox's per-provider minimisation: the changes only remove data
        (``customer=`` a validated ``Customer`` or None, ``properties=`` a subset or None), so
        nothing can become invalid, and the rest is kept exactly as it was normalised.
        """
        narrowed = copy.copy(self)
        for name, value in changes.items():
            if name not in ("customer", "properties"):
                raise ValueError(f"narrowed() only changes customer and properties, not {name}")
            object.__setattr__(narrowed, name, value)
        return narrowed


_Stored = TypeVar("_Stored")


@dataclasses.dataclass(frozen=True)
class _Shape:
    """What snapshots need to know about one of the dataclasses: its fields and defaults."""

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
    """An instance of one of the dataclasses here from values normalised before (a snapshot,
    or a customer's own fields); the ``money`` fields, stored as exact text, become Decimals.

    Built through the class as any other instance; normalising normalised values gives them
    back unchanged, and ``as_recorded`` keeps a national phone number recorded without a
    country code as it was, whatever the settings say now.
    """
    if not isinstance(values, Mapping):
        raise InvalidConversion("snapshot", f"{klass.__name__} is not a mapping")
    shape = _shape(klass)
    if not shape.names.issuperset(values):
        raise InvalidConversion("snapshot", f"unknown fields {sorted(set(values) - shape.names)}")
    if not values.keys() >= shape.required:
        missing = sorted(shape.required - set(values))
        raise InvalidConversion("snapshot", f"{klass.__name__} without {', '.join(missing)}")
    fields = dict(values)
    for name in money:
        if fields.get(name) is not None:
            fields[name] = Decimal(fields[name])
    token = as_recorded.set(True)
    try:
        return klass(**fields)
    finally:
        as_recorded.reset(token)


def _item_snapshot(item: LineItem) -> dict[str, Any]:
    data: dict[str, Any] = {"id": item.id, "quantity": item.quantity}
    if item.price is not None:
        data["price"] = str(item.price)
    if item.name is not None:
        data["name"] = item.name
    return data
