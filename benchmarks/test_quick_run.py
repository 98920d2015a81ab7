"""The benchmarks still run: ``make bench-check`` (not part of ``make test``).

No figure is checked here (speed is measured by the benchmarks, never by a test); only that a
quick run measures its figures (the nine ratios of scenarios 1 to 5), keeps the save path
off the network, writes none of the published files and leaves nothing behind: no file in its
own scratch directory, no database.
``BENCH_DB`` (``postgres`` by default, or ``sqlite``) is passed on to the run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
PUBLISHED = (ROOT / "benchmarks" / "results.json", ROOT / "docs" / "benchmarks.md")


def ratios(value: Any) -> Iterator[float]:
    """Every ``ratio`` figure in the results, at any depth."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "ratio":
                yield item
            else:
                yield from ratios(item)
    elif isinstance(value, list):
        for item in value:
            yield from ratios(item)


def leftover_databases(pid: int) -> list[str]:
    """The PostgreSQL databases the run with this process id made, if still there."""
    with psycopg.connect(
        host=os.environ.get("PGHOST", "127.0.0.1"),
        port=os.environ.get("PGPORT", "5432"),
        user=os.environ.get("PGUSER", "postgres"),
        dbname=os.environ.get("PGDATABASE", "test"),
    ) as connection:
        rows = connection.execute(
            "SELECT datname FROM pg_database WHERE datname IN (%s, %s, %s)",
            (
                f"django_conversions_bench_{pid}",
                f"django_conversions_bench_{pid}_backlog",
                f"django_conversions_bench_{pid}_shop",
            ),
        ).fetchall()
    return [row[0] for row in rows]


def test_a_quick_benchmark_run_measures_its_figures_and_leaves_nothing_behind() -> None:
    # given: a scratch directory of this check's own as the run's temporary directory
    before = {path: path.read_bytes() for path in PUBLISHED}
    scratch = Path(tempfile.mkdtemp(prefix="django_conversions_bench_check_"))
    env = {**os.environ, "TMPDIR": str(scratch), "DJANGO_SETTINGS_MODULE": "benchmarks.settings"}
    # when
    run = subprocess.Popen(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env,
    )
    stdout, stderr = run.communicate(timeout=900)
    # then
    assert run.returncode == 0, stderr[-3000:]
    results = json.loads(stdout)
    assert results["checkout"]["network_calls_in_save_path"] == 0
    found = list(ratios(results))
    assert len(found) == 9 and all(ratio > 0 for ratio in found)
    assert {path: path.read_bytes() for path in PUBLISHED} == before
    assert list(scratch.iterdir()) == []
    scratch.rmdir()
    if os.environ.get("BENCH_DB", "postgres") == "postgres":
        assert leftover_databases(run.pid) == []
