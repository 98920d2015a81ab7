"""The emulated endpoints: Scanova ``/server-events`` (+ ``/batch``) and VTmarketing ``/v1/event/``.

Each request goes through the same steps: switch-board faults (5xx, 429, revoked key, reject),
authentication, body size, JSON, field validation, then storage with de-duplication (the shared
steps are in ``exchange``, the providers' rules in ``rules``).
"""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.db import IntegrityError, transaction
from django.db.models import F
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from django_conversions.contrib.sandbox import rules
from django_conversions.contrib.sandbox.exchange import (
    Answer,
    Refused,
    fault_answer,
    handle,
    parse_json,
    read_body,
)
from django_conversions.contrib.sandbox.models import (
    FaultMode,
    Provider,
    SandboxEvent,
    SandboxFault,
    SandboxKey,
    SandboxRequest,
    SandboxSite,
)

# --- Scanova -------------------------------------------------------------------------------


def scanova_event_ids(request: HttpRequest) -> list[str]:
    """The well-formed event_ids of a single or batch body, whatever the answer was."""
    try:
        body = json.loads(request.body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RequestDataTooBig):
        return []
    if not isinstance(body, dict):
        return []
    events = body.get(rules.ASSUMED_BATCH_KEY)
    events = events if isinstance(events, list) else [body]
    return [
        e["event_id"] for e in events if isinstance(e, dict) and rules.is_uuid(e.get("event_id"))
    ]


def scanova_error(status: int, detail: Any) -> Answer:
    return Answer(status, {"detail": detail})


def scanova_key(request: HttpRequest, fault: SandboxFault | None) -> SandboxKey:
    """The key of the request, or a 401/403/429 answer (documented order: missing, invalid)."""
    supplied = request.headers.get("X-API-Key", "").strip()
    if not supplied:
        raise Refused(scanova_error(401, "X-API-Key header missing"))
    key = (
        SandboxKey.objects.select_related("site")
        .filter(key=supplied, site__provider=Provider.SCANOVA)
        .first()
    )
    if key is None or key.is_revoked or (fault and fault.mode == FaultMode.REVOKED_KEY):
        answer = scanova_error(403, "invalid or revoked API key")
        answer.key = key
        raise Refused(answer)
    _rate_limit(key)
    return key


def _rate_limit(key: SandboxKey) -> None:
    """More than 1,000 requests per minute per key (plus a small grace) is answered 429."""
    since = timezone.now() - timedelta(minutes=1)
    recent = SandboxRequest.objects.filter(api_key=key, received_at__gte=since)
    limit = rules.SCANOVA_RATE_LIMIT_PER_MINUTE + rules.ASSUMED_RATE_BURST_GRACE
    if recent.count() >= limit:
        oldest = recent.order_by("received_at").values_list("received_at", flat=True).first()
        wait = 60 if oldest is None else max(1, int(60 - (timezone.now() - oldest).seconds))
        answer = scanova_error(429, "rate limit exceeded: 1000 requests per minute per API key")
        answer.headers["Retry-After"] = str(wait)
        answer.key = key
        raise Refused(answer)


def _scanova_body(request: HttpRequest, limit: int) -> Any:
    if request.content_type != "application/json":
        raise Refused(scanova_error(400, "Content-Type must be application/json"))
    body = read_body(request, limit, lambda text: scanova_error(413, f"payload too large: {text}"))
    return parse_json(body, lambda text: scanova_error(400, text))


def _site_refusal(key: SandboxKey, site_id: str) -> tuple[int, str] | None:
    """400 for an unknown or inactive site_id, 403 when it is not the key's site."""
    site = SandboxSite.objects.filter(provider=Provider.SCANOVA, site_id=site_id).first()
    if site is None or not site.is_active:
        return 400, "site_id not found or inactive"
    if site.pk != key.site_id:
        return 403, "site_id does not match the API key's site"
    return None


def _store_scanova(key: SandboxKey, event: dict[str, Any]) -> tuple[str, bool]:
    """Keep an accepted event once per event_id; return its id and whether it was a repeat."""
    event_id = event.get("event_id") or str(uuid.uuid4())
    canonical = uuid.UUID(event_id)
    properties = event.get("properties") or {}
    order_id = properties.get("order_id") if isinstance(properties, dict) else None
    try:
        with transaction.atomic():
            SandboxEvent.objects.create(
                provider=Provider.SCANOVA,
                site=key.site,
                event_id=canonical,
                event_name=rules.normalize_event_name(event["event_name"]),
                order_id=str(order_id or "")[:200],
                payload=event,
            )
        return str(canonical), False
    except IntegrityError:
        SandboxEvent.objects.filter(site=key.site, event_id=canonical).update(
            times_received=F("times_received") + 1
        )
        return str(canonical), True


