#!/usr/bin/env python
"""The example shop's manage.py. `make demo` (or `.venv/bin/python example_project/manage.py demo`)
runs the demo."""

from __future__ import annotations

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "demo_site.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
