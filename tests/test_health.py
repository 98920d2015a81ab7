"""Health for operators: ``conversions_status`` (its exit status is what a monitor reads), the
delivery lag on the admin overview, and the Prometheus metrics (counted through the public
signals, in one process and across worker processes in multiprocess mode)."""

from __future__ import annotations

import io
import re
import uuid
from datetime import timedelta
from html import unescape
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.management import call_command
from django.test import RequestFactory, override_settings
from django.urls import reverse
from django.utils import timezone

from django_conversions.models import ConversionEvent, EventStatus, TrackingSite
from tests.conditions import wait_until
from tests.servers import recording_server
from tests.test_workers import local_site, record_many
from tests.workers import start_command

prometheus_client = pytest.importorskip("prometheus_client")
metrics = pytest.importorskip("django_conversions.metrics")
text_string_to_metric_families = pytest.importorskip(
    "prometheus_client.parser"
).text_string_to_metric_families

SCANOVA_URL = "https://track.example.test/server-events"


def add_event(site: TrackingSite, **fields: Any) -> ConversionEvent:
    return ConversionEvent.objects.create(
        site=site,
        event_name="purchase",
        dedup_key=f"purchase:{uuid.uuid4()}",
        order_reference=uuid.uuid4().hex[:6],
        **fields,
    )


def status(*args: str) -> tuple[int, str]:
    """Run ``conversions_status``: (exit status, what it printed)."""
    out = io.StringIO()
    try:
        call_command("conversions_status", *args, stdout=out)
    except SystemExit as exit:
        return int(exit.code or 0), out.getvalue()
    return 0, out.getvalue()


# --- conversions_status --------------------------------------------------------------------


@pytest.mark.django_db
def test_status_is_healthy_when_nothing_waits_long(scanova_site):
    # given: one event due a minute ago, one due later, one delivered
    add_event(scanova_site, next_attempt_at=timezone.now() - timedelta(seconds=60))
    add_event(scanova_site, next_attempt_at=timezone.now() + timedelta(hours=1))
    add_event(scanova_site, status=EventStatus.DELIVERED)
    # when
    code, out = status()
    # then
    assert code == 0
    assert f"site {scanova_site.pk} 'scanova site' (scanova): 1 due, oldest waiting" in out
    assert re.search(r"OK: delivery lag 6\d s \(max 600 s\), 1 due, 0 failed", out)


@pytest.mark.django_db
def test_status_fails_when_the_oldest_due_event_waited_past_the_threshold(scanova_site, vt_site):
    # given: a VTmarketing event due 20 minutes ago (its site paused), a Scanova one just now
    vt_site.pause("HTTP 401")
    add_event(vt_site, next_attempt_at=timezone.now() - timedelta(minutes=20))
    add_event(scanova_site)
    # when
    code, out = status()
    # then: unhealthy, and the paused site is named
    assert code == 2
    assert re.search(r"UNHEALTHY: delivery lag 12\d\d s > 600 s", out)
    assert f"site {vt_site.pk} 'vtmarketing site' (vtmarketing) (paused): 1 due" in out
    # and a larger threshold, given as an option or a setting, makes it healthy
    assert status("--max-lag", "1500")[0] == 0
    with override_settings(CONVERSIONS={**settings.CONVERSIONS, "HEALTH_MAX_LAG": 1500}):
        assert status()[0] == 0


@pytest.mark.django_db
def test_status_counts_a_crashed_workers_events_as_due_from_their_lease_end(scanova_site):
    # given: an event claimed by a worker whose lease ran out 15 minutes ago
    add_event(
        scanova_site,
        status=EventStatus.SENDING,
        claim_token=uuid.uuid4(),
        lease_expires_at=timezone.now() - timedelta(minutes=15),
    )
    # and one whose worker still holds it
    add_event(
        scanova_site,
        status=EventStatus.SENDING,
        claim_token=uuid.uuid4(),
        lease_expires_at=timezone.now() + timedelta(minutes=5),
    )
    # when
    code, out = status()
    # then
    assert code == 2 and re.search(r"1 due, oldest waiting 9\d\d s", out)


@pytest.mark.django_db
def test_status_fails_on_recent_failures_past_the_threshold(scanova_site):
    # given: one event failed just now, one two hours ago
    add_event(scanova_site, status=EventStatus.FAILED)
    old = add_event(scanova_site, status=EventStatus.FAILED)
    ConversionEvent.objects.filter(pk=old.pk).update(updated_at=timezone.now() - timedelta(hours=2))
    # when / then: the default allows none within the last hour
    code, out = status()
    assert code == 2 and "UNHEALTHY: 1 failed in the last 3600 s > 0" in out
    assert "1 failed in the last 3600 s (2 kept)" in out
    assert status("--max-failed", "1")[0] == 0
    assert status("--failed-window", "10800", "--max-failed", "1")[0] == 2


@pytest.mark.django_db(transaction=True)
def test_status_exit_code_reaches_a_monitor_running_the_command(scanova_site):
    # given: an event waiting for 20 minutes
    add_event(scanova_site, next_attempt_at=timezone.now() - timedelta(minutes=20))
    # when: a monitor runs the command as a process
    unhealthy = start_command("conversions_status")
    healthy = start_command("conversions_status", "--max-lag", "3600")
    # then
    assert unhealthy.wait(timeout=60) == 2, unhealthy.communicate()
    assert healthy.wait(timeout=60) == 0, healthy.communicate()
    assert "UNHEALTHY: delivery lag" in unhealthy.communicate()[0]


