"""What the benchmark scenarios share: paired ratios, the local provider server, sites, the
checkout, events, and cProfile summaries. Imported after ``django.setup()`` (see run.py)."""

from __future__ import annotations

import cProfile
import json
import pstats
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

from django.db import transaction

from django_conversions import Conversion, Customer, LineItem, track
from django_conversions.models import ConversionEvent, EventStatus, TrackingSite
from tests.testapp.models import Order, OrderItem

ROOT = Path(__file__).resolve().parent.parent
SERVER = ROOT / "benchmarks" / "server.py"
RECORD_PER_TRANSACTION = 250


# --- figures ------------------------------------------------------------------------------


def paired(a: list[float], b: list[float]) -> dict[str, Any]:
    """The median of the rounds' ratios a/b and their range: each round's two sides ran back
    to back, so a slow spell of the machine lands on both sides of one ratio."""
    ratios = [x / y for x, y in zip(a, b, strict=True)]
    return {
        "ratio": round(statistics.median(ratios), 3),
        "rounds_range": [round(min(ratios), 3), round(max(ratios), 3)],
        "rounds": len(ratios),
    }


def median(values: list[float], digits: int = 3) -> float:
    return round(statistics.median(values), digits)


def timed(func: Callable[[], Any]) -> float:
    started = time.perf_counter()
    func()
    return time.perf_counter() - started


def profile_top(func: Callable[[], Any], count: int = 12, only: str = "") -> dict[str, Any]:
    """``func`` under cProfile (this thread only): the heaviest entries by cumulative time and
    by own time, one line each (seconds, calls, where), only files starting with ``only``."""
    profiler = cProfile.Profile()
    profiler.runcall(func)
    stats = pstats.Stats(profiler)
    rows = []
    waiting = 0.0
    for (path, line, name), (_, calls, own, cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
        if name == "<method 'acquire' of '_thread.lock' objects>":
            waiting += own
        where = _short_path(path)
        if where.startswith("benchmarks/") or not where.startswith(only):
            continue
        rows.append((cumulative, own, calls, f"{where}:{line}({name})"))
    by_own = sorted(rows, key=lambda row: row[1], reverse=True)
    return {
        "total_s": round(stats.total_tt, 3),  # type: ignore[attr-defined]
        # Time this thread spent blocked on a lock: waiting for other threads (HTTP answers).
        "waiting_for_threads_s": round(waiting, 3),
        "by_cumulative": [_line(*row) for row in sorted(rows, reverse=True)[:count]],
        "by_own_time": [_line(*row) for row in by_own[:count]],
    }


def _line(cumulative: float, own: float, calls: int, where: str) -> str:
    return f"{cumulative:7.3f}s cum {own:7.3f}s own {calls:7d} calls  {where}"


def _short_path(path: str) -> str:
    for marker in ("site-packages/", str(ROOT) + "/", "/lib/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


# --- the local provider ---------------------------------------------------------------------


@contextmanager
def local_server(latency: float = 0.0, record: Path | None = None) -> Iterator[str]:
    """A provider in its own process, answering every POST with a 200 after ``latency``."""
    args = [sys.executable, str(SERVER), str(latency)] + ([str(record)] if record else [])
    process = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


@contextmanager
def recorded_requests() -> Iterator[tuple[Path, list[dict[str, Any]]]]:
    """A file for a recording server, and after the block the requests it recorded."""
    requests: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="django_conversions_bench_") as scratch:
        path = Path(scratch) / "requests.jsonl"
        yield path, requests
        requests += [json.loads(line) for line in path.read_text().splitlines()]


@contextmanager
def no_network() -> Iterator[None]:
    """Any socket connection attempt inside the block fails the benchmark."""
    original = socket.socket.connect

    def refuse(self: socket.socket, *args: Any) -> None:
        raise AssertionError(f"network call in the save path: {args}")

    socket.socket.connect = refuse  # type: ignore[method-assign]
    try:
        yield
    finally:
        socket.socket.connect = original  # type: ignore[method-assign]


# --- sites, checkouts, events ----------------------------------------------------------------


def clear_database() -> None:
    ConversionEvent.objects.all().delete()
    TrackingSite.objects.all().delete()
    Order.objects.all().delete()


def checkout(n: int) -> None:
    """A typical checkout transaction: the order, two lines, then the payment."""
    with transaction.atomic():
        order = Order.objects.create(
            number=f"B-{uuid.uuid4().hex[:12]}", status="new", total=Decimal("59.90"),
            currency="EUR", email=f"buyer{n}@example.com", phone="+40775123123",
            scan_session_id=str(uuid.uuid4()), tracking_consent="granted",
        )  # fmt: skip
        OrderItem.objects.create(order=order, sku="sku-1", quantity=2, price=Decimal("19.95"))
        OrderItem.objects.create(order=order, sku="sku-2", quantity=1, price=Decimal("20.00"))
        order.status = "paid"
        order.save()


def checkouts(count: int) -> float:
    """Seconds ``count`` checkouts took, one after another."""
    started = time.perf_counter()
    for n in range(count):
        checkout(n)
    return time.perf_counter() - started


def conversion(n: int) -> Conversion:
    return Conversion(
        event_name="purchase",
        order_id=f"D-{uuid.uuid4().hex[:12]}-{n}",
        value=Decimal("59.90"),
        currency="EUR",
        scan_session_id=str(uuid.uuid4()),
        customer=Customer(email=f"buyer{n}@example.com", phone="+40775123123"),
        consent="granted",
        items=[LineItem(id="sku-1", quantity=2, price=Decimal("19.95")), LineItem(id="sku-2")],
    )


def record_events(count: int, sites: list[TrackingSite]) -> None:
    """``count`` conversions recorded for these sites, through ``track()`` (a few hundred per
    transaction: recording is not what these scenarios time)."""
    for start in range(0, count, RECORD_PER_TRANSACTION):
        with transaction.atomic():
            for n in range(start, min(count, start + RECORD_PER_TRANSACTION)):
                track(conversion(n), sites=sites)


def unfinished(sites: list[TrackingSite]) -> int:
    """These sites' events not delivered, failed or skipped yet."""
    return ConversionEvent.objects.filter(
        site__in=sites, status__in=(EventStatus.PENDING, EventStatus.SENDING)
    ).count()
