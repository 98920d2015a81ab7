"""The example project: its own tests (under its own settings), and `manage.py demo`.

The example shop is a separate Django project (example_project/, settings demo_site.settings),
so it runs in child processes: its test suite with pytest, and the demo command exactly as
`make demo` runs it, each on a throw-away SQLite database.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "example_project"
TIMEOUT = 240


def example_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(EXAMPLE), env.get("PYTHONPATH")]))
    env["DEMO_DATABASE"] = str(tmp_path / "demo.sqlite3")
    return env


def run_demo(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLE / "manage.py"), "demo", *args],
        cwd=ROOT,
        env=example_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


def summary_rows(output: str) -> dict[str, list[int]]:
    section = output.split("Delivery summary", 1)[1].split("Why", 1)[0]
    rows = {}
    for line in section.splitlines():
        match = re.match(r"(.+?)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s*$", line)
        if match:
            rows[match.group(1).strip()] = [int(n) for n in match.groups()[1:]]
    return rows


def test_the_example_shops_own_tests_pass(tmp_path):
    # when
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "example_project/shop/tests",
            "-q",
            "-p",
            "no:cacheprovider",
            "--ds=demo_site.settings",
        ],
        cwd=ROOT,
        env=example_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    # then
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert re.search(r"\b13 passed\b", result.stdout), result.stdout[-2000:]


def test_demo_without_serving_ends_with_the_expected_summary_and_can_run_again(tmp_path):
    # when
    first = run_demo(tmp_path, "--no-serve", "--port", "0")
    second = run_demo(tmp_path, "--no-serve", "--port", "0")
    # then
    for result in (first, second):
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        # delivered, retrying, failed, skipped
        assert summary_rows(result.stdout) == {
            "Scanova (sandbox)": [4, 0, 0, 1],
            "VTmarketing (sandbox)": [3, 0, 1, 1],
        }
        out = result.stdout
        assert re.search(r"DEMO-1002\s+Scanova \(sandbox\)\s+delivered\s+2 attempts", out)
        assert re.search(r"DEMO-1003\s+Scanova \(sandbox\)\s+skipped.*no scan session id", out)
        assert re.search(r"DEMO-1004\s+VTmarketing \(sandbox\)\s+skipped.*consent denied", out)
        assert re.search(
            r"DEMO-1005\s+VTmarketing \(sandbox\)\s+failed.*HTTP 400: Invalid user email", out
        )
        assert "admin / admin" in out
        assert re.search(
            r"product feed: http://127\.0\.0\.1:\d+/conversions/feed/\d+/products\.xml", out
        )
        assert "scn_sandbox_" not in out + result.stderr  # keys are only shown masked
    assert "created the admin user" in first.stdout
    assert "DEMO-1001  already placed" in second.stdout
    assert "created the admin user" not in second.stdout


def test_demo_serves_the_shop_the_admin_and_the_sandbox(tmp_path):
    # given
    process = subprocess.Popen(
        [sys.executable, str(EXAMPLE / "manage.py"), "demo", "--port", "0"],
        cwd=ROOT,
        env=example_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    watchdog = threading.Timer(TIMEOUT, process.kill)
    watchdog.start()
    try:
        url = _served_url(process)
        # when
        shop = requests.get(f"{url}/?scnv=550e8400-e29b-41d4-a716-446655440000", timeout=10)
        admin = requests.get(f"{url}/admin/login/", timeout=10)
        sandbox = requests.post(f"{url}/sandbox/scanova/server-events", json={}, timeout=10)
    finally:
        process.terminate()
        process.wait(timeout=30)
        watchdog.cancel()
    # then
    assert shop.status_code == 200
    assert "Classic mug" in shop.text
    assert "You arrived through a QR code scan" in shop.text
    assert admin.status_code == 200
    assert "Log in" in admin.text
    assert sandbox.status_code == 401


def _served_url(process: subprocess.Popen[Any]) -> str:
    assert process.stdout is not None
    seen = []
    for line in process.stdout:
        seen.append(line)
        match = re.match(r"Shop:\s+(http://\S+?)/?$", line.strip())
        if match:
            return match.group(1)
    raise AssertionError("the demo stopped before serving:\n" + "".join(seen)[-4000:])
