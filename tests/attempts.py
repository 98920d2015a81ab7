"""Helpers for tests of what staff see and do (this module holds no tests): delivery attempts
built with the ORM as the recorder stores them (one ``DeliveryAttempt`` per request, an
``EventResult`` per event it carried), and a task backend that keeps what is enqueued."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from django.conf import settings
from django.test import override_settings

from django_conversions.compat import task_backends
from django_conversions.models import ConversionEvent, DeliveryAttempt, EventResult

_TASKS_MODULE = settings.TASKS["default"]["BACKEND"].rsplit(".backends.", 1)[0]

SCANOVA_BATCH_URL = "https://track.example.test/server-events/batch"


def record_attempt(
    events: Sequence[ConversionEvent],
    *,
    outcome: str = "delivered",
    messages: dict[int, str] | None = None,
    outcomes: dict[int, str] | None = None,
    **fields: Any,
) -> DeliveryAttempt:
    """One request that carried ``events``; each event's outcome defaults to the request's."""
    attempt = DeliveryAttempt.objects.create(
        site=events[0].site,
        outcome=outcome,
        event_count=len(events),
        **fields,
    )
    EventResult.objects.bulk_create(
        EventResult(
            attempt=attempt,
            event=event,
            outcome=(outcomes or {}).get(event.pk, outcome),
            message=(messages or {}).get(event.pk, ""),
        )
        for event in events
    )
    return attempt


def scanova_batch_body(events: Sequence[ConversionEvent]) -> str:
    """The body of a Scanova batch request carrying ``events``, as the wire has it."""
    return json.dumps(
        {
            "events": [
                {
                    "site_id": "site_abc123",
                    "event_name": event.event_name,
                    "event_id": str(event.event_id),
                    "user_identifiers": {
                        wire: event.snapshot["customer"][stored]
                        for wire, stored in (
                            ("email_hash", "email_sha256"),
                            ("phone_hash", "phone_sha256"),
                        )
                        if stored in event.snapshot["customer"]
                    },
                    "properties": {"order_id": event.order_reference},
                }
                for event in events
            ]
        }
    )


@contextmanager
def kept_tasks() -> Iterator[Any]:
    """``TASK_BACKEND`` set to Django's DummyBackend: what is enqueued is kept, never run."""
    tasks = {**settings.TASKS, "kept": {"BACKEND": f"{_TASKS_MODULE}.backends.dummy.DummyBackend"}}
    with override_settings(
        TASKS=tasks, CONVERSIONS={**settings.CONVERSIONS, "TASK_BACKEND": "kept"}
    ):
        backend = task_backends["kept"]
        backend.results.clear()
        yield backend


def enqueued_ids(backend: Any) -> list[list[int]]:
    """The event ids of each delivery task ``backend`` kept."""
    return [list(result.args[0]) for result in backend.results]
