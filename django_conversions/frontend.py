"""The providers' front-end scripts, rendered for the visitor's browser when consent allows.

VTmarketing's integration asks for "a tracking script on the front-end" without saying which
script or how it is set up; Scanova's ``consent`` is "propagated from browser-side tracking".
So nothing about a script is guessed in code: each tracking site holds its script URL, the
account id the script expects and an optional snippet, all edited in the admin, and this module
only decides whether they run (the visitor's consent, under the provider's consent policy, the
same as the server-side events) and writes them out with the page's CSP nonce.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from string import Template
from typing import Any

from django.core.checks import Error
from django.db import DatabaseError, router
from django.http import HttpRequest
from django.template import Context
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

from django_conversions.adapters import get_adapter
from django_conversions.consent import policy_for
from django_conversions.models import TrackingSite
from django_conversions.scan_session import get_consent
from django_conversions.scripts import script_url_problem
from django_conversions.sites import active_sites

# Characters that could end a <script> element or open HTML inside it, written as JSON escapes
# (what django.utils.html.json_script does).
_SCRIPT_ESCAPES = {ord("<"): "\\u003C", ord(">"): "\\u003E", ord("&"): "\\u0026"}


@dataclass(frozen=True)
class SiteScript:
    provider: str
    url: str
    account_id: str
    snippet: str


def site_scripts() -> list[SiteScript]:
    """The front-end scripts of the active sites, from the process's short-lived site list."""
    scripts = []
    for site in active_sites(router.db_for_read(TrackingSite)):
        url = site.script_url.strip()
        if url and script_url_problem(url):
            url = ""  # saved before the rule, or settings changed since: never load it
        if url or site.script_snippet.strip():
            scripts.append(
                SiteScript(site.provider, url, site.script_account_id, site.script_snippet)
            )
    return scripts


def visitor_consent(request: HttpRequest | None) -> str | None:
    """The consent the server-side events of this visitor would carry (unknown without a
    session)."""
    if request is None or not hasattr(request, "session"):
        return None
    return get_consent(request)


def allowed_scripts(request: HttpRequest | None) -> list[SiteScript]:
    consent = visitor_consent(request)
    return [s for s in site_scripts() if policy_for(s.provider).allows_browser_script(consent)]


def csp_nonce(context: Context) -> str | None:
    """The page's CSP nonce, read the documented way of whichever CSP is in use: Django 6's
    ``csp_nonce`` template variable (its ``csp`` context processor), or django-csp's
    ``request.csp_nonce``. None when the page has none."""
    nonce = context.get("csp_nonce")
    if nonce is None:
        request = context.get("request")
        nonce = getattr(request, "csp_nonce", None) if request is not None else None
    # Both are lazy, and Django's is falsy until read: str() generates it, which is also what
    # puts it in the response's header.
    return str(nonce) or None if nonce is not None else None


def js_value(value: Any) -> str:
    """``value`` as a JavaScript literal that can't end the script element."""
    return json.dumps(value).translate(_SCRIPT_ESCAPES)


def render_scripts(
    scripts: list[SiteScript], nonce: str | None, order_id: str | None = None
) -> SafeString:
    nonce_attr = format_html(' nonce="{}"', nonce) if nonce else ""
    parts = []
    for script in scripts:
        if script.url:
            parts.append(
                format_html(
                    '<script async src="{}" data-conversions-provider="{}" '
                    'data-account-id="{}"{}></script>',
                    script.url,
                    script.provider,
                    script.account_id,
                    nonce_attr,
                )
            )
        if script.snippet.strip():
            code = Template(script.snippet).safe_substitute(
                account_id=js_value(script.account_id or None), order_id=js_value(order_id)
            )
            # Written by a trusted admin, like any snippet pasted into a template; only a
            # closing tag inside it is neutralised so the page stays well-formed.
            code = code.replace("</", "<\\/")
            parts.append(
                format_html(
                    '<script data-conversions-provider="{}"{}>{}</script>',
                    script.provider,
                    nonce_attr,
                    mark_safe(code),
                )
            )
    return mark_safe("\n".join(parts))


def order_id_for_browser(order: Any) -> str | None:
    """The order id the server sends for ``order``: the order adapter's ``get_order_id``."""
    return get_adapter().get_order_id(order)


def render_order(order: Any, nonce: str | None) -> SafeString:
    """A JSON data block with the order id, for a provider's script on the thank-you page:
    ``JSON.parse(document.getElementById("conversions-order").textContent).order_id``."""
    data = js_value({"order_id": order_id_for_browser(order)})
    nonce_attr = format_html(' nonce="{}"', nonce) if nonce else ""
    return format_html(
        '<script id="conversions-order" type="application/json"{}>{}</script>',
        nonce_attr,
        mark_safe(data),
    )


def check_site_scripts(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """Stored sites whose script URL may not be loaded (skipped before migrate)."""
    try:
        sites = list(TrackingSite.objects.exclude(script_url=""))
    except DatabaseError:
        return []
    errors = []
    for site in sites:
        problem = script_url_problem(site.script_url)
        if problem:
            errors.append(
                Error(
                    f"Tracking site {site.name!r}: {problem}; its script is not rendered.",
                    hint="Edit the site's front-end script URL in the admin.",
                    obj=site,
                    id="conversions.E054",
                )
            )
    return errors
