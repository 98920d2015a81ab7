"""The provider contract: turn conversions into requests and answers into results.

A provider module describes one provider's wire format and how to read its answers. It never
touches the database and never decides when to retry: ``send()`` returns one ``Result`` per
event, and ``django_conversions.delivery`` turns results into statuses, schedules and pauses.

To add a provider, subclass ``Provider``, fill the class attributes, and implement
``build_body()`` (plus ``ineligible_reason()``/``error_reason()`` when the defaults don't fit);
see docs/providers/adding.md.

Every method that holds the API key hides it (``api_key``, ``headers``) from Django's error
reports, and so does every frame below it: a DEBUG page or an ADMINS mail never shows the key.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import requests
from django.views.decorators.debug import sensitive_variables

from django_conversions import http
from django_conversions.conf import conversions_settings
from django_conversions.consent import policy_for
from django_conversions.conversion import Conversion
from django_conversions.endpoints import url_problem
from django_conversions.fields import as_secret, mask_secret, redact
from django_conversions.outcomes import Outcome
from django_conversions.providers.results import (
    Exchange,
    OutboundEvent,
    Prepared,
    Request,
    Result,
    SiteConfig,
    parse_retry_after,
)

logger = logging.getLogger("django_conversions.providers")

#: Longest reason kept on a result (the admin shows it; the full body is on the attempt).
REASON_MAX = 500
# What an API key may contain to travel in a header: visible ASCII, no spaces.
_HEADER_SAFE = re.compile(r"[\x21-\x7e]+")


class Provider:
    """Base class of every provider. Class attributes describe it; methods build and read."""

    #: Stable id stored in ``TrackingSite.provider``. Never change it once released.
    id: ClassVar[str]
    #: Display name for the admin.
    name: ClassVar[str]
    #: The provider's documented base URL; ``TrackingSite.endpoint_url`` may replace it.
    default_base_url: ClassVar[str]
    #: Path of the single-event endpoint, appended to the base URL.
    event_path: ClassVar[str]
    #: Path of the batch endpoint, or None when the provider has none.
    batch_path: ClassVar[str | None] = None
    #: The batch body is ``{batch_key: [one event's body, ...]}``, joined from the encoded
    #: bodies; None: the provider implements build_batch_body().
    batch_key: ClassVar[str | None] = None
    #: Requests per minute per API key the provider allows (None: not documented).
    rate_limit_per_minute: ClassVar[int | None] = None
    #: Seconds to wait after a 429 without Retry-After.
    default_retry_after: ClassVar[float] = 60.0
    #: Does the provider need ``TrackingSite.provider_site_id``?
    requires_site_id: ClassVar[bool] = False
    #: Does the provider take only conversions that began with a QR scan (a scan session id)?
    #: The system checks warn when the shop has no way to give orders one.
    requires_scan_session: ClassVar[bool] = False
    #: Event names the provider accepts (None: any event).
    supported_event_names: ClassVar[frozenset[str] | None] = None
    #: Header carrying the API key (masked wherever the request is stored).
    auth_header: ClassVar[str]
    #: Customer fields this provider sends as they are (privacy: what the outbox keeps).
    personal_fields: ClassVar[frozenset[str]] = frozenset()
    #: Customer fields (``email``, ``phone``) this provider only sends as SHA-256 hashes.
    hashed_fields: ClassVar[frozenset[str]] = frozenset()
    #: HTTP statuses that mean "accepted".
    accepted_statuses: ClassVar[frozenset[int]] = frozenset(range(200, 300))
    #: Statuses for which a refused batch is halved and both halves sent again.
    split_statuses: ClassVar[frozenset[int]] = frozenset({413})
    #: Does the provider read a product feed from the shop (docs/feed.md)?
    takes_product_feed: ClassVar[bool] = False

    def __init__(self, site: SiteConfig | None = None) -> None:
        self.site = site or SiteConfig()

    # --- hooks a provider implements ---------------------------------------------------------

    def site_problem(self) -> str | None:
        """Why no event can be sent to this site as configured (the site is paused), or None.

        The endpoint included: a scheme other than https (http when allowed), or a host that
        is, or now resolves to, a private address (``django_conversions.endpoints``).
        """
        if self.requires_site_id and not self.site.provider_site_id:
            return f"the site has no provider site id, which {self.name} requires"
        return url_problem(self.base_url)

    def minimize(self, conversion: Conversion) -> Conversion:
        """The conversion with only the personal data this provider needs, hashed where it can.

        This is what the outbox stores for the provider's sites: data the provider does not
        need (or may not get, by the consent policy) is never written to the database.
        """
        customer = conversion.customer
        if customer is None:
            return conversion
        if not policy_for(self.id).allows_identifiers(conversion.consent):
            return conversion.narrowed(customer=None)
        if self.ineligible_reason(conversion):  # skipped: the provider never receives it
            return conversion.narrowed(customer=None)
        return conversion.narrowed(customer=customer.kept(self.personal_fields, self.hashed_fields))

    def accepts_event(self, event_name: str) -> bool:
        """Does this provider take events of this (normalised) name at all?"""
        return self.supported_event_names is None or event_name in self.supported_event_names

    def ineligible_reason(self, conversion: Conversion) -> str | None:
        """Why this conversion can never go to this provider, or None when it can.

        The base checks the consent policy (``CONVERSIONS["CONSENT_POLICY"]``); providers add
        their own rules after ``super().ineligible_reason(conversion)``.
        """
        return policy_for(self.id).skip_reason(conversion.consent)

    def build_body(self, event: OutboundEvent) -> dict[str, Any]:
        """The JSON body for one event (Decimal, UUID and datetime values are fine)."""
        raise NotImplementedError(f"{type(self).__name__} must implement build_body()")

    def build_batch_body(self, events: Sequence[OutboundEvent]) -> Any:
        """The JSON body for several events, for a ``batch_path`` whose body is not simply
        ``{batch_key: [bodies]}`` (with ``batch_key`` set this is never called)."""
        raise NotImplementedError(f"{type(self).__name__} sets neither batch_key nor this")

    def read_batch_answer(self, answer: http.HttpAnswer, request: Request) -> list[Result] | None:
        """Per-event results from an accepted batch answer, one per event of ``request`` in
        order (None: every event was delivered). Exchanges and redaction are added by the base.
        """
        return None

    def error_reason(self, answer: http.HttpAnswer) -> str:
        """A short human-readable reason from an error answer's body."""
        data = answer.json()
        if isinstance(data, Mapping):
            for key in ("detail", "message", "error", "errors"):
                if data.get(key):
                    return short_text(data[key])
        return short_text(answer.text) if answer.text else ""

    def should_split(self, answer: http.HttpAnswer, request: Request) -> bool:
        """Halve a refused batch and send both halves again? (413 by default.)"""
        return len(request.events) > 1 and answer.status in self.split_statuses

    @sensitive_variables("api_key", "headers")
    def auth_headers(self, api_key: str) -> dict[str, str]:
        return {self.auth_header: api_key}

    # --- the fixed pipeline ---------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return (self.site.endpoint_url or self.default_base_url).rstrip("/")

    def url(self, path: str) -> str:
        return self.base_url + path

    @property
    def supports_batch(self) -> bool:
        return self.batch_path is not None

    def requests_for(
        self,
        events: Sequence[OutboundEvent],
        positions: Sequence[int] | None = None,
        bodies: Mapping[int, bytes] | None = None,
    ) -> list[Request]:
        """Split events into requests: batches of ``site.batch_size`` or one per event.

        ``bodies``: events' bodies already encoded (while checking them), by ``id(event)``.
        """
        positions = list(range(len(events))) if positions is None else list(positions)
        size = max(1, self.site.batch_size) if self.supports_batch else 1
        return [
            self._request(events[i : i + size], positions[i : i + size], bodies)
            for i in range(0, len(events), size)
        ]

    def encoded_body(self, event: OutboundEvent) -> bytes:
        """``build_body(event)`` as JSON."""
        return http.dumps(self.build_body(event))

    def _request(
        self,
        events: Sequence[OutboundEvent],
        positions: Sequence[int],
        bodies: Mapping[int, bytes] | None = None,
    ) -> Request:
        def body(event: OutboundEvent) -> bytes:
            encoded = bodies.get(id(event)) if bodies else None
            return self.encoded_body(event) if encoded is None else encoded

        if len(events) == 1:
            return Request(self.url(self.event_path), body(events[0]), events, positions)
        assert self.batch_path is not None
        if self.batch_key is None:
            data = http.dumps(self.build_batch_body(events))
        else:
            data = http.json_object(self.batch_key, [body(event) for event in events])
        return Request(self.url(self.batch_path), data, events, positions)

    @sensitive_variables("api_key", "headers")
    def send(
        self,
        session: requests.Session,
        api_key: str,
        events: Sequence[OutboundEvent],
        *,
        timeout: tuple[float, float] | None = None,
    ) -> list[Result]:
        """Send ``events`` (all for this site) and return one Result per event, in order.

        Never raises for a bad event or a bad answer: an event the provider can't take is
        ``INELIGIBLE``, one whose body can't be built is ``FAILED``, and every answer (or
        missing answer) is classified.
        """
        return self.deliver(session, api_key, self.prepare(api_key, events), timeout=timeout)

    @sensitive_variables("api_key", "headers")
    def prepare(self, api_key: str, events: Sequence[OutboundEvent]) -> Prepared:
        """The first half of ``send()``: check and encode the events into requests.

        No I/O: a worker may run it on one thread and ``deliver()`` on others.
        """
        api_key = as_secret(api_key)  # masked wherever a frame is shown
        prepared = Prepared(count=len(events))
        sendable: list[OutboundEvent] = []
        positions: list[int] = []
        bodies: dict[int, bytes] = {}  # by id(event): the events are alive until returned
        for position, event in enumerate(events):
            checked = self._check(event)
            if isinstance(checked, Result):
                prepared.results[position] = checked
            else:
                bodies[id(event)] = checked
                sendable.append(event)
                positions.append(position)
        key_problem = _key_problem(api_key)
        if key_problem and sendable:
            for position in positions:
                prepared.results[position] = Result(Outcome.AUTH_FAILED, key_problem)
            sendable = []
        prepared.requests = self.requests_for(sendable, positions, bodies)
        return prepared

    @sensitive_variables("api_key", "headers")
    def deliver(
        self,
        session: requests.Session,
        api_key: str,
        prepared: Prepared,
        *,
        timeout: tuple[float, float] | None = None,
    ) -> list[Result]:
        """The second half of ``send()``: post the prepared requests, read the answers."""
        timeout = timeout or http.default_timeout()
        api_key = as_secret(api_key)  # masked wherever a frame is shown
        results = dict(prepared.results)
        pending = list(prepared.requests)
        while pending:
            request = pending.pop(0)
            answer = self._post(session, api_key, request, timeout)
            if self.should_split(answer, request):
                half = len(request.events) // 2
                logger.info(
                    "%s refused a batch of %d events with HTTP %s; sending it in two halves",
                    self.name,
                    len(request.events),
                    answer.status,
                )
                pending[:0] = [
                    self._request(request.events[:half], request.positions[:half]),
                    self._request(request.events[half:], request.positions[half:]),
                ]
                continue
            answers = self.read_answer(answer, request, api_key)
            for position, result in zip(request.positions, answers, strict=True):
                results[position] = result
        return [results[position] for position in range(prepared.count)]

    def _check(self, event: OutboundEvent) -> Result | bytes:
        """INELIGIBLE or FAILED when this event can't be sent; else its encoded body."""
        try:
            reason = self.ineligible_reason(event.conversion)
            if reason:
                return Result(Outcome.INELIGIBLE, reason)
            # Encoding fails here, for this event alone, if a value can't be sent.
            return self.encoded_body(event)
        except Exception as err:  # a bug or a bad value must not block the other events
            logger.exception(
                "%s could not build the request for event %s", self.name, event.event_id
            )
            return Result(Outcome.FAILED, f"could not build the request: {short_text(str(err))}")

    @sensitive_variables("api_key", "headers")
    def _post(
        self,
        session: requests.Session,
        api_key: str,
        request: Request,
        timeout: tuple[float, float],
    ) -> http.HttpAnswer:
        headers = {
            "Content-Type": "application/json",
            "User-Agent": http.USER_AGENT,  # whatever session the caller passes
            **self.auth_headers(api_key),
        }
        answer = http.post(
            session, request.url, body=request.data, headers=headers, timeout=timeout
        )
        level = logging.INFO if answer.status is None else logging.DEBUG
        if logger.isEnabledFor(level):  # mask the key only for a line that is written
            logger.log(
                level,
                "POST %s (%d event(s)) -> %s in %d ms",
                redact(request.url, api_key),
                len(request.events),
                f"HTTP {answer.status}" if answer.status else redact(answer.error, api_key),
                answer.duration_ms,
            )
        return answer

    @sensitive_variables("api_key", "headers")
    def read_answer(self, answer: http.HttpAnswer, request: Request, api_key: str) -> list[Result]:
        """One Result per event of ``request``, from the answer to it; no reason holds the key."""
        exchange = self._exchange(answer, request, api_key)
        count = len(request.events)
        per_event: list[Result] | None = None
        if answer.status in self.accepted_statuses:
            if count > 1:
                per_event = self.read_batch_answer(answer, request)
                if per_event is not None and len(per_event) != count:
                    raise ValueError(
                        f"{type(self).__name__}.read_batch_answer() returned {len(per_event)} "
                        f"results for {count} events"
                    )
            if per_event is None:
                per_event = [Result(Outcome.DELIVERED, f"accepted (HTTP {answer.status})")] * count
        else:
            outcome, reason, retry_after = self.classify(answer)
            per_event = [Result(outcome, reason, retry_after)] * count
        # Events sharing one result (a whole batch accepted) keep sharing its redacted copy.
        finished: dict[int, Result] = {}
        for r in per_event:
            if id(r) not in finished:
                reason = redact(r.reason, api_key)[:REASON_MAX]
                finished[id(r)] = Result(r.outcome, reason, r.retry_after, exchange)
        return [finished[id(r)] for r in per_event]

    def classify(self, answer: http.HttpAnswer) -> tuple[Outcome, str, float | None]:
        """Map an answer that is not accepted to an outcome, a reason and a Retry-After."""
        if answer.refused:  # nothing was sent: the destination is not allowed, pause the site
            return Outcome.AUTH_FAILED, answer.error, None
        if answer.status is None:
            return Outcome.RETRY, answer.error or "no answer", None
        status = answer.status
        detail = self.error_reason(answer)
        reason = f"HTTP {status}" + (f": {detail}" if detail else "")
        retry_after = parse_retry_after(answer.header("Retry-After"))
        if status in (401, 403):
            return Outcome.AUTH_FAILED, reason, None
        if status == 429:
            return Outcome.RETRY, reason, _default(retry_after, self.default_retry_after)
        if status in (408, 425) or status >= 500:
            return Outcome.RETRY, reason, retry_after
        if 300 <= status < 400:
            location = answer.header("Location")
            moved = f"; the endpoint redirects to {location}" if location else ""
            return Outcome.FAILED, f"HTTP {status}{moved} (redirects are not followed)", None
        if status < 300:
            return Outcome.FAILED, f"{reason} (not an answer {self.name} documents)", None
        return Outcome.FAILED, reason, None

    @sensitive_variables("api_key", "headers")
    def _exchange(self, answer: http.HttpAnswer, request: Request, api_key: str) -> Exchange:
        headers = {"Content-Type": "application/json", self.auth_header: mask_secret(api_key)}
        return Exchange(
            url=redact(answer.url, api_key)[:500],  # the attempt row's limit
            request_headers=headers,
            request_body=http.truncate(
                redact(request.data.decode("utf-8", "replace"), api_key),
                conversions_settings.RESPONSE_BODY_LIMIT,
            ),
            status=answer.status,
            response_headers={k: redact(v, api_key) for k, v in answer.headers.items()},
            response_body=http.truncate(
                redact(answer.text, api_key), conversions_settings.RESPONSE_BODY_LIMIT
            ),
            error=redact(answer.error, api_key),
            duration_ms=answer.duration_ms,
            batch_size=len(request.events),
        )


