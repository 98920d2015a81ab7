"""The steps every emulated endpoint shares: faults from the switch-board, reading and parsing
the body, and ``handle()``, which runs an endpoint, records the exchange and answers.

The request and its answer are recorded *before* a "slow" fault delays the answer, so a client
that times out has still been received, exactly like a real provider that was slow to reply.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.db.models import F
from django.http import HttpRequest, HttpResponse, JsonResponse

from django_conversions.contrib.sandbox.models import (
    FaultMode,
    SandboxFault,
    SandboxKey,
    SandboxRequest,
    SandboxSite,
)
from django_conversions.fields import mask_secret

SECRET_HEADERS = frozenset({"x-api-key", "authorization"})
RECORDED_BODY_LIMIT = 64 * 1024


@dataclass
class Answer:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    site: SandboxSite | None = None
    key: SandboxKey | None = None
    event_ids: list[str] = field(default_factory=list)


class Refused(Exception):
    """Stops a request with ``answer``."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer


def take_fault(provider: str) -> SandboxFault | None:
    """The provider's active fault, counting this request against ``remaining``."""
    fault = SandboxFault.objects.filter(provider=provider).exclude(mode=FaultMode.OFF).first()
    if fault is None:
        return None
    if fault.remaining is not None:
        rows = SandboxFault.objects.filter(pk=fault.pk, remaining__gt=0)
        if not rows.update(remaining=F("remaining") - 1):
            return None
        SandboxFault.objects.filter(pk=fault.pk, remaining=0).update(mode=FaultMode.OFF)
    return fault


def recorded_headers(request: HttpRequest) -> dict[str, str]:
    headers = {}
    for name, value in request.headers.items():
        headers[name] = mask_secret(value) if name.lower() in SECRET_HEADERS else value
    return headers


def read_body(request: HttpRequest, limit: int, too_large: Callable[[str], Answer]) -> bytes:
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > limit:
        raise Refused(too_large(f"the body is {length} bytes; the limit is {limit}"))
    try:
        body = request.body
    except RequestDataTooBig:
        raise Refused(too_large("the body is too large")) from None
    if len(body) > limit:
        raise Refused(too_large(f"the body is {len(body)} bytes; the limit is {limit}"))
    return body


def parse_json(body: bytes, bad_request: Callable[[str], Answer]) -> Any:
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise Refused(bad_request("the body is not valid JSON")) from None


def handle(
    request: HttpRequest,
    provider: str,
    process: Callable[[HttpRequest, SandboxFault | None], Answer],
    error: Callable[[int, str], Answer],
    ids: Callable[[HttpRequest], list[str]] | None = None,
) -> HttpResponse:
    """Run ``process``, record the exchange, then answer (after the delay of a slow fault).

    ``ids`` reads the event ids a request carries, so that every request (refused ones too)
    can be counted per event.
    """
    fault = None
    if request.method != "POST":
        answer = error(405, f"method {request.method} not allowed; use POST")
        answer.headers["Allow"] = "POST"
    else:
        fault = take_fault(provider)
        try:
            answer = process(request, fault)
        except Refused as refused:
            answer = refused.answer
    response = JsonResponse(answer.body, status=answer.status, safe=False)
    for name, value in answer.headers.items():
        response[name] = value
    SandboxRequest.objects.create(
        provider=provider,
        method=request.method or "",
        path=request.path[:300],
        headers=recorded_headers(request),
        body=request.body.decode("utf-8", "replace")[:RECORDED_BODY_LIMIT]
        if request.method == "POST" and answer.status != 413
        else "",
        site=answer.site,
        api_key=answer.key,
        event_ids=answer.event_ids or (ids(request) if ids and answer.status != 413 else []),
        status_code=answer.status,
        response_body=response.content.decode()[:RECORDED_BODY_LIMIT],
        fault=fault.mode if fault is not None else "",
    )
    if fault is not None and fault.mode == FaultMode.SLOW:
        time.sleep(max(0.0, fault.delay))
    return response


def fault_answer(fault: SandboxFault | None, error: Callable[[int, str], Answer]) -> None:
    """Raise the answer a server-side fault gives (slow and revoked-key are handled elsewhere)."""
    if fault is None:
        return
    if fault.mode == FaultMode.SERVER_ERROR:
        raise Refused(error(fault.status_code, "internal error (sandbox fault: server error)"))
    if fault.mode == FaultMode.RATE_LIMIT:
        answer = error(429, "rate limit exceeded (sandbox fault: rate limit)")
        answer.headers["Retry-After"] = str(fault.retry_after)
        raise Refused(answer)