def _scanova_event(request: HttpRequest, fault: SandboxFault | None) -> Answer:
    fault_answer(fault, scanova_error)
    key = scanova_key(request, fault)
    event = _scanova_body(request, rules.ASSUMED_EVENT_MAX_BYTES)
    try:
        errors = rules.scanova_event_errors(event, ["body"])
        if errors:
            raise Refused(scanova_error(422, errors))
        if fault is not None and fault.mode == FaultMode.REJECT:
            raise Refused(scanova_error(fault.status_code, _rejected_detail(fault.status_code)))
        refusal = _site_refusal(key, event["site_id"])
        if refusal:
            raise Refused(scanova_error(*refusal))
        event_id, _ = _store_scanova(key, event)
    except Refused as refused:
        refused.answer.key, refused.answer.site = key, key.site
        raise
    body = {"success": True, "event_id": event_id, "message": "Event received"}
    return Answer(200, body, site=key.site, key=key, event_ids=[event_id])


def _rejected_detail(status: int) -> Any:
    text = "rejected by the sandbox (fault switch 'reject')"
    if status == 422:
        return [{"loc": ["body"], "msg": text, "type": "value_error.sandbox"}]
    return text


def _scanova_batch(request: HttpRequest, fault: SandboxFault | None) -> Answer:
    fault_answer(fault, scanova_error)
    key = scanova_key(request, fault)
    body = _scanova_body(request, rules.ASSUMED_BATCH_MAX_BYTES)
    answer = Answer(200, {}, site=key.site, key=key)
    if not isinstance(body, dict) or not isinstance(body.get(rules.ASSUMED_BATCH_KEY), list):
        missing = [
            {
                "loc": ["body", "events"],
                "msg": "field required (a list of events)",
                "type": "value_error.missing",
            }
        ]
        raise Refused(Answer(422, {"detail": missing}, site=key.site, key=key))
    events = body[rules.ASSUMED_BATCH_KEY]
    if len(events) > rules.ASSUMED_BATCH_MAX_EVENTS:
        answer.status = 413
        answer.body = {
            "detail": f"payload too large: {len(events)} events; at most "
            f"{rules.ASSUMED_BATCH_MAX_EVENTS} per batch"
        }
        raise Refused(answer)
    if not events:
        answer.status = 422
        answer.body = {
            "detail": [
                {
                    "loc": ["body", "events"],
                    "msg": "at least one event",
                    "type": "value_error.list.min_items",
                }
            ]
        }
        raise Refused(answer)
    results = [_batch_item(key, fault, event, index) for index, event in enumerate(events)]
    counts = {s: sum(1 for r in results if r["status"] == s) for s in ("accepted", "duplicate")}
    rejected = len(results) - counts["accepted"] - counts["duplicate"]
    answer.event_ids = [r["event_id"] for r in results if rules.is_uuid(r["event_id"])]
    answer.body = {"success": rejected == 0, "results": results, **counts, "rejected": rejected}
    return answer


def _batch_item(
    key: SandboxKey, fault: SandboxFault | None, event: Any, index: int
) -> dict[str, Any]:
    given = event.get("event_id") if isinstance(event, dict) else None
    errors = rules.scanova_event_errors(event, ["body", "events", index])
    refusal: tuple[int, Any] | None = (422, errors) if errors else None
    if refusal is None and fault is not None and fault.mode == FaultMode.REJECT:
        refusal = (fault.status_code, _rejected_detail(fault.status_code))
    if refusal is None:
        refusal = _site_refusal(key, event["site_id"])
    if refusal is not None:
        return {
            "event_id": given,
            "success": False,
            "status": "rejected",
            "status_code": refusal[0],
            "detail": refusal[1],
        }
    event_id, repeat = _store_scanova(key, event)
    return {"event_id": event_id, "success": True, "status": "duplicate" if repeat else "accepted"}


@csrf_exempt
def scanova_event(request: HttpRequest) -> HttpResponse:
    """``POST /server-events``: one event."""
    return handle(request, Provider.SCANOVA, _scanova_event, scanova_error, scanova_event_ids)


@csrf_exempt
def scanova_batch(request: HttpRequest) -> HttpResponse:
    """``POST /server-events/batch``: ``{"events": [...]}``, one result per event."""
    return handle(request, Provider.SCANOVA, _scanova_batch, scanova_error, scanova_event_ids)


