"""One worker process of the scaling benchmark (benchmarks/scaling.py).

Loads Django, says ``ready``, waits for ``go`` on stdin, drains what is due with
``deliver_due()`` (what ``conversions_deliver`` does on each poll) and prints one JSON line:
when it finished (``time.time()``), the events it handled and the CPU seconds the drain took
in this process (all its threads). With ``--profile`` it also prints cProfile's heaviest
entries of the drain.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.settings")

import django  # noqa: E402

django.setup()

from benchmarks.common import profile_top  # noqa: E402
from django_conversions.delivery import DeliveryReport, deliver_due  # noqa: E402
from django_conversions.models import TrackingSite  # noqa: E402


def main() -> None:
    profiling = "--profile" in sys.argv
    # What a long-running worker has done long before: its database connection is open and
    # the sites' keys have been read once (deriving the fallback key takes ~50 ms of CPU).
    for site in TrackingSite.objects.all():
        site.current_key()
    gc.freeze()  # as conversions_deliver does once loaded
    print("ready", flush=True)
    assert sys.stdin.readline().strip() == "go"
    report = DeliveryReport()
    cpu = time.process_time()

    def drain() -> None:
        report.add(deliver_due())

    profile = profile_top(drain, only="django_conversions/") if profiling else None
    if not profiling:
        drain()
    line = {
        "finished": time.time(),
        "handled": report.handled,
        "delivered": report.delivered,
        "cpu_s": time.process_time() - cpu,
    }
    if profile is not None:
        line["profile"] = profile
    print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
