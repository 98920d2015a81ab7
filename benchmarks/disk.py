"""Bytes on disk per delivered event on PostgreSQL: the events, attempts and per-event results
tables with their indexes (``pg_total_relation_size``), before recording N events and after
delivering them, divided by N; per provider."""

from __future__ import annotations

from typing import Any

from django.db import connection

from benchmarks.common import clear_database, local_server, make_site, record_events, set_active
from django_conversions.delivery import deliver_due
from django_conversions.models import ConversionEvent, DeliveryAttempt, EventResult

DISK_TARGET = 1024  # bytes per delivered event
TABLES = {
    "events": ConversionEvent._meta.db_table,
    "attempts": DeliveryAttempt._meta.db_table,
    "event_results": EventResult._meta.db_table,
}


def bench_disk(count: int) -> dict[str, Any]:
    with local_server(0.0) as url:
        clear_database()
        sites = [make_site("scanova", url, 0), make_site("vtmarketing", url, 1)]
        result: dict[str, Any] = {"events_per_provider": count}
        for site in sites:
            set_active(sites, {site.pk})
            _vacuum(full=True)
            before = _sizes()
            record_events(count, [site])
            report = deliver_due()
            assert report.delivered == count, report
            written = _sizes()
            # Autovacuum makes the dead row versions left by the status changes reusable;
            # VACUUM FULL shows what the delivered events themselves keep.
            _vacuum(full=True)
            compacted = _sizes()
            per_event = {name: round((compacted[name] - before[name]) / count) for name in TABLES}
            total = sum(per_event.values())
            result[site.provider] = {
                "bytes_per_event": total,
                "bytes_per_event_by_table": per_event,
                "bytes_per_event_as_written": round(
                    sum(written[name] - before[name] for name in TABLES) / count
                ),
                "target": f"<= {DISK_TARGET}",
                "met": total <= DISK_TARGET,
            }
    return result


def _sizes() -> dict[str, int]:
    with connection.cursor() as cursor:
        sizes = {}
        for name, table in TABLES.items():
            cursor.execute("SELECT pg_total_relation_size(%s)", [table])
            sizes[name] = cursor.fetchone()[0]
    return sizes


def _vacuum(*, full: bool) -> None:
    with connection.cursor() as cursor:
        for table in TABLES.values():
            cursor.execute(f"VACUUM {'FULL ' if full else ''}{table}")
