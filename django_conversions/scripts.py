"""Where a site's front-end script may be loaded from.

The visitor's browser loads it, on every page of the shop: over ``https`` only, so nobody on
the way can swap it (``http`` only with ``CONVERSIONS["ALLOW_INSECURE_ENDPOINTS"]``, for local
sandboxes). Private addresses are not refused here, unlike endpoints: the server never fetches
the script, so it can't be turned against the server's network.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from django_conversions.conf import conversions_settings


def script_url_problem(url: str) -> str | None:
    """Why the script URL may not be used, or None."""
    text = url.strip()
    if not text:
        return None
    try:
        parts = urlsplit(text)
    except ValueError:
        return "the script URL can't be read"
    scheme = parts.scheme.lower()
    if scheme == "http" and not conversions_settings.ALLOW_INSECURE_ENDPOINTS:
        return (
            "the script URL uses http://; use https:// or set "
            "CONVERSIONS['ALLOW_INSECURE_ENDPOINTS'] = True (local sandboxes only)"
        )
    if scheme not in ("https", "http"):
        shown = f"{scheme}://" if scheme else "no scheme"
        return f"the script URL uses {shown}; only https:// is allowed"
    if not parts.hostname:
        return "the script URL has no host"
    return None
