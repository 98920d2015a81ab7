"""The front-end scripts: rendered for active sites exactly when the visitor's consent allows
(the provider's consent policy, as for the server-side events), with the page's CSP nonce; the
thank-you page's order id is the one the server sends."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from django.conf import settings
from django.contrib.sessions.backends.db import SessionStore
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.template import Context, RequestContext, Template
from django.test import Client, RequestFactory, override_settings
from django.urls import include, path

from django_conversions.frontend import check_site_scripts
from django_conversions.models import ConversionEvent, TrackingSite
from django_conversions.scan_session import remember_consent
from django_conversions.sites import clear_cache
from tests.testapp.models import Order

try:  # Django 6.0 has a CSP of its own
    from django.middleware.csp import ContentSecurityPolicyMiddleware
    from django.utils.csp import CSP
except ImportError:
    ContentSecurityPolicyMiddleware = None

pytestmark = pytest.mark.django_db

SCRIPTS = Template("{% load conversions %}{% conversions_scripts %}")
VT_SCRIPT = "https://cdn.vt.example/tracker.js"
SCANOVA_SCRIPT = "https://cdn.scanova.example/s.js"


def conversions(**extra: Any) -> Any:
    return override_settings(CONVERSIONS={**settings.CONVERSIONS, **extra})


def visitor(consent: str | None) -> HttpRequest:
    request = RequestFactory().get("/")
    request.session = SessionStore()
    if consent is not None:
        remember_consent(request, consent)
    return request


def page(consent: str | None, template: Template = SCRIPTS, **context: Any) -> str:
    request = visitor(consent)
    return template.render(Context({"request": request, **context}))


@pytest.fixture
def sites(make_site: Callable[..., TrackingSite]) -> tuple[TrackingSite, TrackingSite]:
    vt = make_site("vtmarketing", script_url=VT_SCRIPT, script_account_id="acc-42")
    scanova = make_site("scanova", script_url=SCANOVA_SCRIPT)
    clear_cache()
    return vt, scanova


@pytest.mark.parametrize(
    ("consent", "expected"),
    [
        ("granted", {VT_SCRIPT, SCANOVA_SCRIPT}),
        (None, {SCANOVA_SCRIPT}),  # VTmarketing needs consent; Scanova only not a refusal
        ("pending", set()),
        ("denied", set()),
    ],
)
@pytest.mark.usefixtures("sites")
def test_scripts_render_exactly_when_the_consent_policy_allows(
    consent: str | None, expected: set[str]
) -> None:
    html = page(consent)
    assert set(re.findall(r'src="([^"]+)"', html)) == expected


@pytest.mark.usefixtures("sites")
def test_the_policy_is_the_one_configured_for_the_server_events() -> None:
    with conversions(CONSENT_POLICY={"scanova": {"identifiers_with": ["granted"]}}):
        assert "src=" not in page(None)
        assert SCANOVA_SCRIPT in page("granted")


def test_the_script_tag_carries_the_account_id(sites: Any) -> None:
    html = page("granted")
    assert (
        f'<script async src="{VT_SCRIPT}" data-conversions-provider="vtmarketing" '
        'data-account-id="acc-42"></script>'
    ) in html


def test_inactive_sites_render_nothing(sites: tuple[TrackingSite, TrackingSite]) -> None:
    for site in sites:
        site.is_active = False
        site.save()
    assert page("granted") == ""


def test_without_a_session_consent_is_unknown(sites: Any) -> None:
    html = SCRIPTS.render(Context({"request": RequestFactory().get("/")}))
    assert VT_SCRIPT not in html and SCANOVA_SCRIPT in html


def test_an_insecure_script_url_is_never_rendered(make_site: Callable[..., TrackingSite]) -> None:
    site = make_site("vtmarketing", script_url="http://cdn.vt.example/t.js")
    clear_cache()
    with conversions(ALLOW_INSECURE_ENDPOINTS=False):
        assert page("granted") == ""
        assert [e.id for e in check_site_scripts()] == ["conversions.E054"]
        with pytest.raises(ValidationError, match="script URL uses http"):
            site.full_clean()
    site.script_url = "javascript:alert(1)"
    with pytest.raises(ValidationError, match="only https"):
        site.full_clean()


# --- the snippet ---------------------------------------------------------------------------


def test_a_snippet_gets_the_account_and_order_ids_as_json(
    make_site: Callable[..., TrackingSite],
) -> None:
    make_site(
        "vtmarketing",
        script_account_id='acc"</script>',
        script_snippet="vt('init', $account_id); vt('order', $order_id); // </script>",
    )
    clear_cache()
    order = Order.objects.create(number="T-9", status="new")
    template = Template("{% load conversions %}{% conversions_scripts order=order %}")
    html = page("granted", template, order=order)
    assert html.count("</script>") == 1  # the snippet can't close its element early
    assert 'vt(\'init\', "acc\\"\\u003C/script\\u003E");' in html
    assert "vt('order', \"T-9\");" in html
    assert "vt('order', null);" in page("granted")


# --- CSP nonces ----------------------------------------------------------------------------


def test_the_nonce_of_django_6_csp_is_read_from_the_template_context(sites: Any) -> None:
    html = page("granted", csp_nonce="n0nce-6")
    assert html.count('nonce="n0nce-6"') == 2


def test_the_nonce_of_django_csp_is_read_from_the_request(sites: Any) -> None:
    request = visitor("granted")
    request.csp_nonce = "n0nce-dc"  # type: ignore[attr-defined]  (django-csp sets it)
    html = SCRIPTS.render(Context({"request": request}))
    assert html.count('nonce="n0nce-dc"') == 2


def test_no_nonce_no_attribute(sites: Any) -> None:
    assert "nonce" not in page("granted")


@pytest.mark.skipif(
    ContentSecurityPolicyMiddleware is None, reason="Django's own CSP is new in Django 6.0"
)
def test_django_6_csp_middleware_allows_the_rendered_scripts(sites: Any) -> None:
    # given: Django's CSP middleware with a nonce, and its csp() context processor
    templates = [
        {
            **settings.TEMPLATES[0],
            "OPTIONS": {
                "context_processors": [
                    "django.template.context_processors.request",
                    "django.template.context_processors.csp",
                ]
            },
        }
    ]

    def view(request: HttpRequest) -> HttpResponse:
        # Built here, under the settings below: a template uses its engine's context processors.
        template = Template("{% load conversions %}{% conversions_scripts %}")
        return HttpResponse(template.render(RequestContext(request)))

    request = visitor("granted")
    with override_settings(SECURE_CSP={"script-src": [CSP.SELF, CSP.NONCE]}, TEMPLATES=templates):
        # when
        response = ContentSecurityPolicyMiddleware(view)(request)
    # then: the header's nonce is the one on both script elements
    header = response["Content-Security-Policy"]
    nonce = re.search(r"'nonce-([^']+)'", header)
    assert nonce is not None
    assert response.content.decode().count(f'nonce="{nonce.group(1)}"') == 2


# --- the thank-you page --------------------------------------------------------------------


@pytest.mark.usefixtures("mocked_http")
def test_the_thank_you_tag_gives_the_order_id_the_server_sends(vt_site: TrackingSite) -> None:
    # given: a paid order, recorded for the site
    order = Order.objects.create(
        number="WEB-77",
        status="paid",
        total=Decimal("10"),
        email="buyer@example.com",
        tracking_consent="granted",
    )
    sent = ConversionEvent.objects.get(site=vt_site).snapshot["order_id"]
    # when
    html = Template("{% load conversions %}{% conversions_order order %}").render(
        Context({"order": order, "csp_nonce": "abc"})
    )
    # then
    data = re.fullmatch(
        r'<script id="conversions-order" type="application/json" nonce="abc">(.*)</script>', html
    )
    assert data is not None
    assert json.loads(data.group(1)) == {"order_id": sent} == {"order_id": "WEB-77"}


# --- the admin and the sandbox -------------------------------------------------------------


def test_the_admin_edits_the_script_and_shows_the_feed_url(
    admin_client: Client, vt_site: TrackingSite
) -> None:
    url = f"/admin/django_conversions/trackingsite/{vt_site.pk}/change/"
    with conversions(PRODUCT_MODEL="testapp.CatalogueItem"):
        page_html = admin_client.get(url).content.decode()
    assert 'name="script_url"' in page_html and 'name="script_snippet"' in page_html
    assert f"/conversions/feed/{vt_site.pk}/products.xml" in page_html
    with conversions(ALLOW_INSECURE_ENDPOINTS=False):
        answer = admin_client.post(
            url,
            {
                "name": vt_site.name,
                "provider": "vtmarketing",
                "endpoint_url": vt_site.endpoint_url,
                "is_active": "on",
                "script_url": "http://cdn.vt.example/t.js",
                "api_keys-TOTAL_FORMS": "0",
                "api_keys-INITIAL_FORMS": "0",
            },
        )
    assert answer.status_code == 200
    assert "script URL uses http://" in answer.content.decode()


def test_the_sandbox_serves_a_stand_in_script() -> None:
    urls = type("urls", (), {"urlpatterns": [path("sandbox/", include(SANDBOX))]})
    with override_settings(ROOT_URLCONF=urls):
        response = Client().get("/sandbox/vtmarketing/tracker.js")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/javascript")
    assert b"window.conversionsSandbox" in response.content


SANDBOX = "django_conversions.contrib.sandbox.urls"
