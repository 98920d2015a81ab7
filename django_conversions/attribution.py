"""Attribution: the visit an order came from, attached to the order.

A QR scan lands the visitor on the shop with ``?scnv=<uuid>``; ``ScanSessionMiddleware`` keeps
the id in the visitor's session, and the storefront's consent banner keeps the visitor's
consent there too (``scan_session.remember_consent``, or the REST API's scan-session
endpoint). Scanova needs the scan id and VTmarketing the consent, but the adapter sees only the
order. This module carries them over, as an ``OrderAttribution`` row linked to the order:

* **Automatically**, when the order is created in the visitor's request: the middleware makes
  the request the current visit for as long as it runs (``visiting()``), and an order of
  ``CONVERSIONS["ORDER_MODEL"]`` created meanwhile is attributed in its own transaction, before
  its conversion is built. A checkout that creates the order in the request needs no code.
* **With one call** where the order is created elsewhere (a payment provider's webhook, a
  background job): take ``Visit.from_request(request).as_dict()`` while the visitor is there,
  carry it along (the payment's metadata, a column of your checkout session), and call
  ``attribute_order(visit, order)`` once the order exists. ``attribute_order(request, order)``
  works too, in any view that has the visitor's request.

The default adapter reads the attribution when the order itself carries neither value
(``OrderAdapter.get_scan_session_id`` / ``get_consent``). Attributions are personal data: they
are deleted with the customer's events by ``conversions_forget`` and after
``SCRUB_AFTER_DAYS`` by ``conversions_purge`` (``privacy``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from django.contrib.contenttypes.models import ContentType
from django.db import IntegrityError, models, router, transaction
from django.http import HttpRequest

from django_conversions.conversion import CONSENT_VALUES
from django_conversions.models import OrderAttribution
from django_conversions.refresh import mark_for_rebuild
from django_conversions.scan_session import get_consent, get_scan_session, parse_scan_session_id
from django_conversions.tasks import enqueue_delivery

__all__ = [
    "Visit",
    "attach_current_visit",
    "attribute_order",
    "current_visit",
    "forget_attribution",
    "visiting",
]

logger = logging.getLogger("django_conversions")

# The request being answered, while ScanSessionMiddleware runs it: its session is read only when
# an order is created (most requests create none).
_current_request: ContextVar[HttpRequest | None] = ContextVar(
    "django_conversions_visit", default=None
)


@dataclass(frozen=True)
class Visit:
    """What a visit tells about the conversions it leads to: the QR scan it began with and the
    visitor's tracking consent (``granted``, ``denied``, ``pending``; None when unknown)."""

    scan_session_id: str | None = None
    consent: str | None = None

    def __post_init__(self) -> None:
        if self.scan_session_id:
            object.__setattr__(self, "scan_session_id", parse_scan_session_id(self.scan_session_id))
        else:
            object.__setattr__(self, "scan_session_id", None)
        consent = str(self.consent).strip().lower() if self.consent else None
        if consent is not None and consent not in CONSENT_VALUES:
            raise ValueError(f"consent must be one of {', '.join(CONSENT_VALUES)}")
        object.__setattr__(self, "consent", consent)

    @classmethod
    def from_request(cls, request: HttpRequest) -> Visit:
        """The visit kept in this request's session (see ``scan_session``)."""
        return cls(get_scan_session(request), get_consent(request))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Visit:
        """The visit ``as_dict()`` gave, e.g. read back from a payment's metadata."""
        return cls(data.get("scan_session_id"), data.get("consent"))

    def as_dict(self) -> dict[str, str]:
        """The visit as plain strings, to carry where the order is created later."""
        values = {"scan_session_id": self.scan_session_id, "consent": self.consent}
        return {name: value for name, value in values.items() if value}

    def is_empty(self) -> bool:
        return self.scan_session_id is None and self.consent is None


@contextmanager
def visiting(request: HttpRequest) -> Iterator[None]:
    """Make ``request`` the current visit while the block runs (``ScanSessionMiddleware``)."""
    token = _current_request.set(request)
    try:
        yield
    finally:
        _current_request.reset(token)


def current_visit() -> Visit | None:
    """The visit of the request being answered, if the middleware runs it."""
    request = _current_request.get()
    return None if request is None else Visit.from_request(request)


def attach_current_visit(order: models.Model) -> OrderAttribution | None:
    """Attribute a newly created order to the current visit (the order receiver calls this).

    Nothing is written outside a visit or for a visit without a scan id or consent.
    """
    visit = current_visit()
    if visit is None or visit.is_empty():
        return None
    return _store(visit, order, new_order=True)


def attribute_order(
    visit: Visit | HttpRequest | Mapping[str, Any], order: models.Model
) -> OrderAttribution | None:
    """Attribute ``order`` to ``visit``: a ``Visit``, its ``as_dict()``, or the visitor's
    request. Returns the stored attribution (None for an empty visit: nothing to keep).

    Call it in the transaction that creates the order, before the order turns paid, so its
    events are recorded with the visit. Called later, it replaces the order's attribution and
    marks the order's unsent events, which delivery rebuilds once the transaction commits (a
    skipped event the visit makes eligible, e.g. one waiting for consent or a scan id, is then
    sent).
    """
    if isinstance(visit, HttpRequest):
        visit = Visit.from_request(visit)
    elif not isinstance(visit, Visit):
        visit = Visit.from_dict(visit)
    if visit.is_empty():
        return None
    attribution = _store(visit, order)
    marked = mark_for_rebuild(order)
    if marked:
        # Delivery rebuilds them from the committed order, then sends what is eligible.
        transaction.on_commit(
            lambda: enqueue_delivery(marked, rebuild_ids=marked),
            using=router.db_for_write(OrderAttribution),
            robust=True,
        )
    return attribution


def _store(visit: Visit, order: models.Model, *, new_order: bool = False) -> OrderAttribution:
    """Keep ``visit`` as the order's attribution, replacing any it had.

    A newly created order has none yet: one INSERT in a savepoint, without the read and the two
    savepoints more that replacing takes. Should one be there after all (a reused primary key
    whose order was deleted without its attribution), it is replaced.
    """
    using = router.db_for_write(OrderAttribution)
    types = ContentType.objects.db_manager(using)
    key: dict[str, Any] = {
        "order_content_type": types.get_for_model(order, for_concrete_model=False),
        "order_object_id": str(order.pk),
    }
    values = {"scan_session_id": visit.scan_session_id or "", "consent": visit.consent or ""}
    attributions = OrderAttribution.objects.using(using)
    if new_order:
        try:
            with transaction.atomic(using=using):  # a failure undoes this alone
                return attributions.create(**key, **values)
        except IntegrityError:
            pass
    with transaction.atomic(using=using):  # a failure undoes this alone, not the caller's work
        attribution, _ = attributions.update_or_create(**key, defaults=values)
    return attribution


def forget_attribution(order: models.Model) -> int:
    """Delete the order's attribution; returns how many rows went."""
    deleted, _ = OrderAttribution.objects.for_order(order).delete()
    return deleted
