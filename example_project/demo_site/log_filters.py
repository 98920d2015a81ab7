from __future__ import annotations

import logging


class HideSandboxFaults(logging.Filter):
    """Drop django.request error lines for the sandbox: it answers 5xx on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        request = getattr(record, "request", None)
        return not str(getattr(request, "path", "")).startswith("/sandbox/")