# --- VTmarketing ---------------------------------------------------------------------------


def vt_error(status: int, description: str, message: str = "Request refused") -> Answer:
    return Answer(status, {"errors": [{"message": message, "description": description}]})


def _vt_key(request: HttpRequest, fault: SandboxFault | None) -> SandboxKey:
    supplied = request.headers.get("Authorization", "").strip()
    if not supplied:
        raise Refused(vt_error(401, "Missing Authorization header", "Unauthorized"))
    if " " in supplied:
        raise Refused(
            vt_error(
                401,
                "Authorization must be the raw API key, without a scheme word such as Bearer",
                "Unauthorized",
            )
        )
    key = (
        SandboxKey.objects.select_related("site")
        .filter(key=supplied, site__provider=Provider.VTMARKETING)
        .first()
    )
    revoked = fault is not None and fault.mode == FaultMode.REVOKED_KEY
    if key is None or key.is_revoked or revoked or not key.site.is_active:
        answer = vt_error(403, "Invalid or revoked API key", "Forbidden")
        answer.key = key
        raise Refused(answer)
    return key


def _vt_event(request: HttpRequest, fault: SandboxFault | None) -> Answer:
    fault_answer(fault, vt_error)
    key = _vt_key(request, fault)
    try:
        if request.content_type != "application/json":
            raise Refused(vt_error(400, "Content-Type must be application/json", "Invalid request"))
        raw = read_body(
            request,
            rules.ASSUMED_VT_MAX_BYTES,
            lambda text: vt_error(413, text, "Payload too large"),
        )
        body = parse_json(raw, lambda text: vt_error(400, text, "Invalid request"))
        errors = rules.vtmarketing_errors(body)
        if errors:
            raise Refused(Answer(rules.ASSUMED_VT_BAD_REQUEST, {"errors": errors}))
        if fault is not None and fault.mode == FaultMode.REJECT:
            raise Refused(
                vt_error(
                    fault.status_code,
                    "rejected by the sandbox (fault switch 'reject')",
                    "Event refused",
                )
            )
    except Refused as refused:
        refused.answer.key, refused.answer.site = key, key.site
        raise
    generic = body["event"]["confirmation"]["generic"]
    SandboxEvent.objects.create(
        provider=Provider.VTMARKETING,
        site=key.site,
        event_name="confirmation",
        order_id=str(generic.get("orderId") or "")[:200],
        payload=body,
    )
    results = {"message": "Event created", "email": "Event was created for the specified user"}
    return Answer(200, {"results": results}, site=key.site, key=key)


@csrf_exempt
def vtmarketing_event(request: HttpRequest) -> HttpResponse:
    """``POST /v1/event/``: one order confirmation."""
    return handle(request, Provider.VTMARKETING, _vt_event, vt_error)


# --- front-end stand-in --------------------------------------------------------------------

# What a provider's tracking script would do is not documented; this one only shows that it
# was loaded, with which account id and, on the thank-you page, which order id: a badge in the
# page's corner and an entry in ``window.conversionsSandbox`` (what the browser tests read).
TRACKER_JS = """(function () {
  var script = document.currentScript;
  var provider = script ? script.getAttribute("data-conversions-provider") : "%(provider)s";
  var account = script ? script.getAttribute("data-account-id") : "";
  var data = document.getElementById("conversions-order");
  var order = data ? JSON.parse(data.textContent).order_id : null;
  var seen = {provider: provider, account: account, order: order};
  (window.conversionsSandbox = window.conversionsSandbox || []).push(seen);
  function badge() {
    var note = document.createElement("div");
    note.className = "conversions-sandbox-tracker";
    note.textContent = "%(name)s sandbox script loaded (account " + (account || "-") + ")"
      + (order ? ", order " + order : "");
    note.style.cssText = "position:fixed;right:8px;bottom:8px;padding:4px 8px;"
      + "background:#222;color:#fff;font:12px sans-serif;border-radius:4px;z-index:9999";
    document.body.appendChild(note);
  }
  if (document.body) { badge(); } else { document.addEventListener("DOMContentLoaded", badge); }
})();
"""


def tracker_script(request: HttpRequest, provider: str) -> HttpResponse:
    """``GET /<provider>/tracker.js``: a stand-in for the provider's front-end script."""
    name = Provider(provider).label
    body = TRACKER_JS % {"provider": provider, "name": name}
    response = HttpResponse(body, content_type="text/javascript; charset=utf-8")
    response["Cache-Control"] = "no-store"
    return response
