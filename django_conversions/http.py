"""The HTTP layer every provider shares.

One pooled ``requests.Session`` per thread, no retries inside ``requests`` (delivery owns the
retry policy and the event_id makes a resend safe), a timeout on every call, a User-Agent naming
the app, and a ``post()`` that never raises: the outcome of the wire is always an ``HttpAnswer``.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from django_conversions import __version__

USER_AGENT = f"django-conversions/{__version__} (+https://pypi.org/project/django-conversions/)"
_local = threading.local()


def get_session() -> requests.Session:
    """This thread's pooled session (connections are reused across requests and batches)."""
    session = getattr(_local, "session", None)
    if session is None:
        session = requests.Session()
        adapter = HTTPAdapter(pool_connections=8, pool_maxsize=16, max_retries=0)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        session.headers["User-Agent"] = USER_AGENT
        _local.session = session
    return session


def close_session() -> None:
    session = getattr(_local, "session", None)
    if session is not None:
        session.close()
        _local.session = None


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        # Money is already rounded to its minor unit; float's shortest repr writes it exactly
        # (400.33, not "400.33" and not 400.33000000000001).
        return float(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    return value


def dumps(payload: Any) -> bytes:
    """Compact UTF-8 JSON; Decimal as a JSON number, UUID and datetime as strings."""
    return json.dumps(_jsonable(payload), ensure_ascii=False, separators=(",", ":")).encode()


@dataclass(frozen=True)
class HttpAnswer:
    """What came back for one request: a status and body, or the error that stopped it."""

    url: str
    status: int | None
    headers: Mapping[str, str] = field(default_factory=dict)
    text: str = ""
    error: str = ""
    duration_ms: int = 0

    def json(self) -> Any:
        """The parsed body, or None when it is not JSON."""
        try:
            return json.loads(self.text)
        except ValueError:
            return None


def post(
    session: requests.Session,
    url: str,
    *,
    body: bytes,
    headers: Mapping[str, str],
    timeout: tuple[float, float],
) -> HttpAnswer:
    started = time.perf_counter()

    def elapsed() -> int:
        return int((time.perf_counter() - started) * 1000)

    try:
        response = session.post(url, data=body, headers=dict(headers), timeout=timeout)
    except requests.Timeout:
        return HttpAnswer(
            url, None, error=f"timed out after {timeout[1]:g} s", duration_ms=elapsed()
        )
    except requests.ConnectionError as err:
        return HttpAnswer(
            url, None, error=f"connection error: {_root_cause(err)}", duration_ms=elapsed()
        )
    except requests.RequestException as err:
        return HttpAnswer(
            url, None, error=f"request error: {_root_cause(err)}", duration_ms=elapsed()
        )
    return HttpAnswer(
        url,
        response.status_code,
        headers=dict(response.headers),
        text=response.text,
        duration_ms=elapsed(),
    )


def _root_cause(err: BaseException) -> str:
    """The innermost error's message: 'Connection refused' instead of a wall of urllib3 text."""
    while err.__cause__ is not None or (err.args and isinstance(err.args[0], BaseException)):
        err = err.__cause__ or err.args[0]
    text = str(err)
    if "] " in text and text.startswith("<"):  # "<urllib3...>: Failed to ...: [Errno 111] ..."
        text = text.rsplit(": ", 1)[-1]
    return text[:300] or type(err).__name__
