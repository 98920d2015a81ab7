"""Checks of how the shop is wired (django_conversions.order_checks): each misconfiguration
that would send nothing or the wrong thing is an error or warning naming what to fix; a correct
shop is silent. And the runtime rules they guard: a missing status field tracks nothing, paid
statuses match whatever their case."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.conf import settings
from django.core.checks import Error, Warning, run_checks
from django.test import override_settings
from django.utils import timezone

from django_conversions.adapters import OrderAdapter, get_adapter
from django_conversions.models import ConversionEvent
from django_conversions.order_checks import check_order_setup
from django_conversions.outbox import reconcile
from tests.testapp.models import Order

GOOD_KEY = "FWy1bLl2Ou0H6dkejRys2oRrqzIuK56OTdRWaJHiJfE="
SESSION = "django.contrib.sessions.middleware.SessionMiddleware"
SCAN = "django_conversions.middleware.ScanSessionMiddleware"
WITHOUT_SESSION = [m for m in settings.MIDDLEWARE if m != SESSION]


class TotalAdapter(OrderAdapter):
    """A shop whose order total is elsewhere, told through the adapter."""

    VALUE_ATTRS = ("sku",)


class ValueAdapter(OrderAdapter):
    def get_value(self, order: Any) -> Any:
        return Decimal("1")


class StatusAdapter(OrderAdapter):
    def should_track(self, order: Any, *, created: bool) -> bool:
        return created


def run(middleware: list[str] | None = None, **values: Any) -> list[Any]:
    conversions = {"ORDER_MODEL": "testapp.Order", "ENCRYPTION_KEYS": [GOOD_KEY], **values}
    with override_settings(
        CONVERSIONS=conversions, MIDDLEWARE=middleware or list(settings.MIDDLEWARE)
    ):
        return check_order_setup()


def ids(messages: list[Any]) -> list[str]:
    return sorted(m.id for m in messages)


def only(messages: list[Any], check_id: str) -> Any:
    found = [m for m in messages if m.id == check_id]
    assert len(found) == 1, [f"{m.id}: {m.msg}" for m in messages]
    return found[0]


def test_a_correct_shop_is_silent(scanova_site, vt_site):
    assert run() == []
    assert run(middleware=[*settings.MIDDLEWARE, SCAN]) == []


# --- the order model --------------------------------------------------------------------


def test_e030_a_status_field_the_order_lacks(db):
    # when
    message = only(run(ORDER_STATUS_FIELD="state"), "conversions.E030")
    # then
    assert isinstance(message, Error)
    assert "'state'" in message.msg and "testapp.Order" in message.msg
    assert "None" in message.hint


def test_e030_is_silent_for_none_and_for_an_adapter_deciding_itself(db):
    assert run(ORDER_STATUS_FIELD=None) == []
    assert (
        run(ORDER_STATUS_FIELD="state", ORDER_ADAPTER="tests.test_order_checks.StatusAdapter") == []
    )


def test_e031_an_items_relation_the_order_lacks(db):
    # when
    message = only(run(ORDER_ITEMS_RELATION="lines"), "conversions.E031")
    # then
    assert "'lines'" in message.msg and "without its items" in message.msg
    assert run(ORDER_ITEMS_RELATION=None) == []


def test_w030_no_attribute_holds_the_orders_total(db):
    # when: an order model with none of the value names (Product: sku, name)
    messages = run(
        ORDER_MODEL="testapp.Product", ORDER_STATUS_FIELD=None, ORDER_ITEMS_RELATION=None
    )
    # then
    message = only(messages, "conversions.W030")
    assert isinstance(message, Warning)
    assert "total" in message.msg and "VALUE_ATTRS" in message.hint
    for adapter in ("TotalAdapter", "ValueAdapter"):
        path = f"tests.test_order_checks.{adapter}"
        assert "conversions.W030" not in ids(
            run(
                ORDER_MODEL="testapp.Product",
                ORDER_STATUS_FIELD=None,
                ORDER_ITEMS_RELATION=None,
                ORDER_ADAPTER=path,
            )
        )


# --- the middleware ---------------------------------------------------------------------


def test_e032_scan_middleware_before_the_session_middleware(db):
    # given
    before = [SCAN, *settings.MIDDLEWARE]
    # when
    message = only(run(middleware=before), "conversions.E032")
    # then
    assert "before" in message.msg and "server error" in message.msg
    assert f"'{SCAN}' after '{SESSION}'" in message.hint


def test_e032_scan_middleware_without_sessions(db):
    message = only(run(middleware=[*WITHOUT_SESSION, SCAN]), "conversions.E032")
    assert "without" in message.msg


def test_e032_is_what_a_qr_visitor_would_otherwise_meet(db, client):
    # given: the misconfiguration E032 names; then: a landing is a server error
    misordered = override_settings(MIDDLEWARE=[SCAN, *settings.MIDDLEWARE])
    with misordered, pytest.raises(Exception, match="SessionMiddleware"):
        client.get("/admin/login/?scnv=550e8400-e29b-41d4-a716-446655440000")


# --- sites that need what nothing gives -------------------------------------------------

PRODUCT_SHOP = {
    "ORDER_MODEL": "testapp.Product",
    "ORDER_STATUS_FIELD": None,
    "ORDER_ITEMS_RELATION": None,
    "ORDER_ADAPTER": "tests.test_order_checks.ValueAdapter",
}


def test_w031_w032_sites_needing_a_scan_id_or_consent_nothing_provides(scanova_site, vt_site):
    # when: an order model without scan id or consent attributes, and no middleware
    messages = run(**PRODUCT_SHOP)
    # then
    assert ids(messages) == ["conversions.W031", "conversions.W032"]
    scan = only(messages, "conversions.W031")
    assert "'scanova site' (scanova) needs a scan session id" in scan.msg
    assert "ScanSessionMiddleware" in scan.hint and "attribute_order" in scan.hint
    consent = only(messages, "conversions.W032")
    assert "consent 'granted'" in consent.msg and "CONSENT_POLICY" in consent.hint


def test_w031_w032_are_silent_with_the_middleware_a_policy_or_an_inactive_site(
    scanova_site, vt_site
):
    assert run(middleware=[*settings.MIDDLEWARE, SCAN], **PRODUCT_SHOP) == []
    waived = {"vtmarketing": {"requires_consent": False}}
    assert ids(run(CONSENT_POLICY=waived, **PRODUCT_SHOP)) == ["conversions.W031"]
    scanova_site.is_active = False
    scanova_site.save()
    assert ids(run(CONSENT_POLICY=waived, **PRODUCT_SHOP)) == []


def test_the_checks_run_with_manage_py_check(db):
    # given
    with override_settings(CONVERSIONS={**settings.CONVERSIONS, "ORDER_STATUS_FIELD": "state"}):
        # when
        messages = run_checks()
    # then
    assert "conversions.E030" in ids(messages)


# --- the runtime rules ------------------------------------------------------------------


def test_a_missing_status_field_tracks_nothing_not_every_order(scanova_site):
    # given
    with override_settings(CONVERSIONS={**settings.CONVERSIONS, "ORDER_STATUS_FIELD": "state"}):
        # when: a cancelled order is created
        Order.objects.create(number="C-1", status="cancelled", total=Decimal("99"))
    # then
    assert not ConversionEvent.objects.exists()


def test_status_field_none_tracks_orders_when_they_are_created(scanova_site):
    with override_settings(CONVERSIONS={**settings.CONVERSIONS, "ORDER_STATUS_FIELD": None}):
        Order.objects.create(number="N-1", status="new", total=Decimal("5"))
    assert ConversionEvent.objects.count() == 1


@pytest.mark.parametrize("status", ["Paid", "COMPLETE", " paid "])
def test_paid_statuses_match_whatever_their_case(scanova_site, status):
    # when
    Order.objects.create(number="P-1", status=status, total=Decimal("5"))
    # then
    assert ConversionEvent.objects.count() == 1


def test_reconciliation_finds_paid_orders_whatever_their_case(scanova_site):
    # given: paid orders whose events were lost
    for n, status in enumerate(["Paid", "Complete", "Cancelled"]):
        Order.objects.create(number=f"R-{n}", status="new", total=Decimal("5"))
        Order.objects.filter(number=f"R-{n}").update(status=status)
    since = timezone.now() - timedelta(hours=1)
    # when
    found = list(get_adapter().conversions_since(since))
    recorded = reconcile()
    # then
    assert sorted(o.status for o in found) == ["Complete", "Paid"]
    assert recorded == 2
