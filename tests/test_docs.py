"""The documentation keeps up with the code."""

from __future__ import annotations

import subprocess
from pathlib import Path

from django_conversions.conf import DEFAULTS

README = Path(__file__).resolve().parent.parent / "README.md"


def test_every_setting_is_in_the_readme_reference():
    text = README.read_text()
    reference = text[text.index("## Settings reference") :]
    missing = [name for name in DEFAULTS if f"`{name}`" not in reference]
    assert missing == []


def test_the_readme_starts_with_the_two_commands():
    head = README.read_text()[:400]
    assert "make demo" in head and "make test" in head


def test_docs_run_the_example_project_with_the_virtualenvs_python():
    # given: every page that shows a command
    root = README.parent
    pages = [README, *sorted((root / "docs").glob("*.md"))]
    # when
    bare = [
        f"{page.name}: {line.strip()}"
        for page in pages
        for line in page.read_text().splitlines()
        if "example_project/manage.py" in line
        and ".venv/bin/python example_project/manage.py" not in line
    ]
    # then: a fresh clone has Django only in .venv, so a bare `python` would not find it
    assert bare == []


def test_make_demo_serves_on_the_port_it_is_given():
    # when: what `make demo PORT=8001` would run, without running it
    result = subprocess.run(
        ["make", "--dry-run", "--always-make", "demo", "PORT=8001"],
        cwd=README.parent,
        capture_output=True,
        text=True,
        check=True,
    )
    # then
    demo = [line for line in result.stdout.splitlines() if "manage.py demo" in line]
    assert demo and "--port 8001" in demo[0], result.stdout
    assert "make demo PORT=8001" in README.read_text()
