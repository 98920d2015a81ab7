"""Prometheus metrics (``pip install "django-conversions[prometheus]"``).

Two kinds, so that any number of worker and web processes report correctly:

- **Counted as it happens**, in the process where it happens, through the app's public signals
  (connected in ``apps.ready`` when ``prometheus_client`` is installed): requests by outcome,
  their duration and the events the provider accepted (``request_answered``, once per
  request: a batch of 100 costs one signal, not 100), events failed for good
  (``event_failed``). Each process counts its own; with several
  processes set ``PROMETHEUS_MULTIPROC_DIR`` (prometheus-client's multiprocess mode) in every
  process's environment and the exposition adds them up.
- **Read from the outbox** when scraped (``OutboxCollector``): the delivery lag (age of the
  oldest due event), events due and failed per site. The database is shared by every
  process, so these are right whichever process answers the scrape.

``metrics_view`` answers a scrape with both. Mount it and keep it off the public internet::

    from django_conversions.metrics import metrics_view
    urlpatterns += [path("internal/conversions-metrics", metrics_view)]

A host with its own metrics endpoint registers ``OutboxCollector()`` in its registry instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from django.http import HttpRequest, HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Histogram, generate_latest
from prometheus_client.core import CollectorRegistry, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from django_conversions.conf import conversions_settings
from django_conversions.dispatch import event_failed, request_answered
from django_conversions.health import delivery_health
from django_conversions.models import ConversionEvent, TrackingSite

REQUESTS = Counter(
    "conversions_requests",
    "Requests to providers, by outcome (delivered when the provider took any of its events).",
    ["site", "provider", "outcome"],
)
REQUEST_DURATION = Histogram(
    "conversions_request_duration_seconds",
    "Time from sending a request to a provider to its whole answer (or its end).",
    ["site", "provider"],
    buckets=(0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
DELIVERED = Counter(
    "conversions_events_delivered",
    "Events the provider accepted (as the answers come back).",
    ["site", "provider"],
)
FAILED = Counter(
    "conversions_events_failed",
    "Events that failed for good (a permanent error, or retries ran out).",
    ["site", "provider"],
)


def _labels(site: TrackingSite) -> dict[str, str]:
    return {"site": str(site.pk), "provider": site.provider}


def on_request_answered(
    sender: Any,
    site: TrackingSite,
    outcome: str,
    duration: float | None,
    events: int,
    accepted: int = 0,
    **kwargs: Any,
) -> None:
    labels = _labels(site)
    REQUESTS.labels(outcome=str(outcome), **labels).inc()
    if duration is not None:
        REQUEST_DURATION.labels(**labels).observe(duration)
    if accepted:
        DELIVERED.labels(**labels).inc(accepted)


def on_event_failed(sender: Any, event: ConversionEvent, **kwargs: Any) -> None:
    FAILED.labels(**_labels(event.site)).inc()


def connect_metrics() -> None:
    """Count through the public signals (idempotent)."""
    request_answered.connect(
        on_request_answered, sender=TrackingSite, dispatch_uid="conversions_metrics"
    )
    event_failed.connect(
        on_event_failed, sender=ConversionEvent, dispatch_uid="conversions_metrics"
    )


class OutboxCollector:
    """Gauges read from the outbox at each scrape (see ``django_conversions.health``)."""

    def collect(self) -> Iterator[Metric]:
        window = float(conversions_settings.HEALTH_FAILED_WINDOW)
        health = delivery_health(failed_window=window)
        labels = ["site", "provider", "name"]
        lag = GaugeMetricFamily(
            "conversions_delivery_lag_seconds",
            "Age of the oldest event due for delivery (0 when nothing is due).",
            labels=labels,
        )
        due = GaugeMetricFamily(
            "conversions_events_due", "Events due for delivery now.", labels=labels
        )
        failed = GaugeMetricFamily(
            "conversions_events_failed_kept",
            "Failed events still in the outbox (until purged).",
            labels=labels,
        )
        recent = GaugeMetricFamily(
            "conversions_events_failed_recently",
            f"Events that failed within the last {window:.0f} s (HEALTH_FAILED_WINDOW).",
            labels=labels,
        )
        paused = GaugeMetricFamily(
            "conversions_site_paused", "1 while the site is paused.", labels=labels
        )
        for item in health.sites:
            values = [str(item.site.pk), item.site.provider, item.site.name]
            lag.add_metric(values, item.lag_seconds(health.checked_at))
            due.add_metric(values, item.due)
            failed.add_metric(values, item.failed)
            recent.add_metric(values, item.failed_recently)
            paused.add_metric(values, 1 if item.site.is_paused else 0)
        yield from (lag, due, failed, recent, paused)


def exposition() -> bytes:
    """The text exposition: this process's (or, in multiprocess mode, every process's)
    counters, then the outbox's gauges."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        counted = CollectorRegistry()
        MultiProcessCollector(counted)
    else:
        counted = REGISTRY
    outbox = CollectorRegistry()
    outbox.register(OutboxCollector())
    return generate_latest(counted) + generate_latest(outbox)


def metrics_view(request: HttpRequest) -> HttpResponse:
    """A scrape endpoint (see the module docstring: mount it, keep it private)."""
    return HttpResponse(exposition(), content_type=CONTENT_TYPE_LATEST)
