"""Waiting on a condition another thread or process makes true: the one way tests synchronise
with workers and servers (never a fixed sleep)."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(condition: Callable[[], object], timeout: float = 30.0) -> None:
    """Return once ``condition()`` is true; fail the test if it isn't within ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {timeout} s: {condition}")
        time.sleep(0.01)  # how often the condition is asked, not a wait for an outcome
