"""Bytes on disk per delivered event on PostgreSQL, per provider.

Two figures. Kept: what each delivered event keeps for the retention period, once
autovacuum has made the space of its earlier row versions reusable: the provider's live rows
copied into empty tables shaped like these (same columns and indexes), measured relation by
relation (rows, TOAST, each index) as the bytes the second half of the rows adds (see
``_live_footprint``); the targets and the retention sizing are this figure.
Before vacuum: ``pg_total_relation_size`` of the events, attempts and per-event results tables
before recording N events and after delivering them, divided by N; it also holds the dead row
versions the status changes leave (pending, sending, delivered) until autovacuum runs.
"""

from __future__ import annotations

from typing import Any

from django.db import connection

from benchmarks.common import clear_database, local_server, record_events
from benchmarks.sites import make_site, set_active
from django_conversions.delivery import deliver_due
from django_conversions.models import (
    ConversionEvent,
    DeliveryAttempt,
    EventResult,
    TrackingSite,
)

DISK_TARGET = 1024  # bytes kept per delivered event (issue 15)
DISK_TARGET_AFTER_ATTEMPTS = 600  # the same, once an attempt is one request (issue 20)
TABLES = {
    "events": ConversionEvent._meta.db_table,
    "attempts": DeliveryAttempt._meta.db_table,
    "event_results": EventResult._meta.db_table,
}
#: The wide values whose mean stored size the results show: (model, fields).
COLUMNS = (
    (ConversionEvent, ("snapshot", "dedup_key", "last_error")),
    (
        DeliveryAttempt,
        ("request_headers", "request_body", "response_headers", "response_body", "url"),
    ),
)


def bench_disk(count: int) -> dict[str, Any]:
    with local_server(0.0) as url:
        result: dict[str, Any] = {"events_per_provider": count}
        for provider in ("scanova", "vtmarketing"):
            clear_database()
            site = make_site(provider, url, 0)
            set_active([site], {site.pk})
            before = _sizes()
            record_events(count, [site])
            report = deliver_due()
            assert report.delivered == count, report
            after = _sizes()
            per_table = {name: round((after[name] - before[name]) / count) for name in TABLES}
            total = sum(per_table.values())
            live = _live_footprint(site)
            kept = round(sum(live.values()) / count)
            result[provider] = {
                "bytes_per_event_before_vacuum": total,
                "bytes_per_event_before_vacuum_by_table": per_table,
                "bytes_per_event": kept,
                # Where the live bytes go: each table's rows, its TOAST and every index.
                "live_bytes_per_event_by_relation": {
                    name: round(size / count) for name, size in live.items()
                },
                "mean_stored_value_bytes": _column_sizes(site),
                "target": f"<= {DISK_TARGET}",
                "met": kept <= DISK_TARGET,
                "target_after_attempts": f"<= {DISK_TARGET_AFTER_ATTEMPTS}",
                "met_after_attempts": kept <= DISK_TARGET_AFTER_ATTEMPTS,
            }
        clear_database()
    return result


def _sizes() -> dict[str, int]:
    with connection.cursor() as cursor:
        sizes = {}
        for name, table in TABLES.items():
            cursor.execute("SELECT pg_total_relation_size(%s)", [table])
            sizes[name] = cursor.fetchone()[0]
    return sizes


def _live_footprint(site: TrackingSite) -> dict[str, int]:
    """Bytes the site's live rows take in fresh copies of the three tables, by relation.

    The copies are filled in two halves, in primary-key order (the order rows arrive in), and
    the bytes the second half added are scaled to all rows: what each further event adds,
    without the pages every table and index has whatever its size (metapage, root, free
    space map), which a table of a few thousand rows would otherwise spread over each.
    """
    events = ConversionEvent._meta.db_table
    site_column = ConversionEvent._meta.get_field("site").column
    event_column = EventResult._meta.get_field("event").column
    rows = {
        TABLES["events"]: (f'"{site_column}" = %s', [site.pk]),
        TABLES["attempts"]: (f'"{DeliveryAttempt._meta.get_field("site").column}" = %s', [site.pk]),
        TABLES["event_results"]: (
            f'"{event_column}" IN (SELECT id FROM "{events}" WHERE "{site_column}" = %s)',
            [site.pk],
        ),
    }
    parts: dict[str, int] = {}
    with connection.cursor() as cursor:
        for table, (where, params) in rows.items():
            copy = f"bench_copy_{table}"
            cursor.execute(f'CREATE TEMPORARY TABLE "{copy}" (LIKE "{table}" INCLUDING ALL)')
            cursor.execute(f'SELECT count(*) FROM "{table}" WHERE {where}', params)
            total = cursor.fetchone()[0]
            first = total // 2
            rows_in_order = f'SELECT * FROM "{table}" WHERE {where} ORDER BY "id"'
            cursor.execute(f'INSERT INTO "{copy}" {rows_in_order} LIMIT %s', [*params, first])
            half = _relations(cursor, copy, table)
            cursor.execute(f'INSERT INTO "{copy}" {rows_in_order} OFFSET %s', [*params, first])
            filled = _relations(cursor, copy, table)
            scale = total / max(1, total - first)
            parts.update(
                {name: round((size - half[name]) * scale) for name, size in filled.items()}
            )
            cursor.execute(f'DROP TABLE "{copy}"')
    return parts


def _relations(cursor: Any, copy: str, table: str) -> dict[str, int]:
    """Each relation of ``copy`` (rows; TOAST with its index and the free space and
    visibility maps; each index), named after ``table``'s."""
    cursor.execute(
        "SELECT pg_relation_size(%s), pg_indexes_size(%s), pg_total_relation_size(%s)",
        [copy, copy, copy],
    )
    heap, indexes, total = cursor.fetchone()
    parts = {f"{table} rows": heap, f"{table} TOAST and maps": total - heap - indexes}
    cursor.execute(
        "SELECT pg_get_indexdef(indexrelid), pg_relation_size(indexrelid) "
        "FROM pg_index WHERE indrelid = %s::regclass",
        [copy],
    )
    for definition, size in cursor.fetchall():
        # "CREATE INDEX … USING btree (a, b) WHERE (…)": the columns, and the condition
        _, _, rest = definition.partition(" USING ")
        columns, _, where = rest.partition(") WHERE ")
        columns = columns[columns.index("(") + 1 :].rstrip(")")
        method = " (text pattern)" if "pattern_ops" in columns else ""
        partial = " (partial)" if where else ""
        name = columns.split(" ")[0] if method else columns
        parts[f"{table} index ({name}){method}{partial}"] = size
    return parts


def _column_sizes(site: TrackingSite) -> dict[str, int]:
    """Mean stored size (``pg_column_size``) of the wide values the site's delivery kept."""
    sizes = {}
    with connection.cursor() as cursor:
        for model, names in COLUMNS:
            table = model._meta.db_table
            site_column = model._meta.get_field("site").column
            for name in names:
                column = model._meta.get_field(name).column
                cursor.execute(
                    f'SELECT avg(pg_column_size("{column}")) FROM "{table}" '
                    f'WHERE "{site_column}" = %s',
                    [site.pk],
                )
                value = cursor.fetchone()[0]
                sizes[f"{table}.{column}"] = round(value or 0)
    return sizes
