"""``manage.py check`` finds each Oscar setup that would send nothing, or the wrong thing."""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings
from django.core.checks import run_checks
from django.test import override_settings

from django_conversions.contrib.oscar.adapters import OscarOrderAdapter
from django_conversions.contrib.oscar.checks import check_oscar_setup

ADAPTER = "django_conversions.contrib.oscar.adapters.OscarOrderAdapter"
APP = "django_conversions.contrib.oscar"


class ShopAdapter(OscarOrderAdapter):
    pass


def ids(messages: list[Any]) -> list[str]:
    return sorted(
        m.id
        for m in messages
        if m.id.startswith(("conversions_oscar.", "conversions.W002", "conversions.W03"))
    )


def only(messages: list[Any], check_id: str) -> Any:
    [message] = [m for m in messages if m.id == check_id]
    return message


@pytest.fixture
def check(conversions):
    def run(**values: Any) -> list[Any]:
        with conversions(**values):
            return run_checks()

    return run


def test_the_documented_settings_pass(db, check):
    assert ids(check()) == []


def test_a_subclass_of_the_adapter_passes(db, check):
    assert ids(check(ORDER_ADAPTER=f"{__name__}.ShopAdapter")) == []


def test_e001_order_model_is_oscars_order(db, check):
    message = only(check(ORDER_MODEL="order.Order"), "conversions_oscar.E001")

    assert "before its lines exist" in message.msg
    assert "Remove ORDER_MODEL" in message.hint


def test_e002_the_default_adapter_with_oscar(db, check):
    message = only(
        check(ORDER_ADAPTER="django_conversions.adapters.OrderAdapter"), "conversions_oscar.E002"
    )

    assert ADAPTER in message.hint


@pytest.mark.parametrize("value", [[], (), 5, ["Paid", ""], [None]])
def test_e003_paid_statuses_not_a_list_of_names(db, check, value):
    message = only(check(OSCAR_PAID_STATUSES=value), "conversions_oscar.E003")

    assert "None to track orders when they are placed" in message.hint


def test_e004_a_status_the_pipeline_does_not_have(db, check):
    message = only(check(OSCAR_PAID_STATUSES=["paid", "Payed"]), "conversions_oscar.E004")

    assert "'Payed'" in message.msg and "'paid'" not in message.msg
    assert "'Pending', 'Paid', 'Complete', 'Cancelled'" in message.msg


def test_statuses_match_the_pipeline_in_any_case(db, check):
    assert ids(check(OSCAR_PAID_STATUSES=["PAID", "complete"])) == []
    assert ids(check(OSCAR_PAID_STATUSES="Paid")) == []


def test_a_status_only_reached_as_a_target_is_known(db, check):
    # "Refunded" has no transitions of its own, so it is no key of the pipeline
    pipeline = {"Pending": ("Paid",), "Paid": ("Refunded",)}
    with override_settings(OSCAR_ORDER_STATUS_PIPELINE=pipeline):
        assert ids(check(OSCAR_PAID_STATUSES=["Refunded"])) == []


def test_e004_with_oscars_default_empty_pipeline(db, check):
    with override_settings(OSCAR_ORDER_STATUS_PIPELINE={}):
        message = only(check(OSCAR_PAID_STATUSES=["Paid"]), "conversions_oscar.E004")

    assert "OSCAR_ORDER_STATUS_PIPELINE is empty" in message.msg


def test_w001_a_status_no_transition_reaches(db, check):
    pipeline = {"Pending": ("Paid",), "Paid": (), "Refunded": ()}
    with override_settings(OSCAR_ORDER_STATUS_PIPELINE=pipeline):
        message = only(check(OSCAR_PAID_STATUSES=["Paid", "Refunded"]), "conversions_oscar.W001")

    assert "'Refunded'" in message.msg and "'Paid'" not in message.msg


def test_w002_settings_only_the_default_adapter_reads(db, check):
    message = only(check(ORDER_PAID_STATUSES=["Paid"]), "conversions_oscar.W002")

    assert "ORDER_PAID_STATUSES" in message.msg
    assert "OSCAR_PAID_STATUSES" in message.hint


def test_e005_oscars_order_app_missing():
    apps_without_oscar = ["django.contrib.contenttypes", "django.contrib.auth", APP]
    with override_settings(INSTALLED_APPS=apps_without_oscar):
        message = only(check_oscar_setup(), "conversions_oscar.E005")

    assert "Oscar's order app is not" in message.msg


def test_w002_the_oscar_adapter_without_the_contrib_app(db, check):
    # nothing would track Oscar's orders: the core warning says what to add
    without_app = [app for app in settings.INSTALLED_APPS if app != APP]
    with override_settings(INSTALLED_APPS=without_app):
        message = only(check(), "conversions.W002")

    assert APP in message.hint


def test_w031_scanova_without_the_scan_session_middleware(db, check, scanova_site):
    # nothing would give Oscar's orders a scan id: the core check, run for Oscar's order
    middleware = [m for m in settings.MIDDLEWARE if "ScanSession" not in m]
    with override_settings(MIDDLEWARE=middleware):
        message = only(check(), "conversions.W031")

    assert "order.Order" in message.msg
    assert "ScanSessionMiddleware" in message.hint
    assert "conversions.W031" not in [m.id for m in check()]


def test_without_order_model_the_oscar_app_needs_no_w002(db, check):
    # the core warning "no order is tracked automatically" is not raised: Oscar's signals are
    assert "conversions.W002" not in ids(check())


def test_w003_a_product_model_the_oscar_product_adapter_does_not_read(db, check):
    message = only(check(PRODUCT_MODEL="catalogue.Product"), "conversions_oscar.W003")

    assert "'catalogue.Product' is not read" in message.msg


def test_w004_oscars_product_with_the_default_product_adapter(db, check):
    messages = check(
        PRODUCT_MODEL="catalogue.Product",
        PRODUCT_ADAPTER="django_conversions.products.ProductAdapter",
    )
    message = only(messages, "conversions_oscar.W004")

    assert "stock records" in message.msg
    assert "OscarProductAdapter" in message.hint
