"""README's Install is a complete recipe, and its code runs.

A fresh project is made the way README says: ``django-admin startproject``, ``startapp shop``,
then every fenced Python block of README written where its first line says (``# shop/models.py``)
or, without a path, run in ``manage.py shell``; README's ``python manage.py`` commands are run
as written. A QR visitor then lands, accepts tracking and buys through the project's own views,
and ``conversions_deliver`` must bring the order to both providers: a real local HTTP server
stands in for them. The only additions, each for the test's sake, are in ``TEST_SETTINGS``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from tests.servers import RecordingServer, recording_server

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
TIMEOUT = 120
SCAN = "550e8400-e29b-41d4-a716-446655440000"
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
PATH_LINE = re.compile(r"#\s*([\w./]+\.py)(\s*\(append\))?\s*$")

# What the test adds to README's settings: the providers are a local HTTP server, and delivery
# is left to the conversions_deliver runs below (a background thread in a short-lived shell
# process could be cut off mid-request).
TEST_SETTINGS = """
CONVERSIONS["ALLOW_INSECURE_ENDPOINTS"] = True
CONVERSIONS["ALLOW_PRIVATE_ENDPOINTS"] = True
CONVERSIONS["TASK_BACKEND"] = None
"""

# A QR visitor, through the project's own URLs and middleware.
VISIT = f"""
from django.test import Client
from django.test.utils import setup_test_environment

setup_test_environment()  # lets the test client's host in
visitor = Client()
visitor.get("/admin/login/?scnv={SCAN}")  # any page of the shop, from the QR code
assert visitor.post("/consent/").status_code == 200
answer = visitor.post("/checkout/", {{"email": "ana@example.com"}})
assert answer.status_code == 200, answer.status_code
print(answer.content.decode())
"""


def blocks(language: str) -> list[str]:
    return [body for lang, body in FENCE.findall(README.read_text()) if lang == language]


def file_blocks() -> list[tuple[str, bool, str]]:
    """(path, append?, text) of the Python blocks whose first line names a file."""
    found = []
    for body in blocks("python"):
        match = PATH_LINE.fullmatch(body.splitlines()[0])
        if match:
            found.append((match.group(1), bool(match.group(2)), body))
    return found


def shell_blocks() -> list[str]:
    return [body for body in blocks("python") if not PATH_LINE.fullmatch(body.splitlines()[0])]


def manage_commands() -> list[list[str]]:
    """README's ``python manage.py …`` lines, without their comments."""
    commands = []
    for body in blocks("sh"):
        for line in body.splitlines():
            words = line.split("#", 1)[0].split()
            if words[:2] == ["python", "manage.py"]:
                commands.append(words[2:])
    return commands


class Project:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = dict(os.environ)
        self.env.pop("DJANGO_SETTINGS_MODULE", None)
        self.env["PYTHONPATH"] = str(root)
        self.env["CONVERSIONS_KEY"] = Fernet.generate_key().decode()

    def run(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, *args],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
        assert done.returncode == 0, f"{args}:\n{done.stdout}\n{done.stderr}"
        return done.stdout + done.stderr

    def manage(self, *args: str) -> str:
        return self.run("manage.py", *args)

    def shell(self, code: str) -> str:
        return self.manage("shell", "--no-imports", "-c", code)


@pytest.fixture
def project(tmp_path: Path) -> Project:
    root = tmp_path / "mysite"
    root.mkdir()
    made = Project(root)
    made.run("-m", "django", "startproject", "mysite", str(root))
    made.manage("startapp", "shop")
    for path, append, text in file_blocks():
        target = root / path
        target.write_text(target.read_text() + "\n" + text if append else text, encoding="utf-8")
    settings = root / "mysite" / "settings.py"
    settings.write_text(settings.read_text() + TEST_SETTINGS)
    return made


def test_every_python_block_is_a_file_of_the_project_or_code_run_in_it():
    files = [path for path, _, _ in file_blocks()]
    assert files == ["mysite/settings.py", "shop/models.py", "shop/views.py", "mysite/urls.py"]
    assert len(shell_blocks()) == 2  # the sites and their keys; track()
    assert len(files) + len(shell_blocks()) == len(blocks("python"))


def test_a_fresh_project_following_the_readme_delivers_a_qr_visitors_order(project):
    with recording_server() as providers:
        # given: README's commands, the long-running sweep last
        commands = manage_commands()
        assert commands[-1] == ["conversions_deliver", "--loop"]
        for command in commands[:-1]:
            output = project.manage(*command)
            if command == ["check"]:
                assert "no issues" in output, output
        sites, track = shell_blocks()
        project.shell(sites)
        project.shell(_point_sites_at(providers))
        # when: a QR visitor buys, and the sweep runs once (as from cron)
        placed = project.shell(VISIT)
        project.manage("conversions_deliver")
        # then: both providers have the order, Scanova with the scan, VTmarketing the buyer
        number = placed.split()[1]
        scanova, vtmarketing = _received(providers)
        assert scanova["scan_session_id"] == SCAN
        assert scanova["properties"]["order_id"] == number
        assert scanova["properties"]["product_ids"] == ["MUG-1"]
        assert json.dumps(vtmarketing).count(number) >= 1
        assert "ana@example.com" in json.dumps(vtmarketing)
        # and README's track() example records an event per site, delivered by the sweep
        project.shell(track)
        report = project.manage("conversions_deliver")
        assert len(providers.received) == 4, report


def _point_sites_at(providers: RecordingServer) -> str:
    return (
        "from django_conversions.models import TrackingSite\n"
        f"TrackingSite.objects.update(endpoint_url={providers.url!r})\n"
    )


def _received(providers: RecordingServer) -> tuple[dict, dict]:
    scanova = [r.body for r in providers.received if r.path.startswith("/server-events")]
    vtmarketing = [r.body for r in providers.received if r.path.startswith("/v1/event")]
    assert len(scanova) == len(vtmarketing) == 1, [r.path for r in providers.received]
    [body] = scanova
    event = body["events"][0] if "events" in body else body
    return event, vtmarketing[0]