def _default(value: float | None, default: float) -> float:
    return default if value is None else value


def _key_problem(api_key: str) -> str | None:
    """Why this key can't be sent at all (then nothing is sent); the key itself is not shown."""
    if not api_key:
        return "the API key is empty"
    if not _HEADER_SAFE.fullmatch(api_key):
        return "the API key has spaces, control or non-ASCII characters and can't be sent"
    return None


def short_text(value: Any, limit: int = 300) -> str:
    """A one-line summary of an error body (strings, lists of messages, FastAPI-style details)."""
    if isinstance(value, list):
        return "; ".join(short_text(v, limit) for v in value)[:limit]
    if isinstance(value, Mapping):
        if "msg" in value:
            loc = ".".join(str(p) for p in value.get("loc", ()) if p != "body")
            return f"{loc}: {value['msg']}" if loc else str(value["msg"])
        for key in ("message", "description", "detail"):
            if key in value:
                return short_text(value[key], limit)
        return json.dumps(value)[:limit]
    return " ".join(str(value).split())[:limit]


# Outcome lives in django_conversions.outcomes (the models store it too) and the value types
# in providers.results; providers import them from here.
__all__ = [
    "REASON_MAX",
    "Exchange",
    "OutboundEvent",
    "Outcome",
    "Prepared",
    "Provider",
    "Request",
    "Result",
    "SiteConfig",
    "parse_retry_after",
    "short_text",
]
