"""Browser tests (tests/browser/flows.py), run in their own pytest process.

They buy through the example shop, whose ``Order`` must be the ORDER_MODEL, while the rest of
the suite tracks ``tests.testapp.Order``: so flows.py runs under tests.browser.settings in a
child pytest (same interpreter, same database engine as this run), once per run of this module,
and each of its scenarios is reported here as a test of its own. See docs/browser-tests.md.

Without Chromium (or Playwright) they skip with the reason; under CI=true that is a failure.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

import pytest

from tests.conftest import UNDER_CI

ROOT = Path(__file__).resolve().parents[2]
FLOWS = Path(__file__).with_name("flows.py")
CHROMIUM = os.environ.get("CONVERSIONS_CHROMIUM", "/usr/bin/chromium")
TIMEOUT = 240

pytestmark = pytest.mark.browser


@dataclass(frozen=True)
class Outcome:
    status: str  # passed, failed, skipped
    message: str
    seconds: float


@dataclass(frozen=True)
class BrowserRun:
    outcomes: dict[str, Outcome]
    output: str
    seconds: float


def scenarios() -> list[str]:
    """The test functions of flows.py, read without importing it (it needs the shop)."""
    tree = ast.parse(FLOWS.read_text(encoding="utf-8"))
    return [
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")
    ]


def missing_requirement() -> str | None:
    if find_spec("playwright") is None:
        return "Playwright for Python is not installed (pip install -e '.[dev]')"
    if not os.access(CHROMIUM, os.X_OK):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium, or set CONVERSIONS_CHROMIUM)"
    return None


def read_junit(path: Path) -> dict[str, Outcome]:
    outcomes: dict[str, Outcome] = {}
    for case in ElementTree.parse(path).getroot().iter("testcase"):
        status, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error"):
                status = "failed"
                message += f"{child.get('message', '')}\n{child.text or ''}\n"
            elif child.tag == "skipped" and status == "passed":
                status, message = "skipped", child.get("message", "")
        name = case.get("name", "")
        earlier = outcomes.get(name)
        if earlier is not None and earlier.status == "failed":  # an error in teardown as well
            status, message = "failed", earlier.message + message
        outcomes[name] = Outcome(status, message, float(case.get("time") or 0))
    return outcomes


@pytest.fixture(scope="module")
def browser_run(tmp_path_factory: pytest.TempPathFactory) -> BrowserRun:
    missing = missing_requirement()
    if missing:
        if UNDER_CI:
            pytest.fail(f"{missing} (CI=true: the browser tests must run)")
        pytest.skip(missing)
    report = tmp_path_factory.mktemp("browser") / "junit.xml"
    env = dict(os.environ)
    env.pop("DJANGO_SETTINGS_MODULE", None)
    started = time.monotonic()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(FLOWS),
            "-q",
            "-p",
            "no:cacheprovider",
            "--ds=tests.browser.settings",
            f"--junitxml={report}",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    output = result.stdout[-6000:] + result.stderr[-3000:]
    if not report.exists():
        pytest.fail(f"the browser tests did not run (exit {result.returncode}):\n{output}")
    return BrowserRun(read_junit(report), output, time.monotonic() - started)


@pytest.mark.parametrize("scenario", scenarios())
def test_browser_scenario(browser_run: BrowserRun, scenario: str) -> None:
    # given
    outcome = browser_run.outcomes.get(scenario)
    # then
    assert outcome is not None, f"{scenario} did not run:\n{browser_run.output}"
    if outcome.status == "skipped" and not UNDER_CI:
        pytest.skip(outcome.message)
    assert outcome.status == "passed", f"{scenario}: {outcome.message}\n{browser_run.output}"


def test_the_browser_tests_stay_fast(browser_run: BrowserRun) -> None:
    # then: the whole browser run, Chromium start and test database included
    assert browser_run.seconds < 120, f"took {browser_run.seconds:.0f} s"
