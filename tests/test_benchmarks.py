"""The benchmarks still run: ``make bench`` is how the figures in docs/benchmarks.md are made.

No figure is checked here (speed is measured by the benchmarks, never by a test); only that a
smoke run measures every figure, keeps the save path off the network and leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PUBLISHED = (ROOT / "benchmarks" / "results.json", ROOT / "docs" / "benchmarks.md")


@pytest.mark.skipif(
    os.environ.get("CONVERSIONS_TEST_DB") == "postgres",
    reason="the benchmarks use their own SQLite file: the SQLite pass runs them",
)
def test_a_quick_benchmark_run_measures_every_figure_and_leaves_nothing_behind():
    before = {path: path.read_bytes() for path in PUBLISHED}
    scratch = Path(tempfile.gettempdir())
    files_before = set(scratch.glob("django_conversions_bench_*"))
    # when
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "benchmarks.settings"},
    )
    # then
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout)
    save = results["save_cost"]
    assert save["network_calls_in_save_path"] == 0 and save["ratio_on_over_off"] > 0
    assert [row["latency_ms"] for row in results["delivery"]] == [0, 20]
    assert all(row["ratio_app_over_bare"] > 0 for row in results["delivery"])
    assert [row["latency_ms"] for row in results["batch"]] == [0, 20]
    assert all(row["ratio_batch_over_single"] > 0 for row in results["batch"])
    shares = results["batch_steps"]["shares"]
    assert set(shares) == {"claim", "_outbound", "prepare", "_apply", "_flush"}
    assert 0 < sum(shares.values()) <= 1
    assert {path: path.read_bytes() for path in PUBLISHED} == before
    assert set(scratch.glob("django_conversions_bench_*")) <= files_before  # its database too