@pytest.mark.django_db
def test_status_refuses_meaningless_thresholds():
    out = io.StringIO()
    with pytest.raises(Exception, match="--max-lag and --failed-window must be positive"):
        call_command("conversions_status", "--max-lag", "0", stdout=out)


# --- the admin overview ---------------------------------------------------------------------


@pytest.mark.django_db
def test_the_admin_overview_shows_the_delivery_lag(admin_client, scanova_site):
    # given: an event due for 20 minutes
    add_event(scanova_site, next_attempt_at=timezone.now() - timedelta(minutes=20))
    # when
    page = unescape(admin_client.get(reverse("admin:django_conversions_overview")).content.decode())
    # then: shown, and marked as past HEALTH_MAX_LAG
    waited = re.search(
        r"Delivery lag: the oldest due event has waited (\d+) s \(1 due now\)\.", page
    )
    assert waited and 1200 <= int(waited.group(1)) < 1260
    assert '<p id="delivery-lag" class="errornote">' in page


# --- metrics ----------------------------------------------------------------------------------


def sample(name: str, **labels: str) -> float:
    return prometheus_client.REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.mark.django_db(transaction=True)
def test_metrics_count_requests_durations_and_events_through_the_signals(scanova_site, mocked_http):
    # given: the provider takes the first request and refuses the second for good (400)
    mocked_http.post(SCANOVA_URL, json={"success": True})
    mocked_http.post(SCANOVA_URL, status=400, json={"detail": "missing event information"})
    labels = {"site": str(scanova_site.pk), "provider": "scanova"}
    before = {
        "delivered": sample("conversions_requests_total", outcome="delivered", **labels),
        "failed": sample("conversions_requests_total", outcome="failed", **labels),
        "durations": sample("conversions_request_duration_seconds_count", **labels),
        "events_delivered": sample("conversions_events_delivered_total", **labels),
        "events_failed": sample("conversions_events_failed_total", **labels),
    }
    # when: two conversions are recorded, each delivered after its commit
    with override_settings(CONVERSIONS={**settings.CONVERSIONS, "BATCH_SIZE": 1}):
        record_many(2)
    # then
    assert sample("conversions_requests_total", outcome="delivered", **labels) == (
        before["delivered"] + 1
    )
    assert sample("conversions_requests_total", outcome="failed", **labels) == before["failed"] + 1
    assert sample("conversions_request_duration_seconds_count", **labels) == (
        before["durations"] + 2
    )
    assert sample("conversions_events_delivered_total", **labels) == before["events_delivered"] + 1
    assert sample("conversions_events_failed_total", **labels) == before["events_failed"] + 1


@pytest.mark.django_db
def test_metrics_view_exposes_lag_due_and_failed_per_site(scanova_site, vt_site):
    # given
    vt_site.pause("HTTP 401")
    add_event(scanova_site, next_attempt_at=timezone.now() - timedelta(seconds=90))
    add_event(scanova_site)
    add_event(vt_site, status=EventStatus.FAILED)
    # when
    response = metrics.metrics_view(RequestFactory().get("/metrics"))
    text = response.content.decode()
    # then
    assert response["Content-Type"].startswith("text/plain")
    families = {family.name: family for family in text_string_to_metric_families(text)}
    values = {
        (family, sample.labels["site"]): sample.value
        for family in (
            "conversions_delivery_lag_seconds",
            "conversions_events_due",
            "conversions_events_failed_kept",
            "conversions_events_failed_recently",
            "conversions_site_paused",
        )
        for sample in families[family].samples
    }
    s, v = str(scanova_site.pk), str(vt_site.pk)
    assert 90 <= values[("conversions_delivery_lag_seconds", s)] < 120
    assert values[("conversions_events_due", s)] == 2
    assert values[("conversions_delivery_lag_seconds", v)] == 0
    assert values[("conversions_events_failed_kept", v)] == 1
    assert values[("conversions_events_failed_recently", v)] == 1
    assert values[("conversions_site_paused", v)] == 1
    assert values[("conversions_site_paused", s)] == 0


@pytest.mark.django_db(transaction=True)
def test_metrics_add_up_the_worker_processes_in_multiprocess_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # given: prometheus-client's multiprocess mode, and a local provider
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    overrides = {"TASK_BACKEND": None, "BATCH_SIZE": 1}
    with (
        recording_server() as server,
        override_settings(CONVERSIONS={**settings.CONVERSIONS, **overrides}),
    ):
        site = local_site(server.url)
        record_many(4)
        # when: two worker processes deliver them
        workers = [start_command("conversions_deliver", overrides=overrides) for _ in range(2)]
        for worker in workers:
            assert worker.wait(timeout=60) == 0, worker.communicate()
        wait_until(lambda: len(server.received) == 4)
    # then: the exposition of any process adds up both workers' counts
    text = metrics.exposition().decode()
    requests = {
        sample.labels["outcome"]: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "conversions_requests"
        for sample in family.samples
        if sample.name == "conversions_requests_total" and sample.labels["site"] == str(site.pk)
    }
    assert requests == {"delivered": 4.0}
    assert ConversionEvent.objects.filter(status=EventStatus.DELIVERED).count() == 4
